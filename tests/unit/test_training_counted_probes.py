"""training.counted and its post-processing probes (csf_exclusion, hu_grow) on a head drawn here."""
from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root holds training/

from svdmark.domain import FrameRef, Volume  # noqa: E402
from tests.unit import ct_heads  # noqa: E402
from training import counted, csf_exclusion, hu_grow  # noqa: E402

WM, CSF = 26.0, 12.0


def _case(lesion_hu: float = 6.0, noise: float = 1.0, seed: int = 0):
    """Five 200² slices at 0.5 mm x 2 mm: a skull ring, white matter, a ventricle of CSF, and a lesion ``lesion_hu``
    below white matter: a core (rows 40-59) and a fainter band beside it (rows 60-69), both columns 90-109."""
    sl, yy, xx = ct_heads.skull_slice(WM)
    sl[(np.abs(yy - 120) < 12) & (np.abs(xx - 100) < 10)] = CSF
    sl[40:60, 90:110] = WM - lesion_hu
    sl[60:70, 90:110] = WM - lesion_hu / 2
    a = ct_heads.stack(sl, 5, noise, seed)
    positions = np.array([[0.0, 0.0, 2.0 * k] for k in range(5)])
    frames = tuple(FrameRef(f"2.25.{k}", "1.2.840.10008.5.1.4.1.1.2") for k in range(5))
    vol = Volume(array=a, row_direction=(1.0, 0.0, 0.0), column_direction=(0.0, 1.0, 0.0), pixel_spacing=(0.5, 0.5),
                 positions=positions, frames=frames, frame_of_reference_uid="2.25.7", slice_thickness=2.0)
    return SimpleNamespace(volume=vol, seed=seed, truth_ml=0.0)


def _counted(shape, rows: slice) -> np.ndarray:
    c = np.zeros(shape, np.float32)
    c[:, rows, 90:110] = 1.0
    return c


def test_the_exclusion_drops_what_is_counted_in_csf_and_keeps_a_lesion_above_the_csf_level():
    case = _case()
    c = _counted(case.volume.shape, slice(40, 60))
    c[:, 112:126, 94:106] = 1.0  # a false call inside the ventricle
    vols, notes = csf_exclusion.measure(case, c, ["0.4/0", "0.4/2"])
    assert notes["wm_hu"] == pytest.approx(WM, abs=1.0) and notes["csf_hu"] == pytest.approx(CSF, abs=2.0)
    lesion_ml = 5 * 20 * 20 * 0.5 * 1e-3  # 5 slices x 400 px x 0.5 uL
    assert counted.volume_ml(case, c) == pytest.approx(lesion_ml + 5 * 14 * 12 * 0.5e-3)
    assert vols["0.4/0"] == pytest.approx(lesion_ml, rel=0.02)  # 6 HU below WM: above 12 + 0.4 x 14 = 17.6 HU
    assert vols["0.4/2"] == pytest.approx(lesion_ml, rel=0.02)  # 20 px from the ventricle: a 2 mm margin spares it


def test_a_lesion_as_dark_as_csf_is_lost_with_it():
    case = _case(lesion_hu=WM - CSF)
    c = _counted(case.volume.shape, slice(40, 60))
    vols, _ = csf_exclusion.measure(case, c, ["0.4/0"])
    assert vols["0.4/0"] < 0.3 * counted.volume_ml(case, c)  # only a rim the smoothing lifts above the level


def test_a_head_without_levels_keeps_the_models_reading():
    case = _case()
    case.volume.array[:] = 28.0  # no skull, no levels
    c = _counted(case.volume.shape, slice(40, 60))
    vols, notes = csf_exclusion.measure(case, c, ["0.4/0"])
    assert notes == {} and vols["0.4/0"] == counted.volume_ml(case, c)


def test_growth_reaches_the_faint_band_beside_a_counted_core_and_no_further():
    case = _case(lesion_hu=8.0, noise=0.5)
    c = _counted(case.volume.shape, slice(40, 60))
    core_ml, band_ml = counted.volume_ml(case, c), 5 * 10 * 20 * 0.5 * 1e-3
    vols, notes = hu_grow.measure(case, c, ["1/8", "1/1"])
    assert notes["noise_sd"] < 2.0  # the structure beside the edges, not the 0.5 HU noise, sets it here
    # 8 mm of growth fills the 4 mm band (4 HU below WM) and stops within the smoothing's reach (sigma 3 px) of
    # normal white matter: at most about 3 px round the 30 x 20 px lesion, not 16 px
    spill_ml = 5 * (2 * 30 + 20) * 3 * 0.5e-3
    assert core_ml + band_ml < vols["1/8"] < core_ml + band_ml + 1.2 * spill_ml
    assert core_ml < vols["1/1"] < vols["1/8"]


def test_a_sweep_refuses_the_reported_splits_and_only_names_a_setting_of_the_grid():
    with pytest.raises(SystemExit, match="--sweep"):
        counted.run("heldout", 2, None, None, None, Path("/nonexistent"), csf_exclusion.PROBE)
    with pytest.raises(SystemExit, match="not a setting"):
        counted.run("heldout", 2, None, None, None, Path("/nonexistent"), csf_exclusion.PROBE, only="0.45/0")


def test_pair_compares_two_settings_case_by_case():
    res = {"cases": [{"seed": s, "truth": t, "volumes": {"model": t + 2.0, "x": t + 1.0}}
                     for s, t in enumerate([0.0, 0.5, 3.0, 12.0, 30.0])]}
    d = counted.pair(res, "model", "x")["difference"]["mae_ml"]
    assert d["b_minus_a"] == pytest.approx(-1.0) and d["ci95"][1] == pytest.approx(-1.0)

"""svdmark.measure.components: each counted WML region's look and place, and the manifest's filter over them."""
from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root holds tests/

from svdmark.domain import WML_COMPONENT_FEATURES as FEATURES  # noqa: E402
from svdmark.domain import ComponentFilter, ManifestFieldError, ModelSpec, Task  # noqa: E402
from svdmark.measure import UNFILTERED_NOTE, from_output  # noqa: E402
from svdmark.measure.components import component_features, components, kept_region  # noqa: E402
from svdmark.measure.head import smoothed_head, tissue_levels  # noqa: E402
from tests.unit import ct_heads  # noqa: E402
from tests.unit.test_measure import tilted_volume  # noqa: E402

WM, CSF, LESION = 28.0, 10.0, 19.0


def _head():
    """Eight 200² slices at 0.5 mm (3 mm apart): a skull ring round white matter, two ventricles of CSF, a lesion
    beside the left ventricle and a darkened strip of white matter under the skull on slices 2-4 only."""
    sl, yy, xx = ct_heads.skull_slice(WM)
    sl[(np.abs(yy - 100) < 14) & (np.abs(xx - 80) < 7)] = CSF
    sl[(np.abs(yy - 100) < 14) & (np.abs(xx - 120) < 7)] = CSF
    a = ct_heads.stack(sl, 8, 2.0, 0)
    lesion = np.zeros(a.shape, bool)
    lesion[2:6, 94:106, 60:72] = True  # left of the left ventricle, 1 px of white matter between
    a[lesion] = LESION + np.random.default_rng(1).normal(0, 2.0, lesion.sum())
    return tilted_volume(a.shape, pixel=0.5, spacing=3.0, tilt_deg=0.0, array=a.astype(np.float32)), lesion


def _counted(shape, lesion):
    """A model's counted fraction: the lesion, the right ventricle (CSF read as lesion) and a rim strip."""
    c = np.zeros(shape, np.float32)
    c[lesion] = 0.9
    c[2:6, 88:112, 115:125] = 0.6  # inside the right ventricle
    c[2:5, 98:102, 24:34] = 0.5  # white matter next to the skull's inner rim (the skull ring starts at 20 px)
    return c


def test_tissue_levels_find_white_matter_and_csf_inside_the_skull():
    vol, _ = _head()
    lv = tissue_levels(vol.array, (0.5, 0.5))
    assert lv is not None and abs(lv[0] - WM) < 1.0 and abs(lv[1] - CSF) < 2.0
    assert tissue_levels(np.full((3, 64, 64), 28.0, np.float32), (1.0, 1.0)) is None  # no skull, no levels


def test_each_component_is_measured_in_the_heads_own_units():
    vol, lesion = _head()
    counted = _counted(vol.shape, lesion)
    labels, n = components(counted)
    assert n == 3
    table = component_features(vol, counted, smoothed_head(vol), labels, n)
    assert table.shape == (3, len(FEATURES))
    row = {int(labels[k]): dict(zip(FEATURES, table[int(labels[k]) - 1])) for k in [(3, 100, 66), (3, 100, 120),
                                                                                     (3, 100, 28)]}
    les, ven, rim = row[labels[3, 100, 66]], row[labels[3, 100, 120]], row[labels[3, 100, 28]]
    voxel_ml = vol.voxel_volume_mm3 / 1000.0
    assert les["log_ml"] == pytest.approx(np.log10(0.9 * lesion.sum() * voxel_ml + 1e-3), abs=1e-6)
    assert les["mean_fraction"] == pytest.approx(0.9) and les["peak_fraction"] == pytest.approx(0.9)
    gap = WM - CSF
    assert abs(les["darkness"] - (WM - LESION) / gap) < 0.15  # the in-plane smoothing blurs its edge
    assert ven["darkness"] > 0.8 and ven["csf_share"] > 0.8 and les["csf_share"] < 0.2
    assert les["ring_contrast"] > 0.2 and ven["ring_contrast"] > 0.6  # brain round it is brighter; CSF left out
    assert rim["edge_mm"] < 6.0 < les["edge_mm"] and les["csf_mm"] < 3.0 < rim["csf_mm"]
    assert les["height_mm"] == pytest.approx(12.0) and rim["height_mm"] == pytest.approx(9.0)
    assert les["mirror_contrast"] > 0.2  # its mirror image lies in the right ventricle's white matter
    assert 0.9 < les["slice_area"] <= 1.0


def _filter(threshold=0.5):
    """Lesion unless most of the component sits at the CSF level."""
    return {"features": ["csf_share"], "mean": [0.0], "scale": [1.0], "coef": [-20.0], "intercept": 5.0,
            "threshold": threshold}


def test_the_filter_keeps_the_components_it_calls_lesion():
    vol, lesion = _head()
    counted = _counted(vol.shape, lesion)
    region = kept_region(vol, counted, ComponentFilter.from_json(_filter()))
    assert region[lesion].all() and not region[3, 100, 120] and region[3, 100, 28]
    assert not kept_region(vol, counted, ComponentFilter.from_json(_filter(1.0))).any()
    assert not kept_region(vol, np.zeros_like(counted), ComponentFilter.from_json(_filter())).any()
    flat = tilted_volume((3, 64, 64), array=np.full((3, 64, 64), 28.0, np.float32))
    assert kept_region(flat, np.ones((3, 64, 64), np.float32), ComponentFilter.from_json(_filter())) is None


@pytest.mark.parametrize("bad, why", [
    ([], "must be an object"),
    ({**_filter(), "features": ["colour"]}, "must name features"),
    ({**_filter(), "coef": [1.0, 2.0]}, "coef must be 1 finite numbers"),
    ({**_filter(), "mean": [float("nan")]}, "mean must be 1 finite numbers"),
    ({**_filter(), "scale": [0.0]}, "scale must be positive"),
    ({**_filter(), "intercept": "5"}, "intercept must be a finite number"),
    ({**_filter(), "threshold": 1.5}, "threshold must be a probability"),
])
def test_a_malformed_filter_is_refused_by_name(bad, why):
    with pytest.raises(ManifestFieldError, match=why):
        ComponentFilter.from_json(bad)
    assert ComponentFilter.from_json(None) is None


def _spec(component_filter):
    output = {"name": "fraction", "mask_threshold": 0.5}
    if component_filter is not None:
        output["component_filter"] = component_filter
    return ModelSpec("wml-test", "1.0.0", Task.WML, "0" * 64, Path("model.onnx"), {
        "name": "wml-test", "version": "1.0.0", "task": "wml", "modality": "CT", "sha256": "0" * 64,
        "input": {"kind": "slice2d", "normalisation": {"type": "hu_window", "center": 30.0, "scale": 20.0}},
        "output": output, "uncertainty": {"wml": {"method": "tta_range"}}})


def test_findings_volume_mask_and_interval_count_only_the_kept_components():
    vol, lesion = _head()
    counted = _counted(vol.shape, lesion)
    out = SimpleNamespace(fraction=counted, passes=(counted * 1.1, counted * 0.9))
    plain, filtered = from_output(_spec(None), vol, out), from_output(_spec(_filter()), vol, out)
    voxel_ml = vol.voxel_volume_mm3 / 1000.0
    rim_ml = 0.5 * 3 * 4 * 10 * voxel_ml
    assert plain.volume_ml == pytest.approx(float(counted.sum(dtype=np.float64)) * voxel_ml, rel=1e-6)
    assert filtered.volume_ml == pytest.approx(0.9 * lesion.sum() * voxel_ml + rim_ml, rel=1e-5)
    assert plain.mask[3, 100, 120] and not filtered.mask[3, 100, 120] and filtered.mask[3, 100, 66]
    assert filtered.interval is not None and filtered.interval.high < plain.interval.high
    assert UNFILTERED_NOTE not in filtered.warnings
    flat = tilted_volume((3, 64, 64), array=np.full((3, 64, 64), 28.0, np.float32))
    ones = np.ones((3, 64, 64), np.float32)
    unread = from_output(_spec(_filter()), flat, SimpleNamespace(fraction=ones, passes=()))
    assert UNFILTERED_NOTE in unread.warnings and unread.volume_ml == pytest.approx(ones.sum() * flat.voxel_volume_mm3
                                                                                     / 1000.0)

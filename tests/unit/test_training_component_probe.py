"""training.component_probe: each counted WML region's look and place, and what a filter of them would leave."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root holds tests/

from tests.unit import ct_heads  # noqa: E402
from tests.unit.test_measure import tilted_volume  # noqa: E402
from training.component_probe import FEATURES, component_features, components, cv, oracle  # noqa: E402
from training.gap_probe import smoothed_head  # noqa: E402

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
    assert les["background_contrast"] > 0.25 and ven["background_contrast"] > 0.6  # normal white matter about it


def _tables(rng, heads=12):
    """Component tables of ``heads`` heads of 4 mL: two lesion components of 2 mL, peaked, and four false ones of
    0.5 mL; every feature noise but the peak."""
    rows, seeds, truth = [], [], []
    for h in range(heads):
        for k in range(6):
            lesion = k < 2
            x = rng.normal(0, 1, len(FEATURES))
            x[FEATURES.index("peak_fraction")] += 3.0 if lesion else 0.0
            rows.append((x, 2.0 if lesion else 0.5, 0.9 if lesion else 0.0))
            seeds.append(h)
        truth.append(4.0)
    x, ml, on = (np.array(c) for c in zip(*rows))
    return {"features": x, "ml": ml, "on_share": on, "seed": np.array(seeds), "heads": np.arange(heads),
            "truth": np.array(truth)}


def test_the_oracle_keeps_what_lies_on_the_lesion_and_cv_finds_a_separating_feature():
    t = _tables(np.random.default_rng(0))
    assert oracle(t)["mae_ml"] == pytest.approx(0.0)  # the two lesion components of 2 mL: the truth's 4 mL
    res = cv(t)
    assert res["auc_ml_weighted"] > 0.85 and res["auc_by_feature"]["peak_fraction"] > 0.85
    assert res["by_threshold"][0.0]["mae_ml"] == pytest.approx(2.0)  # every component counted: 6 mL against 4
    assert res["by_threshold"][0.5]["mae_ml"] < 1.0
    other = cv(t, fit_on=_tables(np.random.default_rng(1)))
    assert other["auc_ml_weighted"] > 0.85

"""training.gated: the quantifier's fraction counted only inside the presence net's support region."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root holds training/

from svdmark.domain import FrameRef, Volume  # noqa: E402
from training import gated  # noqa: E402

NO_POST = dict(fraction_floor=0.0, support_threshold=0.0, support_dilate_vox=0, slab_group=1)


def _volume(shape=(6, 40, 40)):
    positions = np.array([[0.0, 0.0, 2.0 * k] for k in range(shape[0])])  # 1 x 1 x 2 mm voxels: 2 uL each
    return Volume(array=np.zeros(shape, np.float32), row_direction=(1.0, 0.0, 0.0), column_direction=(0.0, 1.0, 0.0),
                  pixel_spacing=(1.0, 1.0), positions=positions,
                  frames=tuple(FrameRef(f"2.25.{k}", "1.2.840.10008.5.1.4.1.1.2") for k in range(shape[0])),
                  frame_of_reference_uid="2.25.7", slice_thickness=2.0)


def test_q_counts_only_where_p_marks_a_region_and_p_only_says_where():
    vol = _volume()
    q = np.full(vol.shape, 0.05, np.float32)  # Q's diffuse false fraction over the whole head
    q[2:4, 10:20, 10:20] = 0.8                 # and a load: 2 x 10 x 10 voxels
    p = np.zeros(vol.shape, np.float32)
    p[2:4, 12:18, 12:18] = 0.35                # P marks the load's core faintly, nothing elsewhere
    v = gated.gated_volumes(vol, q, p, NO_POST, 1, grid=[(0.3, 3), (0.5, 3)])
    # P at or above 0.3, grown 3 voxels in-plane (4-connected: city-block distance <= 3 from P's square) and one
    # slice either side, covers the load and a rim
    y, x = np.mgrid[:40, :40]
    city_block = np.maximum(12 - y, 0) + np.maximum(y - 17, 0) + np.maximum(12 - x, 0) + np.maximum(x - 17, 0)
    region = np.zeros(vol.shape, bool)
    region[1:5] = city_block <= 3
    expected = float(np.where(region, q, 0).sum()) * 2.0 / 1000
    assert v["0.3/3"] == pytest.approx(expected, rel=1e-5)
    assert v["0.3/3"] == pytest.approx(200 * 0.8 * 2 / 1000, rel=0.3)  # about the load's own 0.32 mL, not the head's
    assert v["0.5/3"] == 0.0  # P's fractions never reach 0.5: no region, no volume, whatever Q holds
    assert float(q.sum()) * 2.0 / 1000 > 3 * v["0.3/3"]  # Q alone would have read the diffuse fraction too


def test_figures_score_both_targets():
    truth = np.array([0.0, 0.0, 0.5, 4.0, 20.0])
    pred = np.array([0.2, 0.4, 0.5, 3.0, 14.0])
    f = gated.figures(truth, pred)
    assert f["mae_ml"] == pytest.approx((0.2 + 0.4 + 0 + 1 + 6) / 5)
    assert f["mae_lt1_ml"] == pytest.approx(0.2)
    assert f["target_score"] == pytest.approx(f["mae_ml"] + 0.2 / 0.5)
    assert f["lesion_free_median_ml"] == pytest.approx(0.3)


def test_the_reported_splits_are_refused():
    with pytest.raises(SystemExit):
        gated.run("heldout", 2, None, runtime=None, q_reg=None, p_reg=None)

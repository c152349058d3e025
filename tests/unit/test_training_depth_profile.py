"""training.depth_profile: signed in-plane depth from the label edge, and the pooled darkening per depth bin."""
import numpy as np

from training.depth_profile import DEPTH_BINS, head_profile, pooled, signed_depth


def _square(step_at_edge: bool):
    """Five slices of white matter at 30 HU with a 40-pixel square lesion (1 mm pixels), 8 HU deep in its core and
    either as deep at its edge or fading from 2 HU at the edge to 8 HU at 3 mm."""
    hu = np.full((5, 80, 80), 30.0, np.float32)
    mask = np.zeros(hu.shape, bool)
    mask[:, 20:60, 20:60] = True
    depth = signed_depth(mask, (1.0, 1.0))
    drop = np.where(mask, 8.0 if step_at_edge else 2.0 + 6.0 * np.clip(depth / 3.0, 0, 1), 0.0)
    return hu - drop, mask.astype(np.float32), ~mask


def test_signed_depth_is_zero_at_the_edge_and_grows_inwards():
    mask = np.zeros((1, 9, 9), bool)
    mask[0, 2:7, 2:7] = True
    d = signed_depth(mask, (1.0, 1.0))
    assert d[0, 4, 4] == 2.5 and d[0, 2, 4] == 0.5 and d[0, 1, 4] == -0.5 and d[0, 0, 4] == -1.5


def test_a_step_and_a_graded_core_are_told_apart():
    step, graded = (head_profile(*_square(s), (1.0, 1.0), read=None) for s in (True, False))
    p_step, p_graded = pooled([{"bins": step}]), pooled([{"bins": graded}])
    edge, core = DEPTH_BINS[2][2], DEPTH_BINS[-1][2]
    assert abs(p_step[edge]["of_core"] - 1.0) < 1e-3 and abs(p_step[core]["hu_below"] - 8.0) < 1e-3
    assert p_graded[edge]["of_core"] < 0.4 and abs(p_graded[core]["hu_below"] - 8.0) < 1e-3
    assert abs(p_graded[DEPTH_BINS[1][2]]["hu_below"]) < 1e-3  # outside: normal white matter, nothing below


def test_read_share_counts_what_the_model_marks():
    hu, fr, normal = _square(True)
    read = fr > 0
    read[:, 20:22] = False  # the model misses the two outermost rows
    p = pooled([{"bins": head_profile(hu, fr, normal, (1.0, 1.0), read)}])
    assert p[DEPTH_BINS[-1][2]]["read_share"] == 1.0 and 0.5 < p[DEPTH_BINS[2][2]]["read_share"] < 1.0

"""Graded WML (``make_ncct(wml_graded=True)``, ``lesions.draw_grade``): a faint label edge, a dark core, an unlabelled
fading tail; the truth stays the seed's (the training draws: test_training_augment)."""
import numpy as np

import svdmark_phantom as ph
from svdmark_phantom.lesions import WmlModel, draw_grade


def test_graded_profile_is_faint_at_the_edge_full_in_the_core_and_fades_outside():
    m = WmlModel(head=None, contrast=8.0, grade=(0.3, 4.0, 2.0))
    sd = np.array([-10.0, -4.0, -2.0, 0.0, 2.0, 5.9, 6.1], np.float32)
    d = m.drop(sd, np.ones_like(sd))
    assert np.allclose(d[:2], 8.0) and abs(d[3] - 0.3 * 8.0) < 1e-5 and abs(d[4] - 2.4 * np.exp(-1.0)) < 1e-5
    assert d[-1] == 0.0 and d[-2] > 0.0 and np.all(np.diff(d) <= 1e-6)
    assert m.reach_mm == 6.0
    soft = WmlModel(head=None, contrast=8.0, soft_mm=1.5)
    assert abs(soft.drop(np.zeros(1, np.float32), np.ones(1))[0] - 4.0) < 1e-5 and soft.reach_mm == 3.0
    rng = np.random.default_rng(0)
    draws = np.array([draw_grade(rng) for _ in range(200)])
    assert draws[:, 0].min() >= 0.15 and draws[:, 0].max() <= 0.6 and draws[:, 1].max() <= 6.0


def test_same_truth_other_image():
    kw = dict(seed=11, matrix=128, slice_thickness=5.0, wml_ml=6.0)
    a, b = ph.make_ncct(**kw), ph.make_ncct(**kw, wml_graded=True)
    assert np.array_equal(a.aux["wml_fraction"], b.aux["wml_fraction"]) and a.truth_wml_ml == b.truth_wml_ml
    assert not np.allclose(a.image, b.image)
    assert len(b.meta["wml_grade"]) == 3 and "wml_grade" not in a.meta

"""svdmark_phantom.intensities: independent tissue intensities change the image, never the truth."""
import numpy as np
import pytest

import svdmark_phantom as ph
from svdmark_phantom.intensities import independent_ct_values, lesion_contrast, lesion_texture
from svdmark_phantom.generate import ct_values


def test_same_head_and_truth_other_intensities():
    kw = dict(seed=11, matrix=128, slice_thickness=5.0, wml_ml=6.0)
    a, b = ph.make_ncct(**kw), ph.make_ncct(**kw, independent=True)
    assert np.array_equal(a.aux["wml_fraction"], b.aux["wml_fraction"])
    assert a.truth_wml_ml == b.truth_wml_ml
    assert not np.allclose(a.image, b.image)
    assert b.meta["independent"] and "independent" not in a.meta
    with pytest.raises(ValueError, match="non-contrast"):
        ph.make_ncct(**kw, contrast=True, independent=True)


def test_draws_cover_orders_one_scanner_never_gives():
    rng = np.random.default_rng(0)
    draws = [(independent_ct_values(ct_values(rng), rng), lesion_contrast(rng)) for _ in range(400)]
    gaps = np.array([v["wm"] - v["csf"] for v, _ in draws])
    contrasts = np.array([c for _, c in draws])
    assert all(v["gm"] > v["wm"] for v, _ in draws)
    assert gaps.min() < 6 and gaps.max() > 34  # CSF from near white matter to far below it
    assert (contrasts > gaps).mean() > 0.1  # lesion cores darker than the ventricles in some heads
    assert (contrasts < 0.5 * gaps).mean() > 0.3


def test_texture_is_positive_and_bounded():
    t = lesion_texture(np.random.default_rng(1), (4, 64, 64), 1.0)
    assert t.min() >= 0.3 and t.max() <= 1.8 and abs(float(t.mean()) - 1.0) < 0.15

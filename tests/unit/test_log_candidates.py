"""The CMB candidate stage filters only the head's box plus the filters' reach, with the whole array's result."""
from __future__ import annotations

import numpy as np
import pytest

from svdmark.infer.preprocess import _log_candidates, log_candidates

SIGMAS = (0.8, 1.2, 1.7, 2.4, 3.2)


def _head_in_a_wide_field(seed: int, shape=(30, 120, 140), spacing=(1.4, 0.5, 0.5)):
    """Noisy tissue in an off-centre ellipsoid (the mask) with dark foci, in air; the ellipsoid touches the first
    slice, as a slab that cuts through the head does."""
    rng = np.random.default_rng(seed)
    k, i, j = np.meshgrid(*(np.arange(n, dtype=float) for n in shape), indexing="ij")
    inside = ((k - 8) / 25) ** 2 + ((i - 55) / 40) ** 2 + ((j - 60) / 45) ** 2 <= 1.0
    img = np.where(inside, 1.0, 0.02).astype(np.float32) + rng.normal(0, 0.08, shape).astype(np.float32)
    for _ in range(25):
        c = np.argwhere(inside)[rng.integers(inside.sum())]
        r = rng.uniform(1.0, 3.0)
        d2 = ((k - c[0]) * spacing[0]) ** 2 + ((i - c[1]) * spacing[1]) ** 2 + ((j - c[2]) * spacing[2]) ** 2
        img[d2 <= r * r] *= 0.1
    return img, inside, spacing


@pytest.mark.parametrize("seed", [0, 1])
def test_the_candidates_are_those_of_the_whole_array(seed):
    img, mask, spacing = _head_in_a_wide_field(seed)
    fp = tuple(max(1, int(round(2.0 / sp))) * 2 + 1 for sp in spacing)
    whole = _log_candidates(img, spacing, SIGMAS, 0.15, mask, 2000, fp)
    boxed = log_candidates(img, spacing, SIGMAS, 0.15, mask, 2000, 2.0)
    assert len(whole[0]) > 20
    for a, b in zip(whole, boxed):
        np.testing.assert_array_equal(a, b)


def test_an_empty_mask_gives_no_candidates():
    img, mask, spacing = _head_in_a_wide_field(0)
    cents, resp, sig = log_candidates(img, spacing, SIGMAS, 0.15, np.zeros_like(mask), 2000, 2.0)
    assert cents.shape == (0, 3) and resp.size == 0 and sig.size == 0

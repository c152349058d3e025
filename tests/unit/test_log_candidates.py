"""The CMB candidate stage filters only the head's box plus the filters' reach, with the whole array's result; its
scales, its head mask and its patches on any number of threads give the one-thread result."""
from __future__ import annotations

import numpy as np
import pytest

from svdmark.infer.preprocess import _log_candidates, log_candidates

SIGMAS = (0.8, 1.2, 1.7, 2.4, 3.2)


def _head_in_a_wide_field(seed: int, centre, shape=(50, 180, 200), spacing=(1.4, 0.5, 0.5)):
    """Noisy tissue (an ellipsoid) with dark foci, in air; the mask is a smaller ellipsoid inside it (10 slices and
    45 x 50 pixels in semi-axes), with foci at and around its six poles, where the filters reach out of the mask's
    box into tissue. They reach 12 slices and 32 pixels for the largest scale, so a head centred in this field
    leaves room beyond that reach on every side, and one centred at slice 6 is cut by the first slice."""
    rng = np.random.default_rng(seed)
    k, i, j = np.meshgrid(*(np.arange(n, dtype=float) for n in shape), indexing="ij")

    def ellipsoid(a, b, c):
        return ((k - centre[0]) / a) ** 2 + ((i - centre[1]) / b) ** 2 + ((j - centre[2]) / c) ** 2 <= 1.0

    tissue, mask = ellipsoid(16, 70, 75), ellipsoid(10, 45, 50)
    img = np.where(tissue, 1.0, 0.02).astype(np.float32) + rng.normal(0, 0.08, shape).astype(np.float32)
    poles = [np.add(centre, d) for d in ((10, 0, 0), (-10, 0, 0), (0, 45, 0), (0, -45, 0), (0, 0, 50), (0, 0, -50))]
    foci = [p + rng.integers(-2, 3, 3) * (1, 4, 4) for p in poles for _ in range(3)]
    foci += list(np.argwhere(mask)[rng.integers(mask.sum(), size=30)])
    for c in foci:
        r = rng.uniform(1.0, 3.0)
        d2 = ((k - c[0]) * spacing[0]) ** 2 + ((i - c[1]) * spacing[1]) ** 2 + ((j - c[2]) * spacing[2]) ** 2
        img[(d2 <= r * r) & tissue] *= 0.1
    return img, mask, spacing


@pytest.mark.parametrize("seed,centre", [(0, (25, 90, 100)), (1, (25, 80, 110)), (2, (6, 90, 100))])
def test_the_candidates_are_those_of_the_whole_array(seed, centre):
    img, mask, spacing = _head_in_a_wide_field(seed, centre)
    fp = tuple(max(1, int(round(2.0 / sp))) * 2 + 1 for sp in spacing)
    whole = _log_candidates(img, spacing, SIGMAS, 0.15, mask, 2000, fp)
    boxed = log_candidates(img, spacing, SIGMAS, 0.15, mask, 2000, 2.0)
    assert len(whole[0]) > 25
    for a, b in zip(whole, boxed):
        np.testing.assert_array_equal(a, b)


def test_an_empty_mask_gives_no_candidates():
    img, mask, spacing = _head_in_a_wide_field(0, (25, 90, 100))
    cents, resp, sig = log_candidates(img, spacing, SIGMAS, 0.15, np.zeros_like(mask), 2000, 2.0)
    assert cents.shape == (0, 3) and resp.size == 0 and sig.size == 0


def test_a_one_voxel_mask_gets_the_same_response_and_sub_voxel_centre():
    """The tightest case: the only candidate sits on the box's centre voxel, on a focus the largest scale fits best.
    Its response reaches that kernel's full radius, its peak test and sub-voxel fit further, through noise that
    differs everywhere (a reach one voxel short of the kernel radius plus half the peak footprint fails here)."""
    shape, spacing, c = (50, 180, 200), (1.4, 0.5, 0.5), (25, 90, 100)
    rng = np.random.default_rng(3)
    img = rng.normal(1.0, 0.3, shape).astype(np.float32)
    k, i, j = np.meshgrid(*(np.arange(n, dtype=float) for n in shape), indexing="ij")
    img[((k - c[0]) * 1.4) ** 2 + ((i - c[1] - 0.3) * 0.5) ** 2 + ((j - c[2]) * 0.5) ** 2 <= 5.5 ** 2] = 0.05
    mask = np.zeros(shape, bool)
    mask[c] = True
    fp = tuple(max(1, int(round(2.0 / sp))) * 2 + 1 for sp in spacing)
    whole = _log_candidates(img, spacing, SIGMAS, 0.15, mask, 10, fp)
    boxed = log_candidates(img, spacing, SIGMAS, 0.15, mask, 10, 2.0)
    assert len(whole[0]) == 1
    for a, b in zip(whole, boxed):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("threads", [2, 3, 8])
def test_the_candidates_do_not_depend_on_the_number_of_threads(threads):
    """The scales are filtered in parallel but combined in scale order: the result is the one-thread result, bit for
    bit (the maximum over scales keeps the first of equal responses, so the order matters)."""
    img, mask, spacing = _head_in_a_wide_field(1, (25, 80, 110))
    one = log_candidates(img, spacing, SIGMAS, 0.15, mask, 2000, 2.0, threads=1)
    many = log_candidates(img, spacing, SIGMAS, 0.15, mask, 2000, 2.0, threads=threads)
    assert len(one[0]) > 25
    for a, b in zip(one, many):
        np.testing.assert_array_equal(a, b)


def test_equal_responses_keep_the_first_scale_whatever_order_the_threads_finish_in(monkeypatch):
    """A scale's response replaces the running maximum only where it is larger, so of equal responses the first scale
    is kept; here every scale responds 1 everywhere and the first scales finish last, so a combination in order of
    completion would keep the last scale."""
    import time

    from svdmark.infer import preprocess

    spacing = (1.0, 1.0, 1.0)
    img = np.ones((6, 8, 8), np.float32)

    def equal_and_late_first(a, sigma, **kw):
        s = float(sigma[0]) * spacing[0]
        time.sleep(0.05 * (SIGMAS.index(round(s, 1)) < 2))  # the first two scales finish last
        return np.full(a.shape, 1.0 / (s * s), np.float32)  # x s^2: a response of 1 at every scale

    monkeypatch.setattr(preprocess.ndi, "gaussian_laplace", equal_and_late_first)
    for threads in (1, 3, 5):
        cents, resp, sig = _log_candidates(img, spacing, SIGMAS, 0.15, None, 50, (1, 1, 1), threads=threads)
        assert len(sig) == 50 and np.all(sig == np.float32(SIGMAS[0])) and np.allclose(resp, 1.0)


def test_the_head_mask_and_the_patches_do_not_depend_on_the_number_of_threads():
    """The per-slice hole filling and the patch channels run on threads; the results are the one-thread results."""
    from svdmark.infer.preprocess import cmb_patches, head_mask
    from svdmark_phantom import as_volume, make_swi

    vol = as_volume(make_swi(seed=3, matrix=96, n_cmb=8))
    ref = float(np.median(vol.array[vol.array > 0]))
    one = head_mask(vol.array, ref, 0.35, erode_mm=1.0, spacing=(2.0, 2.0, 2.0), threads=1)
    assert one.any() and not one.all()
    np.testing.assert_array_equal(one, head_mask(vol.array, ref, 0.35, erode_mm=1.0, spacing=(2.0, 2.0, 2.0),
                                                 threads=3))
    cents = np.argwhere(one)[:: max(1, int(one.sum()) // 20)][:20].astype(float) + 0.3
    spec = {"patch": [12, 12, 12], "channel_spacing_mm": [1.0, 2.0]}
    norm = vol.array.astype(np.float32) / ref
    a = cmb_patches(norm, vol, cents, spec, threads=1)
    assert a.shape == (len(cents), 2, 12, 12, 12) and np.ptp(a) > 0
    np.testing.assert_array_equal(a, cmb_patches(norm, vol, cents, spec, threads=2))

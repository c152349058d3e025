"""``masks.largest_object``: the largest face-connected object, the first label of equal sizes, None if
empty; the same as sizing every label with ``ndimage.sum_labels`` (what it replaced for speed)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from svdmark.masks import largest_object


def _reference(mask: np.ndarray) -> np.ndarray | None:
    lab, n = ndi.label(mask)
    if n == 0:
        return None
    sizes = ndi.sum_labels(mask, lab, index=np.arange(1, n + 1))
    return lab == int(np.argmax(sizes)) + 1


@pytest.mark.parametrize("seed,density", [(0, 0.3), (1, 0.5), (2, 0.05)])
def test_it_is_the_reference_on_random_masks(seed, density):
    mask = np.random.default_rng(seed).random((12, 40, 50)) < density
    got = largest_object(mask)
    assert got is not None and got.any()
    np.testing.assert_array_equal(got, _reference(mask))


def test_the_first_of_equal_objects_and_an_empty_mask():
    mask = np.zeros((3, 10, 10), bool)
    assert largest_object(mask) is None
    mask[1, 1:3, 1:3] = True  # label 1, four voxels
    mask[1, 6:8, 6:8] = True  # label 2, four voxels
    got = largest_object(mask)
    assert got.sum() == 4 and got[1, 1, 1] and not got[1, 6, 6]
    mask[1, 6:9, 6:8] = True  # label 2 grows to six
    assert largest_object(mask)[1, 6, 6]


def test_a_non_boolean_mask_is_read_as_boolean():
    mask = np.zeros((2, 8, 8), np.uint8)
    mask[0, :3, :3] = 7
    mask[1, 5:, 5:] = 1
    np.testing.assert_array_equal(largest_object(mask), _reference(mask.astype(bool)))

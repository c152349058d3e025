"""training.lesion_patterns: scattered foci and periventricular halos stay in white matter, halos follow the CSF."""
import numpy as np
import pytest
from scipy import ndimage

from training.augment import HU_SCALE
from training.lesion_insertion import CONTRAST_HU
from training.lesion_patterns import (STYLES, csf_mask, halo_occupancy, insert_patterns, scatter_occupancy,
                                     ventricles)

WM_HU, CSF_HU = 28.0, 8.0  # normalised below as (HU - 30) / HU_SCALE


def _ventricle_crop(c=3, n=96, radius=14):
    """White matter everywhere except a CSF disk (a ventricle) in the middle and a grey-matter strip on the left."""
    yy, xx = np.mgrid[:n, :n]
    disk = (yy - n / 2) ** 2 + (xx - n / 2) ** 2 < radius ** 2
    wm = np.ones((c, n, n), np.float32)
    wm[:, disk] = 0.0
    wm[:, :, :8] = 0.0
    a = np.full((c, n, n), (WM_HU - 30) / HU_SCALE, np.float32)
    a[:, disk] = (CSF_HU - 30) / HU_SCALE
    a[:, :, :8] = (40 - 30) / HU_SCALE  # grey matter: brighter than white matter, not CSF
    return a, np.zeros_like(a), wm, disk


def test_csf_mask_finds_the_ventricle_not_grey_matter():
    a, _, wm, disk = _ventricle_crop()
    m = csf_mask(a[1], wm[1])
    assert m[disk].mean() > 0.95 and not m[:, :8].any()
    assert csf_mask(a[1], np.zeros_like(wm[1])) is None  # no white matter: no level to judge CSF by


@pytest.mark.parametrize("style", sorted(STYLES))
@pytest.mark.parametrize("seed", range(8))
def test_halo_lies_along_the_ventricle_wall(seed, style):
    a, _, wm, disk = _ventricle_crop()
    occ = halo_occupancy(a, wm, np.random.default_rng(seed), STYLES[style])
    dist = ndimage.distance_transform_edt(~disk)
    assert occ[:, disk].max() == 0  # never inside the CSF
    assert occ[1][(dist > 0) & (dist <= 1)].mean() > 0.2  # the wall itself is lined (thickness varies along it)
    assert occ[1][dist > STYLES[style].halo_mm[1] * 1.8 + 1].max() == 0  # nothing far from the ventricle


@pytest.mark.parametrize("slice_mm", [1.0, 5.0])
def test_scatter_covers_a_bounded_share_with_partial_volume(slice_mm):
    rng = np.random.default_rng(3)
    covers = [(scatter_occupancy((3, 96, 96), slice_mm, rng) > 0.5).mean() for _ in range(20)]
    assert 0.0 < min(covers) and max(covers) < 0.6
    occ = scatter_occupancy((3, 96, 96), slice_mm, np.random.default_rng(4))
    assert ((occ > 0.05) & (occ < 0.95)).any()  # soft edges and thin foci read partly


@pytest.mark.parametrize("style", sorted(STYLES))
@pytest.mark.parametrize("seed", range(10))
def test_label_and_darkening_stay_in_white_matter(seed, style):
    a, les, wm, disk = _ventricle_crop()
    a2, l2 = insert_patterns(a, les, wm, 5.0, np.random.default_rng(seed), style=style)
    drop = (a - a2) * HU_SCALE
    assert l2.max() > 0.5
    assert l2[:, disk].max() == 0 and np.all(drop[:, disk] == 0)
    assert l2[:, :, :8].max() == 0 and np.all(drop[:, :, :8] == 0)
    assert drop.min() >= 0 and drop.max() <= CONTRAST_HU[1] * 1.3 + 1e-3  # only darkens, depth field up to 1.3
    assert np.all((l2 > 0.01) <= (drop > 0))  # every labelled voxel is darker


def test_no_white_matter_changes_nothing_and_old_lesion_is_not_darkened_again():
    a, les, wm, _ = _ventricle_crop()
    none = np.zeros_like(wm)
    a2, l2 = insert_patterns(a, les, none, 5.0, np.random.default_rng(0))
    assert a2 is a and l2 is les
    les[:] = 1.0
    a3, l3 = insert_patterns(a, les, wm, 5.0, np.random.default_rng(0))
    assert np.all(l3 == 1.0) and np.allclose(a3, a)


def test_visible_patterns_are_never_fainter_than_eight_hu_where_fully_labelled():
    a, les, wm, _ = _ventricle_crop()
    for seed in range(10):
        a2, l2 = insert_patterns(a, les, wm, 5.0, np.random.default_rng(seed), style="visible")
        full = l2 > 0.999
        assert ((a - a2) * HU_SCALE)[full].min() >= 8.0 - 1e-3


def test_deep_halos_follow_ventricles_not_sulci():
    a, les, wm, disk = _ventricle_crop()
    sulcus = np.zeros_like(disk)
    sulcus[10:70, 8:11] = True  # CSF in the cleft between the grey-matter strip and white matter
    wm[:, sulcus] = 0.0
    wm[:, 10:70, 11:13] = 0.3  # partial white matter at the sulcus' far side: cortex lines it
    a[:, sulcus] = (CSF_HU - 30) / HU_SCALE
    m = csf_mask(a[1], wm[1])
    assert m[sulcus].mean() > 0.9  # as CSF, a sulcus looks like a ventricle
    v = ventricles(m, wm[1])
    assert v[disk].mean() > 0.95 and not v[sulcus].any()
    occ = halo_occupancy(a, wm, np.random.default_rng(0), STYLES["deep"])
    near_sulcus = ndimage.distance_transform_edt(~sulcus) <= 2
    near_disk = ndimage.distance_transform_edt(~disk) <= 25
    assert occ[:, near_sulcus & ~near_disk].max() == 0 and occ.max() > 0.5


def test_deep_foci_keep_off_the_white_matter_border():
    a, les, wm, _ = _ventricle_crop(radius=0)  # no ventricle: scatter only; grey matter in columns 0-7
    labelled = 0.0
    for seed in range(8):
        _, l2 = insert_patterns(a, les, wm, 2.0, np.random.default_rng(seed), style="deep")
        assert l2[:, :, :9].max() == 0  # column 8 borders grey matter
        labelled += l2.sum()
    assert labelled > 100

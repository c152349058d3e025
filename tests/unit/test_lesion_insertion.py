"""training.lesion_insertion: lesions pasted into white matter, label and darkening consistent."""
import numpy as np
import pytest

from training.augment import HU_SCALE
from training.lesion_insertion import CONTRAST_HU, insert_lesions


def _crop(wm_left=1.0, wm_right=1.0, c=3, n=96):
    a = np.zeros((c, n, n), np.float32)
    les = np.zeros((c, n, n), np.float32)
    wm = np.empty((c, n, n), np.float32)
    wm[:, :, : n // 2] = wm_left
    wm[:, :, n // 2:] = wm_right
    return a, les, wm


@pytest.mark.parametrize("seed", range(12))
def test_label_and_darkening_stay_in_white_matter(seed):
    a, les, wm = _crop(wm_left=0.0)
    a2, l2 = insert_lesions(a, les, wm, 2.5, np.random.default_rng(seed))
    assert l2[:, :, :48].max() == 0 and np.all(a2[:, :, :48] == 0)  # no white matter: untouched
    assert l2.max() > 0.5  # something was pasted into the white matter
    assert np.all(a2 <= 0)  # lesions only darken
    drop = -a2 * HU_SCALE  # overlapping lesions darken as their union: never beyond one lesion's contrast
    assert drop.max() <= CONTRAST_HU[1] + 1e-4
    core = l2 > 0.999  # inside a lesion's label the soft edge has reached at least 5/8 of its contrast
    assert drop[core].min() >= 0.625 * CONTRAST_HU[0] - 1e-4
    assert np.all((l2 > 0) <= (a2 < 0))  # every labelled voxel is darker


def test_no_white_matter_in_the_centre_channel_changes_nothing():
    a, les, wm = _crop()
    wm[1] = 0.0
    a2, l2 = insert_lesions(a, les, wm, 5.0, np.random.default_rng(0))
    assert a2 is a and l2 is les


def test_existing_lesion_keeps_its_label_and_is_not_darkened_again():
    a, les, wm = _crop()
    les[:] = 1.0
    a[:] = -0.3
    a2, l2 = insert_lesions(a, les, wm, 2.5, np.random.default_rng(1))
    assert np.all(l2 == 1.0) and np.all(a2 == a)


def test_thick_slices_give_partial_labels_off_the_centre():
    """A lesion seen through 5 mm slices: neighbours carry less of it than the centre channel on average."""
    tot = np.zeros(3)
    for seed in range(20):
        a, les, wm = _crop()
        _, l2 = insert_lesions(a, les, wm, 5.0, np.random.default_rng(seed))
        tot += l2.sum(axis=(1, 2))
    assert tot[1] > tot[0] and tot[1] > tot[2]


def test_sample_batch_pastes_lesions_only_where_asked():
    pytest.importorskip("torch")  # train_wml needs it; the CI environment runs without the train extra
    from training import train_wml

    rng = np.random.default_rng(0)
    img = (rng.normal(0, 0.1, (5, 64, 64)) - 0.2).astype(np.float16)
    tgt = np.zeros((5, 64, 64), np.float16)
    wm = np.ones((5, 64, 64), np.float16)
    index = [(0, k) for k in range(5)]
    x0, y0, _ = train_wml.sample_batch([img], [tgt], index, [], np.random.default_rng(1), 8, crop=64)
    assert float(y0.sum()) == 0
    x1, y1, _ = train_wml.sample_batch([img], [tgt], index, [], np.random.default_rng(1), 8, crop=64, insert=1.0,
                                    wms=[wm], spacings=[2.5])
    assert float(y1.sum()) > 0
    x2, y2, _ = train_wml.sample_batch([img], [tgt], index, [], np.random.default_rng(1), 8, crop=64, insert=1.0,
                                    wms=[None], spacings=[2.5])
    assert float(y2.sum()) == 0 and np.array_equal(x2.numpy(), x0.numpy())  # no map: the old stream exactly


def test_sample_batch_without_insertion_draws_the_old_stream_with_maps_given():
    pytest.importorskip("torch")  # train_wml needs it; the CI environment runs without the train extra
    from training import train_wml

    rng = np.random.default_rng(0)
    img = (rng.normal(0, 0.1, (5, 64, 64)) - 0.2).astype(np.float16)
    tgt = np.zeros((5, 64, 64), np.float16)
    tgt[2, 20:30, 20:30] = 1
    index = [(0, k) for k in range(5)]
    kw = dict(crop=64, randomise=0.5, contrasts=[6.0], min_contrast_hu=4.0)
    x0, y0, _ = train_wml.sample_batch([img], [tgt], index, [2], np.random.default_rng(3), 8, **kw)
    x1, y1, _ = train_wml.sample_batch([img], [tgt], index, [2], np.random.default_rng(3), 8, insert=0.0,
                                    wms=[np.ones_like(img)], spacings=[2.5], **kw)
    assert np.array_equal(x0.numpy(), x1.numpy()) and np.array_equal(y0.numpy(), y1.numpy())


def test_a_cached_case_gains_its_white_matter_map_only_if_the_generator_still_draws_it(tmp_path, monkeypatch):
    from training import data

    monkeypatch.setattr(data, "CACHE", tmp_path)
    params = dict(seed=11, matrix=64, slice_thickness=5.0, tilt_deg=0.0, wml_ml=2.0, mimics=False)
    first = data.ncct_case(11, params)
    assert first.wm_fraction is None  # not asked for: not loaded
    (path,) = tmp_path.glob("ncct_*.npz")
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files if k != "wm"}
    np.savez(path, **arrays)  # as cached before the map was stored
    case = data.ncct_case(11, params, with_wm=True)
    assert case.wm_fraction is not None and case.wm_fraction.shape == case.volume.array.shape
    assert np.array_equal(case.volume.array, first.volume.array)
    arrays["image"] = arrays["image"] + 1.0  # a cache from another generator
    np.savez(path, **arrays)
    with pytest.raises(RuntimeError, match="no longer draws"):
        data.ncct_case(11, params, with_wm=True)


@pytest.mark.parametrize("own", [3.0, 8.0])
def test_pasted_lesions_at_the_heads_own_contrast_are_no_darker_than_it(own):
    for seed in range(8):
        a, les, wm = _crop()
        a2, l2 = insert_lesions(a, les, wm, 2.5, np.random.default_rng(seed), own_contrast_hu=own,
                                max_diameter_mm=12.0)
        drop = -a2 * HU_SCALE
        assert drop.max() <= max(own, CONTRAST_HU[0]) + 1e-4
        core = l2 > 0.999
        if core.any():
            assert drop[core].min() >= 0.625 * min(0.6 * own, CONTRAST_HU[0]) - 1e-4
        assert (l2 > 0).sum(axis=(1, 2)).max() <= np.pi * (6 + 2) ** 2 * 4  # at most 4 lesions of <= 12 mm

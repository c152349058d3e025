"""The unlabelled CT augmentations of training/augment.py keep their promises: sub-threshold darkening stays
below half the lesion contrast and away from the lesion; the skull glow brightens tissue next to bone only."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root holds training/

from training import augment  # noqa: E402


def _slab(seed=0):
    """Three 96² slices: white matter at 28 HU, a 12 px square lesion 6 HU darker, a bone ring at the edge."""
    rng = np.random.default_rng(seed)
    hu = np.full((3, 96, 96), 28.0, np.float32) + rng.normal(0, 0.5, (3, 96, 96)).astype(np.float32)
    lesion = np.zeros((3, 96, 96), np.float32)
    lesion[:, 40:52, 40:52] = 1.0
    hu -= 6.0 * lesion
    yy, xx = np.mgrid[0:96, 0:96]
    ring = np.hypot(yy - 48, xx - 48) > 44
    hu[:, ring] = 110.0
    return hu, lesion, ring


def test_subthreshold_darkening_is_bounded_unlabelled_and_present():
    hu, lesion, ring = _slab()
    seen = 0.0
    for seed in range(40):
        out = augment.subthreshold_hypodensity(hu, np.random.default_rng(seed), lesion, 6.0)
        drop = hu - out
        assert drop.min() >= 0.0
        assert drop.max() <= 0.35 * 6.0 + 1e-4  # below the labelled edge (half the contrast), even after a HU map
        near = np.zeros_like(lesion, bool)
        near[:, 38:54, 38:54] = True  # the lesion and its 2 px margin
        assert np.all(drop[near] == 0.0)
        top = augment.subthreshold_hypodensity(hu, np.random.default_rng(seed), lesion * [[[0]], [[1]], [[0]]], 6.0)
        assert np.all((hu - top)[:, 38:54, 38:54] == 0.0)  # nor on the slices just above and below a lesion
        assert np.all(drop[:, ring] == 0.0)  # soft tissue only
        seen = max(seen, float(drop.max()))
    assert seen > 1.0  # it does darken something, in some draws


def test_subthreshold_darkening_without_lesion_uses_patches():
    hu, _, _ = _slab()
    drops = [float((hu - augment.subthreshold_hypodensity(hu, np.random.default_rng(s), None, 8.0)).max())
             for s in range(20)]
    assert max(drops) > 1.5 and max(drops) <= 0.35 * 8.0 + 1e-4


def test_skull_glow_brightens_next_to_bone_and_fades():
    hu, _, ring = _slab()
    out = augment.skull_glow(hu, np.random.default_rng(3), np.broadcast_to(ring, hu.shape))
    gain = out - hu
    assert np.all(gain[:, ring] == 0.0)
    yy, xx = np.mgrid[0:96, 0:96]
    r = np.hypot(yy - 48, xx - 48)
    edge, centre = gain[:, (r > 40) & (r <= 43)].mean(), gain[:, r < 10].mean()
    assert edge > 0.5 and edge > 4 * centre
    flat = np.full((1, 64, 64), 28.0, np.float32)  # no bone in the crop: nothing to do
    assert np.array_equal(augment.skull_glow(flat, np.random.default_rng(3), flat > 100), flat)


def test_randomise_ct_scales_the_darkening_by_the_case_contrast_and_finds_bone_before_the_hu_map(monkeypatch):
    hu, lesion, ring = _slab()
    a = augment._norm(hu)
    seen, bones = [], []
    real_sub, real_glow = augment.subthreshold_hypodensity, augment.skull_glow
    monkeypatch.setattr(augment, "subthreshold_hypodensity",
                        lambda h, r, les, c: seen.append(c) or real_sub(h, r, les, c))
    monkeypatch.setattr(augment, "skull_glow", lambda h, r, b: bones.append(b) or real_glow(h, r, b))
    for seed in range(30):
        out = augment.randomise_ct(a, np.random.default_rng(seed), lesion=lesion, contrast_hu=6.0)
        assert out.shape == a.shape and np.isfinite(out).all()
    # the case's 6 HU, or 6 HU plus the lesion contrast change of -1.5 ... +3 HU
    assert seen and all(4.5 - 1e-6 <= c <= 9.0 + 1e-6 for c in seen) and 6.0 in seen
    assert bones and all(np.array_equal(b, np.broadcast_to(ring, a.shape)) for b in bones)
    seen.clear()
    for seed in range(30):  # contrast unknown: no sub-threshold darkening is drawn
        augment.randomise_ct(a, np.random.default_rng(seed), lesion=lesion)
    assert not seen


def test_point_spread_blurs_edges_anisotropically_sharpens_or_leaves_alone():
    from training.augment import point_spread

    hu = np.zeros((3, 40, 40), np.float32)
    hu[:, :, 20:] = 30.0  # an edge across columns
    hu[:, 20:, :] += 10.0  # and one across rows
    kinds = {"blur": 0, "sharpen": 0, "none": 0}
    spreads = []
    for seed in range(60):
        out = point_spread(hu, np.random.default_rng(seed))
        assert out.shape == hu.shape
        if np.array_equal(out, hu):
            kinds["none"] += 1
        elif out.max() > hu.max() + 1e-3:  # overshoot: unsharp mask
            kinds["sharpen"] += 1
        else:
            kinds["blur"] += 1
            # width of each edge: how far from it the value moved by more than 1 % of the step
            across_cols = int((np.abs(out[1, 5] - hu[1, 5]) > 0.3).sum())
            across_rows = int((np.abs(out[1, :, 5] - hu[1, :, 5]) > 0.1).sum())
            spreads.append((across_cols, across_rows))
    assert kinds["blur"] > kinds["sharpen"] > 0 and kinds["none"] > 0
    assert max(c for c, _ in spreads) >= 6  # sigma up to 1.6 px: the edge reaches 3 px or more each side
    assert any(c != r for c, r in spreads)  # per-axis sigma
    assert np.array_equal(point_spread(hu, np.random.default_rng(0), strength=0.0), hu)


def test_the_active_recipe_blurs_with_kernel_blur_and_the_experiment_with_point_spread(monkeypatch):
    """``randomise_ct`` calls ``kernel_blur`` (wml-ncct 1.5.0's recipe) unless asked for ``point_spread``."""
    calls = []
    for name in ("kernel_blur", "point_spread"):
        monkeypatch.setattr(augment, name, lambda hu, rng, s, _n=name: calls.append(_n) or hu)
    hu, lesion, _ = _slab()
    a = augment._norm(hu)
    augment.randomise_ct(a, np.random.default_rng(0), lesion=lesion)
    augment.randomise_ct(a, np.random.default_rng(0), lesion=lesion, wide_point_spread=True)
    assert calls == ["kernel_blur", "point_spread"]


def test_ncct_atrophy_is_drawn_on_atlas_training_seeds_only_and_only_when_asked(monkeypatch):
    from training import data

    atlas = data.seeds("train_atlas", 40) + data.seeds("val_atlas", 10)
    others = data.seeds("train", 10) + data.seeds("heldout", 10) + data.seeds("shifted", 10)
    monkeypatch.setattr(data, "NCCT_ATROPHY_SHARE", 0.0)
    assert not any("atrophy" in data.ncct_params(s) for s in atlas + others)  # the cache names stay as they were
    plain = {s: data.ncct_params(s) for s in atlas}
    monkeypatch.setattr(data, "NCCT_ATROPHY_SHARE", 0.75)
    aged = [s for s in atlas if "atrophy" in data.ncct_params(s)]
    assert 0.5 * len(atlas) < len(aged) < len(atlas)
    assert all(0.1 <= data.ncct_params(s)["atrophy"] <= 1.0 for s in aged)
    # the other draws of a seed do not move, and the reported splits never get atrophy
    assert all({k: v for k, v in data.ncct_params(s).items() if k != "atrophy"} == plain[s] for s in atlas)
    assert not any("atrophy" in data.ncct_params(s) for s in others)
    monkeypatch.setenv("SVDMARK_TRAIN_ATROPHY_NCCT", "0.75")
    assert data.training_environment()["SVDMARK_TRAIN_ATROPHY_NCCT"] == "0.75"


def test_the_lesion_contrast_floor_darkens_only_faint_labelled_lesions():
    """``lesion_contrast_floor`` deepens a 3 HU lesion to 5 HU in proportion to its fraction; stronger lesions,
    lesion-free tissue and crops of unknown contrast are left alone."""
    hu, lesion, _ = _slab()
    lesion[:, 40:52, 52] = 0.5  # a partial-volume edge column
    faint = hu + 3.0 * lesion  # the slab's lesion is 6 HU darker: now 3 HU
    a = augment._norm(faint)
    out, c = augment.lesion_contrast_floor(a, lesion, 3.0, 5.0)
    drop = augment._hu(a) - augment._hu(out)
    assert c == 5.0
    assert np.allclose(drop[lesion == 1.0], 2.0, atol=1e-3) and np.allclose(drop[lesion == 0.5], 1.0, atol=1e-3)
    assert np.abs(drop[lesion == 0]).max() < 1e-4
    for contrast, floor in ((6.0, 5.0), (None, 5.0), (3.0, None)):
        same, c2 = augment.lesion_contrast_floor(a, lesion, contrast, floor)
        assert same is a and c2 == contrast


def _only_contrast_changes(monkeypatch):
    """randomise_ct with every term but the lesion contrast change switched off."""
    for name in ("kernel_blur", "normal_variation", "skull_glow"):
        monkeypatch.setattr(augment, name, lambda hu, rng, *a, **k: hu)
    monkeypatch.setattr(augment, "monotone_hu_map", lambda rng: (lambda x: x))
    monkeypatch.setattr(augment, "subthreshold_hypodensity", lambda hu, *a, **k: hu)
    monkeypatch.setattr(augment, "noise_field", lambda rng, shape, sd: np.zeros(shape, np.float32))
    monkeypatch.setattr(augment, "smooth_field", lambda rng, shape, amp: np.zeros(shape, np.float32))
    monkeypatch.setattr(augment, "streaks", lambda rng, shape, amp: np.zeros(shape, np.float32))


def test_randomise_ct_never_takes_a_floored_lesion_below_the_floor(monkeypatch):
    """With ``min_contrast_hu`` the random contrast change (−1.5 … +3 HU) stops at the floor; without, it does not."""
    _only_contrast_changes(monkeypatch)
    hu, lesion, ring = _slab()
    hu = hu + 1.0 * lesion  # a 5 HU lesion
    a = augment._norm(hu)
    centre = (slice(None), slice(43, 49), slice(43, 49))
    tissue = ~ring & (lesion == 0)

    def contrast(out):
        h = augment._hu(out)
        return float(h[tissue].mean() - h[centre].mean())

    floored = [contrast(augment.randomise_ct(a, np.random.default_rng(s), lesion=lesion, contrast_hu=5.0,
                                             min_contrast_hu=5.0)) for s in range(30)]
    free = [contrast(augment.randomise_ct(a, np.random.default_rng(s), lesion=lesion, contrast_hu=5.0))
            for s in range(30)]
    assert min(floored) > 5.0 - 0.3
    assert min(free) < 4.5  # some draws made it fainter
    assert max(floored) > 6.0  # and more conspicuous draws still happen


def test_dense_lesions_darken_some_lesions_by_another_3_to_8_hu(monkeypatch):
    _only_contrast_changes(monkeypatch)
    hu, lesion, ring = _slab()  # a 6 HU lesion
    a = augment._norm(hu)
    centre = (1, slice(43, 49), slice(43, 49))
    tissue = ~ring & (lesion == 0)

    def contrast(out):
        h = augment._hu(out)
        return float(h[tissue].mean() - h[centre].mean())

    plain = [contrast(augment.randomise_ct(a, np.random.default_rng(s), lesion=lesion, contrast_hu=6.0))
             for s in range(40)]
    dense = [contrast(augment.randomise_ct(a, np.random.default_rng(s), lesion=lesion, contrast_hu=6.0,
                                           dense_lesions=1.0)) for s in range(40)]
    assert max(plain) < 10.5 and max(dense) > 13.0  # 6 + 3 HU (+ 8 when dense), give or take the noise
    assert sum(d > p + 2.9 for d, p in zip(dense, plain)) >= 10  # the changed draws moved by 3 HU or more


@pytest.mark.parametrize("share, key", [("WML_SPREAD_SHARE", "wml_spread"), ("WML_GRADED_SHARE", "wml_graded")])
def test_lesion_draw_is_made_on_training_and_validation_seeds_with_lesion_only_and_only_when_asked(monkeypatch, share,
                                                                                                  key):
    from training import data

    ours = data.seeds("train", 40) + data.seeds("train_atlas", 20) + data.seeds("val", 10) + data.seeds("val_atlas", 10)
    reported = data.seeds("heldout", 20) + data.seeds("shifted", 20) + data.seeds("val_thin", 10)
    assert not any(key in data.ncct_params(s) for s in ours + reported)
    plain = {s: data.ncct_params(s) for s in ours}
    monkeypatch.setattr(data, share, 0.5)
    drawn = [s for s in ours if key in data.ncct_params(s)]
    assert 0.2 * len(ours) < len(drawn) < 0.7 * len(ours)
    assert all(plain[s]["wml_ml"] > 0 for s in drawn)
    assert all({k: v for k, v in data.ncct_params(s).items() if k != key} == plain[s] for s in ours)
    assert not any(key in data.ncct_params(s) for s in reported)


def _head_slab():
    """Three 96² slices: white matter 28 HU, a 12 px lesion 6 HU darker, a CSF bar at 8 HU, grey matter at 37 HU,
    fat at -90 HU and a bone ring."""
    hu, lesion, ring = _slab()
    hu[:, 10:20, 20:70] = 8.0
    hu[:, 70:76, 20:70] = 37.0
    hu[:, 80:84, 20:70] = -90.0
    return hu, lesion, ring


def test_low_contrast_head_raises_csf_keeps_the_lesion_contrast_and_leaves_fat_and_bone():
    hu, lesion, ring = _head_slab()
    assert abs(augment.white_matter_level(hu[1]) - 28.0) < 1.0
    k1 = augment.white_matter_level(hu[1]) - 1.3 * 6.0 - 2.0  # the lesions' floor, with the 2 HU margin
    pulled = 0
    for seed in range(20):
        out = augment.low_contrast_head(hu, np.random.default_rng(seed), contrast_hu=6.0)
        wm, les = out[1, 30:36, 60:80].mean(), out[1, 42:50, 42:50].mean()
        assert abs((wm - les) - 6.0) < 0.05  # the labelled lesion's contrast as drawn
        csf = out[1, 12:18, 30:60].mean()
        assert 8.0 + 0.29 * (k1 - 8.0) < csf < les  # raised by 0.3-0.75 of its gap to the floor, still below it
        gm = out[1, 71:75, 30:60].mean()
        assert wm < gm <= 37.0 + 1e-3
        pulled += gm < 36.0
        assert np.array_equal(out[hu >= 80], hu[hu >= 80]) and np.allclose(out[1, 81:83, 30:60], -90.0)
        assert np.all(np.diff(np.sort(hu[1].ravel())) >= 0) and _monotone(hu[1], out[1])
    assert 3 <= pulled <= 17  # grey matter moves about half the time


def _monotone(before, after):
    order = np.argsort(before.ravel(), kind="stable")
    return bool(np.all(np.diff(after.ravel()[order]) >= -1e-4))


def test_low_contrast_head_leaves_a_crop_without_brain_alone_and_is_never_drawn_at_zero(monkeypatch):
    air = np.full((3, 64, 64), -10.0, np.float32)
    assert np.array_equal(augment.low_contrast_head(air, np.random.default_rng(0), 6.0), air)
    hu, lesion, _ = _head_slab()
    a = augment._norm(hu).astype(np.float32)
    calls = []
    monkeypatch.setattr(augment, "low_contrast_head", lambda h, rng, c, w: calls.append(w) or h)
    x = augment.randomise_ct(a, np.random.default_rng(1), lesion=lesion, contrast_hu=6.0)
    y = augment.randomise_ct(a, np.random.default_rng(1), lesion=lesion, contrast_hu=6.0, low_contrast=0.0)
    assert np.array_equal(x, y) and not calls
    augment.randomise_ct(a, np.random.default_rng(1), lesion=lesion, contrast_hu=6.0, low_contrast=1.0)
    wm = np.zeros_like(lesion)
    wm[:, 24:40, 24:72] = 1.0  # a white-matter map places the level at its median, not at the histogram's mode
    augment.randomise_ct(a, np.random.default_rng(1), lesion=lesion, contrast_hu=6.0, low_contrast=1.0, wm_map=wm)
    assert len(calls) == 2 and abs(calls[0] - 28.0) < 1.0 and abs(calls[1] - 28.0) < 0.2
    hu[1, 24:40, 24:72] += 3.0
    assert abs(augment.crop_white_matter_level(hu, wm, lesion) - 31.0) < 0.2
    assert abs(augment.crop_white_matter_level(hu, None, lesion) - 28.0) < 1.0


def test_normal_variation_without_the_csf_rim_draws_the_same_and_leaves_the_csf_boundary_alone():
    """``csf_rim=False`` adds no darkening along a CSF boundary and consumes the same random numbers, so the
    texture term and every later term of a recipe are drawn as before."""
    hu = np.full((1, 64, 64), 28.0, np.float32)
    hu[:, 24:40, 24:40] = 5.0  # CSF
    boundary = (0, slice(26, 38), 41)  # 1-2 px outside the CSF
    far = (0, slice(2, 8), slice(2, 8))  # more than 15 px from it
    rims = []
    for seed in range(60):
        r1, r2 = np.random.default_rng(seed), np.random.default_rng(seed)
        with_rim = augment.normal_variation(hu, r1, csf_rim=True)
        without = augment.normal_variation(hu, r2, csf_rim=False)
        assert r1.random() == r2.random()
        rim = without - with_rim  # the texture term is the same draw in both
        assert rim.min() > -1e-4 and np.abs(rim[far]).max() < 0.1
        rims.append(float(rim[boundary].mean()))
    drawn = np.array(rims) > 0.5
    assert 5 < drawn.sum() < 35  # drawn with probability 0.3
    assert np.all((np.array(rims)[drawn] > 0.5) & (np.array(rims)[drawn] < 6.0))

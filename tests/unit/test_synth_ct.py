"""training.synth_ct: the second, independent NCCT training generator (small cases, well under a minute in all)."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("scipy")

from svdmark_phantom.types import Phantom, SeriesKind  # noqa: E402
from training.synth_ct import make_ncct  # noqa: E402
from training.synth_ct.lesions import draw_load_ml  # noqa: E402


@pytest.fixture(scope="module")
def lesioned() -> Phantom:
    return make_ncct(42, small=True, wml_ml=40.0)


@pytest.fixture(scope="module")
def lesion_free() -> Phantom:
    return make_ncct(6, small=True, wml_ml=0.0)


def _same(a: Phantom, b: Phantom) -> bool:
    return (a.image.tobytes() == b.image.tobytes() and a.truth_mask.tobytes() == b.truth_mask.tobytes()
            and all(a.aux[k].tobytes() == b.aux[k].tobytes() for k in ("wml_fraction", "wm_fraction"))
            and a.positions.tobytes() == b.positions.tobytes() and a.truth_wml_ml == b.truth_wml_ml
            and json.dumps(a.meta, sort_keys=True) == json.dumps(b.meta, sort_keys=True)
            and a.frame_of_reference_uid == b.frame_of_reference_uid)


def test_same_seed_gives_the_same_bytes(lesioned):
    assert _same(lesioned, make_ncct(42, small=True, wml_ml=40.0))


def test_different_seeds_differ(lesioned):
    other = make_ncct(43, small=True, wml_ml=40.0)
    assert not np.array_equal(lesioned.image, other.image)
    assert lesioned.meta["tissue_hu"] != other.meta["tissue_hu"]
    assert lesioned.frame_of_reference_uid != other.frame_of_reference_uid


def test_phantom_fields(lesioned):
    p = lesioned
    assert p.modality == "CT" and p.kind == SeriesKind.NCCT and p.microbleeds == ()
    assert p.image.dtype == np.float32 and p.image.ndim == 3 and p.image.shape[1:] == (64, 64)
    assert p.truth_mask.dtype == np.uint8 and p.truth_mask.shape == p.image.shape
    for k in ("wml_fraction", "wm_fraction"):
        assert p.aux[k].dtype == np.float32 and p.aux[k].shape == p.image.shape
    assert p.frame_of_reference_uid.startswith("2.25.") and p.frame_of_reference_uid[5:].isdigit()
    assert len(p.frame_of_reference_uid) <= 64
    json.dumps(p.meta)
    for key in ("wml_contrast_hu", "tissue_hu", "atrophy", "lesion_patterns"):
        assert key in p.meta
    # air outside the head, bone in the skull
    assert p.image[:, 0, 0].mean() < -900
    assert p.image.max() > 500


def test_truth_mask_is_the_thresholded_occupancy(lesioned):
    frac = lesioned.aux["wml_fraction"]
    assert lesioned.truth_mask.any()
    assert np.array_equal(lesioned.truth_mask, (frac >= 0.5).astype(np.uint8))


def test_truth_volume_is_the_occupancy_integral(lesioned):
    p = lesioned
    expected = float(p.aux["wml_fraction"].sum(dtype=np.float64)) * p.voxel_volume_mm3 / 1000.0
    assert p.truth_wml_ml > 1.0
    assert p.truth_wml_ml == pytest.approx(expected, rel=1e-9)
    # the small case is a slab through the ventricles: it holds part of the requested load, never more
    assert p.truth_wml_ml < 40.0 * 1.1


def test_occupancy_is_partial_along_z(lesioned):
    frac = lesioned.aux["wml_fraction"]
    inner = (frac > 0.02) & (frac < 0.98)
    assert inner.sum() > 0.2 * (frac > 0.02).sum()  # thick slices: most lesion voxels are partly filled


def test_lesion_only_inside_white_matter(lesioned):
    frac, wm = lesioned.aux["wml_fraction"], lesioned.aux["wm_fraction"]
    assert frac.min() >= 0.0 and frac.max() <= 1.0
    assert wm.min() >= 0.0 and wm.max() <= 1.0
    assert np.all(frac <= wm + 1e-5)
    assert (wm > 0.5).sum() > (frac > 0.5).sum()


def test_lesion_free_draw_has_zero_occupancy(lesion_free):
    p = lesion_free
    assert p.truth_wml_ml == 0.0
    assert not p.truth_mask.any()
    assert float(p.aux["wml_fraction"].max()) == 0.0
    assert p.meta["lesion_patterns"] == []
    assert (p.aux["wm_fraction"] > 0.5).any()


@pytest.mark.parametrize("seed", [40, 42, 55])
def test_lesions_are_darker_than_white_matter_by_the_drawn_contrast(seed):
    p = make_ncct(seed, small=True, wml_ml=40.0)
    frac, wm, img = p.aux["wml_fraction"], p.aux["wm_fraction"], p.image
    core = frac >= 0.9
    white = (wm >= 0.9) & (frac == 0)
    assert core.sum() >= 20 and white.sum() >= 200
    c = p.meta["wml_contrast_hu"]
    measured = float(img[white].mean() - img[core].mean())
    assert 1.0 <= c <= p.meta["wml_contrast_drawn_hu"] <= 20.0
    assert abs(measured - c) <= 0.25 * c + 3.0, (measured, c)


@pytest.mark.parametrize("which", ["lesioned", "lesion_free"])
def test_noise_in_air_matches_the_drawn_sd_on_every_slice(which, request):
    p = request.getfixturevalue(which)
    sigma = p.meta["scanner"]["noise_sd_hu"]
    gain = p.meta["scanner"]["noise_centre_gain"]
    n = len(p.image)
    corners = np.concatenate([p.image[:, :4, :4].reshape(n, -1), p.image[:, :4, -4:].reshape(n, -1),
                              p.image[:, -4:, :4].reshape(n, -1)], axis=1)
    corners = np.where(corners > -1020, corners, np.nan)  # ignore the rare values clipped at -1024
    sd = np.nanstd(corners, axis=1)
    assert np.all(sd <= 1.35 * sigma + 0.5), (sd, sigma)
    assert np.all(sd >= 0.45 * sigma * (1.0 - gain) - 0.5), (sd, sigma, gain)


def test_noise_texture_is_unit_sd_and_stationary_along_z():
    from training.synth_ct.render import noise_slices

    for f_c, rho in ((0.25, 0.4), (0.9, 0.0)):
        sl = np.stack(list(noise_slices(np.random.default_rng(1), 60, (96, 96), 0.5, f_c, 0.05, rho)))
        sd = sl.std(axis=(1, 2))
        assert np.all(np.abs(sd - 1.0) < 0.2), sd  # no drift or growth along z
        lag1 = float(np.mean(sl[1:] * sl[:-1]) / np.mean(sl * sl))
        assert lag1 == pytest.approx(rho, abs=0.08)


def test_axial_geometry(lesioned):
    p = lesioned
    assert p.row_direction == (1.0, 0.0, 0.0) and p.column_direction == (0.0, 1.0, 0.0)
    assert p.slice_thickness == 5.0 and p.spacing_between_slices == 5.0 and p.gantry_tilt_deg == 0.0
    assert p.positions.shape == (p.image.shape[0], 3)
    steps = np.diff(p.positions, axis=0)
    assert np.allclose(steps, [0.0, 0.0, 5.0])
    assert np.allclose(steps @ p.normal, p.spacing_between_slices)
    assert p.pixel_spacing[0] == p.pixel_spacing[1] > 0


def test_tilted_gantry_shears_the_positions():
    p = make_ncct(7, small=True, slice_thickness=2.5, gantry_tilt_deg=15.0)
    row, col, n = np.array(p.row_direction), np.array(p.column_direction), p.normal
    assert np.isclose(row @ col, 0.0) and np.isclose(np.linalg.norm(col), 1.0)
    assert np.isclose(np.degrees(np.arccos(col[1])), 15.0)
    steps = np.diff(p.positions, axis=0)
    assert np.allclose(steps, steps[0])
    assert np.allclose(steps @ n, 2.5)  # spacing along the normal
    assert np.allclose(steps[:, :2], 0.0)  # the table moves along z only
    shear = np.degrees(np.arccos(steps[0] @ n / np.linalg.norm(steps[0])))
    assert shear == pytest.approx(15.0, abs=1e-6)
    # the index <-> patient mapping of the dataclass is consistent with the sheared grid
    k, i, j = 3, 10.0, 20.0
    xyz = p.index_to_patient(k, i, j)
    assert np.allclose(p.patient_to_index(xyz), [k, i, j])


def test_lesion_model_meets_the_load_exactly_on_the_anatomy_grid():
    from training.synth_ct import labels, lesions
    from training.synth_ct.fields import Grid

    rng = np.random.default_rng(11)
    anat = labels.build(rng, Grid(3.0))
    for target_ml in (0.08, 3.0, 30.0):
        crop, occ, deficit, info = lesions.build(rng, anat, target_ml * 1000.0, 6.0, target_ml)
        assert float(occ.sum(dtype=np.float64)) * 27.0 == pytest.approx(target_ml * 1000.0, rel=1e-4)
        assert np.all(occ[anat.label[crop] != labels.WM] == 0)
        assert occ.max() <= 1.0 and info["patterns"]
        # the deficit's occupancy-weighted mean is the drawn contrast
        assert float(deficit.sum() / occ.sum()) == pytest.approx(6.0, rel=1e-4)


def test_no_lesion_voxel_is_as_dark_as_the_csf():
    """The cap holds each voxel's density ABOVE_CSF_HU above CSF; lesions shallower than that are left alone."""
    from training.synth_ct import lesions

    occ = np.array([0.0, 0.3, 1.0, 1.0], np.float32)
    deficit = occ * np.array([0.0, 25.0, 25.0, 4.0], np.float32)  # HU per unit occupancy: deep, deep, shallow
    capped, mean = lesions.cap_density(deficit, occ, wm_hu=30.0, csf_hu=10.0)  # limit 30 - 10 - 5 = 15 HU
    assert capped.tolist() == pytest.approx([0.0, 0.3 * 15.0, 15.0, 4.0])
    assert mean == pytest.approx((4.5 + 15.0 + 4.0) / 2.3)
    # drawn heads: the recorded contrast respects the cap, and the drawn one is kept beside it
    for seed in (40, 42, 55, 61):
        p = make_ncct(seed, small=True, wml_ml=20.0)
        t = p.meta["tissue_hu"]
        limit = max(t["white_matter"] - max(t["csf"], t["ventricle"]) - lesions.ABOVE_CSF_HU, 1.0)
        assert p.meta["wml_contrast_hu"] <= min(limit, p.meta["wml_contrast_drawn_hu"]) + 1e-3


def test_drawn_loads_cover_the_ranges():
    rng = np.random.default_rng(0)
    loads = np.array([draw_load_ml(rng) for _ in range(4000)])
    assert 0.22 < np.mean(loads == 0) < 0.28
    assert np.mean((loads >= 0.05) & (loads < 1)) > 0.3
    assert np.mean((loads >= 1) & (loads < 10)) > 0.2
    assert np.mean((loads >= 10) & (loads <= 50)) > 0.1
    assert loads.max() <= 50.0


# ------------------------------------------------------------------ wiring into training.data


def test_training_draws_synth_ct_heads_only_when_asked(monkeypatch):
    from training import data

    monkeypatch.setattr(data, "SYNTH_CT_SHARE", 0.0)
    plain = {s: data.ncct_params(s) for s in [*range(1000, 1030), *range(3000, 3010), *range(5000, 5010),
                                              *range(6000, 6010)]}
    assert not any("generator" in p for p in plain.values())
    monkeypatch.setattr(data, "SYNTH_CT_SHARE", 0.5)
    drawn = {s: data.ncct_params(s) for s in plain}
    mine = [s for s, p in drawn.items() if p.get("generator") == "synth_ct"]
    assert 10 < len(mine) < 50  # a share, from the seed's own stream
    for s in mine:  # the seed's acquisition and load; our generator's options dropped
        assert drawn[s] == {**{k: plain[s][k] for k in ("seed", "matrix", "slice_thickness", "tilt_deg", "wml_ml")},
                            "generator": "synth_ct"}
    assert all(drawn[s] == plain[s] for s in plain if s not in mine)
    monkeypatch.setattr(data, "SYNTH_CT_SHARE", 1.0)
    for split in ("heldout", "shifted", "val_thin"):  # reported and thin draws never change
        first = data.SPLITS[split]
        assert not any("generator" in data.ncct_params(s) for s in range(first, first + 10))


def test_a_synth_ct_case_is_generated_cached_and_read_back(monkeypatch, tmp_path):
    import training.synth_ct as synth_ct
    from training import data

    calls = []

    def small_once(seed, **kw):  # a second generation would mean the cache was not read
        calls.append(seed)
        assert len(calls) == 1, "generated again instead of read from the cache"
        return make_ncct(seed, **kw, small=True)

    monkeypatch.setattr(data, "CACHE", tmp_path)
    monkeypatch.setattr(synth_ct, "make_ncct", small_once)
    params = dict(seed=1001, matrix=256, slice_thickness=5.0, tilt_deg=0.0, wml_ml=20.0, generator="synth_ct")
    first = data.ncct_case(1001, params, with_wm=True)
    again = data.ncct_case(1001, params, with_wm=True)  # from the cache
    [path] = tmp_path.glob("ncct_*generatorsynth_ct*.npz")
    with np.load(path) as z:
        assert str(z["phantom_version"]) == data._phantom_version("synth_ct") != data._phantom_version()
    assert np.array_equal(first.volume.positions, again.volume.positions)
    assert first.truth_ml == pytest.approx(again.truth_ml) and first.truth_ml > 1.0
    assert np.array_equal(first.volume.array, again.volume.array)
    assert np.allclose(first.truth_fraction, again.truth_fraction, atol=1e-3)
    assert first.wm_fraction is not None and (first.truth_fraction <= first.wm_fraction + 1e-3).all()


def test_the_truth_is_the_voxel_occupancy_whatever_the_image_slice_profile(monkeypatch):
    """The image is sampled with the drawn profile; the truth maps with a box over the voxel, so forcing a triangle
    profile changes the image and leaves the truth as it is."""
    from training.synth_ct import scanner

    real = scanner.slice_profile

    def forced(kind):
        def profile(rng, T, h):
            real(rng, T, h)  # the same draws as ever
            if kind == "box":
                return ("box", *scanner.box_profile(T, h))
            s = np.linspace(-T, T, 9)[1:-1]
            w = 1 - np.abs(s) / T
            return "triangle", s, (w / w.sum()).astype(np.float32)
        return profile

    heads = {}
    for kind in ("box", "triangle"):
        monkeypatch.setattr(scanner, "slice_profile", forced(kind))
        heads[kind] = make_ncct(42, small=True, wml_ml=40.0, slice_thickness=5.0)
    box, tri = heads["box"], heads["triangle"]
    assert not np.array_equal(box.image, tri.image)
    assert box.aux["wml_fraction"].sum() > 0
    for k in ("wml_fraction", "wm_fraction"):
        assert np.array_equal(box.aux[k], tri.aux[k])
    assert box.truth_wml_ml == tri.truth_wml_ml

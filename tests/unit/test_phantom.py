"""The synthetic head generator: determinism, truth consistency, tilted geometry, microbleeds."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage

from svdmark.domain import BurdenGrade
from svdmark_phantom import Phantom, SeriesKind, make_ncct, make_swi


def test_ncct_is_deterministic_per_seed():
    a = make_ncct(seed=3, matrix=48, n_slices=6, wml_ml=2.0)
    b = make_ncct(seed=3, matrix=48, n_slices=6, wml_ml=2.0)
    c = make_ncct(seed=4, matrix=48, n_slices=6, wml_ml=2.0)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.truth_mask, b.truth_mask)
    assert a.truth_wml_ml == b.truth_wml_ml and a.frame_of_reference_uid == b.frame_of_reference_uid
    assert not np.array_equal(a.image, c.image)


def test_swi_is_deterministic_per_seed():
    a = make_swi(seed=5, matrix=48, n_slices=8, n_cmb=3)
    b = make_swi(seed=5, matrix=48, n_slices=8, n_cmb=3)
    assert np.array_equal(a.image, b.image) and a.microbleeds == b.microbleeds


def test_ncct_contract(ncct_phantom: Phantom):
    p = ncct_phantom
    assert isinstance(p, Phantom) and p.kind == SeriesKind.NCCT and p.modality == "CT"
    assert p.image.dtype == np.float32 and p.image.ndim == 3
    assert p.truth_mask.dtype == np.uint8 and p.truth_mask.shape == p.image.shape
    assert p.positions.shape == (p.image.shape[0], 3)
    assert 200 <= p.pixel_spacing[0] * p.image.shape[2] <= 260  # head FOV
    brain = p.image[p.image.shape[0] // 2]
    assert brain.min() <= -1000 and brain.max() >= 700  # air and skull
    with pytest.raises(Exception):
        p.image = None  # frozen


def test_ncct_tissue_contrasts():
    p = make_ncct(seed=8, matrix=128, n_slices=12, wml_ml=0.0, mimics=False, noise_hu=0.0)
    v = p.meta["values"]
    assert 5 <= v["csf"] <= 15 and 35 <= v["gm"] <= 45 and 25 <= v["wm"] <= 32 and 700 <= v["bone"] <= 1500
    mid = p.image[6]
    # the image contains soft tissue in the brain range and CSF-like voxels
    assert np.mean((mid > 20) & (mid < 45)) > 0.2
    assert np.any((mid > 0) & (mid < 15))


def test_wml_truth_volume_matches_mask():
    p = make_ncct(seed=2, matrix=128, slice_thickness=2.5, wml_ml=15.0, mimics=False)
    mask_ml = p.truth_mask.sum() * p.voxel_volume_mm3 / 1000.0
    assert 10.0 < p.truth_wml_ml < 20.0  # the target is approximate, truth is physical
    assert mask_ml == pytest.approx(p.truth_wml_ml, rel=0.25)
    frac = p.aux["wml_fraction"]
    assert frac.shape == p.image.shape and np.array_equal(frac >= 0.5, p.truth_mask.astype(bool))
    # partial-volume-aware sum matches the physical volume more closely than the ≥50 % mask
    frac_ml = float(frac.sum()) * p.voxel_volume_mm3 / 1000.0
    assert abs(frac_ml - p.truth_wml_ml) <= abs(mask_ml - p.truth_wml_ml) + 0.05 * p.truth_wml_ml
    assert frac_ml == pytest.approx(p.truth_wml_ml, rel=0.15)


def test_wml_zero_volume_has_empty_mask():
    p = make_ncct(seed=9, matrix=48, n_slices=8, wml_ml=0.0)
    assert p.truth_wml_ml == 0.0 and p.truth_mask.sum() == 0


def test_wml_lesions_are_hypodense():
    # same seed with and without lesions: noise and anatomy are identical, so the difference is the lesion
    a = make_ncct(seed=6, matrix=96, slice_thickness=3.0, wml_ml=10.0, mimics=False)
    b = make_ncct(seed=6, matrix=96, slice_thickness=3.0, wml_ml=0.0, mimics=False)
    d = b.image - a.image
    m = a.truth_mask.astype(bool)
    assert m.sum() > 50
    assert d[m].mean() > 1.5  # a few HU darker
    assert np.abs(d[~m]).mean() < 0.2


def test_tilted_grid_is_physically_consistent():
    kw = dict(seed=7, matrix=96, slice_thickness=2.5, wml_ml=12.0, mimics=False)
    flat = make_ncct(tilt_deg=0.0, **kw)
    tilt = make_ncct(tilt_deg=25.0, **kw)
    # the physical volume does not depend on the grid
    assert tilt.truth_wml_ml == pytest.approx(flat.truth_wml_ml, rel=1e-6)
    # the grid is sheared: positions step along the table, not the slice normal
    step = tilt.positions[1] - tilt.positions[0]
    assert abs(step[0]) < 1e-6 and abs(step[1]) < 1e-6
    cos = abs(step @ tilt.normal) / np.linalg.norm(step)
    assert np.degrees(np.arccos(cos)) == pytest.approx(25.0, abs=0.01)
    assert abs(step @ tilt.normal) == pytest.approx(2.5, abs=1e-3)
    # mask volumes agree and mask centroids agree in patient coordinates
    def centroid(p):
        kij = np.argwhere(p.truth_mask)
        return p.index_to_patient(kij[:, 0], kij[:, 1], kij[:, 2]).mean(0)

    vf = flat.truth_mask.sum() * flat.voxel_volume_mm3
    vt = tilt.truth_mask.sum() * tilt.voxel_volume_mm3
    assert vt == pytest.approx(vf, rel=0.15)
    assert np.linalg.norm(centroid(flat) - centroid(tilt)) < 3.0


def test_swi_microbleeds_truth(swi_phantom: Phantom):
    p = swi_phantom
    assert p.kind == SeriesKind.SWI and p.modality == "MR" and p.n_microbleeds == 6
    cs = np.array([c for c, _, _ in p.microbleeds])
    ds = np.array([d for _, d, _ in p.microbleeds])
    assert np.all((ds >= 2) & (ds <= 10))
    assert all(loc in ("lobar", "deep", "infratentorial") for _, _, loc in p.microbleeds)
    for a in range(len(cs)):
        for b in range(a + 1, len(cs)):
            assert np.linalg.norm(cs[a] - cs[b]) > max(ds[a], ds[b])
    clean = make_swi(seed=12, matrix=64, slice_thickness=2.5, n_cmb=0)  # same head and noise, no bleeds
    for c, d in zip(cs, ds):
        k, i, j = np.rint(p.patient_to_index(c)).astype(int)
        assert p.truth_mask[k, i, j] == 1
        assert p.image[k, i, j] < clean.image[k, i, j] - 0.1 * d / 10 * clean.image[k, i, j]  # darker at the centre


def test_swi_oblique_centres_map_to_dark_voxels():
    kw = dict(seed=31, matrix=128, slice_thickness=1.5, oblique_deg=15.0, n_slices=40)
    p = make_swi(n_cmb=8, **kw)
    clean = make_swi(n_cmb=0, **kw)
    assert p.n_microbleeds == 8 and abs(p.normal[2]) < 0.99  # oblique grid
    for c, d, _ in p.microbleeds:
        k, i, j = np.rint(p.patient_to_index(c)).astype(int)
        assert p.image[k, i, j] < 0.6 * clean.image[k, i, j]


def test_swi_at_1p5t_is_noisier_with_weaker_blooming():
    kw = dict(seed=33, matrix=96, slice_thickness=2.0, n_cmb=6, n_slices=30)
    hi, lo = make_swi(**kw), make_swi(field_t=1.5, **kw)
    assert lo.meta["field_t"] == 1.5 and hi.meta["field_t"] == 3.0
    assert lo.meta["noise_sd"] / lo.meta["scale"] > 1.9 * hi.meta["noise_sd"] / hi.meta["scale"]
    assert [c for c, _, _ in lo.microbleeds] == [c for c, _, _ in hi.microbleeds]  # same bleeds, smaller blooming
    assert all(abs(a - 0.8 * b) < 1e-9 for (_, a, _), (_, b, _) in zip(lo.microbleeds, hi.microbleeds))
    v_lo, v_hi = lo.meta["values"], hi.meta["values"]
    assert v_lo["wm"] - v_lo["vein"] == pytest.approx(0.6 * (v_hi["wm"] - v_hi["vein"]))  # veins closer to tissue
    with pytest.raises(ValueError, match="field_t"):
        make_swi(field_t=7.0, **kw)


def test_swi_calcifications_are_dark_and_not_bleeds():
    kw = dict(seed=35, matrix=128, slice_thickness=1.5, n_cmb=0, n_slices=60)
    plain, calc = make_swi(**kw), make_swi(calcifications=True, **kw)
    assert plain.meta["calcifications"] == [] and calc.n_microbleeds == 0 and not calc.truth_mask.any()
    assert calc.meta["calcifications"], "seed 35 draws at least one calcification"
    changed = calc.image != plain.image
    assert changed.any() and np.all(calc.image <= plain.image + 1e-3)  # darker at the foci, nowhere brighter
    # only at the foci: a stream of their own (a shared one would change the noise everywhere), one blob each
    _, blobs = ndimage.label(changed)
    assert changed.mean() < 0.002 and 1 <= blobs <= len(calc.meta["calcifications"])


@pytest.mark.parametrize("anatomy", ["analytic", "mni152"])
def test_swi_mimic_variety_changes_only_the_mimics_and_never_the_bleeds(anatomy):
    """Varied calcifications and iron-rich nuclei: listed, never bleeds, drawn from streams of their own (so the
    noise and everything else stay the seed's); calcifications darken, the nuclei may come out darker or brighter
    than the default draw."""
    kw = dict(seed=36, matrix=128, slice_thickness=1.5, n_cmb=3, n_slices=60, anatomy=anatomy)
    plain, varied = make_swi(**kw), make_swi(mimic_variety=True, **kw)
    assert varied.meta["calcifications"] and varied.n_microbleeds == plain.n_microbleeds == 3
    assert np.array_equal(varied.truth_mask, plain.truth_mask) and varied.microbleeds == plain.microbleeds
    changed = varied.image != plain.image
    assert 0 < changed.mean() < 0.01  # the nuclei and foci, not the noise everywhere
    assert (varied.image < plain.image - 1e-3).any()
    assert ("iron" in varied.meta) == (anatomy == "mni152") and "iron" not in plain.meta


def test_training_draws_mimic_variety_only_when_asked(monkeypatch):
    from training import data

    monkeypatch.setattr(data, "SWI_MIMIC_SHARE", 0.0)
    assert not any("mimic_variety" in data.swi_params(s) for s in range(1000, 1040))
    monkeypatch.setattr(data, "SWI_MIMIC_SHARE", 1.0)
    assert all(data.swi_params(s).get("mimic_variety") for s in range(1000, 1040))
    for split in ("heldout", "shifted"):
        first = data.SPLITS[split]
        assert not any("mimic_variety" in data.swi_params(s) for s in range(first, first + 20))
    monkeypatch.setattr(data, "SWI_MIMIC_SHARE", 0.0)
    plain = {s: data.swi_params(s) for s in range(1000, 1040)}
    monkeypatch.setattr(data, "SWI_MIMIC_SHARE", 1.0)
    assert all({k: v for k, v in data.swi_params(s).items() if k != "mimic_variety"} == plain[s] for s in plain)


def test_swi_dipole_blooming_darkens_the_core_and_reaches_beyond_the_apparent_sphere():
    """The same bleeds and truth; small bleeds' centres darker than the 1 mm-edged sphere draws them, signal lost
    beyond the apparent radius (the dipole tail), and nothing changed away from the bleeds."""
    kw = dict(seed=11, matrix=128, slice_thickness=2.0, n_cmb=12, n_slices=50)
    sphere, bloomed, clean = make_swi(**kw), make_swi(blooming=True, **kw), make_swi(**{**kw, "n_cmb": 0})
    assert bloomed.microbleeds == sphere.microbleeds and np.array_equal(bloomed.truth_mask, sphere.truth_mask)
    assert set(bloomed.meta["blooming"]) == {"factor", "dipole"} and "blooming" not in sphere.meta
    assert 1.3 <= bloomed.meta["blooming"]["factor"] <= 2.4
    core_s, core_b, ring_s, ring_b = [], [], [], []
    for c, d, _ in sphere.microbleeds:
        k, i, j = np.rint(sphere.patient_to_index(c)).astype(int)
        core_s.append(sphere.image[k, i, j] / clean.image[k, i, j])
        core_b.append(bloomed.image[k, i, j] / clean.image[k, i, j])
        off = np.rint(sphere.patient_to_index(np.asarray(c) + [0.0, 0.75 * d + 1.0, 0.0])).astype(int)
        ring_s.append(sphere.image[tuple(off)] / clean.image[tuple(off)])
        ring_b.append(bloomed.image[tuple(off)] / clean.image[tuple(off)])
    assert np.median(core_b) < np.median(core_s) - 0.03
    assert np.median(ring_b) < np.median(ring_s) - 0.02  # the tail: past the sphere's edge ramp
    far = (ndimage.binary_dilation(sphere.image != clean.image, iterations=12) == 0)
    assert far.mean() > 0.5 and np.array_equal(bloomed.image[far], sphere.image[far])


def test_dipole_loss_profile_follows_the_static_dephasing_falloff():
    """Half the signal lost at the apparent radius without the angular term; the pole and equator as the dipole
    term weighs them (B0 along patient z), g averaging to 1 over the sphere; the deposit the darkest part, the loss
    never rising with distance, and nothing lost from 2.5 apparent radii on."""
    from svdmark_phantom.generate import _DIPOLE_MEAN, Blooming, _dipole_loss

    R, depth = 2.0, 0.7

    def loss(x, y, z, bloom):
        x, y, z = (np.atleast_1d(np.asarray(v, np.float32)) for v in (x, y, z))
        return _dipole_loss(x * x + y * y + z * z, z, R, depth, bloom)

    iso, dip = Blooming(factor=2.0, dipole=0.0), Blooming(factor=2.0, dipole=0.6)
    assert loss(R, 0, 0, iso)[0] == pytest.approx(0.5, abs=1e-4)
    assert loss(0, 0, R, iso)[0] == pytest.approx(0.5, abs=1e-4)
    g_pole, g_equator = 0.4 + 0.6 * 2 / _DIPOLE_MEAN, 0.4 + 0.6 / _DIPOLE_MEAN
    assert loss(0, 0, R, dip)[0] == pytest.approx(1 - 2 ** -g_pole, abs=1e-4)  # along B0
    assert loss(R, 0, 0, dip)[0] == pytest.approx(1 - 2 ** -g_equator, abs=1e-4)
    u = np.random.default_rng(0).normal(size=(20000, 3))
    cos2 = (u[:, 2] / np.linalg.norm(u, axis=1)) ** 2
    assert np.mean(np.abs(3 * cos2 - 1)) / _DIPOLE_MEAN == pytest.approx(1.0, abs=0.02)
    r = np.linspace(0.0, 3 * R, 300)
    for bloom in (iso, dip, Blooming(factor=1.3, dipole=0.3)):
        for d in ((1, 0, 0), (0, 0, 1), (0.6, 0, 0.8)):
            prof = loss(r * d[0], r * d[1], r * d[2], bloom)
            assert prof[0] >= depth and prof[0] == prof.max()  # the deposit is the darkest part
            assert np.all(np.diff(prof) <= 1e-6) and np.all(prof[r >= 2.5 * R] == 0)
    assert loss(0, 0, 0, Blooming(factor=2.0, dipole=0.0))[0] > 0.99  # a deposit inside a void is a void


def test_training_draws_blooming_only_when_asked(monkeypatch):
    from training import data

    monkeypatch.setattr(data, "SWI_BLOOMING_SHARE", 0.0)
    plain = {s: data.swi_params(s) for s in range(1000, 1040)}
    assert not any("blooming" in p for p in plain.values())
    monkeypatch.setattr(data, "SWI_BLOOMING_SHARE", 0.7)
    drawn = {s: data.swi_params(s) for s in plain}
    assert 0.4 < np.mean([p.get("blooming", False) for p in drawn.values()]) < 0.95
    assert all({k: v for k, v in drawn[s].items() if k != "blooming"} == plain[s] for s in plain)
    first = data.SPLITS["heldout"]
    assert not any("blooming" in data.swi_params(s) for s in range(first, first + 20))


@pytest.mark.parametrize("n,grade", [(0, 0), (4, 1), (15, 2), (35, 3)])
def test_cmb_counts_span_all_grades(n, grade):
    p = make_swi(seed=40 + n, matrix=64, slice_thickness=2.5, n_cmb=n)
    assert p.n_microbleeds == n
    assert int(BurdenGrade.from_count(p.n_microbleeds)) == grade


def test_random_volumes_have_many_small_cases():
    from svdmark_phantom.lesions import sample_cmb_count, sample_wml_ml

    rng = np.random.default_rng(0)
    v = np.array([sample_wml_ml(rng) for _ in range(4000)])
    assert 0.3 < np.median(v) < 0.9 and (v == 0).mean() > 0.05 and v.max() <= 50.0 and (v > 10).mean() > 0.05
    g = np.array([int(BurdenGrade.from_count(sample_cmb_count(rng))) for _ in range(2000)])
    assert set(np.unique(g)) == {0, 1, 2, 3}


def test_rims_line_the_ventricle_wall_and_leave_the_other_draws_as_they_were():
    from svdmark_phantom.anatomy import HeadModel
    from svdmark_phantom.lesions import build_wml, wml_volume_mm3

    head = HeadModel.random(7, origin=np.zeros(3))
    plain = build_wml(head, 6.0, np.random.default_rng([7, 0x3A1]))
    rimmed = build_wml(head, 6.0, np.random.default_rng([7, 0x3A1]), rims=np.random.default_rng([7, 0x3A2]))
    assert not plain.rims and rimmed.rims
    assert rimmed.caps == plain.caps and len(rimmed.blobs) == len(plain.blobs)  # the seed's own draws, rescaled
    # every rim segment is centred on the wall (|ventricle distance| < 1.5 mm) and the load still hits its target
    c = np.array([r[0] for r in rimmed.rims], np.float32)
    assert (np.abs(head.ventricle_sd(c[:, 0], c[:, 1], c[:, 2])) < 1.5).all()
    assert wml_volume_mm3(rimmed) / 1000.0 == pytest.approx(6.0, rel=0.15)
    # the rims alone are a shell just outside the ventricle wall, at most 5 mm (x the model's scale, x 1.6) thick
    rims_only = dataclasses.replace(rimmed, caps=[], bands=[], blobs=[])
    lo, hi = (np.asarray(b, float) for b in head.sites()["periventricular_box"])
    p = np.random.default_rng(0).uniform(lo, hi, size=(200_000, 3)).astype(np.float32).T
    inside = rims_only.sd(*p) < 0
    dv = head.ventricle_sd(*p)[inside]
    assert inside.sum() > 100 and dv.min() >= 0 and dv.max() <= 5 * rimmed.scale ** 0.5 * 1.6


def test_spread_wml_put_deep_lesions_all_over_the_white_matter_and_the_default_stays_in_its_box():
    from svdmark_phantom.anatomy import HeadModel
    from svdmark_phantom.lesions import DEEP_BOX, build_wml

    head = HeadModel.random(7, origin=np.zeros(3))

    def centres(spread):
        m = build_wml(head, 20.0, np.random.default_rng([7, 0x3A1]), spread=spread)
        return np.array([b[0] for b in m.blobs])

    (x0, x1), (y0, y1), (z0, z1) = DEEP_BOX
    inside = lambda c: (np.abs(c[:, 0]) >= x0) & (np.abs(c[:, 0]) <= x1) & (c[:, 1] >= y0) & (c[:, 1] <= y1) \
        & (c[:, 2] >= z0) & (c[:, 2] <= z1)  # noqa: E731
    plain, wide = centres(False), centres(True)
    assert len(plain) and inside(plain).all()
    assert len(wide) and (~inside(wide)).sum() >= len(wide) // 2
    assert (head.label(np.array([head.warp_point(c) for c in wide])) == "wm").all()

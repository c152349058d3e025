"""The MNI152 atlas head (``anatomy="mni152"``): orientation, tissue contrast, WML truth, SWI, missing maps.

Skipped when nilearn's MNI152 tissue maps are not installed (they come with the ``phantom`` extra).
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from svdmark_phantom import make_ncct, make_swi
from svdmark_phantom import atlas as atlas_mod
from svdmark_phantom.lesions import _BoxedPoints, wm_fraction

needs_atlas = pytest.mark.skipif(atlas_mod.find_mni152_files() is None,
                                 reason="nilearn's MNI152 tissue maps are not installed (phantom extra)")
BRAIN = ("gm", "wm", "dgm", "cbl", "stem")


def _head_of(p):
    """The head ``make_ncct`` drew for phantom ``p`` (same seed and origin)."""
    return atlas_mod.AtlasHead.random(p.seed, origin=np.asarray(p.meta["head_origin"]))


def _voxel_u(p, head, kij):
    P = p.index_to_patient(kij[:, 0], kij[:, 1], kij[:, 2])
    return head.warp_point(head.patient_to_v(P))


def test_missing_maps_name_the_phantom_extra(monkeypatch):
    monkeypatch.setattr(atlas_mod, "find_mni152_files", lambda: None)
    with pytest.raises(ImportError, match=r"svdmark\[phantom\]"):
        make_ncct(seed=1, matrix=32, n_slices=4, anatomy="mni152")
    with pytest.raises(ImportError, match=r"nilearn"):
        make_swi(seed=1, matrix=32, n_slices=4, anatomy="mni152")


def test_unknown_anatomy_is_rejected():
    with pytest.raises(ValueError, match="mni152"):
        make_ncct(seed=1, matrix=32, n_slices=4, anatomy="colin27")


@needs_atlas
def test_locating_the_maps_does_not_import_nilearn():
    code = ("import sys; from svdmark_phantom import atlas; assert atlas.find_mni152_files(); "
            "print('nilearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@needs_atlas
def test_orientation_in_dicom_patient_coordinates():
    origin = np.array([3.0, -10.0, 40.0])
    head = atlas_mod.AtlasHead.random(5, origin=origin, rotate=False, warp_mm=0.0)

    def patient(ras):
        return head.v_to_patient(head.u_from_ras(ras))

    # MNI +x is the subject's right, which is DICOM (LPS) -x; +y anterior is -y; +z superior stays +z
    assert patient([40.0, -20.0, 20.0])[0] < origin[0] < patient([-40.0, -20.0, 20.0])[0]
    assert patient([0.0, 60.0, 0.0])[1] < origin[1] < patient([0.0, -90.0, 0.0])[1]
    assert patient([0.0, -20.0, 70.0])[2] > origin[2] + 50
    # anatomy at those points: white matter in the right centrum semiovale, eyes in front, air above the vertex
    lab = head.label(np.stack([head.u_from_ras(r) for r in ([28.0, -20.0, 30.0], [32.0, 58.0, -40.0],
                                                           [0.0, -20.0, 110.0], [0.0, -20.0, 60.0])]))
    assert list(lab[:3]) == ["wm", "globe", "air"] and lab[3] in BRAIN + ("falx", "csf")
    # lateral anchors are keyed by the model-frame side (u x > 0: the subject's left)
    assert head.sites()["frontal_tip"][1][0] > 0 > head.sites()["frontal_tip"][-1][0]


@needs_atlas
def test_image_is_upright_and_faces_anterior():
    p = make_ncct(seed=4, matrix=64, slice_thickness=5.0, wml_ml=0.0, mimics=False, noise_hu=0.0, anatomy="mni152")
    order = np.argsort(p.positions[:, 2])  # inferior → superior
    head_area = (p.image > -300).sum(axis=(1, 2))[order]
    # face / skull-base block below, vertex above: the head narrows upwards
    assert head_area[-1] < 0.6 * head_area[len(order) // 2] and head_area[-1] < head_area[0]
    # brain fills the upper slices, not the lower ones
    brain = ((p.image > 20) & (p.image < 50)).sum(axis=(1, 2))[order]
    assert brain[-3:].sum() > 0 and np.argmax(brain) >= len(order) // 3


@needs_atlas
def test_tissue_contrast_in_the_rendered_ct():
    p = make_ncct(seed=8, matrix=96, slice_thickness=5.0, n_slices=10, wml_ml=0.0, mimics=False, noise_hu=0.0,
                  anatomy="mni152")
    head = _head_of(p)
    kij = np.argwhere(p.image > -500)
    kij = kij[np.random.default_rng(0).choice(len(kij), min(len(kij), 15000), replace=False)]
    lab = head.label(_voxel_u(p, head, kij))
    hu = p.image[tuple(kij.T)]
    med = {k: float(np.median(hu[lab == k])) for k in ("wm", "gm", "csf", "bone")}
    v = p.meta["values"]
    assert med["csf"] < med["wm"] < med["gm"] < v["gm"] + 1.0
    assert abs(med["wm"] - v["wm"]) < 2.0 and 25 <= med["wm"] <= 33 and med["gm"] > v["gm"] - 4.0
    assert med["bone"] > 700


@needs_atlas
def test_wml_truth_lies_in_white_matter_on_a_tilted_thick_slice_grid():
    p = make_ncct(seed=3, matrix=96, slice_thickness=5.0, tilt_deg=15.0, wml_ml=6.0, mimics=True, anatomy="mni152")
    assert p.truth_wml_ml == pytest.approx(6.0, rel=0.2)
    frac = p.aux["wml_fraction"]
    assert frac.shape == p.image.shape and np.array_equal(frac >= 0.5, p.truth_mask.astype(bool))
    assert float(frac.sum()) * p.voxel_volume_mm3 / 1000.0 == pytest.approx(p.truth_wml_ml, rel=0.1)
    head = _head_of(p)
    kij = np.argwhere(frac > 0.5)
    u = _voxel_u(p, head, kij).T.astype(np.float32)
    wm = wm_fraction(head, _BoxedPoints(list(u)))
    assert np.median(wm) > 0.6 and np.mean(wm > 0.25) > 0.9


@needs_atlas
def test_swi_microbleeds_sit_in_brain_and_are_dark():
    kw = dict(seed=6, matrix=64, slice_thickness=2.5, anatomy="mni152")
    p = make_swi(n_cmb=5, **kw)
    clean = make_swi(n_cmb=0, **kw)
    assert p.n_microbleeds == 5
    wm_signal = p.meta["values"]["wm"] * p.meta["scale"]
    for c, d, loc in p.microbleeds:
        k, i, j = np.rint(p.patient_to_index(c)).astype(int)
        assert p.image[k, i, j] < 0.8 * clean.image[k, i, j]
        assert 0.4 * wm_signal < clean.image[k, i, j] < 2.5 * wm_signal  # brain parenchyma, not bone or air
        assert loc in ("lobar", "deep", "infratentorial") and 2 <= d <= 10


@needs_atlas
def test_atlas_head_is_deterministic():
    a = make_ncct(seed=2, matrix=40, n_slices=5, wml_ml=1.0, anatomy="mni152")
    b = make_ncct(seed=2, matrix=40, n_slices=5, wml_ml=1.0, anatomy="mni152")
    assert np.array_equal(a.image, b.image) and a.truth_wml_ml == b.truth_wml_ml
    assert a.meta["anatomy"] == "mni152"


@needs_atlas
def test_atrophy_widens_csf_spaces_and_changes_nothing_else():
    """Atrophy erodes the brain (more CSF, larger ventricles, the extra sulci) from its own random stream: the
    placement, warp and vessels are the head's without atrophy (medullary veins start at the moved ventricle
    wall), and bleeds still sit in brain."""
    plain = atlas_mod.AtlasHead.random(11)
    heads = {a: atlas_mod.AtlasHead.random(11, atrophy=a) for a in (0.3, 1.0)}
    for h in heads.values():
        assert np.array_equal(h.R, plain.R) and np.allclose(h.origin, plain.origin)
        assert [(v.kind, v.radius) for v in h.vessels] == [(v.kind, v.radius) for v in plain.vessels]
        assert [v.points.tolist() for v in h.vessels if v.kind != "medullary"] == \
            [v.points.tolist() for v in plain.vessels if v.kind != "medullary"]
    rng = np.random.default_rng(0)
    u = rng.uniform([-60, -80, -20], [60, 70, 60], size=(20000, 3))  # the cerebrum's box, model frame
    csf = {a: np.mean(h.label(u) == "csf") for a, h in [(0.0, plain), *heads.items()]}
    assert csf[0.0] < csf[0.3] < csf[1.0] and csf[1.0] > 1.5 * csf[0.0], csf
    deep = np.linalg.norm(u - [0, 0, 15], axis=1) < 25  # around the lateral ventricles: their CSF grows too
    inner = {a: np.mean(h.label(u[deep]) == "csf") for a, h in [(0.0, plain), *heads.items()]}
    assert inner[0.0] < inner[0.3] < inner[1.0], inner
    kw = dict(seed=6, matrix=64, slice_thickness=2.5, anatomy="mni152", atrophy=0.8)
    p, clean = make_swi(n_cmb=5, **kw), make_swi(n_cmb=0, **kw)
    values, scale = p.meta["values"], p.meta["scale"]
    assert p.n_microbleeds == 5
    for c, _, _ in p.microbleeds:
        k, i, j = np.rint(p.patient_to_index(c)).astype(int)
        assert p.image[k, i, j] < 0.8 * clean.image[k, i, j]
        assert clean.image[k, i, j] < 0.5 * (values["gm"] + values["csf"]) * scale  # tissue, not the new CSF


def test_atrophy_is_the_atlas_heads_parameter():
    with pytest.raises(ValueError, match="mni152"):
        make_swi(seed=1, matrix=32, n_slices=3, atrophy=0.5)
    with pytest.raises(ValueError, match="within"):  # checked before the atlas is loaded
        atlas_mod.AtlasHead.random(1, atrophy=1.5)

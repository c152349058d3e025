"""devset SWI: the independent synthetic microbleed development set (small cases only; runs in well under 60 s)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from devset import build_swi, swi_bleeds

REQUIRED = ("task", "seed", "generator_version", "vendor", "field_t", "slice_thickness", "slice_spacing", "tilt_deg",
            "atrophy", "sop_uids", "count", "grade", "microbleeds", "mimics", "label_names")
TAGS = {"cluster", "adjacent-pair", "vein-adjacent", "near-air", "near-calcification"}
MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


def _seed_where(pred, limit: int = 200) -> int:
    for i in range(limit):
        if pred(build_swi.plan(build_swi.SEED_BASE + i, small=True)):
            return build_swi.SEED_BASE + i
    raise AssertionError("no seed found")


SEED = _seed_where(lambda p: 8 <= p["count"] <= 40 and p["acq"].tilt_deg != 0)  # oblique: exercises the geometry


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    a, b = tmp_path_factory.mktemp("swi_a"), tmp_path_factory.mktemp("swi_b")
    build_swi.build_case(SEED, a, small=True)
    build_swi.build_case(SEED, b, small=True)
    return a / f"cmb_{SEED}", b / f"cmb_{SEED}"


def _load(case: Path):
    tr = json.loads((case / "truth.json").read_text())
    ds = [pydicom.dcmread(f) for f in sorted((case / "dicom").glob("*.dcm"))]
    iop = np.array(ds[0].ImageOrientationPatient, float)
    row, col = iop[:3], iop[3:]
    nrm = np.cross(row, col)
    ds.sort(key=lambda d: float(np.array(d.ImagePositionPatient, float) @ nrm))
    vol = np.stack([d.pixel_array.astype(float) * float(getattr(d, "RescaleSlope", 1) or 1) for d in ds])
    with np.load(case / "truth.npz") as z:
        labels = z["labels"]
    return tr, ds, vol, labels, (row, col, nrm)


def _voxel(p, ds, frame):
    row, col, nrm = frame
    ipp = np.array([d.ImagePositionPatient for d in ds], float)
    ps = np.array(ds[0].PixelSpacing, float)
    k = int(np.argmin(np.abs(ipp @ nrm - p @ nrm)))
    d = p - ipp[k]
    return k, int(round(d @ col / ps[0])), int(round(d @ row / ps[1])), ps


def test_layout(built):
    case = built[0]
    files = sorted((case / "dicom").glob("*.dcm"))
    tr = json.loads((case / "truth.json").read_text())
    assert (case / "truth.npz").is_file()
    assert {f.name for f in files} == {f"IM{i + 1}.dcm" for i in range(len(files))}
    ds = [pydicom.dcmread(f) for f in files]
    assert len({d.SeriesInstanceUID for d in ds}) == 1 and len({d.StudyInstanceUID for d in ds}) == 1
    assert all(d.SOPClassUID == MR_STORAGE and d.Modality == "MR" for d in ds)
    assert {d.SOPInstanceUID for d in ds} == set(tr["sop_uids"])
    assert all(str(d.PatientName).startswith("DEVSET") for d in ds)


def test_truth_fields(built):
    tr, ds, vol, labels, frame = _load(built[0])
    for k in REQUIRED:
        assert k in tr, k
    assert tr["task"] == "cmb" and tr["seed"] == SEED and tr["field_t"] in (1.5, 3.0)
    assert [d.SOPInstanceUID for d in ds] == tr["sop_uids"]  # ascending along the normal
    assert tr["count"] == len(tr["microbleeds"]) > 0
    assert tr["grade"] == swi_bleeds.grade(tr["count"])
    for b in tr["microbleeds"]:
        assert len(b["center_mm"]) == 3
        assert 1.5 <= b["diameter_mm"] <= 8.0 + 1e-6 and b["bloom_diameter_mm"] > b["diameter_mm"]
        assert b["location"] in ("lobar", "deep", "infratentorial")
        assert set(b["tags"]) <= TAGS
    assert labels.dtype == np.uint8 and labels.shape == vol.shape
    names = {int(k): v for k, v in tr["label_names"].items()}
    assert set(np.unique(labels)) <= set(names)
    text = " ".join(names.values())
    for word in ("vein", "microbleed", "calcification", "air"):
        assert word in text
    assert all(isinstance(m, dict) and "kind" in m for m in tr["mimics"])
    # separable: centre distance >= sum of bloom radii + 1 mm
    c = np.array([b["center_mm_undistorted"] for b in tr["microbleeds"]])
    rb = np.array([b["bloom_diameter_mm"] / 2 for b in tr["microbleeds"]])
    d = np.linalg.norm(c[:, None] - c[None], axis=-1) + np.eye(len(c)) * 1e9
    assert np.all(d >= rb[:, None] + rb[None] + 1.0 - 0.02)


def test_grades_and_plan():
    assert [swi_bleeds.grade(n) for n in (0, 1, 9, 10, 30, 31, 80)] == [0, 1, 1, 2, 2, 3, 3]
    grades = {build_swi.plan(build_swi.SEED_BASE + i)["grade"] for i in range(60)}
    assert grades == {0, 1, 2, 3}


def test_truth_centres_are_dark_in_the_image(built):
    """Each truth centre, mapped through the written DICOM geometry, is darker than its surroundings."""
    tr, ds, vol, labels, frame = _load(built[0])
    bleed_code = next(int(k) for k, v in tr["label_names"].items() if v.startswith("microbleed (haemo"))
    ratios = []
    for b in tr["microbleeds"]:
        k, r, c, ps = _voxel(np.array(b["center_mm"]), ds, frame)
        assert labels[k, r, c] == bleed_code
        rr, cc = np.mgrid[0:vol.shape[1], 0:vol.shape[2]]
        dist = np.hypot((rr - r) * ps[0], (cc - c) * ps[1])
        rb = b["bloom_diameter_mm"] / 2
        ring = vol[k][(dist > rb + 1.5 * ps[0]) & (dist < rb + 6 * ps[0])]
        ratios.append(vol[k, r, c] / np.median(ring))
    ratios = np.array(ratios)
    assert np.all(ratios < 0.97), ratios
    assert ratios.mean() < 0.8, ratios


def test_same_seed_same_pixels(built):
    a, b = built
    va, vb = _load(a)[2], _load(b)[2]
    assert np.array_equal(va, vb)
    ta, tb = (json.loads((x / "truth.json").read_text()) for x in (a, b))
    assert ta["microbleeds"] == tb["microbleeds"] and ta["sop_uids"] == tb["sop_uids"]


def test_routes_as_swi(built):
    route = pytest.importorskip("svdmark.route")
    from svdmark.domain import RouteKind, Series

    ds = tuple(pydicom.dcmread(f) for f in sorted((built[0] / "dicom").glob("*.dcm")))
    s = Series(str(ds[0].StudyInstanceUID), str(ds[0].SeriesInstanceUID), ds)
    assert route.decide(s.header).kind is RouteKind.CMB

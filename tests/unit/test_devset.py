"""devset: the independent synthetic NCCT development set (small cases only; the whole file runs in < 60 s)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pydicom
import pytest

from devset import build

ROOT = Path(__file__).resolve().parents[2]
REQUIRED = ("seed", "vendor", "slice_thickness", "tilt_deg", "tilt_style", "atrophy", "phenotype", "kernel",
            "noise_sd_hu", "mimics", "wml_ml", "wml_mask_ml", "wml_world_fine_ml", "sop_uids", "acquisition",
            "label_names")
REGIONS = {"white matter", "cortex", "CSF (sulci/cisterns)", "ventricle wall/CSF", "deep grey", "posterior fossa",
           "lacune (mimic)", "old infarct (mimic)", "calcification (mimic)", "skull/extracranial", "falx/tentorium",
           "WML rim (<50% voxel)"}
#: wml_ml (written grid) vs wml_world_fine_ml (template grid, same slab): relative + absolute tolerance
REL_TOL, ABS_TOL_ML = 0.05, 0.05


def _seed_where(pred, limit: int = 200) -> int:
    for i in range(limit):
        if pred(build.plan(build.SEED_BASE + i, small=True)):
            return build.SEED_BASE + i
    raise AssertionError("no seed found")


@pytest.fixture(scope="module")
def lesion_case(tmp_path_factory) -> Path:
    seed = _seed_where(lambda p: p["target_ml"] > 5.0)
    out = tmp_path_factory.mktemp("devset")
    build.build_case(seed, out, small=True)
    return out / f"wml_{seed}"


def _truth(case: Path) -> tuple[dict, dict]:
    tr = json.loads((case / "truth.json").read_text())
    with np.load(case / "truth.npz") as z:
        arrays = {k: z[k] for k in z.files}
    return tr, arrays


def test_no_forbidden_imports():
    """Every devset module, the SWI half's included (build_swi.py and at least five swi_*.py)."""
    bad = re.compile(r"^\s*(from|import)\s+(svdmark_phantom|training|stress|svdmark)\b")
    files = sorted((ROOT / "devset").rglob("*.py"))
    swi = [f for f in files if f.name.startswith("swi_") or f.name == "build_swi.py"]
    assert len(swi) >= 6 and ROOT / "devset" / "build_swi.py" in swi
    for f in files:
        for line in f.read_text().splitlines():
            assert not bad.match(line), f"{f.name}: {line}"


def test_truth_keys_and_volumes(lesion_case):
    tr, arr = _truth(lesion_case)
    for k in REQUIRED:
        assert k in tr, k
    for k in ("n_slices", "rows", "cols", "pixel_spacing", "slice_thickness"):
        assert k in tr["acquisition"], k
    assert REGIONS <= set(tr["label_names"].values())
    assert all(isinstance(m, dict) and "kind" in m for m in tr["mimics"])
    frac, labels = arr["fraction"], arr["labels"]
    acq = tr["acquisition"]
    assert frac.dtype == np.float16 and labels.dtype == np.uint8
    assert frac.shape == labels.shape == (acq["n_slices"], acq["rows"], acq["cols"]) == (len(tr["sop_uids"]),
                                                                                         acq["rows"], acq["cols"])
    vox_ml = acq["pixel_spacing"][0] * acq["pixel_spacing"][1] * acq["slice_thickness"] / 1000.0
    assert tr["wml_ml"] > 0.5
    assert tr["wml_ml"] == pytest.approx(float(frac.astype(np.float64).sum()) * vox_ml, rel=1e-6)
    assert tr["wml_mask_ml"] == pytest.approx(float((frac >= 0.5).sum()) * vox_ml, rel=1e-6)
    assert abs(tr["wml_ml"] - tr["wml_world_fine_ml"]) <= REL_TOL * tr["wml_world_fine_ml"] + ABS_TOL_ML
    assert set(np.unique(labels[frac >= 0.5])) == {30}
    assert {str(v) for v in np.unique(labels)} <= set(tr["label_names"])


def test_routes_as_ncct_and_loads(lesion_case):
    from svdmark import route, volume
    from svdmark.domain import RouteKind, Series

    tr, _ = _truth(lesion_case)
    ds = tuple(pydicom.dcmread(str(f)) for f in sorted((lesion_case / "dicom").glob("*.dcm")))
    series = Series(str(ds[0].StudyInstanceUID), str(ds[0].SeriesInstanceUID), ds)
    assert route.decide(series.header).kind is RouteKind.WML
    vol = volume.load(series)
    acq = tr["acquisition"]
    assert vol.array.shape == (acq["n_slices"], acq["rows"], acq["cols"])
    assert [f.sop_instance_uid for f in vol.frames] == tr["sop_uids"]
    assert ds[0].SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert str(ds[0].PatientName).startswith("DEVSET^")


def test_lesion_free_case(tmp_path):
    seed = _seed_where(lambda p: p["phenotype"] == "none")
    tr = build.build_case(seed, tmp_path, small=True)
    _, arr = _truth(tmp_path / f"wml_{seed}")
    assert tr["wml_ml"] == 0.0 and tr["wml_world_fine_ml"] == 0.0
    assert not np.any(arr["fraction"])


def test_same_seed_same_truth(lesion_case, tmp_path):
    tr1, a1 = _truth(lesion_case)
    seed = tr1["seed"]
    build.build_case(seed, tmp_path, small=True)
    tr2, a2 = _truth(tmp_path / f"wml_{seed}")
    for k in ("seconds",):
        tr1.pop(k), tr2.pop(k)
    assert tr1 == tr2
    assert np.array_equal(a1["fraction"], a2["fraction"]) and np.array_equal(a1["labels"], a2["labels"])

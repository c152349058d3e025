"""stress/: one tiny case per task — truth, geometry, routing and loading through the service's own stages."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

build = pytest.importorskip("stress.build")

from svdmark import route, volume  # noqa: E402
from svdmark.domain import RouteKind, Series  # noqa: E402
from svdmark.infer.preprocess import patient_to_index  # noqa: E402


def _series(case: Path) -> Series:
    ds = tuple(pydicom.dcmread(str(f)) for f in sorted((case / "dicom").glob("*.dcm")))
    return Series(str(ds[0].StudyInstanceUID), str(ds[0].SeriesInstanceUID), ds)


def test_stress_package_is_independent_of_the_training_generator():
    for f in (ROOT / "stress").glob("*.py"):
        text = f.read_text()
        imports = re.findall(r"^\s*(?:from\s+(\S+)\s+import\s+(.+)|import\s+(.+))$", text, re.M)
        for mod, _, plain in imports:
            for m in [mod] + [x.strip() for x in plain.split(",")]:
                assert not re.match(r"(svdmark_phantom|training)\b", m), f"{f.name} imports {m}"


@pytest.fixture(scope="module")
def wml_case(tmp_path_factory):
    out = tmp_path_factory.mktemp("stress")
    truth = build.build_wml_case(build.BASE_SEED["wml"], out, small=True)
    return out / f"wml_{truth['seed']}", truth


@pytest.fixture(scope="module")
def cmb_case(tmp_path_factory):
    out = tmp_path_factory.mktemp("stress")
    truth = build.build_cmb_case(build.BASE_SEED["cmb"], out, small=True)
    return out / f"cmb_{truth['seed']}", truth


def test_wml_case_truth_geometry_and_routing(wml_case):
    case, truth = wml_case
    assert json.loads((case / "truth.json").read_text())["wml_ml"] == truth["wml_ml"]
    series = _series(case)
    decision = route.decide(series.header)
    assert decision.kind is RouteKind.WML, decision
    vol = volume.load(series)
    acq = truth["acquisition"]
    assert vol.shape == (acq["n_slices"], acq["rows"], acq["cols"])
    assert vol.slice_spacing == pytest.approx(acq["plane_spacing"], abs=1e-3)
    if truth["tilt_style"] == "sheared":
        assert vol.gantry_tilt_degrees == pytest.approx(truth["tilt_deg"], abs=0.1)
    else:
        assert vol.gantry_tilt_degrees < 0.1
    # truth arrays map onto the loaded volume through the SOP instance UIDs
    z = np.load(case / "truth.npz")
    k_of = {u: k for k, u in enumerate(truth["sop_uids"])}
    order = [k_of[f.sop_instance_uid] for f in vol.frames]
    frac = z["fraction"].astype(np.float64)[order]
    ml = frac.sum() * vol.voxel_volume_mm3 / 1000.0
    assert ml == pytest.approx(truth["wml_ml"], rel=2e-3)
    # the partial-volume truth agrees with the fine world integral of the same level set
    assert truth["wml_ml"] > 0.5
    assert truth["wml_ml"] == pytest.approx(truth["wml_world_fine_ml"], rel=0.12)
    assert truth["wml_mask_ml"] <= truth["wml_ml"] * 1.5
    # HU: brain tissue sits where it should and lesions are darker than the surrounding white matter
    labels = z["labels"][order]
    hu = vol.array
    wm = hu[(labels == 8) & (frac == 0)]
    les = hu[frac > 0.9]
    assert 15 < np.median(wm) < 40
    if les.size > 20:
        assert np.median(les) < np.median(wm)


def test_cmb_case_truth_geometry_and_routing(cmb_case):
    case, truth = cmb_case
    series = _series(case)
    decision = route.decide(series.header)
    assert decision.kind is RouteKind.CMB, decision
    hdr = series.header
    assert hdr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4"
    vol = volume.load(series)
    assert truth["count"] == len(truth["microbleeds"]) == 6
    assert truth["grade"] == 1
    ref = float(np.median(vol.array[vol.array > np.percentile(vol.array, 60)]))
    dark = 0
    for b in truth["microbleeds"]:
        kij = patient_to_index(vol, np.asarray(b["center_mm"]))
        assert np.allclose(kij, b["center_index_kij"], atol=0.05)
        k, i, j = (int(round(v)) for v in kij)
        assert 0 <= k < vol.shape[0] and 0 <= i < vol.shape[1] and 0 <= j < vol.shape[2]
        patch = vol.array[max(k - 1, 0):k + 2, max(i - 1, 0):i + 2, max(j - 1, 0):j + 2]
        dark += patch.min() < 0.55 * ref
    assert dark >= len(truth["microbleeds"]) - 1  # every bleed (bar a tiny one between slices) is dark where the truth says

"""`svdmark models validate` and `activate --require-validation`, run through the CLI as a site would.

Reference folders are built from the phantom generator: DICOM series written by
``svdmark_phantom.write_series``, reference SEGs written with highdicom from the phantom's truth
mask, or points/CSV tables. Models are the tiny ONNX fixtures of ``fakemodels`` (a fixed
intensity rule: far from the truth, so it must fail the default criteria).
"""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from tests import journaldb
from . import fakemodels
from .conftest import run_cli, run_json

WML_CASES = ((31, 1.0), (32, 3.0), (33, 6.0), (34, 12.0))  # (seed, target mL)
CMB_CASES = ((41, 0), (42, 3), (43, 9))  # (seed, microbleeds)


def _env(models: Path) -> dict:
    return {"SVDMARK_MODELS_DIR": str(models), "SVDMARK_PSEUDONYM_KEY": "validation-test"}


def write_seg(source_paths: list[Path], mask: np.ndarray, out: Path, label: str) -> Path:
    """A binary DICOM SEG of ``mask`` (slice k ↔ ``source_paths[k]``), written with highdicom."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    sources = [pydicom.dcmread(p) for p in source_paths]
    desc = hd.seg.SegmentDescription(
        segment_number=1, segment_label=label,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Lesion, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=mask.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=[desc],
        series_instance_uid=hd.UID(), series_number=900, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer="site reader", manufacturer_model_name="manual", software_versions="1",
        device_serial_number="1", omit_empty_frames=bool(mask.any()))
    out.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(out)
    return out


def _uid(paths: list[Path]) -> str:
    return str(pydicom.dcmread(paths[0], stop_before_pixels=True).SeriesInstanceUID)


@pytest.fixture(scope="module")
def wml_site(tmp_path_factory) -> dict:
    """Four NCCT cases with SEG references of the phantom's lesion mask (12 slices of 128 px)."""
    from svdmark_phantom import make_ncct, write_series

    root = tmp_path_factory.mktemp("wml_site")
    truth = {}
    for seed, ml in WML_CASES:
        ph = make_ncct(seed=seed, matrix=128, slice_thickness=5.0, n_slices=12, wml_ml=ml)
        paths = write_series(ph, root / f"patient{seed}" / "study" / "ct", vendor="siemens")
        write_seg(paths, ph.truth_mask, root / f"patient{seed}" / "seg" / "wml.dcm", "WML")
        truth[_uid(paths)] = {"mask_ml": float(ph.truth_mask.sum()) * ph.voxel_volume_mm3 / 1000.0,
                              "wml_ml": float(ph.truth_wml_ml)}
    return {"root": root, "truth": truth}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """wml-ncct 1.0.0 (active) and a candidate 1.0.1 whose manifest sets its own min_cases; cmb-swi 1.0.0."""
    pytest.importorskip("onnx", reason="the test models are built with the onnx package (pip install -e .[test])")
    root = tmp_path_factory.mktemp("val_models")
    fakemodels.make_wml(root, "1.0.0")
    fakemodels.make_cmb(root, "1.0.0")
    cand = fakemodels.make_wml(root, "1.0.1", gain=4.5)
    m = json.loads((cand / "manifest.json").read_text())
    m["validation"] = {"min_cases": 4}
    (cand / "manifest.json").write_text(json.dumps(m, indent=2))
    (root / "wml-ncct" / "ACTIVE").write_text("1.0.0\n")
    return root


def _validate(models: Path, data: Path, name: str, version: str, ref: Path, out: Path, rc: int) -> dict:
    r = run_cli("models", "validate", name, version, "--reference", ref, "--output", out, "--data-dir", data,
                "--json", env=_env(models))
    assert r.returncode == rc, f"rc {r.returncode}\nstdout:\n{r.stdout[-3000:]}\nstderr:\n{r.stderr[-3000:]}"
    return json.loads(r.stdout)


def _audit(data: Path) -> list[dict]:
    rows = journaldb.query(data, "SELECT at, actor, action, detail FROM audit WHERE action LIKE 'model.%' ORDER BY id")
    return [{"at": a, "actor": u, "action": act, **json.loads(d)} for a, u, act, d in rows]


def test_validate_wml_seg_reference_report_and_audit(tmp_path, wml_site, models):
    data, out = tmp_path / "data", tmp_path / "report"
    rep = _validate(models, data, "wml-ncct", "1.0.0", wml_site["root"], out, rc=1)  # the fake model is far off

    for f in ("report.html", "report.json", "bland_altman.png", "scatter.png"):
        assert (out / f).is_file(), f
    assert (out / "bland_altman.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    full = json.loads((out / "report.json").read_text())
    assert full["figures"] == json.loads(json.dumps(rep["figures"]))
    page = (out / "report.html").read_text()
    assert "Verdict: FAIL" in page and "bland_altman.png" in page and "ICC(2,1)" in page

    # the figures are those of the per-case table, and the reference is the SEG's mask volume
    cases = full["cases"]
    assert len(cases) == len(WML_CASES) and all(c["status"] == "measured" for c in cases)
    for c in cases:
        assert c["reference_kind"] == "mask"
        assert c["reference_value"] == pytest.approx(wml_site["truth"][c["series_uid"]]["mask_ml"], rel=1e-4)  # DICOM rounds the geometry
        assert 0.0 <= c["dice"] <= 1.0
    m = np.array([c["model_value"] for c in cases])
    r = np.array([c["reference_value"] for c in cases])
    fig = rep["figures"]
    assert fig["counts"] == {"cases": 4, "included": 4, "withheld": 0, "failed": 0}
    ba = fig["primary"]["bland_altman"]
    assert ba["n"] == 4 and ba["bias"] == pytest.approx(float(np.mean(m - r)))
    assert ba["loa_high"] - ba["loa_low"] == pytest.approx(2 * 1.96 * float(np.std(m - r, ddof=1)))
    assert fig["primary"]["mae"] == pytest.approx(float(np.mean(np.abs(m - r))))
    assert fig["primary"]["pearson"]["r"] == pytest.approx(float(np.corrcoef(m, r)[0, 1]))
    assert "absolute agreement" in fig["primary"]["icc"]["type"]
    assert sum(b["n"] for b in fig["mae_by_bin"]) == 4 and [b["bin"] for b in fig["mae_by_bin"]] == \
        ["0", "<1", "1-3", "3-10", "10-25", "≥25"]
    assert fig["dice"]["n"] == 4
    assert fig["intervals"]["n_with_interval"] == 0  # the fixture model reports no interval
    # defaults, stated; a model this far off fails them
    assert rep["criteria_source"] == "default" and not rep["passed"] and rep["verdict"] == "fail"
    crit = {c["key"]: c for c in rep["criteria"]}
    assert crit["max_abs_bias_ml"]["threshold"] == 1.0 and not crit["max_abs_bias_ml"]["met"]
    assert crit["min_cases"]["threshold"] == 20 and not crit["min_cases"]["met"]

    audit = [a for a in _audit(data) if a["action"] == "model.validate"]
    assert len(audit) == 1
    a = audit[0]
    assert (a["name"], a["version"], a["n_cases"], a["verdict"], a["passed"]) == ("wml-ncct", "1.0.0", 4, "fail", False)
    assert a["reference_dir"] == str(wml_site["root"].resolve()) and a["report"] == str(out / "report.html")
    assert a["sha256"] == rep["sha256"] and a["at"] > 0

    # human output names the verdict and the report
    r = run_cli("models", "validate", "wml-ncct", "1.0.0", "--reference", wml_site["root"], "--output",
                tmp_path / "r2", "--data-dir", data, env=_env(models))
    assert r.returncode == 1 and "FAIL" in r.stdout and "ICC(2,1)" in r.stdout and "report.html" in r.stdout


def _csv_site(root: Path, images: Path, values: dict[str, float]) -> Path:
    shutil.copytree(images, root, ignore=shutil.ignore_patterns("seg"))
    with open(root / "reference.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["series_uid", "wml_ml"])
        for uid, v in values.items():
            w.writerow([uid, f"{v:.6f}"])
    return root


def test_require_validation_and_an_honest_verdict(tmp_path, wml_site, models):
    env, data = _env(models), tmp_path / "data"

    r = run_cli("models", "activate", "wml-ncct", "1.0.1", "--require-validation", "--data-dir", data, env=env)
    assert r.returncode == 1 and "no validation recorded" in r.stderr and "models validate" in r.stderr

    # 1.0.1 against the SEG truth: fails (far off); its own measurements give a self-consistent reference
    first = _validate(models, data, "wml-ncct", "1.0.1", wml_site["root"], tmp_path / "r1", rc=1)
    measured = {c["series_uid"]: c["model_value"]
                for c in json.loads((tmp_path / "r1" / "report.json").read_text())["cases"]}
    assert first["figures"]["counts"]["included"] == 4
    r = run_cli("models", "activate", "wml-ncct", "1.0.1", "--require-validation", "--data-dir", data, env=env)
    assert r.returncode == 1 and "FAILED" in r.stderr

    # the same model against a reference that is deliberately double: must fail on bias and MAE
    doubled = _csv_site(tmp_path / "double", wml_site["root"], {u: 2 * v for u, v in measured.items()})
    bad = _validate(models, data, "wml-ncct", "1.0.1", doubled, tmp_path / "r2", rc=1)
    crit = {c["key"]: c for c in bad["criteria"]}
    assert not bad["passed"] and not crit["max_abs_bias_ml"]["met"] and not crit["max_mae_ml"]["met"]
    assert bad["figures"]["primary"]["bland_altman"]["bias"] == pytest.approx(-np.mean(list(measured.values())),
                                                                               rel=1e-4)
    assert crit["min_cases"]["source"] == "manifest" and crit["min_cases"]["threshold"] == 4
    assert crit["min_icc"]["source"] == "default"

    # ... and against a reference it matches: passes, and activation with --require-validation goes through
    same = _csv_site(tmp_path / "same", wml_site["root"], measured)
    good = _validate(models, data, "wml-ncct", "1.0.1", same, tmp_path / "r3", rc=0)
    assert good["passed"] and good["verdict"] == "pass" and good["criteria_source"] == "manifest"
    assert abs(good["figures"]["primary"]["bland_altman"]["bias"]) < 1e-4
    assert good["figures"]["primary"]["icc"]["value"] > 0.999
    assert "Verdict: PASS" in (tmp_path / "r3" / "report.html").read_text()
    act = run_json("models", "activate", "wml-ncct", "1.0.1", "--require-validation", "--data-dir", data, env=env)
    assert act["version"] == "1.0.1" and act["changed"]

    # without the flag, activation works as before (1.0.0 was never validated here)
    act = run_json("models", "activate", "wml-ncct", "1.0.0", "--data-dir", data, env=env)
    assert act["version"] == "1.0.0"
    actions = [a["action"] for a in _audit(data)]
    assert actions.count("model.validate") == 3 and actions.count("model.activate_refused") == 2
    assert actions[-2:] == ["model.activate", "model.activate"]


def test_validate_cmb_seg_and_points(tmp_path, models):
    from scipy import ndimage as ndi

    from svdmark_phantom import make_swi, write_series

    seg_dir, pts_dir = tmp_path / "seg_site", tmp_path / "points_site"
    n_components, n_bleeds, points = {}, {}, []
    for seed, n in CMB_CASES:
        ph = make_swi(seed=seed, matrix=128, slice_thickness=2.5, n_slices=24, n_cmb=n)
        paths = write_series(ph, seg_dir / f"case{seed}" / "swi", vendor="ge")
        uid = _uid(paths)
        write_seg(paths, ph.truth_mask, seg_dir / f"case{seed}" / "ref" / "cmb.dcm", "CMB")
        n_components[uid] = ndi.label(ph.truth_mask > 0, structure=np.ones((3, 3, 3)))[1]
        n_bleeds[uid] = len(ph.microbleeds)
        points += [[uid, *xyz, d] for xyz, d, _ in ph.microbleeds] or [[uid, "", "", "", ""]]
    shutil.copytree(seg_dir, pts_dir, ignore=shutil.ignore_patterns("ref"))
    with open(pts_dir / "points.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["series_uid", "x", "y", "z", "diameter_mm"], *points])

    data = tmp_path / "data"
    for ref, expected in ((seg_dir, n_components), (pts_dir, n_bleeds)):
        rep = _validate(models, data, "cmb-swi", "1.0.0", ref, tmp_path / ref.name / "out", rc=1)
        cases = json.loads((tmp_path / ref.name / "out" / "report.json").read_text())["cases"]
        assert {c["series_uid"]: c["reference_value"] for c in cases} == {u: float(v) for u, v in expected.items()}
        det = rep["figures"]["detection"]
        assert det["scans"] == 3 and det["reference_bleeds"] == sum(expected.values())
        assert det["true_positives"] + det["false_negatives"] == det["reference_bleeds"]
        assert det["model_bleeds"] == sum(c["model_value"] for c in cases)
        assert det["false_positives_per_scan"] == pytest.approx(det["false_positives"] / 3)
        if det["reference_bleeds"]:
            assert det["sensitivity"] == pytest.approx(det["true_positives"] / det["reference_bleeds"])
        g = rep["figures"]["grades"]
        assert sum(map(sum, g["confusion"])) == 3
        assert not rep["passed"]  # the fixture finds far too many bleeds: FP/scan fails
        assert not {c["key"]: c for c in rep["criteria"]}["max_false_positives_per_scan"]["met"]
        assert (tmp_path / ref.name / "out" / "report.html").is_file()


def test_validate_refuses_what_it_cannot_do(tmp_path, wml_site, models):
    env, data = _env(models), tmp_path / "data"
    r = run_cli("models", "validate", "wml-ncct", "1.0.0", "--reference", tmp_path / "nope", "--data-dir", data,
                env=env)
    assert r.returncode == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run_cli("models", "validate", "wml-ncct", "1.0.0", "--reference", empty, "--data-dir", data, env=env)
    assert r.returncode == 1 and "no case to validate" in r.stderr
    r = run_cli("models", "validate", "wml-ncct", "9.9", "--reference", wml_site["root"], "--data-dir", data, env=env)
    assert r.returncode == 1 and "no version '9.9'" in r.stderr


# --------------------------------------------------------------------------- statistics (no CLI)
def test_icc_matches_shrout_fleiss_example():
    from svdmark.validation.agreement import icc_a1

    # Shrout & Fleiss 1979, Table 2: 6 targets, 4 judges; ICC(2,1) = .29
    x = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]], float)
    out = icc_a1(x)
    assert out["value"] == pytest.approx(0.290, abs=0.001)
    lo, hi = out["ci95"]
    assert lo == pytest.approx(0.019, abs=0.002) and hi == pytest.approx(0.761, abs=0.002)
    assert icc_a1(np.column_stack([x[:, 0], x[:, 0] + 5]))["value"] < icc_a1(np.column_stack([x[:, 0], x[:, 0]]))["value"]


def test_weighted_kappa_matches_scikit_learn():
    sk = pytest.importorskip("sklearn.metrics")
    from svdmark.validation.agreement import weighted_kappa

    rng = np.random.default_rng(3)
    a = rng.integers(0, 4, 60)
    b = np.clip(a + rng.integers(-1, 2, 60), 0, 3)
    assert weighted_kappa(a, b) == pytest.approx(sk.cohen_kappa_score(a, b, weights="linear", labels=[0, 1, 2, 3]))
    assert weighted_kappa([1, 1, 1], [1, 1, 1]) is None  # undefined, not 1


def test_matching_is_one_to_one_within_tolerance():
    from svdmark.validation.agreement import match_points

    ref = [(0, 0, 0), (10, 0, 0)]
    m = match_points([(1, 0, 0), (2, 0, 0), (30, 0, 0)], ref, [None, None])
    assert (m.true_positives, m.false_positives, m.false_negatives) == (1, 2, 1)
    m = match_points([(17, 0, 0)], ref, [None, 8.0])  # 7 mm from a bleed of 8 mm diameter: a hit
    assert (m.true_positives, m.false_positives, m.false_negatives) == (1, 0, 1)


def test_withheld_cases_are_counted_not_used_and_intervals_covered():
    from svdmark.validation.agreement import figures
    from svdmark.validation.cases import Case

    cases = [Case("1", "s", "value", "f", status="measured", model_value=2.0, reference_value=1.5, interval=(1.0, 3.0)),
             Case("2", "s", "value", "f", status="measured", model_value=6.0, reference_value=4.0, interval=(5.0, 7.0)),
             Case("3", "s", "value", "f", status="measured", model_value=12.0, reference_value=11.0),
             Case("4", "s", "value", "f", status="withheld", reason="motion", reference_value=30.0),
             Case("5", "s", "value", "f", status="failed", reason="bad pixels")]
    f = figures("wml", cases)
    assert f["counts"] == {"cases": 5, "included": 3, "withheld": 1, "failed": 1}
    assert f["primary"]["n"] == 3 and f["primary"]["bland_altman"]["bias"] == pytest.approx((0.5 + 2 + 1) / 3)
    assert f["intervals"] == {"n_with_interval": 2, "covered": 1, "coverage": 0.5}
    assert {b["bin"]: b["n"] for b in f["mae_by_bin"]} == {"0": 0, "<1": 0, "1-3": 1, "3-10": 1, "10-25": 1, "≥25": 0}


def test_a_validation_holds_for_its_manifest_and_a_refused_reference_says_why(tmp_path, wml_site, models):
    """A manifest edited after its validation (thresholds, limits) needs a new one; a reference file that cannot be
    used is named with its reason; an --output that holds a report is not overwritten; a malformed criterion in the
    manifest is named, not a traceback."""
    local = tmp_path / "models"
    shutil.copytree(models, local)
    env, data = _env(local), tmp_path / "data"
    first = _validate(local, data, "wml-ncct", "1.0.1", wml_site["root"], tmp_path / "r1", rc=1)
    assert first["figures"]["counts"]["included"] == 4
    measured = {c["series_uid"]: c["model_value"]
                for c in json.loads((tmp_path / "r1" / "report.json").read_text())["cases"]}
    same = _csv_site(tmp_path / "same", wml_site["root"], measured)
    r = run_cli("models", "validate", "wml-ncct", "1.0.1", "--reference", same, "--output", tmp_path / "r1",
                "--data-dir", data, env=env)
    assert r.returncode != 0 and "already holds a validation report" in r.stderr
    assert _validate(local, data, "wml-ncct", "1.0.1", same, tmp_path / "r2", rc=0)["passed"]

    manifest = local / "wml-ncct" / "1.0.1" / "manifest.json"
    m = json.loads(manifest.read_text())
    m["output"]["mask_threshold"] = 0.95  # changed after the validation
    manifest.write_text(json.dumps(m, indent=2))
    r = run_cli("models", "activate", "wml-ncct", "1.0.1", "--require-validation", "--data-dir", data, env=env)
    assert r.returncode == 1 and "is not the one validated" in r.stderr

    broken = tmp_path / "broken"
    shutil.copytree(wml_site["root"], broken, ignore=shutil.ignore_patterns("seg"))
    with open(broken / "reference.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["series_uid", "wml_ml"], *[[u, "n/a"] for u in measured]])
    r = run_cli("models", "validate", "wml-ncct", "1.0.1", "--reference", broken, "--output", tmp_path / "r3",
                "--data-dir", data, env=env)
    assert r.returncode != 0 and "Reference files not used" in r.stderr and "reference.csv" in r.stderr
    # counts only, for a WML model: refused before any series is analysed, naming the missing column
    with open(broken / "reference.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["series_uid", "cmb_count"], *[[u, "3"] for u in measured]])
    r = run_cli("models", "validate", "wml-ncct", "1.0.1", "--reference", broken, "--output", tmp_path / "r3",
                "--data-dir", data, env=env)
    assert r.returncode != 0 and "no wml_ml for series" in r.stderr and "validate: 1/" not in r.stderr + r.stdout

    m["validation"] = {"min_cases": "two"}
    manifest.write_text(json.dumps(m, indent=2))
    r = run_cli("models", "validate", "wml-ncct", "1.0.1", "--reference", same, "--output", tmp_path / "r4",
                "--data-dir", data, env=env)
    assert r.returncode != 0 and "'min_cases' must be a number" in r.stderr and "Traceback" not in r.stderr
    errors = [a for a in _audit(data) if a["action"] == "model.validate_error"]
    assert len(errors) == 4 and "already holds a validation report" in errors[0]["reason"]
    assert "no wml_ml for series" in errors[2]["reason"]  # every run without a verdict is audited, with why
    shown = run_cli("models", "show", "wml-ncct", "1.0.1", "--data-dir", data, env=env).stdout
    assert "model.validate" in shown and " FAIL" in shown and " PASS" in shown

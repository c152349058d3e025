"""`svdmark analyze` through the entry point: bad files, zips, resume, interrupt, usage errors."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
import zipfile
from pathlib import Path

import pandas as pd
import pydicom
import pytest

from .conftest import SVDMARK, run_cli


@pytest.fixture
def junk_set(tmp_path, studies) -> dict:
    """The NCCT study as a folder, the SWI study as a zip, plus junk files of every kind."""
    root = tmp_path / "archive"
    shutil.copytree(studies["ncct"].out_dir, root / "ncct")
    with zipfile.ZipFile(root / "swi.zip", "w") as zf:
        for f in sorted(Path(studies["swi"].out_dir).rglob("*.dcm")):
            zf.write(f, f.relative_to(studies["swi"].out_dir))
    (root / "junk").mkdir()
    (root / "junk" / "notes.txt").write_text("not DICOM at all\n")
    (root / "junk" / "empty.dcm").write_bytes(b"")
    target = sorted((root / "ncct").glob("02_*/*.dcm"))[0]
    (root / "junk" / "truncated.dcm").write_bytes(target.read_bytes()[:3000])
    (root / "junk" / "broken.zip").write_bytes(b"PK\x03\x04" + b"\0" * 40)
    sr_like = pydicom.dcmread(target)  # a valid DICOM file that is not an analysable image
    sr_like.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.22"
    sr_like.file_meta.MediaStorageSOPClassUID = sr_like.SOPClassUID
    sr_like.SOPInstanceUID = sr_like.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4.5.6.7"
    sr_like.save_as(root / "junk" / "report.dcm")
    return {"root": root, "junk": sorted((root / "junk").iterdir())}


def _tables(out: Path):
    return pd.read_csv(out / "results.csv", dtype=str), pd.read_csv(out / "errors.csv", dtype=str)


def test_analyze_bad_files_zip_and_resume(tmp_path, junk_set, studies, fake_models):
    env = {"SVDMARK_MODELS_DIR": str(fake_models), "SVDMARK_PSEUDONYM_KEY": "test-key"}
    out = tmp_path / "out"
    r = run_cli("analyze", junk_set["root"], "--output", out, "--data-dir", tmp_path / "nodata", env=env, check_rc=0)
    results, errors = _tables(out)
    pq = pd.read_parquet(out / "results.parquet")
    assert len(pq) == len(results)

    # one row per series, nothing twice
    expected_series = {s.series_uid for s in studies["ncct"].series} | {s.series_uid for s in studies["swi"].series}
    assert set(results["series_uid"]) == expected_series
    assert results["series_uid"].is_unique

    by_uid = results.set_index("series_uid")
    for s in list(studies["ncct"].series) + list(studies["swi"].series):
        row = by_uid.loc[s.series_uid]
        if s.target:
            assert row["status"] == "analysed", row.to_dict()
            assert row["model_name"] in ("wml-ncct", "cmb-swi") and row["model_version"] == "1.0.0"
            assert len(row["model_sha256"]) == 64 and row["ruleset_version"]
            assert float(row["seconds"]) > 0
            for kind in ("sr", "seg", "summary"):
                ds = pydicom.dcmread(out / row[f"{kind}_file"])
                assert str(ds.StudyInstanceUID) == row["study_uid"]
        else:
            assert row["status"] == "ignored" and row["routing"] == "ignored"
            assert isinstance(row["reason"], str) and len(row["reason"]) > 10
    wml = by_uid.loc[next(s.series_uid for s in studies["ncct"].series if s.target)]
    cmb = by_uid.loc[next(s.series_uid for s in studies["swi"].series if s.target)]
    assert float(wml["wml_ml"]) >= 0 and pd.isna(wml["cmb_count"])
    assert int(cmb["cmb_count"]) >= 0 and 0 <= int(cmb["cmb_grade"]) <= 3
    # the phantom studies ("CT HEAD W/O CONTRAST", ...) are not on the stroke pathway: by default
    # ([flags] applicability = "condition") no aspirin flag is attached, the volume still is reported
    flag_columns = [c for c in results if c.startswith("flag_")]
    assert flag_columns and results[flag_columns].isna().all().all()  # the columns are there, empty
    assert "flags" not in results and "warnings" not in results  # no packed columns (test_research_table.py)

    # the pseudonym is a keyed hash, and no raw identifier is in any table
    from svdmark.logs import pseudonym

    header = pydicom.dcmread(next(Path(studies["ncct"].out_dir).rglob("*.dcm")), stop_before_pixels=True)
    assert wml["patient_pseudonym"] == pseudonym(str(header.PatientID), b"test-key")
    for f in ("results.csv", "errors.csv"):
        text = (out / f).read_text()
        assert str(header.PatientID) not in text and str(header.PatientName) not in text

    # every junk file is listed with a reason, none stopped the run
    listed = dict(zip(errors["file"], errors["reason"]))
    for junk in junk_set["junk"]:
        assert str(junk) in listed, f"{junk} missing from errors table: {sorted(listed)}"
    assert "not a DICOM file" in listed[str(junk_set["root"] / "junk" / "notes.txt")]
    assert "empty" in listed[str(junk_set["root"] / "junk" / "empty.dcm")]
    assert re.search(r"truncated|but only \d+ remain", listed[str(junk_set["root"] / "junk" / "truncated.dcm")])
    assert "zip" in listed[str(junk_set["root"] / "junk" / "broken.zip")]
    assert "not analysed" in listed[str(junk_set["root"] / "junk" / "report.dcm")]
    trunc = errors[errors["file"] == str(junk_set["root"] / "junk" / "truncated.dcm")].iloc[0]
    assert trunc["series_uid"] in expected_series  # the series is named when it is known
    assert "analysed" in r.stdout and "ignored" in r.stdout

    # the SWI series came out of the zip
    assert any(".zip" not in f for f in errors["file"])  # sanity: errors not all from the zip
    state_files = sorted((out / "state" / "series").glob("*.json"))
    assert len(state_files) == 2
    mtimes = {p: p.stat().st_mtime_ns for p in state_files}
    sr_mtime = (out / wml["sr_file"]).stat().st_mtime_ns

    # resume: a second run skips both analysed series and gives the same table
    r2 = run_cli("analyze", junk_set["root"], "--output", out, "--data-dir", tmp_path / "nodata", env=env, check_rc=0)
    assert "already analysed" in r2.stderr
    assert "2 from an earlier run" in r2.stdout
    results2, errors2 = _tables(out)
    assert {p: p.stat().st_mtime_ns for p in state_files} == mtimes
    assert (out / wml["sr_file"]).stat().st_mtime_ns == sr_mtime
    cols = ["series_uid", "status", "wml_ml", "cmb_count", "model_sha256", "patient_pseudonym", "sr_sop_uid"]
    pd.testing.assert_frame_equal(results[cols], results2[cols])
    assert len(errors2) == len(errors)

    # --json for scripts
    r3 = run_cli("analyze", junk_set["root"], "--output", out, "--json", "--data-dir", tmp_path / "nodata", env=env,
                 check_rc=0)
    import json

    doc = json.loads(r3.stdout)
    assert doc["complete"] and doc["counts"]["analysed"] == 2 and doc["counts"]["reused"] == 2


@pytest.mark.slow
def test_analyze_interrupt_then_resume(tmp_path, fake_models):
    """SIGINT mid-run, then the same command again: every series once, nothing lost."""
    from svdmark_phantom import write_study

    src = tmp_path / "many"
    truths = [write_study(src / f"s{i}", seed=40 + i, kind="ncct" if i % 2 else "swi", vendor="ge", matrix=64,
                          distractors=False, slice_thickness=5.0 if i % 2 else 2.5) for i in range(10)]
    targets = {s.series_uid for t in truths for s in t.series if s.target}
    out = tmp_path / "out"
    env = dict(os.environ, SVDMARK_MODELS_DIR=str(fake_models), SVDMARK_PSEUDONYM_KEY="k", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([SVDMARK, "analyze", str(src), "--output", str(out), "--workers", "2",
                             "--data-dir", str(tmp_path / "nodata")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            # as from a terminal: a suite started in the background (bash `&`) passes SIGINT on
                            # ignored, and Python then never raises KeyboardInterrupt
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if list((out / "state" / "series").glob("*.json")):
            break
        time.sleep(0.05)
    interrupted = proc.poll() is None
    if interrupted:
        proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    # ten series on two workers: the first saved row leaves eight to do, so the signal lands mid-run (with five,
    # a loaded machine once saw the last row written before the signal arrived)
    assert interrupted and proc.returncode == 1, f"the run was not interrupted mid-way: {stderr[-2000:]}"
    assert "interrupted" in stderr and "again" in stderr
    partial = pd.read_csv(out / "results.csv", dtype=str)
    assert partial["series_uid"].is_unique

    r = run_cli("analyze", src, "--output", out, "--data-dir", tmp_path / "nodata",
                env={"SVDMARK_MODELS_DIR": str(fake_models), "SVDMARK_PSEUDONYM_KEY": "k"}, check_rc=0)
    results = pd.read_csv(out / "results.csv", dtype=str)
    assert results["series_uid"].is_unique
    assert set(results["series_uid"]) == targets
    assert (results["status"] == "analysed").all()
    for f in results["sr_file"]:
        pydicom.dcmread(out / f)
    assert not list((out / "dicom").glob("*/.staging-*"))
    assert "earlier run" in r.stdout


def test_analyze_usage_errors(tmp_path):
    r = run_cli("analyze", tmp_path / "does-not-exist", "--output", tmp_path / "o")
    assert r.returncode == 2 and "does-not-exist" in r.stderr
    r = run_cli("analyze", tmp_path)
    assert r.returncode == 2 and "--output" in r.stderr
    r = run_cli("analyze", tmp_path, "--output", tmp_path / "o", "--workers", "0")
    assert r.returncode == 2
    r = run_cli("analyze", "--help")
    assert r.returncode == 0 and "results" in r.stdout and "resume" in r.stdout.lower()


def test_analyze_without_models_fails_clearly(tmp_path, studies):
    empty = tmp_path / "no-models"
    empty.mkdir()
    out = tmp_path / "out"
    r = run_cli("analyze", studies["ncct"].out_dir, "--output", out, "--data-dir", tmp_path / "nodata",
                env={"SVDMARK_MODELS_DIR": str(empty)})
    assert r.returncode == 1
    assert "no model for task 'wml'" in r.stdout
    results = pd.read_csv(out / "results.csv", dtype=str)
    assert (results[results["status"] == "failed"]["reason"].str.contains("no model")).all()
    errors = pd.read_csv(out / "errors.csv", dtype=str)
    assert errors["reason"].str.contains("series not analysed").any()


def test_analyze_with_packaged_models(tmp_path, studies):
    """The shipped models (svdmark/data/models/), as a new user runs it: no model options at all."""
    from .conftest import packaged_models

    tasks = {__import__("json").loads((p / "manifest.json").read_text()).get("task") for p in packaged_models()}
    if not {"wml", "cmb"} <= tasks:
        pytest.skip(f"svdmark/data/models/ has no trained {' and '.join(sorted({'wml', 'cmb'} - tasks))} model yet")
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "SVDMARK_MODELS_DIR"}
    r = subprocess.run([SVDMARK, "analyze", str(studies["root"]), "--output", str(out), "--data-dir",
                        str(tmp_path / "nodata")], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    results = pd.read_csv(out / "results.csv", dtype=str).set_index("series_uid")
    wml = results.loc[next(s.series_uid for s in studies["ncct"].series if s.target)]
    cmb = results.loc[next(s.series_uid for s in studies["swi"].series if s.target)]
    assert wml["status"] == "analysed" and float(wml["wml_ml"]) >= 0
    assert cmb["status"] == "analysed" and int(cmb["cmb_grade"]) in (0, 1, 2, 3)


def test_analyze_bare_datasets_like_part10(tmp_path, studies, fake_models):
    """Files without the Part 10 preamble/meta (old archives) give the same result as the originals."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    target = next(s for s in studies["ncct"].series if s.target)
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in sorted((Path(studies["ncct"].out_dir) / target.folder).glob("*.dcm")):
        ds = pydicom.dcmread(f)
        del ds.file_meta
        buf = DicomBytesIO()
        buf.is_little_endian, buf.is_implicit_VR = True, True
        write_dataset(buf, ds)
        (bare / f.name).write_bytes(buf.getvalue())
    env = {"SVDMARK_MODELS_DIR": str(fake_models), "SVDMARK_PSEUDONYM_KEY": "k"}
    run_cli("analyze", bare, "--output", tmp_path / "a", "--data-dir", tmp_path / "nd", env=env, check_rc=0)
    run_cli("analyze", Path(studies["ncct"].out_dir) / target.folder, "--output", tmp_path / "b",
            "--data-dir", tmp_path / "nd", env=env, check_rc=0)
    a, b = (pd.read_csv(tmp_path / x / "results.csv") for x in ("a", "b"))
    cols = ["series_uid", "status", "wml_ml", "sr_sop_uid", "patient_pseudonym"]
    pd.testing.assert_frame_equal(a[cols], b[cols])
    assert a["status"].tolist() == ["analysed"]


def test_analyze_reads_changed_bytes_and_settings_again_and_keeps_a_failed_series_routing(tmp_path, studies,
                                                                                         fake_models):
    """A finished row is reused only for the same bytes and settings; an incomplete series carries the service's
    warning; a series that fails keeps where it was routed."""
    import json

    env = {"SVDMARK_MODELS_DIR": str(fake_models), "SVDMARK_PSEUDONYM_KEY": "test-key"}
    root, out = tmp_path / "archive", tmp_path / "out"
    target = next(s for s in studies["ncct"].series if s.target)
    shutil.copytree(Path(studies["ncct"].out_dir) / target.folder, root / "ct")
    files = sorted((root / "ct").glob("*.dcm"))

    def analyse(*extra) -> dict:
        r = run_cli("analyze", root, "--output", out, "--json", "--data-dir", tmp_path / "nodata", *extra, env=env,
                    check_rc=None)
        return json.loads(r.stdout)

    assert analyse()["counts"]["analysed"] == 1
    assert analyse()["counts"]["reused"] == 1
    ds = pydicom.dcmread(files[len(files) // 2])
    ds.PixelData = bytes(len(ds.PixelData))  # the same UIDs, other pixels: a re-export, say
    ds.save_as(files[len(files) // 2])
    assert analyse()["counts"]["reused"] == 0
    always = tmp_path / "always.toml"
    always.write_text('[flags]\napplicability = "always"\n')
    doc = analyse("--config", always)
    assert doc["counts"]["reused"] == 0  # the flags attach now: the earlier row does not say so
    assert _tables(out)[0]["flag_aspirin_sich_wml_category"].notna().any()

    files[-1].unlink()  # the top slice gone: analysed, with the service's warning
    analyse()
    notes = pd.read_csv(out / "notes.csv", dtype=str)
    assert any(t.startswith(f"incomplete series: {len(files) - 1} of ") for t in notes["text"])
    files[len(files) // 2].unlink()  # a slice from the middle gone too: not analysed
    analyse()
    (row,) = _tables(out)[0].to_dict("records")
    assert row["status"] == "failed" and "missing slices" in row["reason"]
    assert row["routing"] == "wml" and row["task"] == "wml" and isinstance(row["rule_id"], str)

    other = tmp_path / "other"  # another archive into the same output: the table is this run's, and it says so
    shutil.copytree(studies["swi"].out_dir, other)
    r = run_cli("analyze", other, "--output", out, "--json", "--data-dir", tmp_path / "nodata", env=env)
    assert json.loads(r.stdout)["counts"]["not_in_inputs"] == 1

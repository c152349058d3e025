"""`svdmark analyze`'s research table as a trial statistician meets it: names R/Stata/SAS take,
one typed value per column, acquisition descriptors from the DICOM headers, shifted dates on
request, rule constants in rules.json, a data dictionary, umask-readable files, and exit 1
when nothing was analysed."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import shutil
import subprocess
import tomllib
import zipfile
from pathlib import Path

import pandas as pd
import pydicom
import pytest

import svdmark
from svdmark.batch import table as T
from svdmark.batch.acquisition import shift_days

from .conftest import SVDMARK, run_cli

SAS_STATA_R = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,31}$")  # the strictest of the three (Stata/SAS: 32)


def _analyze(*args, umask: int = 0o022, env: dict | None = None) -> subprocess.CompletedProcess:
    full = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    return subprocess.run([SVDMARK, "analyze", *map(str, args)], capture_output=True, text=True, env=full,
                          timeout=600, preexec_fn=lambda: os.umask(umask))


def _header(study, target=True):
    series = next(s for s in study.series if s.target == target)
    return pydicom.dcmread(next((Path(study.out_dir) / series.folder).glob("*.dcm")), stop_before_pixels=True), series


@pytest.fixture(scope="module")
def analysed(tmp_path_factory, studies, fake_models):
    """Both studies analysed twice (true dates; shifted dates), every flag attached (applicability always)."""
    root = tmp_path_factory.mktemp("research")
    cfg = root / "svdmark.toml"
    cfg.write_text('[flags]\napplicability = "always"\n')
    env = {"SVDMARK_MODELS_DIR": str(fake_models), "SVDMARK_PSEUDONYM_KEY": "trial-key"}
    runs = {}
    for name, extra, umask in (("plain", (), 0o022), ("shifted", ("--shift-dates",), 0o027)):
        r = _analyze(studies["root"], "--output", root / name, "--config", cfg, "--data-dir", root / "nodata",
                     *extra, umask=umask, env=env)
        assert r.returncode == 0, r.stderr[-3000:]
        runs[name] = root / name
    return runs


def test_column_names_and_types(analysed, studies):
    out = analysed["plain"]
    for stem in ("results", "errors", "notes"):
        df = pd.read_parquet(out / f"{stem}.parquet")
        bad = [c for c in df.columns if not SAS_STATA_R.match(c) or c != c.lower()]
        assert not bad, f"{stem}: column names R/Stata/SAS refuse or that are not snake_case: {bad}"
        assert list(df.columns) == list(pd.read_csv(out / f"{stem}.csv", nrows=0).columns)
    df = pd.read_parquet(out / "results.parquet").set_index("series_uid")
    assert "flags" not in df and "warnings" not in df and not [c for c in df if "." in c or "-" in c]
    # the rule set and the gate's scores fix the columns, not what the run's series happened to give
    from svdmark.rules import RuleSet
    assert list(df.reset_index().columns) == ["series_uid"] + [c for c in T.result_columns(RuleSet.load())
                                                               if c != "series_uid"]
    assert str(df["study_date"].dtype) == "date32[day][pyarrow]"  # a date for R/Stata, not text
    wml = df.loc[_header(studies["ncct"])[1].series_uid]
    cmb = df.loc[_header(studies["swi"])[1].series_uid]
    # one typed column per flag value; the category is text, the uncertainty a boolean, numbers float
    assert wml["flag_aspirin_sich_wml_category"] in ("large-wml", "below-cut-point")
    assert str(df["flag_aspirin_sich_wml_or_ratio"].dtype) == "float64"
    assert cmb["flag_cmb_burden_ecmo_category"].startswith("grade-")
    assert str(df["flag_cmb_burden_ecmo_grade"].dtype) == "Int64" and cmb["flag_cmb_burden_ecmo_grade"] == cmb["cmb_grade"]
    # rule constants are not columns: they are in rules.json, equal to the packaged rules.toml
    constants = {"cut_point_ml", "per_ml_or", "per_ml_ci_low", "per_ml_ci_high", "low_max", "moderate_max"}
    assert not [c for c in df if any(c.endswith(k) for k in constants)]
    rules = json.loads((out / "rules.json").read_text())
    packaged = tomllib.loads((Path(svdmark.__file__).parent / "data" / "rules.toml").read_text())
    by_id = {r["rule_id"]: r for r in rules["rules"]}
    for rule in packaged["rule"]:
        assert by_id[rule["id"]]["constants"] == rule["thresholds"]
    assert rules["ruleset_version"] == packaged["ruleset"]["version"] == wml["ruleset_version"]
    # the volume's warnings are one per row in notes.*, counted per series
    notes = pd.read_parquet(out / "notes.parquet")
    assert int(df["n_warnings"].sum()) == int((notes["kind"] == "warning").sum())
    assert set(notes["series_uid"]) <= set(df.index)


def test_acquisition_descriptors_versions_and_dictionary(analysed, studies, fake_models):
    df = pd.read_csv(analysed["plain"] / "results.csv", dtype=str).set_index("series_uid")
    for study in (studies["ncct"], studies["swi"]):
        for target in (True, False) if study is studies["ncct"] else (True,):
            h, series = _header(study, target)
            row = df.loc[series.series_uid]
            assert row["study_date"] == f"{h.StudyDate[:4]}-{h.StudyDate[4:6]}-{h.StudyDate[6:]}"
            assert row["study_date_shifted"] == "False"
            assert row["manufacturer"] == h.Manufacturer and row["scanner_model"] == h.ManufacturerModelName
            assert float(row["slice_thickness_mm"]) == float(h.SliceThickness)
            assert row["patient_sex"] == h.PatientSex and int(row["patient_age_years"]) == int(h.PatientAge[:3])
            if h.Modality == "CT":
                assert row["kernel"] == str(h.ConvolutionKernel)
            assert row["svdmark_version"] == svdmark.__version__  # on every row, ignored ones too
    analysed_rows = df[df["status"] == "analysed"]
    for _, row in analysed_rows.iterrows():
        model = next(Path(fake_models).glob(f"{row['model_name']}/{row['model_version']}/*.onnx"))
        assert row["model_sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    # no identifier, birth date included, in any output table
    text = "".join((analysed["plain"] / f).read_text() for f in ("results.csv", "notes.csv", "errors.csv"))
    h, _ = _header(studies["ncct"])
    for secret in (str(h.PatientID), str(h.PatientName), str(h.PatientBirthDate)):
        assert secret not in text
    # the dictionary names every column once, with a type and a meaning
    dictionary = pd.read_csv(analysed["plain"] / "dictionary.csv", dtype=str, keep_default_na=False)
    assert list(dictionary["name"]) == list(pd.read_csv(analysed["plain"] / "results.csv", nrows=0).columns)
    assert (dictionary["type"] != "").all() and (dictionary["meaning"] != "").all(), \
        dictionary[(dictionary["type"] == "") | (dictionary["meaning"] == "")]
    units = dict(zip(dictionary["name"], dictionary["unit"]))
    assert units["wml_ml"] == "mL" and units["slice_thickness_mm"] == "mm" 
    assert units["flag_aspirin_sich_wml_or_ratio"] == "1" and units["flag_aspirin_sich_wml_low"] == "mL"


def test_shifted_dates_are_per_patient_and_keyed(analysed, studies):
    plain = pd.read_csv(analysed["plain"] / "results.csv", dtype=str).set_index("series_uid")
    shifted = pd.read_csv(analysed["shifted"] / "results.csv", dtype=str).set_index("series_uid")
    assert (shifted["study_date_shifted"] == "True").all()
    for study in (studies["ncct"], studies["swi"]):
        h, _ = _header(study)
        offsets = {(dt.date.fromisoformat(shifted.loc[s.series_uid, "study_date"])
                    - dt.date.fromisoformat(plain.loc[s.series_uid, "study_date"])).days for s in study.series}
        assert offsets == {shift_days(str(h.PatientID), b"trial-key")}  # one offset per patient
        (days,) = offsets
        assert days != 0 and -365 <= days <= 365
        assert shift_days(str(h.PatientID), b"other-key") != days or shift_days("x", b"trial-key") != days
    cols = ["status", "wml_ml", "cmb_count", "patient_age_years"]  # only the date moves
    pd.testing.assert_frame_equal(plain[cols], shifted.loc[plain.index, cols])


def test_output_files_follow_the_umask(analysed):
    for name, mode in (("plain", 0o644), ("shifted", 0o640)):
        out = analysed[name]
        for f in ("results.csv", "results.parquet", "errors.csv", "notes.csv", "dictionary.csv", "rules.json",
                  "run.json"):
            assert (out / f).stat().st_mode & 0o777 == mode, (name, f, oct((out / f).stat().st_mode))
        sr = next((out / "dicom").rglob("sr.dcm"))
        assert sr.stat().st_mode & 0o777 == mode


def test_nothing_analysed_exits_1_with_a_clear_message(tmp_path, studies, fake_models):
    junk = tmp_path / "junk"
    junk.mkdir()
    for i in range(4):
        (junk / f"note{i}.txt").write_text("not DICOM\n")
    (junk / "broken.zip").write_bytes(b"PK\x03\x04" + b"\0" * 40)
    env = {"SVDMARK_MODELS_DIR": str(fake_models), "SVDMARK_PSEUDONYM_KEY": "k"}
    r = run_cli("analyze", junk, "--output", tmp_path / "out", "--data-dir", tmp_path / "nd", env=env)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "nothing analysed: no DICOM image series found" in r.stderr
    assert "5 of 5 file(s) not usable" in r.stdout  # each file counted once, the damaged zip too
    assert len(pd.read_csv(tmp_path / "out" / "errors.csv")) == 5
    # only ignored series (a CT bone-kernel distractor): nothing analysed either
    bone = next(s for s in studies["ncct"].series if s.kind == "ct_bone")
    shutil.copytree(Path(studies["ncct"].out_dir) / bone.folder, tmp_path / "bone")
    r = run_cli("analyze", tmp_path / "bone", "--output", tmp_path / "out2", "--data-dir", tmp_path / "nd", env=env)
    assert r.returncode == 1 and "none of the 1 series found was analysed (1 ignored, 0 failed)" in r.stderr
    # a table with no analysed series has every column a full run's has, so a cohort's tables stack
    from svdmark.rules import RuleSet
    assert list(pd.read_csv(tmp_path / "out2" / "results.csv", nrows=0).columns) == T.result_columns(RuleSet.load())


def test_file_counts_with_duplicates_and_zips(tmp_path, studies, fake_models):
    """Copies of instances already read are counted as duplicates, never as more unusable files than files."""
    target = next(s for s in studies["ncct"].series if s.target)
    src = Path(studies["ncct"].out_dir) / target.folder
    shutil.copytree(src, tmp_path / "in" / "a")
    shutil.copytree(src, tmp_path / "in" / "copy")
    with zipfile.ZipFile(tmp_path / "in" / "more.zip", "w") as zf:
        zf.writestr("readme.txt", "hello")
    n = len(list(src.glob("*.dcm")))
    env = {"SVDMARK_MODELS_DIR": str(fake_models), "SVDMARK_PSEUDONYM_KEY": "k"}
    r = run_cli("analyze", tmp_path / "in", "--output", tmp_path / "out", "--data-dir", tmp_path / "nd", "--json",
                env=env, check_rc=0)
    counts = json.loads(r.stdout)["counts"]
    assert counts["files"] == 2 * n + 1 and counts["file_errors"] == 1 and counts["duplicates"] == n
    assert counts["analysed"] == 1


def test_long_rule_ids_give_distinct_valid_names():
    names = {T.flag_column("a-very-long-rule-identifier-for-a-future-marker-" + s, "uncertain") for s in "ab"}
    assert len(names) == 2 and all(T.valid_name(n) and n.endswith("_uncertain") for n in names)
    assert T.flag_column("aspirin-sich-wml", "category_uncertain") == "flag_aspirin_sich_wml_uncertain"
    assert T.quality_column("noise HU") == "quality_noise_hu"
    with pytest.raises(ValueError, match="R/Stata/SAS"):
        T.frame([{"series_uid": "1", "flag.bad-name": 1}])


@pytest.mark.interop
def test_results_export_from_the_service_journal(tmp_path, studies, fake_models):
    """`results export` from a running service's journal: the same tidy columns, the dictionary and
    the rule constants beside the file, descriptors from the spooled headers."""
    from .conftest import Serve
    from tests.peers import wait_until

    serve = Serve(tmp_path / "data", {"SVDMARK_MODELS_DIR": str(fake_models), "SVDMARK_PSEUDONYM_KEY": "k"}).start()
    try:
        files = sorted(Path(studies["swi"].out_dir).rglob("*.dcm"))
        serve.send(files)
        target = next(s.series_uid for s in studies["swi"].series if s.target)
        wait_until(lambda: any(j["series_uid"] == target and j["state"] == "done" for j in serve.jobs()), 180,
                   "the SWI series analysed")
        out = tmp_path / "export" / "trial.csv"
        out.parent.mkdir()
        r = serve.cli("results", "export", "--format", "csv", "--output", out, "--shift-dates")
        assert "trial.dictionary.csv" in r.stderr
    finally:
        serve.stop()
    df = pd.read_csv(out, dtype=str).set_index("series_uid")
    assert all(SAS_STATA_R.match(c) for c in df.reset_index().columns)
    h, _ = _header(studies["swi"])
    row = df.loc[target]
    assert row["status"] == "analysed" and row["svdmark_version"] == svdmark.__version__
    assert row["manufacturer"] == h.Manufacturer and float(row["slice_thickness_mm"]) == float(h.SliceThickness)
    true_date = dt.date(int(h.StudyDate[:4]), int(h.StudyDate[4:6]), int(h.StudyDate[6:]))
    assert dt.date.fromisoformat(row["study_date"]) - true_date == dt.timedelta(shift_days(str(h.PatientID), b"k"))
    dictionary = pd.read_csv(out.parent / "trial.dictionary.csv", dtype=str)
    assert set(dictionary["name"]) == set(df.reset_index().columns)
    assert json.loads((out.parent / "trial.rules.json").read_text())["rules"]
    assert (out.stat().st_mode & 0o777) == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask

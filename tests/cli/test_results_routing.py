"""`svdmark results summary` against a hand-computed table; `svdmark routing explain`."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from .conftest import run_cli


def _table(path: Path) -> Path:
    """Ten series, numbers chosen so every statistic can be worked out by hand."""
    rows = []
    wml = [0.0, 2.0, 3.0, 5.0, 20.0]  # sorted; n=5
    for i, v in enumerate(wml):
        rows.append({"study_uid": f"1.2.{i}", "series_uid": f"1.2.{i}.1", "patient_pseudonym": f"p{i}",
                     "status": "analysed", "routing": "wml", "task": "wml", "model_name": "wml-ncct",
                     "model_version": "1.0.0", "wml_ml": v, "reason": "head NCCT"})
    for i, (count, grade) in enumerate([(0, 0), (4, 1), (12, 2), (35, 3)]):
        rows.append({"study_uid": f"1.3.{i}", "series_uid": f"1.3.{i}.1", "patient_pseudonym": f"p{i}",
                     "status": "analysed", "routing": "cmb", "task": "cmb", "model_name": "cmb-swi",
                     "model_version": "1.0.0", "cmb_count": count, "cmb_grade": grade, "reason": "SWI"})
    rows.append({"study_uid": "1.4", "series_uid": "1.4.1", "status": "ignored", "routing": "ignored",
                 "reason": "ignored: phase image"})
    rows.append({"study_uid": "1.4", "series_uid": "1.4.2", "status": "ignored", "routing": "ignored",
                 "reason": "ignored: phase image"})
    rows.append({"study_uid": "1.5", "series_uid": "1.5.1", "status": "failed", "routing": "wml", "task": "wml",
                 "reason": "slice spacing is irregular"})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_summary_matches_hand_computed(tmp_path):
    table = _table(tmp_path / "results.csv")
    doc = json.loads(run_cli("results", "summary", "--table", table, "--json", check_rc=0).stdout)
    # 12 series: 9 analysed, 2 ignored, 1 failed
    assert doc["series"] == 12
    assert doc["status"]["analysed"] == {"n": 9, "percent": 75.0}
    assert doc["status"]["ignored"] == {"n": 2, "percent": 16.7}
    assert doc["status"]["failed"] == {"n": 1, "percent": 8.3}
    # WML 0, 2, 3, 5, 20: median 3; quartiles (type 7) at positions 1 and 3 -> 2 and 5
    w = doc["wml_ml"]
    assert (w["n"], w["median"], w["q1"], w["q3"], w["min"], w["max"]) == (5, 3.0, 2.0, 5.0, 0.0, 20.0)
    # CMB 0, 4, 12, 35: median 8; q1 = 0 + .75*4 = 3; q3 = 12 + .25*23 = 17.75
    c = doc["cmb_count"]
    assert (c["n"], c["median"], c["q1"], c["q3"]) == (4, 8.0, 3.0, 17.75)
    assert [(g["grade"], g["n"], g["percent"]) for g in doc["cmb_grades"]] == [(0, 1, 25.0), (1, 1, 25.0),
                                                                               (2, 1, 25.0), (3, 1, 25.0)]
    routing = {r["value"]: (r["n"], r["percent"]) for r in doc["routing"]}
    assert routing == {"wml": (6, 50.0), "cmb": (4, 33.3), "ignored": (2, 16.7)}
    assert doc["ignore_reasons"] == [{"value": "ignored: phase image", "n": 2, "percent": 100.0}]
    assert doc["failure_reasons"] == [{"value": "slice spacing is irregular", "n": 1, "percent": 100.0}]

    human = run_cli("results", "summary", "--table", table, check_rc=0).stdout
    assert "WML volume (n=5): median 3.00 mL (IQR 2.00-5.00)" in human
    assert "Microbleeds (n=4): median 8.0 (IQR 3.0-17.8)" in human
    assert "grade 2 Moderate burden (10-30 cerebral microbleeds): 1 (25.0%)" in human
    assert "slice spacing is irregular" in human

    # parquet and an analyze output folder are read the same way
    pd.read_csv(table).to_parquet(tmp_path / "results.parquet")
    (tmp_path / "results.csv").unlink()
    doc2 = json.loads(run_cli("results", "summary", "--table", tmp_path, "--json", check_rc=0).stdout)
    assert doc2["wml_ml"] == doc["wml_ml"]


@pytest.mark.embedded_journal  # a data dir without its journal file
def test_results_usage_errors(tmp_path):
    r = run_cli("results", "summary", "--table", tmp_path / "nope.csv")
    assert r.returncode == 1 and "nope.csv" in r.stderr
    r = run_cli("results", "export", "--format", "parquet", "--data-dir", tmp_path)
    assert r.returncode == 2
    r = run_cli("results", "export", "--format", "xlsx")
    assert r.returncode == 2
    r = run_cli("results", "summary", "--data-dir", tmp_path / "nothing-here")
    assert r.returncode == 1 and "no journal" in r.stderr


def test_routing_explain(studies, tmp_path):
    ncct = Path(studies["ncct"].out_dir)
    target = next(s for s in studies["ncct"].series if s.target)
    bone = next(s for s in studies["ncct"].series if s.kind == "ct_bone")
    r = run_cli("routing", "explain", ncct / target.folder, check_rc=0)
    assert "decision: WML" in r.stdout and target.series_uid in r.stdout
    r = run_cli("routing", "explain", next((ncct / bone.folder).glob("*.dcm")), check_rc=0)
    assert "IGNORED" in r.stdout and "kernel" in r.stdout
    doc = json.loads(run_cli("routing", "explain", ncct, "--json", check_rc=0).stdout)
    decisions = {s["series_uid"]: s["decision"] for s in doc["series"]}
    assert decisions[target.series_uid] == "wml"
    assert decisions[bone.series_uid] == "ignored"
    assert {s["file"].endswith("truth.json") for s in doc["skipped"]} == {True}
    assert all(s["rules"] and s["rules"][-1]["matched"] for s in doc["series"])

    (tmp_path / "note.txt").write_text("hello")
    r = run_cli("routing", "explain", tmp_path / "note.txt")
    assert r.returncode == 1 and "no DICOM series" in r.stderr
    r = run_cli("routing", "explain", tmp_path / "missing")
    assert r.returncode == 2


@pytest.mark.parametrize("argv", [["analyze"], ["results"], ["results", "export"], ["results", "summary"],
                                  ["models"], ["models", "list"], ["models", "install"], ["models", "compare"],
                                  ["routing"], ["routing", "explain"]])
def test_help_everywhere(argv):
    r = run_cli(*argv, "--help")
    assert r.returncode == 0 and "usage: svdmark" in r.stdout


def test_summary_withheld_results_counted_not_in_statistics(tmp_path):
    """Withheld results (the quality gate's measurable False: no number) are counted per task and left
    out of the medians/IQR and the grade percentages, which then add up to 100 % of the measurable."""
    rows = []
    for i, (v, m) in enumerate([(1.0, True), (4.0, True), (9.0, None), (None, False), (None, False)]):
        rows.append({"study_uid": f"1.2.{i}", "series_uid": f"1.2.{i}.1", "status": "analysed", "routing": "wml",
                     "task": "wml", "wml_ml": v, "measurable": m, "reason": "head NCCT",
                     "quality_reasons": "" if m is not False else "image noise 14 is above the model's limit of 9"})
    for i, (count, grade, m) in enumerate([(0, 0, True), (4, 1, True), (5, 1, True), (None, None, False)]):
        rows.append({"study_uid": f"1.3.{i}", "series_uid": f"1.3.{i}.1", "status": "analysed", "routing": "cmb",
                     "task": "cmb", "cmb_count": count, "cmb_grade": grade, "measurable": m, "reason": "SWI"})
    table = tmp_path / "results.csv"
    pd.DataFrame(rows).to_csv(table, index=False)

    doc = json.loads(run_cli("results", "summary", "--table", table, "--json", check_rc=0).stdout)
    assert doc["status"]["analysed"]["n"] == 9
    assert doc["withheld"] == {"wml": {"n": 2, "of": 5, "percent": 40.0}, "cmb": {"n": 1, "of": 4, "percent": 25.0}}
    assert "measurable results only" in doc["statistics_over"]
    w = doc["wml_ml"]
    assert (w["n"], w["median"], w["q1"], w["q3"]) == (3, 4.0, 2.5, 6.5)
    c = doc["cmb_count"]
    assert (c["n"], c["median"]) == (3, 4.0)
    grades = [(g["grade"], g["n"], g["percent"]) for g in doc["cmb_grades"]]
    assert grades == [(0, 1, 33.3), (1, 2, 66.7), (2, 0, 0.0), (3, 0, 0.0)]
    assert sum(g["n"] for g in doc["cmb_grades"]) == c["n"]

    human = run_cli("results", "summary", "--table", table, check_rc=0).stdout
    assert "Volumes, counts and grades: measurable results only (withheld results excluded)" in human
    assert "WML volume (n=3): median 4.00 mL (IQR 2.50-6.50)" in human
    assert "withheld, not reliably measurable: 2 of 5 analysed NCCT series (40.0%), not included" in human
    assert "withheld, not reliably measurable: 1 of 4 analysed SWI series (25.0%), not included" in human
    assert "Microbleed burden (% of 3 measurable SWI series):" in human

    # the same from parquet (a nullable boolean column), and a table from before the quality gate
    pd.read_csv(table).to_parquet(tmp_path / "results.parquet")
    doc2 = json.loads(run_cli("results", "summary", "--table", tmp_path / "results.parquet", "--json",
                              check_rc=0).stdout)
    assert doc2["withheld"] == doc["withheld"] and doc2["wml_ml"] == doc["wml_ml"]
    old = tmp_path / "old.csv"
    pd.DataFrame(rows).drop(columns=["measurable", "quality_reasons"]).to_csv(old, index=False)
    doc3 = json.loads(run_cli("results", "summary", "--table", old, "--json", check_rc=0).stdout)
    assert doc3["withheld"]["wml"]["n"] == 0 and doc3["wml_ml"]["n"] == 3


def test_summary_counts_flag_categories_and_grades(tmp_path):
    """Flag categories per rule as n (%) of the analysed series carrying the flag; grades as before."""
    rows = []
    for i, cat in enumerate(["below-cut-point", "below-cut-point", "large-wml", "not-measurable"]):
        rows.append({"study_uid": f"1.2.{i}", "series_uid": f"1.2.{i}.1", "status": "analysed", "routing": "wml",
                     "task": "wml", "wml_ml": None if cat == "not-measurable" else 5.0 + 10 * i,
                     "measurable": cat != "not-measurable", "flag_aspirin_sich_wml_category": cat})
    for i, (count, grade) in enumerate([(0, 0), (3, 1), (4, 1)]):
        rows.append({"study_uid": f"1.3.{i}", "series_uid": f"1.3.{i}.1", "status": "analysed", "routing": "cmb",
                     "task": "cmb", "cmb_count": count, "cmb_grade": grade, "measurable": True,
                     "flag_cmb_burden_ecmo_category": f"grade-{grade}"})
    rows.append({"study_uid": "1.4", "series_uid": "1.4.1", "status": "ignored", "routing": "ignored",
                 "reason": "ignored: phase image", "flag_aspirin_sich_wml_category": None})
    table = tmp_path / "results.csv"
    pd.DataFrame(rows).to_csv(table, index=False)

    doc = json.loads(run_cli("results", "summary", "--table", table, "--json", check_rc=0).stdout)
    flags = {f["rule"]: f for f in doc["flags"]}
    assert set(flags) == {"aspirin_sich_wml", "cmb_burden_ecmo"}
    assert flags["aspirin_sich_wml"]["n"] == 4
    assert flags["aspirin_sich_wml"]["categories"] == [
        {"value": "below-cut-point", "n": 2, "percent": 50.0}, {"value": "large-wml", "n": 1, "percent": 25.0},
        {"value": "not-measurable", "n": 1, "percent": 25.0}]
    assert flags["cmb_burden_ecmo"]["categories"] == [{"value": "grade-1", "n": 2, "percent": 66.7},
                                                      {"value": "grade-0", "n": 1, "percent": 33.3}]
    assert [(g["grade"], g["n"]) for g in doc["cmb_grades"]] == [(0, 1), (1, 2), (2, 0), (3, 0)]

    human = run_cli("results", "summary", "--table", table, check_rc=0).stdout
    assert "Flags (n (%) of the analysed series with the flag):" in human
    assert "  aspirin_sich_wml (n=4):\n    below-cut-point: 2 (50.0%)\n    large-wml: 1 (25.0%)" in human
    assert "    not-measurable: 1 (25.0%)" in human

    # a table written before the tidy names (flag.<rule>) is read the same way
    old = tmp_path / "old.csv"
    pd.DataFrame(rows).rename(columns={"flag_aspirin_sich_wml_category": "flag.aspirin-sich-wml",
                                       "flag_cmb_burden_ecmo_category": "flag.cmb-burden-ecmo"}).to_csv(old, index=False)
    doc2 = json.loads(run_cli("results", "summary", "--table", old, "--json", check_rc=0).stdout)
    assert [f["categories"] for f in doc2["flags"]] == [flags["aspirin_sich_wml"]["categories"],
                                                         flags["cmb_burden_ecmo"]["categories"]]

"""Consumers of withheld results (quality gate: "not reliably measurable") and of intervals:
the demo's printout, shadow/active model comparison, a withheld re-analysis in the worker, and
the conformance statement."""
from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import pydicom
import pytest

from svdmark.cli.demo import job_lines
from svdmark.domain import Interval
from svdmark.cli.agreement import agreement, format_comparison
from svdmark.geometry import SliceGeometry
from svdmark.journal import ShadowResult
from svdmark.summary import ResultSummary

from tests.unit.test_encode_support import MEASURABLE, WITHHELD, cmb_result, ct_series, wml_mask, wml_result

REPO = Path(__file__).resolve().parents[2]
TTA = "test-time augmentation, 4 passes, min-max"


# --------------------------------------------------------------------------- svdmark demo's printout


def _job(summary: dict, state: str = "done") -> dict:
    return {"series_uid": "1.2.3", "state": state, "routing": summary.get("task"), "detail": None,
            "summary": {"model_name": "m", "model_version": "1.0.0", **summary}}


def test_demo_prints_withheld_wml_with_reasons_not_a_number():
    withheld = _job({"task": "wml", "wml_ml": None, "measurable": False, "quality_reasons": list(WITHHELD.reasons),
                     "flags": [{"rule_id": "aspirin-sich-wml", "category": "not-measurable"}]})
    lines = job_lines(withheld)  # formatted `s['wml_ml']:.2f` before, and crashed on None
    assert lines[0] == ("  NCCT 1.2.3: WML volume not reliably measurable (" + "; ".join(WITHHELD.reasons) + ")"
                        " (model m 1.0.0)")
    assert lines[1] == "      flag aspirin-sich-wml: not-measurable"
    bare = job_lines(_job({"task": "wml", "wml_ml": None, "measurable": False, "quality_reasons": []}))
    assert bare[0].startswith("  NCCT 1.2.3: WML volume not reliably measurable (model")


def test_demo_prints_withheld_cmb():
    lines = job_lines(_job({"task": "cmb", "cmb_count": None, "cmb_grade": None, "measurable": False,
                            "quality_reasons": ["slice spacing 5.0 mm is above the model's limit of 3.0 mm"]}))
    assert lines == ["  SWI  1.2.3: microbleed count not reliably measurable (slice spacing 5.0 mm is above the"
                     " model's limit of 3.0 mm) (model m 1.0.0)"]
    assert "grade" not in lines[0]


def test_demo_prints_interval_when_there_is_one():
    wml = job_lines(_job({"task": "wml", "wml_ml": 16.5, "wml_ml_low": 15.2, "wml_ml_high": 18.1, "measurable": True,
                          "category_uncertain": True}))
    assert wml[0] == ("  NCCT 1.2.3: WML volume 16.50 mL (uncertainty interval 15.20 to 18.10 mL, category uncertain)"
                      " (model m 1.0.0)")
    cmb = job_lines(_job({"task": "cmb", "cmb_count": 9, "cmb_grade": 1, "cmb_count_low": 8.0,
                          "cmb_count_high": 12.0, "category_uncertain": False}))
    assert cmb[0] == "  SWI  1.2.3: 9 microbleed(s) (uncertainty interval 8 to 12), burden grade 1 (model m 1.0.0)"
    plain = job_lines(_job({"task": "wml", "wml_ml": 3.0, "measurable": None}))  # no gate, no interval
    assert plain[0] == "  NCCT 1.2.3: WML volume 3.00 mL (model m 1.0.0)"
    assert job_lines({"series_uid": "9.9", "state": "ignored", "detail": "phase image", "summary": None}) == \
        ["  ignored  9.9: phase image"]


def test_demo_lines_from_real_summaries():
    from svdmark.summary import summarise

    series, vol = ct_series()
    measured = wml_result(series, vol, wml_mask(vol), interval=Interval(15.2, 18.1, TTA), quality=MEASURABLE,
                          volume_ml=16.5)
    withheld = wml_result(series, vol, wml_mask(vol), interval=Interval(1.0, 9.0, TTA), quality=WITHHELD)
    for result, expect in ((measured, "16.50 mL (uncertainty interval 15.20 to 18.10 mL"),
                           (withheld, "not reliably measurable (" + WITHHELD.reasons[0])):
        summary = json.loads(json.dumps(summarise(result).to_json()))  # as the journal stores it
        assert expect in job_lines({"series_uid": "1", "state": "done", "detail": None, "summary": summary})[0]


# --------------------------------------------------------------------------- models compare


def _wml(v, flag=None) -> dict:
    if v is None:
        return {"task": "wml", "wml_ml": None, "measurable": False, "quality_reasons": ["noise"],
                "flags": [{"rule_id": "aspirin-sich-wml", "category": "not-measurable"}]}
    return {"task": "wml", "wml_ml": v, "measurable": True,
            "flags": [{"rule_id": "aspirin-sich-wml", "category": flag or ("large-wml" if v >= 15 else "below")}]}


def _cmb(n, grade=None) -> dict:
    if n is None:
        return {"task": "cmb", "cmb_count": None, "cmb_grade": None, "measurable": False, "flags": []}
    return {"task": "cmb", "cmb_count": n, "cmb_grade": grade, "measurable": None, "flags": []}


def _shadow_rows(pairs) -> list[ShadowResult]:
    rows = []
    for i, (a, s) in enumerate(pairs):
        err = s == "error"
        rows.append(ShadowResult(f"1.{i}", a["task"], "m", "1.1.0", 0.0, error="RuntimeError: boom" if err else None,
                                 active_summary=ResultSummary.from_json(a),
                                 shadow_summary=None if err else ResultSummary.from_json(s)))
    return rows


def _finite(obj) -> bool:
    if isinstance(obj, float):
        return math.isfinite(obj)
    if isinstance(obj, dict):
        return all(_finite(v) for v in obj.values())
    if isinstance(obj, list):
        return all(_finite(v) for v in obj)
    return True


def test_compare_counts_withheld_and_agrees_over_measurable_pairs_only():
    rows = _shadow_rows([
        (_wml(10.0), _wml(11.0)),
        (_wml(20.0), _wml(19.0)),
        (_wml(None), _wml(5.0)),  # the active version withheld it
        (_wml(7.0), _wml(None)),  # the shadow withheld it
        (_wml(None), _wml(None)),  # both
        (_wml(3.0), "error"),
    ])
    c = agreement("wml-ncct", "1.0.0", "1.1.0", "wml", rows)
    assert (c["series"], c["errors"]) == (5, 1)
    assert c["withheld"] == {"active": 2, "shadow": 2, "both": 1, "active_only": 1, "shadow_only": 1}
    assert c["measurable_pairs"] == 2
    st = c["wml_ml"]
    assert st["n"] == 2 and st["mean_difference"] == 0.0 and st["max_abs_difference"] == 1.0
    assert (st["mean_active"], st["mean_shadow"]) == (15.0, 15.0)
    assert c["flag_agreement_percent"] == 100.0  # the withheld pairs' "not-measurable" flags are not compared
    assert _finite(c), c  # no NaN from a withheld result's empty wml_ml
    json.dumps(c, allow_nan=False)
    text = format_comparison(c)
    assert "5 paired series, 1 shadow error(s)" in text
    assert ("withheld (not reliably measurable): active 2, shadow 2, both 1 (active only 1, shadow only 1);"
            " agreement over the 2 series measurable by both") in text
    assert "nan" not in text.lower() and "max abs 1.000 mL" in text


def test_compare_cmb_grades_over_measurable_pairs_and_all_withheld():
    rows = _shadow_rows([(_cmb(4, 1), _cmb(4, 1)), (_cmb(12, 2), _cmb(9, 1)), (_cmb(None), _cmb(31, 3)),
                         (_cmb(2, 1), _cmb(None))])
    c = agreement("cmb-swi", "1.0.0", "1.1.0", "cmb", rows)
    assert c["withheld"] == {"active": 1, "shadow": 1, "both": 0, "active_only": 1, "shadow_only": 1}
    assert c["measurable_pairs"] == 2 and c["cmb_count"]["n"] == 2
    assert c["cmb_count"]["exact_agreement_percent"] == 50.0 and c["grade_agreement_percent"] == 50.0
    assert _finite(c)

    none = agreement("cmb-swi", "1.0.0", "1.1.0", "cmb", _shadow_rows([(_cmb(None), _cmb(None))]))
    assert none["withheld"]["both"] == 1 and none["measurable_pairs"] == 0 and none["cmb_count"]["n"] == 0
    assert none["grade_agreement_percent"] is None and none["flag_agreement_percent"] is None
    text = format_comparison(none)
    assert "both 1" in text and "no series measurable by both versions yet" in text


def test_compare_summaries_without_a_gate_still_compare():
    """Summaries journalled before the quality gate (no ``measurable`` key) are all measurable."""
    old = [({"task": "wml", "wml_ml": 2.0, "flags": []}, {"task": "wml", "wml_ml": 2.5, "flags": []})]
    c = agreement("wml-ncct", "1.0.0", "1.1.0", "wml", _shadow_rows(old))
    assert c["withheld"]["active"] == c["withheld"]["shadow"] == 0
    assert c["wml_ml"]["n"] == 1 and c["wml_ml"]["mean_difference"] == 0.5


# --------------------------------------------------------------------------- a withheld re-analysis (worker)


def _sr_predecessors(sr: pydicom.Dataset) -> list[str]:
    return [r.ReferencedSOPInstanceUID for st in sr.PredecessorDocumentsSequence
            for se in st.ReferencedSeriesSequence for r in se.ReferencedSOPSequence]


def _texts(sr: pydicom.Dataset, code: str) -> list[str]:
    import highdicom as hd

    return [i.TextValue for i in hd.sr.utils.find_content_items(sr, recursive=True)
            if i.ValueType == "TEXT" and i.ConceptNameCodeSequence[0].CodeValue == code]


def test_withheld_reanalysis_names_the_earlier_sr_and_leaves_its_seg(tmp_path, monkeypatch):
    """First analysis: measured, SR + SEG + summary. A late instance re-opens the series and the
    re-analysis is withheld: a new SR (no SEG) whose predecessor is the first SR; the first SEG is
    neither deleted nor re-sent, and the new SR does not reference it."""
    import svdmark.worker as W
    from svdmark.config import Config, Destination
    from tests.unit.test_worker import Stages
    from svdmark.journal import Journal
    from svdmark.spool import Spool

    series, vol = ct_series()
    measured = wml_result(series, vol, wml_mask(vol), interval=Interval(15.2, 18.1, TTA), quality=MEASURABLE)
    withheld = wml_result(series, vol, wml_mask(vol), quality=WITHHELD)
    # the late instance changes the inputs, hence the output UIDs; here a new model sha does the same
    withheld = dataclasses.replace(withheld, model=dataclasses.replace(withheld.model, sha256="c" * 64))
    stages = Stages(monkeypatch, series, measured)

    journal = Journal(tmp_path / "journal.sqlite")
    geometry = SliceGeometry(ipp=(0, 0, 0), iop=(1, 0, 0, 0, 1, 0), acquisition=1)

    def record(sop: str, now: float) -> None:
        journal.record_instance(sop_uid=sop, study_uid=series.study_uid, series_uid=series.series_uid,
                                sop_class="1.2.840.10008.5.1.4.1.1.2", transfer_syntax="1.2.840.10008.1.2.1",
                                path=Path(f"/x/{sop}"), size=1, digest=sop, modality="CT", geometry=geometry,
                                calling_ae="SCU", now=now)

    cfg = Config(data_dir=tmp_path, destinations=(Destination("PACS", "127.0.0.1", 104),))
    worker = W.Worker(cfg, journal, Spool(tmp_path / "spool"), context=stages.context)

    record("9.1", 100.0)
    journal.queue_job(journal.receiving_series()[0], "test")
    first_job = journal.claim_job()
    worker.process(first_job)
    first = {r.kind: r for r in journal.results(job_id=first_job.id)}
    assert set(first) == {"sr", "seg", "summary"}

    stages.result = withheld
    record("9.2", 200.0)  # a late arrival: generation 2
    journal.queue_job(journal.series_row(series.series_uid), "test")
    second_job = journal.claim_job()
    assert second_job.generation == 2
    worker.process(second_job)
    second = {r.kind: r for r in journal.results(job_id=second_job.id)}
    assert set(second) == {"sr", "summary"}  # withheld: no SEG
    assert second["sr"].supersedes == first["sr"].sop_uid

    sr = pydicom.dcmread(second["sr"].path)
    assert _sr_predecessors(sr) == [first["sr"].sop_uid]
    (text,) = _texts(sr, "SUPERSEDES")
    assert first["sr"].sop_uid in text
    assert _texts(sr, "NOTMEASRSN") == list(WITHHELD.reasons)
    evidence = {r.ReferencedSOPInstanceUID for st in sr.CurrentRequestedProcedureEvidenceSequence
                for se in st.ReferencedSeriesSequence for r in se.ReferencedSOPSequence}
    assert first["seg"].sop_uid not in evidence

    # the earlier SEG stays: still journalled, its file kept, its delivery untouched; nothing new for it
    assert first["seg"].path.is_file()
    deliveries = [dict(d) for d in journal.deliveries()]
    by_sop = {}
    for d in deliveries:
        by_sop.setdefault(d["sop_uid"], []).append(d)
    assert len(by_sop[first["seg"].sop_uid]) == 1
    assert set(by_sop) == {first[k].sop_uid for k in first} | {second[k].sop_uid for k in second}


# --------------------------------------------------------------------------- conformance statement


def test_conformance_statement_documents_intervals_withheld_and_reanalysis():
    text = (REPO / "docs" / "conformance-statement.md").read_text(encoding="utf-8")
    for code in ("371886008", "371885007", "UNCLOW", "UNCHIGH", "UNCMETHOD", "CATUNCERT", "UNCNOTE", "MEASSTAT",
                 "NOTMEAS", "NOTMEASRSN", "SUPERSEDES", "TID 310"):
        assert code in text, f"{code} is not in the conformance statement"
    flat = re.sub(r"\s+", " ", text)
    assert "**no Segmentation**" in flat
    assert "the earlier SEG stays in the PACS" in flat
    assert "Predecessor Documents Sequence" in flat


def test_result_summary_json_is_the_shape_journals_hold():
    """New rows are written as before (key order, presence, a job's null completion warning); old and
    partial rows read, and write back byte for byte."""
    from svdmark.summary import summarise

    series, vol = ct_series()
    result = wml_result(series, vol, wml_mask(vol), interval=Interval(15.2, 18.1, TTA), quality=MEASURABLE,
                        volume_ml=16.5)
    summary = summarise(result)
    data = summary.to_json()
    assert list(data)[:3] == ["task", "model_name", "model_version"] and list(data)[-2:] == ["flags",
                                                                                          "category_uncertain"]
    assert "cmb_count_low" not in data and "microbleeds" not in data and data["wml_ml_low"] == 15.2
    job = summary.for_job(None).to_json()
    assert list(job) == list(data) + ["completion_warning"] and job["completion_warning"] is None
    text = json.dumps(job)
    assert json.dumps(ResultSummary.from_json(json.loads(text)).to_json()) == text
    old = '{"task": "wml", "wml_ml": 1.5, "from_a_newer_version": [1]}'
    read = ResultSummary.from_json(json.loads(old))
    assert (read.wml_ml, read.measurable, read.flags) == (1.5, None, ())
    assert json.dumps(read.to_json()) == old

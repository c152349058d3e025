"""`svdmark purge` as a PACS team runs it, beside a running `svdmark serve` with a dcmtk storescp as its PACS: what it
lists and removes (the images, then the result files the PACS holds), what it keeps, the audit entries, and a study
sent again after its images were purged."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pydicom

from svdmark.journal import Journal
from tests import journaldb
from tests.peers import results_by_kind

from .conftest import Serve, wait_until


def stack_of(files: list[Path], series_uid: str) -> list[Path]:
    """The files of one series, by position along the stack."""
    heads = {p: pydicom.dcmread(p, stop_before_pixels=True) for p in files}
    return sorted((p for p, ds in heads.items() if ds.SeriesInstanceUID == series_uid),
                  key=lambda p: float(heads[p].ImagePositionPatient[2]))


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def _research_row(serve: Serve, out: Path, series_uid: str) -> dict:
    serve.cli("results", "export", "--format", "csv", "--output", out)
    with out.open(newline="") as fh:
        (row,) = [r for r in csv.DictReader(fh) if r["series_uid"] == series_uid]
    return row


def test_purge_removes_the_images_of_series_done_with_and_a_study_sent_again_is_analysed_beside_its_results(
        tmp_path, fake_models, studies):
    config = tmp_path / "svdmark.toml"  # a series short of its declared count is analysed after the fallback (10 s)
    config.write_text("[assemble]\nincomplete_max_wait_seconds = 3\n")
    serve = Serve(tmp_path / "data", {"SVDMARK_MODELS_DIR": str(fake_models), "SVDMARK_CONFIG": str(config)}).start()
    study = studies["ncct"]
    files = sorted(Path(study.out_dir).rglob("*.dcm"))
    target = next(s.series_uid for s in study.series if s.target)
    incoming, results_dir = tmp_path / "data" / "spool" / "incoming", tmp_path / "data" / "spool" / "results"
    try:
        serve.send(files)
        wait_until(lambda: serve.settled(len(study.series)), 240, "every series analysed, its results delivered")
        first = results_by_kind(serve.pacs)
        assert len(first["SR"]) == 1 and len(list(incoming.rglob("*.dcm"))) == len(files)

        # a killed write's temporary file and a produced object nothing refers to: orphans, once a day old
        orphans = [results_dir / "1.2.9" / "1.2.9.1" / "1.2.9.1.1.dcm", incoming / ".tmp-killed.part"]
        for orphan in orphans:
            orphan.parent.mkdir(parents=True, exist_ok=True)
            orphan.write_bytes(b"DICM")
        none = json.loads(serve.cli("purge", "--older-than-days", "1", "--json").stdout)
        assert none["series"] == [] and none["instances"] == 0  # everything happened within the last day
        assert none["orphan_files"] == 0 and all(o.exists() for o in orphans)  # ...the orphans too
        dry = json.loads(serve.cli("purge", "--older-than-days", "0", "--orphans-older-than-hours", "0",
                                   "--dry-run", "--json").stdout)
        assert dry["orphan_files"] == 2 and all(o.exists() for o in orphans)
        assert {r["series_uid"] for r in dry["series"]} == {s.series_uid for s in study.series}  # distractors too
        assert dry["instances"] == len(files) and len(list(incoming.rglob("*.dcm"))) == len(files)
        produced = len(first["SR"] + first["SEG"] + first["OT"])
        assert dry["results"]["files"] == produced and len(_files(results_dir)) == produced + 1  # and the orphan
        kept = json.loads(serve.cli("purge", "--older-than-days", "0", "--dry-run", "--keep-results", "--json").stdout)
        assert kept["results"] is None and kept["instances"] == len(files)

        described = {j["series_uid"]: j["series_description"] for j in serve.jobs()}
        table = _research_row(serve, tmp_path / "before.csv", target)
        human = serve.cli("purge", "--older-than-days", "0", "--orphans-older-than-hours", "0").stdout
        assert f"removed {len(files)} instances" in human and target in human
        assert f"removed the files of {produced} delivered (or superseded) results of 1 series" in human
        assert "removed 2 spool files that nothing refers to (0 hours old or more)" in human
        assert not any(o.exists() for o in orphans)
        assert list(incoming.rglob("*.dcm")) == [] and _files(results_dir) == []
        # the listings and the research table read the header copies the purge kept: nothing they show changed but
        # the paths of the result files, which are gone (the PACS holds the objects)
        assert {j["series_uid"]: j["series_description"] for j in serve.jobs()} == described
        after = _research_row(serve, tmp_path / "after.csv", target)
        paths = [k for k in table if k.endswith("_file")]
        assert sorted(paths) == ["seg_file", "sr_file", "summary_file"] and all(table[k] for k in paths)
        assert all(after[k] == "" for k in paths) and {**after, **{k: table[k] for k in paths}} == table
        assert described[target] and table["patient_pseudonym"]
        assert int(table["n_instances"]) == len(stack_of(files, target))
        journal = Journal(journaldb.url_for(tmp_path / "data"))
        try:
            audits = journal.audit_entries(action="spool.purge")  # one per series removed
            assert {a.detail["series_uid"] for a in audits} == {s.series_uid for s in study.series}
            assert sum(a.detail["instances"] for a in audits) == len(files)
            (removed,) = journal.audit_entries(action="spool.purge_results")
            assert (removed.detail["series_uid"], removed.detail["results"]) == (target, produced)
        finally:
            journal.close()
        assert json.loads(serve.cli("purge", "--older-than-days", "0", "--json").stdout)["series"] == []

        refused = serve.cli("jobs", "reanalyse", target, check_rc=None)
        assert refused.returncode != 0 and "purged" in refused.stdout + refused.stderr
        assert [r["state"] for r in json.loads(serve.cli("outbox", "list", "--json").stdout)] == [
            "delivered"] * len(first["SR"] + first["SEG"] + first["OT"])  # the results stay, as delivered

        # half the target series arrives again (a partial resend): analysed afresh, its results delivered beside the
        # first ones, which a rejection note would have hidden had they been superseded by an analysis of half
        stack = stack_of(files, target)
        serve.send(stack[: len(stack) // 2])
        wait_until(lambda: len(results_by_kind(serve.pacs)["SR"]) == 2 and serve.settled(len(study.series) + 1),
                   240, "the half series analysed and its results delivered")
        got = results_by_kind(serve.pacs)
        assert "KO" not in got and len({str(ds.SOPInstanceUID) for ds in got["SR"]}) == 2
        receptions = serve.pacs.receptions()
        assert len(receptions) == len(set(receptions))  # each object once
    finally:
        serve.stop()


def test_serve_runs_the_retention_itself_when_the_config_asks(tmp_path, fake_models, studies):
    """[retention] in svdmark.toml: the assembly leader runs the same purge every every_hours, audited as the
    service; here at once (0 days) and every few seconds."""
    config = tmp_path / "svdmark.toml"
    config.write_text("[assemble]\nincomplete_max_wait_seconds = 3\n"
                      "[retention]\nolder_than_days = 0\nevery_hours = 0.001\n")
    serve = Serve(tmp_path / "data", {"SVDMARK_MODELS_DIR": str(fake_models), "SVDMARK_CONFIG": str(config)}).start()
    study = studies["ncct"]
    files = sorted(Path(study.out_dir).rglob("*.dcm"))
    spool = tmp_path / "data" / "spool"
    try:
        serve.send(files)
        wait_until(lambda: serve.settled(len(study.series)), 240, "every series analysed, its results delivered")
        wait_until(lambda: not _files(spool / "incoming") and not _files(spool / "results"), 60,
                   "the service's own retention run removed the images and the delivered results")
        got = results_by_kind(serve.pacs)
        assert len(got["SR"]) == 1  # delivered before anything was removed
        journal = Journal(journaldb.url_for(tmp_path / "data"))
        try:
            purged = journal.audit_entries(action="spool.purge")
            assert {a.detail["series_uid"] for a in purged} == {s.series_uid for s in study.series}
            (results,) = journal.audit_entries(action="spool.purge_results")
            assert results.detail["results"] == len(got["SR"] + got["SEG"] + got["OT"])
            assert {a.actor for a in purged + [results]} == {"svdmark serve"}
        finally:
            journal.close()
    finally:
        serve.stop()

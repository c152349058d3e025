"""The worker's job lifecycle under faults, on a real pipeline: a small phantom CT series in a real spool and
journal (SQLite), the fake WML model of ``tests/cli/fakemodels.py``, the real routing, volume, measure, rules
and encoders. Each test: the job never left running, never done twice, no half-present or orphaned outputs,
the blame and reason journalled, back-off instead of a hot loop, no patient data in logs."""
from __future__ import annotations

import errno
import io
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest

import svdmark.pipeline as P
from svdmark import retention
from svdmark.config import Config, Destination
from svdmark.domain import DeliveryState, JobState
from svdmark.journal import Journal
from svdmark.receive.inspect import inspect
from svdmark.receive.store import keep
from svdmark.spool import Spool
from svdmark.worker import Worker

from tests.cli import fakemodels

PACS = "PACS"


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> list[bytes]:
    """One small NCCT series (64×64), as the files a scanner would send."""
    from svdmark_phantom import write_study

    out = tmp_path_factory.mktemp("phantom")
    study = write_study(out / "in", seed=7, kind="ncct", distractors=False, matrix=64)
    return [p.read_bytes() for p in sorted(Path(study.out_dir).rglob("*.dcm"))]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("models")
    fakemodels.make_wml(root, "1.0.0")
    return root


@dataclass
class Site:
    config: Config
    journal: Journal
    spool: Spool
    worker: Worker
    phantom: list[bytes]

    def receive(self, files: list[bytes] | None = None) -> list[str]:
        outcomes = []
        for data in self.phantom if files is None else files:
            item = inspect(data)
            outcomes.append(keep(self.journal, self.spool, item, data, transfer_syntax=item.transfer_syntax,
                                 calling_ae="SCANNER"))
        return outcomes

    def queue(self) -> int:
        (series,) = self.journal.receiving_series()
        job_id = self.journal.queue_job(series, "test")
        assert job_id is not None
        return job_id

    def row(self, job_id: int):
        return next(r for r in self.journal.jobs() if r["id"] == job_id)

    def result_files(self) -> list[Path]:
        return sorted(p for p in self.spool.results.rglob("*.dcm") if p.is_file())

    def deliver_all(self) -> None:
        for d in self.journal.due_deliveries():
            self.journal.start_sending(d.id)
            self.journal.mark_delivered(d.id)


@pytest.fixture
def site(tmp_path, phantom, models) -> Site:
    cfg = Config(data_dir=tmp_path / "data", models_dir=models, destinations=(Destination(PACS, "127.0.0.1", 104),))
    journal = Journal(str(tmp_path / "j.sqlite"))
    spool = Spool(cfg.data_dir / "spool")
    worker = Worker(cfg, journal, spool, P.build_context(cfg), backoff_seconds=0.0)
    return Site(cfg, journal, spool, worker, phantom)


def _phi(site: Site) -> tuple[str, ...]:
    ds = pydicom.dcmread(io.BytesIO(site.phantom[0]), stop_before_pixels=True)
    return tuple(v for v in (str(ds.get("PatientName", "")), str(ds.get("PatientID", "")),
                             str(ds.get("PatientBirthDate", ""))) if len(v) > 3)


def _no_phi(caplog, site: Site) -> None:
    text = " ".join(f"{r.getMessage()} {getattr(r, 'fields', '')} {r.exc_text or ''}" for r in caplog.records)
    text += " ".join(str(r["detail"]) for r in site.journal.jobs())
    assert not [p for p in _phi(site) if p in text]


def _corrected(data: bytes, name: str) -> bytes:
    """The same instance (same UID, same pixels) with a corrected patient name, as a PACS resends it."""
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.PatientName = name
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


# --------------------------------------------------------------------------- the path works


def test_a_job_runs_to_done_once_with_its_objects_and_deliveries(site, caplog):
    job_id = (site.receive(), site.queue())[1]
    with caplog.at_level(logging.INFO, logger="svdmark"):
        assert site.worker.run_one()
        assert not site.worker.run_one()  # never done twice
    assert site.row(job_id)["state"] == "done"
    assert len(site.result_files()) == 3 and len(site.journal.due_deliveries()) == 3
    _no_phi(caplog, site)


# --------------------------------------------------------------------------- defects


def test_a_demographics_correction_gets_new_objects_that_reach_the_pacs(site):
    """Same instances and pixels resent with a corrected patient name: generation 2. Its objects carry the new
    name, so they must not reuse generation 1's SOP Instance UIDs: a UID already delivered is never queued again
    (deliveries are unique per UID and destination), and an object that is "ours" is never rejected, so the PACS
    would keep the SR with the wrong name."""
    site.receive()
    first = site.queue()
    assert site.worker.run_one()
    site.deliver_all()
    old = {r.sop_uid for r in site.journal.results(job_id=first)}

    assert set(site.receive([_corrected(d, "Corrected^Name") for d in site.phantom])) == {"replaced"}
    second = site.queue()
    assert site.worker.run_one()
    assert site.row(second)["state"] == "done"
    new = {r.sop_uid: r for r in site.journal.results(job_id=second)}
    produced = {u for u, r in new.items() if r.kind != "rejection"}
    assert produced and not produced & old  # new content → new UIDs
    sr = next(r for r in new.values() if r.kind == "sr")
    assert str(pydicom.dcmread(sr.path).PatientName) == "Corrected^Name"
    pending = {d.sop_uid for d in site.journal.due_deliveries()}
    assert produced <= pending  # the corrected objects go to the PACS...
    assert any(r.kind == "rejection" for r in new.values())  # ...and the old ones are rejected there


def test_two_workers_one_kept_outcome_is_recorded_once(site, monkeypatch, caplog):
    """Two worker threads (one Worker, as `serve` runs them) both record a kept outcome: it must be journalled
    once, not once plus a spurious ``job_outcome_stale``."""
    site.receive()
    job_id = site.queue()
    worker, journal = site.worker, site.journal
    real_finish = journal.finish_job
    refusing = [True]
    entered, release = threading.Event(), threading.Event()

    def finish(job, state, **kw):
        if refusing[0]:
            import sqlite3
            raise sqlite3.OperationalError("database is locked")
        if threading.current_thread().name == "first":
            entered.set()
            release.wait(10)
        return real_finish(job, state, **kw)

    def broken(*a, **k):
        raise ValueError("rules broke")

    monkeypatch.setattr(journal, "finish_job", finish)
    monkeypatch.setattr(worker.context.rules, "evaluate", broken)
    with caplog.at_level(logging.INFO, logger="svdmark"):
        assert worker.run_one()  # failed in rules; the journal refuses the outcome: kept
        assert site.row(job_id)["state"] == "running"
        refusing[0] = False
        t = threading.Thread(target=worker._record_unrecorded, name="first")
        t.start()
        assert entered.wait(10)
        second = threading.Thread(target=worker._record_unrecorded, name="second")
        second.start()
        second.join(2)
        release.set()
        t.join(10)
        second.join(10)
    row = site.row(job_id)
    assert (row["state"], row["detail"]) == ("failed", "rules failed: ValueError: rules broke")
    names = [r.getMessage() for r in caplog.records if getattr(r, "fields", {}).get("job_id") == job_id]
    assert names == ["job_outcome_unrecorded", "analysis_failed"]


def test_an_older_generation_finishing_after_the_newer_one_is_not_sent(site, monkeypatch):
    """Two workers: generation 1 is being analysed when a late instance opens generation 2, which another worker
    analyses and journals first. Generation 1's results, journalled afterwards, must not reach the PACS after the
    newer ones (they would be the last word there, and nothing rejects them)."""
    site.receive(site.phantom[:-1])
    first = site.queue()
    real = site.worker.context.rules.evaluate
    late = []

    def evaluate(findings, header):
        if not late:  # generation 1 has read its instances: the late one arrives, and worker B runs generation 2
            late.append(site.receive(site.phantom[-1:]))
            site.queue()
            other = Worker(site.config, site.journal, site.spool, site.worker.context, backoff_seconds=0.0)
            assert other.run_one()
        return real(findings, header)

    monkeypatch.setattr(site.worker.context.rules, "evaluate", evaluate)
    assert site.worker.run_one()  # worker A: generation 1, finished last
    (second,) = [r["id"] for r in site.journal.jobs() if r["id"] != first]
    assert (site.row(first)["state"], site.row(second)["state"]) == ("done", "done")
    newer = {r.sop_uid for r in site.journal.results(job_id=second)}
    stale = {r.sop_uid for r in site.journal.results(job_id=first)}
    due = {d.sop_uid for d in site.journal.due_deliveries()}
    assert newer and newer <= due
    assert not stale & due


def test_leftovers_of_a_killed_run_go_a_day_after_the_rerun_failed(site, monkeypatch):
    """The re-run cannot tell a killed run's file from one another worker of the job is about to journal (the same
    UIDs), so it keeps it; the spool's orphan sweep removes it once nothing has referred to it for a day."""
    site.receive()
    job_id = site.queue()
    real_write = site.spool.write
    writes = []

    class Killed(BaseException):
        pass

    def dying(*args):
        writes.append(args)
        if len(writes) == 2:
            raise Killed()  # kill -9 after the first object is in place
        return real_write(*args)

    monkeypatch.setattr(site.spool, "write", dying)
    with pytest.raises(Killed):
        site.worker.run_one()
    monkeypatch.setattr(site.spool, "write", real_write)
    assert len(site.result_files()) == 1
    assert site.journal.recover()["jobs_requeued"] == 1  # the restart

    def broken(*a, **k):
        raise ValueError("summary broke")

    monkeypatch.setattr("svdmark.worker.summarise", broken)  # the re-run fails after storing its objects
    worker = Worker(site.config, site.journal, site.spool, site.worker.context, backoff_seconds=0.0)
    assert worker.run_one()
    assert site.row(job_id)["state"] == "failed"
    (leftover,) = site.result_files()
    assert retention.remove_orphans(site.journal, site.spool).removed == []  # written just now: not yet an orphan
    later = time.time() + retention.DAY_SECONDS + 60
    assert retention.remove_orphans(site.journal, site.spool, now=later).removed == [leftover]
    assert site.result_files() == []  # nothing refers to them


# --------------------------------------------------------------------------- faults handled right


def test_a_read_only_results_spool_retries_with_back_off_then_completes(site, monkeypatch, caplog):
    site.receive()
    job_id = site.queue()
    site.worker.backoff_seconds = 30.0
    real_write = site.spool.write

    def read_only(*args):
        raise OSError(errno.EROFS, "Read-only file system", "/data/spool/results/x.dcm")

    monkeypatch.setattr(site.spool, "write", read_only)
    with caplog.at_level(logging.INFO, logger="svdmark"):
        assert site.worker.run_one()
        assert not site.worker.run_one()  # not due again at once: no hot loop
    row = site.row(job_id)
    assert (row["state"], row["attempts"]) == ("pending", 1)
    assert row["detail"] == "attempt 1 failed, will retry: store: OSError: [Errno 30] Read-only file system"
    assert row["not_before"] >= site.journal.now() + 25
    assert site.result_files() == []
    monkeypatch.setattr(site.spool, "write", real_write)
    job = site.journal.claim_job(now=row["not_before"] + 1)  # due once the back-off has passed
    assert job is not None and job.id == job_id
    site.worker.process(job)
    assert site.row(job_id)["state"] == "done" and len(site.result_files()) == 3
    _no_phi(caplog, site)


def test_a_model_file_broken_after_start_fails_the_job_blaming_the_model(site, models, tmp_path, monkeypatch):
    import shutil

    copy = tmp_path / "models"
    shutil.copytree(models, copy)
    site.config = Config(data_dir=site.config.data_dir, models_dir=copy, destinations=site.config.destinations)
    site.worker = Worker(site.config, site.journal, site.spool, P.build_context(site.config), backoff_seconds=0.0)
    onnx = copy / "wml-ncct" / "1.0.0" / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:100])  # replaced by a truncated file while the service runs
    site.receive()
    job_id = site.queue()
    assert site.worker.run_one()
    row = site.row(job_id)
    assert row["state"] == "failed" and row["detail"].startswith("infer failed: ")
    assert "wml-ncct" in row["detail"]
    assert site.result_files() == []


def test_a_series_whose_spool_files_vanished_fails_in_read_without_outputs(site, caplog):
    site.receive()
    job_id = site.queue()
    for p in site.spool.incoming.rglob("*.dcm"):
        p.unlink()
    with caplog.at_level(logging.INFO, logger="svdmark"):
        assert site.worker.run_one()
    row = site.row(job_id)
    n = len(site.journal.instances(site.row(job_id)["series_uid"]))
    assert row["state"] == "failed" and row["detail"].startswith(
        f"read failed: {n} of the series' {n} stored instances are missing from the spool (removed outside svdmark?)")
    assert site.result_files() == [] and site.journal.due_deliveries() == []
    _no_phi(caplog, site)


@pytest.mark.parametrize("stage", ["rules", "encode"])
def test_a_stage_that_raises_fails_the_job_once_without_outputs(site, monkeypatch, caplog, stage):
    def broken(*a, **k):
        raise ValueError(f"Unable to convert '{_phi(site)[0]}'")

    if stage == "rules":
        monkeypatch.setattr(site.worker.context.rules, "evaluate", broken)
    else:
        monkeypatch.setattr(P.encode, "by_profile", broken)
    site.receive()
    job_id = site.queue()
    with caplog.at_level(logging.INFO, logger="svdmark"):
        assert site.worker.run_one()
        assert not site.worker.run_one()
    row = site.row(job_id)
    assert (row["state"], row["detail"]) == ("failed", f"{stage} failed: ValueError: Unable to convert '…'")
    assert row["routing"] == "wml" and row["rule_id"]  # it failed after routing: the table says where it went
    assert site.result_files() == [] and site.journal.due_deliveries() == []
    assert [r.getMessage() for r in caplog.records if getattr(r, "fields", {}).get("job_id") == job_id] == [
        "analysis_failed"]
    _no_phi(caplog, site)


def test_the_journal_refusing_the_finish_requeues_without_outputs(site, monkeypatch):
    import sqlite3

    site.receive()
    job_id = site.queue()
    site.worker.backoff_seconds = 30.0
    real_finish = site.journal.finish_job

    def locked(job, state, **kw):
        if state is JobState.DONE:
            raise sqlite3.OperationalError("database is locked")
        return real_finish(job, state, **kw)

    monkeypatch.setattr(site.journal, "finish_job", locked)
    assert site.worker.run_one()
    row = site.row(job_id)
    assert (row["state"], row["attempts"]) == ("pending", 1)
    assert row["detail"].endswith("journal: OperationalError: database is locked")
    assert site.result_files() == [] and not site.journal.deliveries(DeliveryState.PENDING)


# --------------------------------------------------------------------------- a second review (session 50)
def test_a_failing_shadow_run_journals_and_logs_no_patient_data(site, caplog):
    """pydicom and highdicom quote the value they cannot convert: the shadow's error is named as the live path's is."""
    import json

    from svdmark.infer.activation import installed_dir

    inst = installed_dir(site.config.data_dir)
    fakemodels.make_wml(inst, "1.1.0")  # the candidate version, installed and shadowed
    (inst / "state.json").write_text(json.dumps({"active": {"wml-ncct": "1.0.0"}, "history": {},
                                                 "shadow": {"wml-ncct": "1.1.0"}}))
    name = _phi(site)[0]
    real, calls = site.worker.context.rules.evaluate, []

    def evaluate(findings, header):  # the active run passes; the shadow's rules meet a value they cannot convert
        calls.append(1)
        if len(calls) == 2:
            raise ValueError(f"Unable to convert '{name}'")
        return real(findings, header)

    object.__setattr__(site.worker.context.rules, "evaluate", evaluate)
    site.receive()
    job_id = site.queue()
    with caplog.at_level(logging.INFO, logger="svdmark"):
        assert site.worker.run_one()
    assert site.row(job_id)["state"] == "done"
    (row,) = site.journal.shadow_results()
    assert row.error == "ValueError: Unable to convert '…'"
    _no_phi(caplog, site)


def test_a_commit_whose_outcome_is_unknown_keeps_the_objects_it_may_have_journalled(site):
    """The commit went through, its answer was lost with the connection, and the journal could not be read at once
    to tell: the job is done and its deliveries queued, so its files must stay."""
    import sqlite3

    journal = site.journal
    real_finish, real_query, broken = journal._finish_job, journal._query, []

    def finish(*a, **k):
        real_finish(*a, **k)
        broken.append(1)
        raise sqlite3.OperationalError("disk I/O error")

    def query(*a, **k):
        if len(broken) == 1:
            broken.append(1)
            raise sqlite3.OperationalError("unable to open database file")
        return real_query(*a, **k)

    journal._finish_job, journal._query = finish, query
    site.receive()
    job_id = site.queue()
    assert site.worker.run_one()
    journal._finish_job, journal._query = real_finish, real_query
    assert site.row(job_id)["state"] == "done"
    results = journal.results(job_id=job_id)
    assert results and all(Path(r.path).exists() for r in results)


def test_a_supersession_race_on_every_try_sends_the_job_back_to_the_queue(site, monkeypatch):
    """A race with the outbox, not a defect of the series: the correction must still reach the PACS."""
    from svdmark.journal import StaleSupersession

    site.receive()
    site.queue()
    assert site.worker.run_one()
    site.deliver_all()
    site.receive([_corrected(d, "Corrected^Name") for d in site.phantom])
    second = site.queue()

    def moving(db, job, supersede, now):
        raise StaleSupersession(f"series {job.series_uid}: earlier results changed state while the rejection notes "
                                "were built")

    monkeypatch.setattr(site.journal, "_supersede", moving)
    assert site.worker.run_one()
    assert site.row(second)["state"] == "pending"

"""The worker's one error policy: whatever fails after a job is claimed, the job ends failed (with
its reason) or goes back to the queue (a transient environment error) — never stays running —
and each outcome is one log line without patient data.

The harness (:class:`Stages`, fixture ``env``) runs the real ``pipeline.run`` with its collaborators
answering from one precomputed result, so no file, model or pixel check is needed."""
from __future__ import annotations

import errno
import logging
import sqlite3
from pathlib import Path

import pytest

import svdmark.pipeline as P
import svdmark.worker as W
from svdmark.config import Config, Destination
from svdmark.domain import AnalysisResult, JobState, Series
from svdmark.errors import ConfigError
from svdmark.geometry import SliceGeometry
from svdmark.journal import Journal
from svdmark.route import AnatomyLimits
from svdmark.spool import Spool

from tests.unit.test_encode_support import ct_series, wml_mask, wml_result

PHI = ("Müller", "SVD-TEST-1", "19500101", "17.04.1923")  # what test_encode_support writes, and a bad date
SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
GEOM = SliceGeometry.from_json({"ipp": [0, 0, 0], "iop": [1, 0, 0, 0, 1, 0], "frames": None, "images_in_acquisition": None, "acquisition": 1})


@pytest.fixture(scope="module")
def analysed():
    series, vol = ct_series()
    return series, wml_result(series, vol, wml_mask(vol))


class Stages:
    """The pipeline's collaborators (spool reads, routing, volume, model, measure, rules) answering from
    ``series`` and ``result``; set them to change what the next job finds. ``context`` is the worker's."""

    def __init__(self, monkeypatch, series: Series, result: AnalysisResult):
        self.series, self.result = series, result
        monkeypatch.setattr(P, "read_header", lambda source: self.series.header)
        monkeypatch.setattr(P, "read_series", lambda source: self.series)
        monkeypatch.setattr(P.volume, "load", lambda series: self.result.volume)
        monkeypatch.setattr(P.measure, "from_output", lambda model, image, output: self.result.findings)
        stages = self

        class Routing:
            anatomy = AnatomyLimits(enabled=False)

            def decide(self, header):
                return stages.result.routing

        class Models:
            def active(self, task):
                return stages.result.model

        class Runtime:
            def run(self, model, image):
                return None

        class Rules:
            @property
            def info(self):
                return stages.result.ruleset

            def evaluate(self, findings, header):
                return stages.result.flags

        self.context = P.Context(routing=Routing(), models=Models(), runtime=Runtime(), rules=Rules())


@pytest.fixture
def stages(monkeypatch, analysed) -> Stages:
    return Stages(monkeypatch, *analysed)


@pytest.fixture
def env(tmp_path, stages, journal_url):
    """The worker on a journal of each engine (SQLite, then the real PostgreSQL)."""
    journal = Journal(journal_url)
    cfg = Config(data_dir=tmp_path, destinations=(Destination("PACS", "127.0.0.1", 104),))
    worker = W.Worker(cfg, journal, Spool(tmp_path / "spool"), context=stages.context, backoff_seconds=0.0)
    return worker, journal


def queue(journal: Journal, series_uid: str = "1.2.3") -> int:
    journal.record_instance(sop_uid=f"{series_uid}.1", study_uid="1.2", series_uid=series_uid,
                            sop_class="1.2.840.10008.5.1.4.1.1.2", transfer_syntax="1.2.840.10008.1.2.1",
                            path=Path("/x"), size=1, digest="d", modality="CT", geometry=GEOM, calling_ae="SCU")
    return journal.queue_job(journal.series_row(series_uid), "test")


def job(journal: Journal, job_id: int):
    return next(r for r in journal.jobs() if r["id"] == job_id)


def lines(caplog, job_id: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "fields", {}).get("job_id") == job_id]


def no_phi(caplog, journal: Journal) -> None:
    text = " ".join(f"{r.getMessage()} {getattr(r, 'fields', '')} {r.exc_text or ''}" for r in caplog.records)
    text += " ".join(str(r["detail"]) for r in journal.jobs())
    assert not [p for p in PHI if p in text]


def result_files(worker: W.Worker) -> list[Path]:
    return [p for p in worker.spool.results.rglob("*") if p.is_file()]


@pytest.mark.parametrize("error, reason", [
    (ValueError("Unable to convert '17.04.1923' to 'DA' object"),
     "encode failed: ValueError: Unable to convert '…' to '…' object"),
    (ConfigError("cannot read SR template /opt/t/common.json: [Errno 2] No such file or directory"),
     "encode failed: cannot read SR template /opt/t/common.json: [Errno 2] No such file or directory"),
])
def test_an_encoding_error_fails_the_job_with_its_reason(env, monkeypatch, caplog, error, reason):
    worker, journal = env
    job_id = queue(journal)

    def refuse(*a, **k):
        raise error

    monkeypatch.setattr(P.encode, "by_profile", refuse)
    with caplog.at_level(logging.INFO, logger="svdmark"):
        assert worker.run_one()
    row = job(journal, job_id)
    assert (row["state"], row["detail"]) == ("failed", reason)
    assert journal.series_row("1.2.3").state == "analysed"
    (line,) = lines(caplog, job_id)
    assert line.getMessage() == "analysis_failed" and line.fields["stage"] == "encode"
    assert line.fields["series_uid"] == "1.2.3" and line.fields["error"] == type(error).__name__
    assert "test_worker.py:" in line.fields["where"]  # file:line frames, no values
    no_phi(caplog, journal)
    assert result_files(worker) == []


def test_a_full_disk_while_writing_results_requeues_then_the_job_completes(env, monkeypatch, caplog):
    worker, journal = env
    job_id = queue(journal)
    real_write = worker.spool.write
    calls = []

    def write(*args):
        calls.append(args)
        if len(calls) == 2:  # the SEG is written, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device", "/data/spool/results/x.dcm")
        return real_write(*args)

    monkeypatch.setattr(worker.spool, "write", write)
    with caplog.at_level(logging.INFO, logger="svdmark"):
        assert worker.run_one()
    row = job(journal, job_id)
    assert (row["state"], row["attempts"]) == ("pending", 1)
    assert row["detail"] == "attempt 1 failed, will retry: store: OSError: [Errno 28] No space left on device"
    assert result_files(worker) == []  # the SEG written before the failure is not left behind
    (line,) = lines(caplog, job_id)
    assert (line.getMessage(), line.fields["stage"], line.fields["attempt"]) == ("analysis_retry", "store", 1)

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="svdmark"):
        assert worker.run_one()  # space freed: the retry (no back-off in this test) completes
    row = job(journal, job_id)
    assert (row["state"], row["detail"]) == ("done", "test")  # the routing's reason, no longer the retry note
    assert [r.getMessage() for r in lines(caplog, job_id)] == ["analysis_done"]
    assert len(result_files(worker)) == 3 and len(journal.due_deliveries()) == 3
    no_phi(caplog, journal)


def test_transient_failures_give_up_at_the_attempts_cap(env, monkeypatch, caplog):
    worker, journal = env
    worker.max_attempts = 2
    job_id = queue(journal)

    def broken(*args):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(worker.spool, "write", broken)
    with caplog.at_level(logging.INFO, logger="svdmark"):
        assert worker.run_one() and worker.run_one()
        assert not worker.run_one()  # nothing left to claim
    row = job(journal, job_id)
    assert (row["state"], row["attempts"]) == ("failed", 2)
    assert row["detail"] == "gave up after 2 attempts: store: OSError: [Errno 5] Input/output error"
    assert [r.getMessage() for r in lines(caplog, job_id)] == ["analysis_retry", "analysis_failed"]
    assert lines(caplog, job_id)[-1].fields["gave_up_after_attempts"] == 2


def test_a_journal_write_that_fails_requeues_the_job(env, monkeypatch):
    worker, journal = env
    job_id = queue(journal)
    real_finish = journal.finish_job

    def finish(job_row, state, **kw):
        if state is JobState.DONE:
            raise sqlite3.OperationalError("database or disk is full")
        return real_finish(job_row, state, **kw)

    monkeypatch.setattr(journal, "finish_job", finish)
    assert worker.run_one()
    row = job(journal, job_id)
    assert (row["state"], row["attempts"]) == ("pending", 1)
    assert row["detail"].endswith("journal: OperationalError: database or disk is full")
    assert result_files(worker) == []


def test_an_outcome_the_journal_refuses_is_kept_and_nothing_else_is_claimed(env, monkeypatch, caplog):
    worker, journal = env
    first = queue(journal, "1.2.3")
    second = queue(journal, "1.2.4")

    def refuse(*a, **k):
        raise ValueError("cannot encode")

    def disk_full(*a, **k):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(P.encode, "by_profile", refuse)
    monkeypatch.setattr(journal, "finish_job", disk_full)
    with caplog.at_level(logging.INFO, logger="svdmark"):
        assert worker.run_one()
        assert job(journal, first)["state"] == "running"  # the journal took nothing...
        assert not worker.run_one() and not worker.run_one()  # ...so no new job is claimed meanwhile
        assert job(journal, second)["state"] == "pending"
        assert [r.getMessage() for r in lines(caplog, first)] == ["job_outcome_unrecorded"]  # said once
        monkeypatch.undo()  # the journal recovers (and the encoder too)...
        assert worker.run_one()  # ...and the second job fails on its own: its file (/x) is not there
    assert job(journal, first)["detail"] == "encode failed: ValueError: cannot encode"
    assert job(journal, second)["state"] == "failed"
    assert job(journal, second)["detail"].startswith(
        "read failed: 1 of the series' 1 stored instances are missing from the spool (removed outside svdmark?)")
    assert journal.jobs(JobState.RUNNING) == []


def test_a_journal_that_refuses_claims_is_said_once_per_change(env, monkeypatch, caplog):
    worker, journal = env
    queue(journal)
    real_claim = journal.claim_job

    def locked(*a, **k):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(journal, "claim_job", locked)
    with caplog.at_level(logging.INFO, logger="svdmark"):
        assert not worker.run_one() and not worker.run_one()
        monkeypatch.setattr(journal, "claim_job", real_claim)
        assert worker.run_one()
    names = [r.getMessage() for r in caplog.records if r.name == "svdmark.worker"]
    assert names[:2] == ["job_claim_failed", "job_claim_recovered"] and names.count("job_claim_failed") == 1


def _sqlite_error() -> sqlite3.OperationalError:
    try:
        sqlite3.connect(":memory:").execute("SELECT * FROM no_such_table")
    except sqlite3.OperationalError as exc:
        return exc
    raise AssertionError("no error")


def _ort_error(kind: str, text: str) -> Exception:
    """onnxruntime's own exception class, as its session raises it."""
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

    return getattr(ort_state, kind)(text)


@pytest.mark.parametrize("exc, retry", [
    (OSError(errno.ENOSPC, "No space left on device"), True),
    (OSError(errno.EIO, "Input/output error"), True),
    (FileNotFoundError(errno.ENOENT, "No such file or directory"), False),  # a missing file stays missing
    (sqlite3.OperationalError("database or disk is full"), True),
    (_sqlite_error(), False),  # SQLITE_ERROR: a bug, not the environment
    (ValueError("Unable to convert"), False),
    (ConfigError("cannot read SR template"), False),
    (_ort_error("Fail", "[ONNXRuntimeError] : 1 : FAIL : bad input shape"), False),
    (_ort_error("RuntimeException", "[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned "
                "while running Conv node. BFCArena::AllocateRawInternal Failed to allocate memory for requested "
                "buffer"), True),
    (_ort_error("Fail", "CUDA failure 2: out of memory ; GPU=0"), True),
])
def test_transient_errors(exc, retry):
    assert W.transient(exc) is retry


def test_uid_seed_follows_pixels_and_result_shaping_manifest_sections():
    """Same inputs → same seed; a replaced instance (same UID, new pixels) or a new calibration → a new seed."""
    import copy
    from dataclasses import replace as dc_replace

    from svdmark.domain import Task
    from svdmark.pipeline import uid_seed
    from tests.unit.test_encode_support import ct_series, model

    series, _ = ct_series()
    spec = model(Task.WML)
    base = uid_seed(series, spec, "1.0.0")
    assert uid_seed(series, spec, "1.0.0") == base
    recalibrated = dc_replace(spec, manifest={**spec.manifest, "quality": {"limits": {"noise": {"max": 9.0}}}})
    assert uid_seed(series, recalibrated, "1.0.0") != base
    changed = [copy.deepcopy(d) for d in series.datasets]
    px = bytearray(changed[0].PixelData)
    px[0] ^= 0xFF
    changed[0].PixelData = bytes(px)
    assert uid_seed(dc_replace(series, datasets=tuple(changed)), spec, "1.0.0") != base
    assert uid_seed(series, spec, "1.1.0") != base


def _queue_incomplete(journal: Journal, warning: str) -> int:
    journal.record_instance(sop_uid="1.2.3.1", study_uid="1.2", series_uid="1.2.3",
                            sop_class="1.2.840.10008.5.1.4.1.1.2", transfer_syntax="1.2.840.10008.1.2.1",
                            path=Path("/x"), size=1, digest="d", modality="CT", geometry=GEOM, calling_ae="SCU")
    return journal.queue_job(journal.series_row("1.2.3"), "quiet for 600 s (longest wait)", warning=warning)


WARNING = "incomplete series: 14 of 29 images (Images in Acquisition declares 29)"


def test_an_incomplete_series_warning_reaches_the_sr_the_summary_image_and_the_job_summary(env):
    import json

    import pydicom

    worker, journal = env
    job_id = _queue_incomplete(journal, WARNING)
    assert worker.run_one()
    row = job(journal, job_id)
    assert row["state"] == "done"
    summary = json.loads(row["summary"])
    assert summary["completion_warning"] == WARNING and summary["warnings"][0] == WARNING
    by_kind = {r.kind: pydicom.dcmread(r.path) for r in journal.results()}

    def texts(item):
        for i in item.get("ContentSequence", []):
            yield str(i.get("TextValue", ""))
            yield from texts(i)

    assert WARNING in set(texts(by_kind["sr"]))


def test_with_the_reject_policy_an_incomplete_series_fails_unanalysed(env, monkeypatch):
    import dataclasses

    worker, journal = env
    worker.config = dataclasses.replace(worker.config, incomplete_policy="reject")
    monkeypatch.setattr(P, "read_series", lambda source: pytest.fail("read although incomplete"))
    job_id = _queue_incomplete(journal, WARNING)
    assert worker.run_one()
    row = job(journal, job_id)
    assert (row["state"], row["detail"]) == (
        "failed", f"completion failed: {WARNING}; not analysed ([assemble] incomplete_policy = reject)")
    assert result_files(worker) == []


def test_each_destination_gets_an_sr_that_references_only_what_it_receives(tmp_path, stages):
    """A destination with ``outputs = ["sr", "summary"]`` gets an SR that names no SEG; a full-profile
    destination's SR references the SEG it receives. The summary is one object for both."""
    import highdicom as hd
    import pydicom

    from svdmark import config

    conf = tmp_path / "svdmark.toml"
    conf.write_text('[[destinations]]\nae_title = "PACS"\nhost = "127.0.0.1"\nport = 104\n'
                    '[[destinations]]\nae_title = "VIEWER"\nhost = "127.0.0.1"\nport = 105\n'
                    'outputs = ["sr", "summary"]\n')
    cfg = config.load(conf, env={}, data_dir=tmp_path)
    journal = Journal(tmp_path / "journal.sqlite")
    worker = W.Worker(cfg, journal, Spool(tmp_path / "spool"), context=stages.context)
    queue(journal)
    assert worker.run_one()
    got: dict[str, dict[str, pydicom.Dataset]] = {}
    for d in journal.due_deliveries():
        got.setdefault(d.destination.split("@")[0], {})[d.kind] = pydicom.dcmread(d.path)
    assert (set(got["PACS"]), set(got["VIEWER"])) == ({"seg", "sr", "summary"}, {"sr", "summary"})
    assert got["PACS"]["summary"].SOPInstanceUID == got["VIEWER"]["summary"].SOPInstanceUID
    assert len(result_files(worker)) == 4  # the SEG, the two SRs, the summary

    def segs(sr: pydicom.Dataset) -> set[str]:
        """The SEG instances an SR names: in its evidence, or as a measurement's segment."""
        evidence = {str(r.ReferencedSOPInstanceUID) for st in sr.CurrentRequestedProcedureEvidenceSequence
                    for se in st.ReferencedSeriesSequence for r in se.ReferencedSOPSequence
                    if r.ReferencedSOPClassUID == SEG_STORAGE}
        groups = hd.sr.Comprehensive3DSR.from_dataset(sr).content.get_volumetric_roi_measurement_groups()
        return evidence | {str(g.referenced_segment.referenced_sop_instance_uid) for g in groups}

    assert segs(got["PACS"]["sr"]) == {str(got["PACS"]["seg"].SOPInstanceUID)}
    assert segs(got["VIEWER"]["sr"]) == set()
    assert got["VIEWER"]["sr"].SOPInstanceUID != got["PACS"]["sr"].SOPInstanceUID


def test_an_outcome_the_journal_cannot_store_fails_the_job_plainly_instead_of_leaving_it_running(env, monkeypatch,
                                                                                                  caplog):
    """A refusal for what the outcome holds (psycopg refuses a NUL in text) would be refused at every retry: the job
    fails with a plain reason, and the next job is claimed."""
    worker, journal = env
    first = queue(journal, "1.2.3")
    second = queue(journal, "1.2.4")
    real_finish = journal.finish_job

    def refuse(*a, **k):
        raise ValueError("cannot encode")

    def finish(job_row, state, **kw):
        if (kw.get("detail") or "").startswith("encode failed"):
            raise ValueError("PostgreSQL text fields cannot contain NUL (0x00) bytes")
        return real_finish(job_row, state, **kw)

    monkeypatch.setattr(P.encode, "by_profile", refuse)
    monkeypatch.setattr(journal, "finish_job", finish)
    with caplog.at_level(logging.INFO, logger="svdmark"):
        assert worker.run_one()
        assert worker.run_one()  # not held back: the next job is claimed
    row = job(journal, first)
    assert row["state"] == "failed"
    assert row["detail"] == ("encode ended as failed, but the journal refused that outcome: ValueError (the log has "
                             "the reason, job_outcome_refused)")
    (line,) = [r for r in lines(caplog, first) if r.getMessage() == "job_outcome_refused"]
    assert "NUL" in line.fields["journal_error"]
    assert job(journal, second)["state"] == "failed" and journal.jobs(JobState.RUNNING) == []


def test_a_failure_reason_never_carries_a_control_character():
    from svdmark.errors import InvalidSeries
    from svdmark.failures import reason_of

    assert reason_of(InvalidSeries("Modality 'C\x00T'\x1b[2J")) == "Modality 'C\\x00T'\\x1b[2J"
    assert reason_of(ValueError("a\x00b")) == "ValueError: a\\x00b"


def test_the_health_problem_of_a_retried_job_goes_when_that_job_ends_for_a_reason_of_its_own(env):
    """A disk that was full, then a series the model refuses: nothing waits for a retry, so /healthz is healthy."""
    from svdmark import health
    from svdmark.pipeline import Failed, Stage

    w, j = env
    for series in ("1.2.3", "1.2.4"):
        queue(j, series)
    first, second = j.claim_job(), j.claim_job()
    disk_full = Failed(Stage.INFER, "No space left on device", "OSError", blame="environment")
    w._record(first, disk_full)
    w._record(second, disk_full)
    assert "job" in health.problems()["worker"]
    refused = Failed(Stage.INFER, "the series is not a head CT", "InvalidSeries", blame="input", expected=True)
    w._record(j.claim_job(now=j.now() + 10_000), refused)
    assert "worker" in health.problems()  # the other job still waits for its retry
    w._record(j.claim_job(now=j.now() + 10_000), refused)
    assert "worker" not in health.problems()

"""A failure injected at each stage of a job, the pipeline's and the worker's own: the job never stays
``running``; it ends ``failed`` with a reason that names the stage, or goes back to the queue when the
environment failed (a full disk), and leaves no result file behind."""
from __future__ import annotations

import errno
import sqlite3

import pytest

import svdmark.pipeline as P
from svdmark.domain import JobState

from tests.unit.test_worker import analysed, env, job, queue, result_files, stages  # noqa: F401  (fixtures)


def _header(mp, worker, journal, stages, boom):
    mp.setattr(P, "read_header", boom)


def _pixels(mp, worker, journal, stages, boom):
    mp.setattr(P, "read_series", boom)


def _instances(mp, worker, journal, stages, boom):  # the journal's list of the series' spooled instances
    mp.setattr(journal, "instances", boom)


def _route(mp, worker, journal, stages, boom):
    mp.setattr(P.route, "decide", boom)


def _volume(mp, worker, journal, stages, boom):
    mp.setattr(P.volume, "load", boom)


def _anatomy(mp, worker, journal, stages, boom):
    mp.setattr(P.route, "not_a_head", boom)


def _model(mp, worker, journal, stages, boom):
    mp.setattr(stages.context.models, "active", boom)


def _infer(mp, worker, journal, stages, boom):
    mp.setattr(stages.context.runtime, "run", boom)


def _measure(mp, worker, journal, stages, boom):
    mp.setattr(P.measure, "from_output", boom)


def _rules(mp, worker, journal, stages, boom):
    mp.setattr(stages.context.rules, "evaluate", boom)


def _encode(mp, worker, journal, stages, boom):
    mp.setattr(P.encode, "by_profile", boom)


def _store(mp, worker, journal, stages, boom):
    real = worker.spool.write
    calls = []

    def write(*args):  # the first object is written, the second fails
        calls.append(args)
        return boom() if len(calls) == 2 else real(*args)

    mp.setattr(worker.spool, "write", write)


def _journal(mp, worker, journal, stages, boom):
    real = journal.finish_job

    def finish(job_row, state, **kw):  # the job's results are refused; its failure is taken
        return boom() if state is JobState.DONE else real(job_row, state, **kw)

    mp.setattr(journal, "finish_job", finish)


INJECT = [("read", _header), ("read", _pixels), ("read", _instances), ("route", _route), ("volume", _volume),
          ("anatomy", _anatomy), ("infer", _model), ("infer", _infer), ("measure", _measure), ("rules", _rules),
          ("encode", _encode), ("store", _store), ("journal", _journal)]
IDS = [f"{stage}-{inject.__name__.strip('_')}" for stage, inject in INJECT]


def _thrower(error: Exception):
    def boom(*args, **kwargs):
        raise error

    return boom


@pytest.mark.parametrize(("stage", "inject"), INJECT, ids=IDS)
def test_a_failure_at_any_stage_fails_the_job_naming_the_stage(env, stages, monkeypatch, stage, inject):
    worker, journal = env
    job_id = queue(journal)
    inject(monkeypatch, worker, journal, stages, _thrower(RuntimeError("injected")))
    assert worker.run_one()
    row = job(journal, job_id)
    assert (row["state"], row["detail"]) == ("failed", f"{stage} failed: RuntimeError: injected")
    assert journal.jobs(JobState.RUNNING) == []
    assert result_files(worker) == [] and journal.due_deliveries() == []


@pytest.mark.parametrize(("stage", "inject"), INJECT, ids=IDS)
def test_an_environment_failure_at_any_stage_requeues_the_job(env, stages, monkeypatch, stage, inject):
    worker, journal = env
    job_id = queue(journal)
    error = (sqlite3.OperationalError("database or disk is full") if stage == "journal"
             else OSError(errno.ENOSPC, "No space left on device"))
    inject(monkeypatch, worker, journal, stages, _thrower(error))
    assert worker.run_one()
    row = job(journal, job_id)
    assert (row["state"], row["attempts"]) == ("pending", 1)
    assert row["detail"].startswith(f"attempt 1 failed, will retry: {stage}: {type(error).__name__}: ")
    assert journal.jobs(JobState.RUNNING) == []
    assert result_files(worker) == []


def test_a_failure_building_the_rejection_notes_fails_the_job_naming_the_stage(env, monkeypatch):
    from tests.unit.test_rejection import _late_instance

    worker, journal = env
    queue(journal)
    assert worker.run_one()
    for d in journal.due_deliveries():
        journal.mark_delivered(d.id)
    job_id = _late_instance(journal, sop="1.2.3.2")  # generation 2: earlier results to reject

    monkeypatch.setattr(journal, "rejectable", _thrower(RuntimeError("injected")))
    assert worker.run_one()
    row = job(journal, job_id)
    assert (row["state"], row["detail"]) == ("failed", "supersede failed: RuntimeError: injected")
    assert journal.jobs(JobState.RUNNING) == []

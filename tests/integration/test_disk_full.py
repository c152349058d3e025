"""A full disk under the assembler: back-off, one log line per state change, /healthz 503 with the reason,
and the series queued once the disk has room again (real storescu into the real listener, in-process)."""
from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import pytest

from svdmark import health
from svdmark.config import Config
from svdmark.export import FolderExporter
from svdmark_phantom import write_study
from svdmark.service import Service
from svdmark.worker import HEALTH_COMPONENT as WORKER_COMPONENT

from tests.peers import free_port, healthz, storescu, wait_until

pytestmark = [pytest.mark.interop]


@pytest.mark.embedded_journal  # SQLite's disk-full error
def test_disk_full_in_the_assembler_backs_off_and_turns_healthz_unhealthy(tmp_path, monkeypatch, caplog):
    study = write_study(tmp_path / "in", seed=71, kind="ncct", vendor="ge", distractors=False, matrix=64)
    cfg = Config(host="127.0.0.1", port=free_port(), data_dir=tmp_path / "data", settle_seconds=0.5,
                 fallback_seconds=5.0, metrics_port=0)
    # the analysis is not under test: jobs fail at once on an empty context, nothing is analysed
    svc = Service(cfg, exporter=FolderExporter(tmp_path / "out"), context=SimpleNamespace())
    real_queue = svc.journal.queue_job
    full = {"on": True}
    tries = {"n": 0}

    def queue_job(*args, **kw):
        tries["n"] += 1
        if full["on"]:
            raise sqlite3.OperationalError("database or disk is full")
        return real_queue(*args, **kw)

    monkeypatch.setattr(svc.journal, "queue_job", queue_job)
    caplog.set_level(logging.INFO, logger="svdmark")
    svc.start()
    try:
        port = svc._health.address[1]
        assert healthz(port)[0] == 200
        storescu(sorted(Path(study.out_dir).rglob("*.dcm")), svc.port)
        code, report = wait_until(lambda: (lambda r: r if r[0] == 503 else None)(healthz(port)), 30, "/healthz 503")
        assert report["problems"]["assembler"] == "OperationalError: database or disk is full"
        wait_until(lambda: tries["n"] >= 4, 30, "four tries on the full disk")
        failing = [r for r in caplog.records if r.getMessage() == "loop_failing"]
        assert len(failing) == 1 and failing[0].fields["component"] == "assembler"  # one line, not one per try
        full["on"] = False  # room again
        wait_until(lambda: len(svc.journal.jobs()) == 1, 60, "the job queued")
        wait_until(lambda: [r.getMessage() for r in caplog.records].count("loop_recovered") == 1, 30,
                   "the recovery line")
        wait_until(lambda: healthz(port)[0] == 200 or None, 30, "/healthz 200 again")
        assert tries["n"] < 12  # backed off: 4 s of full disk did not mean thousands of tries
    finally:
        svc.stop()
        for name in health.problems():
            health.clear_problem(name)


@pytest.mark.embedded_journal
def test_a_service_stopped_while_failing_leaves_no_problem_behind(tmp_path, monkeypatch):
    """/healthz problems are process-wide: a stopped service's must not make the next one in the process 503."""
    study = write_study(tmp_path / "in", seed=72, kind="ncct", vendor="ge", distractors=False, matrix=64)
    cfg = Config(host="127.0.0.1", port=free_port(), data_dir=tmp_path / "data", settle_seconds=0.5,
                 fallback_seconds=5.0, metrics_port=0)
    svc = Service(cfg, exporter=FolderExporter(tmp_path / "out"), context=SimpleNamespace())

    def full(*args, **kw):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(svc.journal, "queue_job", full)
    svc.start()
    try:
        storescu(sorted(Path(study.out_dir).rglob("*.dcm")), svc.port)
        wait_until(lambda: "assembler" in health.problems() or None, 30, "the assembler's problem")
        health.report_problem(WORKER_COMPONENT, "job 1 will be retried after infer: a transient failure")
    finally:
        svc.stop()
    assert health.problems() == {}

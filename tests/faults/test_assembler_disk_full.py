"""A full disk under the assembler and the worker of `svdmark serve`, on a real small tmpfs: /healthz says
503 with the reason, the service backs off with one line per state change (not a line per try), and
once there is room again the series is analysed and delivered. Needs to mount tmpfs (root); skipped otherwise."""
from __future__ import annotations

import time

import pytest

from svdmark_phantom import write_study

from tests.faults.test_storage_full import _fill, _mount, _umount
from tests.peers import StoreSCP, Svdmark, free_port, healthz, results_by_kind, send_studies, wait_until


@pytest.mark.embedded_journal  # the SQLite journal fills the data dir
def test_disk_full_after_receive_backs_off_reports_and_recovers(tmp_path):
    data = tmp_path / "data"
    _mount(data, "24m")
    pacs = StoreSCP(tmp_path / "pacs").start()
    try:
        study = write_study(tmp_path / "in", seed=81, kind="ncct", vendor="ge", distractors=False, matrix=96)
        metrics = free_port()
        svd = Svdmark(data, [f"{pacs.aet}@127.0.0.1:{pacs.port}"],
                      extra=("--settle-seconds", "4", "--fallback-seconds", "15", "--metrics-port", str(metrics)))
        svd.start()
        try:
            assert healthz(metrics)[0] == 200
            send_studies([study], svd.port)  # stored and journalled; the settle time is not over yet
            filler = _fill(data)  # now the disk is full
            code, report = wait_until(lambda: (lambda r: r if r[0] == 503 else None)(healthz(metrics)), 60,
                                      "/healthz 503")
            assert report["problems"]["disk"].startswith("disk full")
            # the completed series cannot be queued or its results written: the service backs off
            wait_until(lambda: "loop_failing" in svd.log_text() or "analysis_retry" in svd.log_text(), 60,
                       "a thread failing on the full disk")
            code, report = healthz(metrics)
            assert code == 503 and "disk is full" in " ".join(report["problems"].values())
            time.sleep(8)  # the disk stays full a while (before: ~1,100 log lines a second)
            lines_while_full = len(svd.log_text().splitlines())
            filler.unlink()  # room again
            got = wait_until(lambda: (lambda g: g if len(g["SR"]) == 1 and len(g["OT"]) == 1 else None)(
                results_by_kind(pacs)), 300, "the results after the disk has room")
            assert len(got["SR"]) == 1
            wait_until(lambda: healthz(metrics)[0] == 200 or None, 60, "/healthz 200 again")
            lines = svd.log_text().splitlines()
            failing = [ln for ln in lines if " loop_failing " in ln]
            assert len(failing) <= 2, failing  # per state change, never a line per try
            assert lines_while_full < 20, f"{lines_while_full} log lines"
        finally:
            svd.stop()
    finally:
        pacs.stop()
        _umount(data)

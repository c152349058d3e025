"""A failing service step backs off, logs once per state change and turns /healthz unhealthy."""
import errno
import logging
import random
import sqlite3
import threading

from svdmark import health
from svdmark.guarded import GuardedLoop
from svdmark.journal import Journal


class DiskFull:
    """Raises ENOSPC (or SQLite's 'database or disk is full') ``n`` times, then works."""

    def __init__(self, n: int, sqlite: bool = False):
        self.n = n
        self.sqlite = sqlite
        self.calls = 0

    def __call__(self) -> bool:
        self.calls += 1
        if self.calls <= self.n:
            if self.sqlite:
                raise sqlite3.OperationalError("database or disk is full")
            raise OSError(errno.ENOSPC, "No space left on device")
        return False


def test_disk_full_backs_off_logs_two_lines_and_reports_to_healthz(tmp_path, caplog):
    Journal(tmp_path / "j.sqlite")
    step = DiskFull(200)
    loop = GuardedLoop("assembler-test", step, threading.Event(), idle_seconds=0.5, backoff_seconds=1.0,
                       backoff_cap_seconds=30.0, rng=random.Random(1))
    caplog.set_level(logging.INFO, logger="svdmark.service")
    delays = [loop.once() for _ in range(200)]
    assert delays[0] <= 1.0 and min(delays[6:]) >= 15.0 and max(delays) <= 30.0  # doubling, capped, jittered
    assert [r.getMessage() for r in caplog.records] == ["loop_failing"]  # one line for 200 failures
    assert caplog.records[0].fields["transient"] is True
    assert "No space left on device" in health.problems()["assembler-test"]
    healthy, report = health.check(tmp_path / "j.sqlite", tmp_path, lambda: True)
    assert not healthy and report["status"] == "fail"
    assert "No space left on device" in report["problems"]["assembler-test"]
    assert loop.once() == 0.5  # the disk has room again
    assert [r.getMessage() for r in caplog.records] == ["loop_failing", "loop_recovered"]
    assert "assembler-test" not in health.problems()
    healthy, report = health.check(tmp_path / "j.sqlite", tmp_path, lambda: True)
    assert healthy and report["problems"] == {}


def test_a_different_failure_is_a_new_state_change(caplog):
    calls = iter([sqlite3.OperationalError("database or disk is full")] * 3 + [ValueError("a bug")] * 3)

    def step():
        raise next(calls)

    loop = GuardedLoop("worker-test", step, threading.Event(), rng=random.Random(2))
    caplog.set_level(logging.INFO, logger="svdmark.service")
    for _ in range(6):
        loop.once()
    lines = [(r.getMessage(), r.fields["transient"]) for r in caplog.records]
    assert lines == [("loop_failing", True), ("loop_failing", False)]
    health.clear_problem("worker-test")


def test_run_stops_promptly_while_backing_off():
    stop = threading.Event()
    loop = GuardedLoop("stop-test", DiskFull(10**6), stop, backoff_seconds=3600.0, backoff_cap_seconds=3600.0)
    t = threading.Thread(target=loop.run)
    t.start()
    stop.set()
    t.join(10)
    assert not t.is_alive()
    assert loop.failing is not None and "stop-test" not in health.problems()  # a stopped loop's problem ends

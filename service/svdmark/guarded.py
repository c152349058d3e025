"""One step of a service thread, run over and over, that never spins on a failure.

A step that raises (a full disk refusing the journal's write, a bug) is retried after a
back-off that doubles up to a cap, with jitter; the thread logs one line when it starts failing
(or fails differently) and one when it recovers, never one per try, and reports the problem to
/healthz (:func:`svdmark.health.report_problem`) until a step succeeds again.

Kept here rather than taken from a retry library: the loop must wait on the service's stop
event (so ``stop`` is prompt) and drive /healthz and the one-line-per-state logging, which is
most of what it does.
"""
from __future__ import annotations

import logging
import random
import threading
from dataclasses import dataclass, field
from typing import Callable

from . import health
from .errors import SvdmarkError
from .failures import reason_of, transient, where
from .logs import event

log = logging.getLogger("svdmark.service")


@dataclass
class GuardedLoop:
    name: str  # the component in logs and /healthz: "assembler", "worker-0", "outbox PACS@host:104"
    step: Callable[[], bool]  # True when it did something (run again at once), False when idle
    stop: threading.Event
    idle_seconds: float = 0.5
    backoff_seconds: float = 1.0
    backoff_cap_seconds: float = 60.0
    rng: random.Random = field(default_factory=random.Random)
    failing: str | None = field(default=None, init=False)  # the reason while failing
    failures: int = field(default=0, init=False)  # consecutive failed steps

    def run(self) -> None:
        """Until ``stop``; a problem it reported ends with it (a stopped thread's problem describes nothing)."""
        try:
            while not self.stop.is_set():
                self.stop.wait(self.once())
        finally:
            if self.failing is not None:
                health.clear_problem(self.name)

    def once(self) -> float:
        """Run the step once; returns how long to wait before the next."""
        try:
            busy = self.step()
        except Exception as exc:  # the journal keeps the state: back off, tell /healthz, log state changes only
            return self._failed(exc)
        if self.failing is not None:
            event(log, "loop_recovered", component=self.name, failed_steps=self.failures)
            health.clear_problem(self.name)
            self.failing, self.failures = None, 0
        return 0.0 if busy else self.idle_seconds

    def _failed(self, exc: Exception) -> float:
        reason = reason_of(exc)
        self.failures += 1
        if reason != self.failing:
            is_transient = transient(exc)
            bug = not (is_transient or isinstance(exc, SvdmarkError))  # svdmark's own errors say what is wrong
            event(log, "loop_failing", logging.ERROR, exc_info=bug, component=self.name,
                  reason=reason, transient=is_transient, where=where(exc))
            health.report_problem(self.name, reason)
            self.failing = reason
        delay = min(self.backoff_cap_seconds, self.backoff_seconds * 2 ** min(self.failures - 1, 30))
        return delay / 2 + self.rng.uniform(0.0, delay / 2)

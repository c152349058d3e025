"""Periodic check of receiving series against the completion evidence."""
from __future__ import annotations

import logging
import time

from ..journal import Journal
from ..logs import event
from .completion import SeriesEvidence, decide

log = logging.getLogger("svdmark.assemble")


class Assembler:
    def __init__(self, journal: Journal, open_series, settle_seconds: float, fallback_seconds: float):
        self.journal = journal
        self.open_series = open_series  # callable → set of series UIDs with an open association
        self.settle_seconds = settle_seconds
        self.fallback_seconds = fallback_seconds

    def tick(self, now: float | None = None) -> list[int]:
        """Queue a job for every series that is now complete; returns the new job ids."""
        now = time.time() if now is None else now
        open_now = self.open_series()
        queued = []
        for s in self.journal.receiving_series():
            geoms = [i.geometry for i in self.journal.instances(s.series_uid)]
            evidence = SeriesEvidence(geoms, s.released, s.series_uid in open_now, now - s.last_received)
            reason = decide(evidence, self.settle_seconds, self.fallback_seconds)
            if reason is None:
                continue
            job_id = self.journal.queue_job(s, reason)
            if job_id is not None:
                queued.append(job_id)
                event(log, "series_complete", series_uid=s.series_uid, instances=len(geoms),
                      generation=s.generation, reason=reason, job=job_id)
        return queued

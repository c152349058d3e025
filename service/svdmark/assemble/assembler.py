"""Periodic check of receiving series against the completion evidence.

The listener wakes the check after every stored instance. A series that received an instance within the
settle time cannot complete yet (:func:`.completion.settling`, :func:`.completion.decide`'s first rule), so
its instances are not read: during a transfer each check would otherwise read and parse every instance of
the series received so far, work that grows with the square of the series' size and competes with the
listener for the GIL.

A series whose delivering association ended without a release is remembered as such (:attr:`Assembler._ended`,
in memory: after a restart the first checks see it again, nothing being open) until a new instance arrives for
it. A sender that retries sends first what svdmark already holds: those duplicates change nothing in the
journal, but the retry's association is open, and an open association is otherwise no evidence against
completion, so the quiet timer would take the part received before the abort as the whole."""
from __future__ import annotations

import logging

from ..journal_api import AssemblyJournal
from ..logs import event
from ..completion import SeriesEvidence, decide, missing, settling

log = logging.getLogger("svdmark.assemble")


class Assembler:
    def __init__(self, journal: AssemblyJournal, open_series, settle_seconds: float, fallback_seconds: float,
                 max_wait_seconds: float | None = None, open_view_lag_seconds: float = 0.0):
        self.journal = journal
        self.open_series = open_series  # callable → set of series UIDs with an open association
        # how late ``open_series`` may learn of another host's open association (its heartbeats); a series is taken
        # as ended without release only once it has been quiet this long past the settle time
        self.open_view_lag_seconds = open_view_lag_seconds
        self.settle_seconds = settle_seconds
        self.fallback_seconds = fallback_seconds
        self.max_wait_seconds = max(fallback_seconds, max_wait_seconds or fallback_seconds)
        self._waiting: dict[str, str] = {}  # series UID → the warning it is held for (logged once)
        self._ended: dict[str, float] = {}  # series UID → its last_received when seen neither open nor released

    def tick(self, now: float | None = None) -> list[int]:
        """Queue a job for every series that is now complete; returns the new job ids."""
        now = self.journal.now() if now is None else now
        open_now = self.open_series()
        queued = []
        receiving = self.journal.receiving_series()
        for s in receiving:
            if settling(now - s.last_received, self.settle_seconds):  # still arriving (module doc): nothing to read
                continue
            geoms = [i.geometry for i in self.journal.instances(s.series_uid)]
            evidence = SeriesEvidence(geoms, s.released, self._open(s, open_now, now), now - s.last_received)
            done = decide(evidence, self.settle_seconds, self.fallback_seconds, self.max_wait_seconds)
            if done is None:
                self._note_waiting(s.series_uid, evidence)
                continue
            job_id = self.journal.queue_job(s, done.reason, warning=done.warning)
            self._waiting.pop(s.series_uid, None)
            self._ended.pop(s.series_uid, None)
            if job_id is not None:
                queued.append(job_id)
                event(log, "series_complete", logging.WARNING if done.warning else logging.INFO,
                      series_uid=s.series_uid, instances=len(geoms), generation=s.generation, reason=done.reason,
                      job=job_id, **({"warning": done.warning} if done.warning else {}))
        for uid in set(self._waiting) - {s.series_uid for s in receiving}:
            del self._waiting[uid]
        for uid in set(self._ended) - {s.series_uid for s in receiving}:
            del self._ended[uid]
        return queued

    def _open(self, s, open_now: set[str], now: float) -> bool:
        """Whether an association is delivering new instances to the series (module doc): one open since it
        was seen ended without release, with no instance new to the journal since, is a retry's duplicates."""
        if s.released:
            return s.series_uid in open_now
        if s.series_uid not in open_now:
            if now - s.last_received >= min(self.fallback_seconds, self.settle_seconds + self.open_view_lag_seconds):
                self._ended[s.series_uid] = s.last_received
            return False
        return self._ended.get(s.series_uid) != s.last_received

    def _note_waiting(self, series_uid: str, ev: SeriesEvidence) -> None:
        """One line when the quiet timer has passed but the series is held as incomplete."""
        if ev.quiet_seconds < self.fallback_seconds:
            return
        warning = missing(ev)
        if warning is None or self._waiting.get(series_uid) == warning:
            return
        self._waiting[series_uid] = warning
        event(log, "series_incomplete_waiting", logging.WARNING, series_uid=series_uid, instances=len(ev.instances),
              reason=warning, waits_until_quiet_s=round(self.max_wait_seconds))

"""The durable outbox: delivers journalled result objects with capped backoff.

Per delivery: pending → sending → delivered, or back to pending with
``next_attempt_at = now + min(cap, base·2^attempts)``, or dead after
``max_attempts`` (an admin lists and resends dead letters from the CLI).
A delivery confirmed once is never sent again.
"""
from __future__ import annotations

import logging
import time
from collections import defaultdict

from .. import health
from ..config import Destination
from ..journal import Journal
from ..logs import event
from .cstore import Exporter

log = logging.getLogger("svdmark.export")


def backoff(attempts: int, base: float, cap: float) -> float:
    """Delay before the next try after ``attempts`` failed tries (1-based)."""
    return min(cap, base * (2 ** max(0, attempts - 1)))


class Outbox:
    def __init__(self, journal: Journal, exporter: Exporter, destinations: tuple[Destination, ...],
                 max_attempts: int, backoff_seconds: float, backoff_cap_seconds: float):
        self.journal = journal
        self.exporter = exporter
        self.destinations = {d.name: d for d in destinations}
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.backoff_cap = backoff_cap_seconds

    def flush(self, now: float | None = None) -> int:
        """Try every due delivery once; returns how many were confirmed."""
        due = self.journal.due_deliveries(now)
        by_dest = defaultdict(list)
        for d in due:
            by_dest[d.destination].append(d)
        confirmed = 0
        for name, items in by_dest.items():
            dest = self.destinations.get(name)
            if dest is None:
                for d in items:
                    self.journal.mark_failed(d.id, f"destination {name} is no longer configured", time.time(), dead=True)
                continue
            self.journal.mark_sending([d.id for d in items])
            outcomes = self.exporter.send(dest, [d.path for d in items])
            for d, outcome in zip(items, outcomes):
                if outcome.ok:
                    self.journal.mark_delivered(d.id)
                    confirmed += 1
                    health.delivery_outcome("delivered", name)
                    event(log, "delivered", sop_uid=d.sop_uid, kind=d.kind, destination=name)
                    continue
                attempts = d.attempts + 1
                dead = attempts >= self.max_attempts
                retry_at = time.time() + backoff(attempts, self.backoff_seconds, self.backoff_cap)
                self.journal.mark_failed(d.id, outcome.detail, retry_at, dead)
                health.delivery_outcome("dead" if dead else "retry", name)
                event(log, "delivery_dead" if dead else "delivery_retry", logging.WARNING, sop_uid=d.sop_uid,
                      destination=name, attempts=attempts, reason=outcome.detail,
                      **({} if dead else {"retry_in_s": round(retry_at - time.time(), 1)}))
        return confirmed

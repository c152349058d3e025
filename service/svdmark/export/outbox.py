"""The durable outbox: delivers journalled result objects with capped, jittered back-off.

The same for every destination kind: C-STORE (the exporter given) and DICOMweb STOW-RS
(:class:`~svdmark.export.stow.StowExporter` for ``kind = "stow"``).

Per delivery: pending → sending → delivered, or back to pending with
``next_attempt_at = now + backoff(attempts)``, or dead after ``max_attempts`` tries in this round
or at once when retrying cannot help (the destination refuses the object's SOP class). An admin
lists and resends dead letters from the CLI; a resend starts a new round and keeps the history.

* Each object is journalled ``sending`` just before its C-STORE and ``delivered`` as soon as it is
  confirmed, not per batch: a crash re-sends only the one object in flight (``sending``), which the
  destination may have stored without its confirmation reaching us; confirmed objects never.
* Each destination has its own thread in the service (:meth:`Outbox.flush` with ``destination``),
  so a slow or unreachable destination delays only itself.
* A rejection note goes to a destination only after its job's new results there are settled (delivered,
  dead or superseded): one of them failing in a batch, or being sent by another process, holds the note back
  (``waiting``) instead of letting it overtake them.
* An object not tried because the connection was lost on an earlier one of its batch (the destination aborted
  or stalled on that one) is ``deferred``: it stays due and counts no try, so one object that a destination
  chokes on every time cannot hold the others back until they are all dead letters. (Each batch still sends
  at least one object, which is delivered or backs off: no hot loop.)
* Whatever goes wrong while sending (an exporter error, a bug, an outcome the journal refused), no delivery is
  left ``sending``: the batch's unreported objects are failed with the reason and retried. Where even that write
  fails (a full disk), the try's lease lapses and the service's reaping returns it (SQLite too).
* A batch sends only what no other process has tried since the batch read it (``tried``, :meth:`start_sending`):
  on a shared journal a stale reading would send an object during its back-off, or past its last try.
"""
from __future__ import annotations

import logging
import random
from collections import defaultdict

from .. import health
from ..config import AnyDestination, StowDestination
from ..domain import SendClaim
from ..journal import Delivery
from ..journal_api import OutboxJournal
from ..logs import event
from .cstore import Exporter, SendOutcome
from .stow import StowExporter

log = logging.getLogger("svdmark.export")


def backoff(attempts: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Delay before the next try after ``attempts`` failed tries (1-based): ``min(cap, base·2^(attempts-1))``,
    jittered into its upper half so that deliveries failed together do not retry together."""
    delay = min(cap, base * (2 ** max(0, attempts - 1)))
    return delay / 2 + (rng or random).uniform(0.0, delay / 2)


class Outbox:
    def __init__(self, journal: OutboxJournal, exporter: Exporter, destinations: tuple[AnyDestination, ...],
                 max_attempts: int, backoff_seconds: float, backoff_cap_seconds: float,
                 rng: random.Random | None = None, stow_exporter: Exporter | None = None):
        self.journal = journal
        self.exporter = exporter  # C-STORE destinations
        self.stow_exporter = stow_exporter or StowExporter()  # kind = "stow" destinations
        self.destinations = {d.name: d for d in destinations}
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.backoff_cap = backoff_cap_seconds
        self.rng = rng or random.Random()

    def flush(self, now: float | None = None, destination: str | None = None) -> int:
        """Try every due delivery (of one destination if named) once; returns how many were confirmed."""
        by_dest: dict[str, list[Delivery]] = defaultdict(list)
        for d in self.journal.due_deliveries(now, destination):
            by_dest[d.destination].append(d)
        confirmed = 0
        for name, items in by_dest.items():
            dest = self.destinations.get(name)
            if dest is None:
                for d in items:
                    self._failed(d, f"destination {name} is no longer configured", dead=True)
                continue
            confirmed += self._send(dest, items)
        return confirmed

    def drop_unconfigured(self) -> int:
        """Dead-letter what waits for destinations no longer configured (their threads do not exist)."""
        gone = self.journal.pending_destinations() - set(self.destinations)
        n = 0
        for name in sorted(gone):
            for d in self.journal.due_deliveries(float("inf"), name, in_order=False):
                self._failed(d, f"destination {name} is no longer configured", dead=True)
                n += 1
        return n

    def _send(self, dest: AnyDestination, items: list[Delivery]) -> int:
        by_path = {d.path: d for d in items}
        reported: set[int] = set()
        started: set[int] = set()  # claimed for sending in this batch
        confirmed = 0

        def on_outcome(outcome: SendOutcome) -> None:
            nonlocal confirmed
            d = by_path.get(outcome.path)
            if d is None or d.id in reported:
                return
            if outcome.deferred:  # not tried: still pending and due, no try counted; the next flush sends it
                event(log, "delivery_deferred", sop_uid=d.sop_uid, kind=d.kind, destination=dest.name,
                      reason=outcome.detail)
            elif outcome.ok:
                self.journal.mark_delivered(d.id, outcome.detail)
                confirmed += 1
                health.delivery_outcome("delivered", dest.name)
                event(log, "delivered", sop_uid=d.sop_uid, kind=d.kind, destination=dest.name)
            else:
                self._failed(d, outcome.detail, dead=outcome.permanent, unanswered=outcome.unanswered)
            # reported once the journal has it: an outcome it could not take is failed below with the batch's
            # unreported objects, not left 'sending'
            reported.add(d.id)

        def on_start(path) -> bool:
            d = by_path.get(path)
            if d is None:
                return True
            claim = self.journal.start_sending(d.id, tried=d.total_attempts)
            if claim:
                started.add(d.id)
                return True
            reported.add(d.id)  # not sent in this batch, and no try to count
            if claim is SendClaim.WITHDRAWN:  # superseded after it was read: never sent
                event(log, "delivery_withdrawn", sop_uid=d.sop_uid, kind=d.kind, destination=dest.name)
            elif claim is SendClaim.STALE:  # another process tried it since this batch read it: read it again later
                event(log, "delivery_tried_elsewhere", sop_uid=d.sop_uid, kind=d.kind, destination=dest.name)
            else:  # a rejection note behind its job's new results: a later flush sends it once they are settled
                event(log, "delivery_waiting", sop_uid=d.sop_uid, kind=d.kind, destination=dest.name)
            return False

        try:
            exporter = self.stow_exporter if isinstance(dest, StowDestination) else self.exporter
            exporter.send(dest, [d.path for d in items], on_outcome, on_start)
        except Exception as exc:  # never leave a delivery 'sending' in a live process
            event(log, "outbox_send_error", logging.ERROR, destination=dest.name, exc_info=True)
            why = f"send failed: {type(exc).__name__}"
        else:
            why = "no outcome reported for this object"
        for d in items:
            if d.id not in reported:  # one that went out may have been stored
                self._failed(d, why, dead=False, unanswered=d.id in started)
        return confirmed

    def _failed(self, d: Delivery, reason: str, dead: bool, unanswered: bool = False) -> None:
        attempts = d.attempts + 1
        dead = dead or attempts >= self.max_attempts
        now = self.journal.now()
        retry_at = now + backoff(attempts, self.backoff_seconds, self.backoff_cap, self.rng)
        self.journal.mark_failed(d.id, reason, retry_at, dead, unanswered=unanswered)
        health.delivery_outcome("dead" if dead else "retry", d.destination)
        event(log, "delivery_dead" if dead else "delivery_retry", logging.WARNING, sop_uid=d.sop_uid, kind=d.kind,
              destination=d.destination, attempts=attempts, reason=reason,
              **({} if dead else {"retry_in_s": round(retry_at - now, 1)}))

"""Health endpoint and Prometheus metrics.

``GET /healthz``  JSON: listener up, journal and spool writable, free disk space, the problems the service's
                 threads report (a full disk, a journal refusing writes), queue depth; 200 when healthy, 503
                 when not, with the reasons in ``problems``.
``GET /metrics``  Prometheus text format.

Two kinds of metrics:

* **Event counters** kept in this process (reset at restart, as Prometheus expects of counters):
  instances received by outcome, outbox retries and dead letters, deliveries, job durations by
  stage. The code that sees the event calls one function here:

  ========================================  ==============================================
  ``instance_received(outcome, status)``    receive: ``stored``/``duplicate``/``replaced``/``rejected``/``error``
  ``delivery_outcome(outcome, destination)``  outbox: ``delivered``/``retry``/``dead``
  ``observe_stage(stage, seconds)``         worker/pipeline: ``route``, ``volume``, ``infer``, ``measure``,
                                            ``rules``, ``encode``, ``total`` …
  ``stage_timer(stage)``                    the same, as a context manager
  ========================================  ==============================================

* **State gauges read from the journal at scrape time** (so they are right after a restart):
  queue depth per queue, series analysed by routing decision, deliveries by state (dead letters).

The server is prometheus_client's WSGI server (``svdmark.metrics``, with ``svdmark_build_info``) in
a daemon thread. It binds 127.0.0.1 by default; nothing here is authenticated, so expose it beyond
localhost only behind a firewall or a reverse proxy.
"""
from __future__ import annotations

import functools
import logging
import os
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, Info
from prometheus_client.core import GaugeMetricFamily

from . import metrics
from .domain import DeliveryState, JobState, SeriesState
from .journal import Journal, JournalUnavailable
from .logs import event

log = logging.getLogger("svdmark.health")

REGISTRY = CollectorRegistry(auto_describe=True)

INSTANCES = Counter("svdmark_instances_received", "C-STORE requests answered, by outcome and DIMSE status",
                    ["outcome", "status"], registry=REGISTRY)
DELIVERIES = Counter("svdmark_outbox_attempts", "Outbox delivery attempts by outcome (delivered, retry, dead)",
                     ["outcome", "destination"], registry=REGISTRY)
STAGE_SECONDS = Histogram("svdmark_stage_seconds", "Analysis job duration by pipeline stage", ["stage"],
                          buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600),
                          registry=REGISTRY)
BUILD_INFO = metrics.register_build_info(REGISTRY)  # svdmark_build_info
PROCESS_INFO = Info("svdmark_process", "This process: its roles and host (join other series on instance)",
                    registry=REGISTRY)
ASSOCIATIONS = Counter("svdmark_associations_refused", "Associations refused, by reason",
                       ["reason"], registry=REGISTRY)


# ------------------------------------------------------------------ hooks (one-line calls)
def process_identity(roles, host: str) -> None:
    """``svdmark_process_info{roles="receive,work",host="…"}``: which part of a multi-process deployment this is."""
    PROCESS_INFO.info({"roles": ",".join(roles), "host": host})


def instance_received(outcome: str, status: int = 0x0000) -> None:
    """Count one answered C-STORE: outcome ``stored|duplicate|replaced|rejected|error`` (journal's ``new`` = stored)."""
    _instances(outcome, status).inc()


@functools.lru_cache(maxsize=256)
def _instances(outcome: str, status: int):
    """The labelled counter of one outcome and status (looked up once: ``labels`` takes a lock and builds a key
    on every call, for every instance received; the labels never go away)."""
    return INSTANCES.labels(outcome="stored" if outcome == "new" else outcome, status=f"0x{status:04X}")


def delivery_outcome(outcome: str, destination: str) -> None:
    """Count one outbox attempt for one object: ``delivered|retry|dead``."""
    DELIVERIES.labels(outcome=outcome, destination=destination).inc()


def association_refused(reason: str) -> None:
    """Count one refused association: ``allow_list``, ``host_binding``, ``max_associations``, ``tls`` …"""
    ASSOCIATIONS.labels(reason=reason).inc()


def observe_stage(stage: str, seconds: float) -> None:
    """Record how long one stage of one job took (``total`` for the whole job)."""
    STAGE_SECONDS.labels(stage=stage).observe(max(0.0, float(seconds)))


@contextmanager
def stage_timer(stage: str) -> Iterator[None]:
    """``with health.stage_timer("infer"): ...`` records the block's wall time, also when it raises."""
    start = time.perf_counter()
    try:
        yield
    finally:
        observe_stage(stage, time.perf_counter() - start)


# ------------------------------------------------------------------ problems reported by the service's threads
_PROBLEMS: dict[str, str] = {}
_PROBLEMS_LOCK = threading.Lock()


def report_problem(component: str, reason: str) -> None:
    """A thread (``assembler``, ``worker``, ``outbox ...``) cannot do its work: /healthz turns unhealthy."""
    with _PROBLEMS_LOCK:
        _PROBLEMS[component] = reason


def clear_problem(component: str) -> None:
    with _PROBLEMS_LOCK:
        _PROBLEMS.pop(component, None)


def problems() -> dict[str, str]:
    with _PROBLEMS_LOCK:
        return dict(_PROBLEMS)


MIN_FREE_BYTES = 64 * 2**20  # below this (and below MIN_FREE_FRACTION), a spool write or journal commit may fail
MIN_FREE_FRACTION = 0.05  # so that a small data file system is not called full while it has room


def _disk_free(spool_dir: Path) -> tuple[bool, int]:
    st = os.statvfs(spool_dir)
    free = st.f_bavail * st.f_frsize
    return free >= min(MIN_FREE_BYTES, MIN_FREE_FRACTION * st.f_blocks * st.f_frsize), free


# ------------------------------------------------------------------ journal-derived state
QUEUES = {
    # queue name: (table, states)
    "series_receiving": ("series", (SeriesState.RECEIVING,)),
    "jobs_pending": ("jobs", (JobState.PENDING, JobState.RUNNING)),
    "deliveries_pending": ("deliveries", (DeliveryState.PENDING, DeliveryState.SENDING)),
}


def _journal_state(journal: str | Path) -> dict:
    """Counts from the journal through a read-only connection of its own (:meth:`Journal.read_counts`)."""
    found = Journal.read_counts(journal)
    counts = found.states
    queues = {name: sum(counts[table].get(s.value, 0) for s in states) for name, (table, states) in QUEUES.items()}
    return {"counts": counts, "routing": found.routing, "queues": queues, "instances": found.instances}


class _JournalCollector:
    def __init__(self, journal: str | Path):
        self.journal = journal

    def describe(self):
        return []

    def collect(self):
        try:
            state = _journal_state(self.journal)
        except JournalUnavailable as exc:
            event(log, "metrics_journal_unreadable", logging.WARNING, reason=str(exc))
            return
        q = GaugeMetricFamily("svdmark_queue_depth", "Work waiting, from the journal", labels=["queue"])
        for name, n in state["queues"].items():
            q.add_metric([name], n)
        yield q
        # a gauge: a job leaves one state for another, so a state's count goes down (a counter must never)
        r = GaugeMetricFamily("svdmark_jobs", "Analysis jobs in the journal by routing decision and present state",
                              labels=["decision", "state"])
        for (decision, st), n in sorted(state["routing"].items()):
            r.add_metric([decision, st], n)
        yield r
        d = GaugeMetricFamily("svdmark_deliveries", "Result deliveries by state (journal); state=dead are dead letters",
                              labels=["state"])
        for st in (DeliveryState.PENDING, DeliveryState.SENDING, DeliveryState.DELIVERED, DeliveryState.DEAD):
            d.add_metric([st.value], state["counts"]["deliveries"].get(st.value, 0))
        yield d
        yield GaugeMetricFamily("svdmark_dead_letters", "Deliveries that gave up (journal)",
                                value=state["counts"]["deliveries"].get(DeliveryState.DEAD.value, 0))
        yield GaugeMetricFamily("svdmark_instances_stored", "Instances in the journal", value=state["instances"])


# ------------------------------------------------------------------ health checks
def _writable(journal: str | Path, spool_dir: Path) -> tuple[bool, str]:
    try:
        Journal.check_writable(journal)
    except JournalUnavailable as exc:
        return False, f"journal not writable: {exc}"
    try:
        fd, name = tempfile.mkstemp(dir=spool_dir, prefix=".health-")
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        return False, f"spool not writable: {exc}"
    return True, "ok"


def check(journal: str | Path, spool_dir: Path, listener_up: Callable[[], bool] | None) -> tuple[bool, dict]:
    """``listener_up`` None: this process does not receive (``--roles`` without receive); not counted."""
    report: dict = {"listener": bool(listener_up()) if listener_up is not None else None}
    ok_w, why = _writable(journal, spool_dir)
    report["journal_writable"] = ok_w
    if not ok_w:
        report["error"] = why
    try:
        state = _journal_state(journal)
        report["queue_depth"] = state["queues"]
        report["dead_letters"] = state["counts"]["deliveries"].get(DeliveryState.DEAD.value, 0)
    except JournalUnavailable as exc:
        report["error"] = f"journal unreadable: {exc}"
        ok_w = False
    found = problems()
    try:
        enough, free = _disk_free(spool_dir)
        report["disk_free_bytes"] = free
        if not enough:
            found["disk"] = f"disk full: {free / 2**20:.1f} MiB free on the data directory's file system"
    except OSError as exc:
        found["disk"] = f"disk space unknown: {exc.strerror}"
    report["problems"] = found
    healthy = report["listener"] is not False and ok_w and not found
    report["status"] = "ok" if healthy else "fail"
    return healthy, report


class HealthServer:
    """``/healthz`` and ``/metrics`` on (host, port); port 0 picks a free one."""

    def __init__(self, host: str, port: int, journal: str | Path, spool_dir: Path,
                 listener_up: Callable[[], bool] | None):
        self.journal = journal
        self.spool_dir = Path(spool_dir)
        self.listener_up = listener_up
        self._collector = _JournalCollector(self.journal)
        REGISTRY.register(self._collector)
        # HTTP through prometheus_client's WSGI server (svdmark.metrics)
        self._httpd = metrics.Server(host, port, metrics.app(
            REGISTRY, lambda: check(self.journal, self.spool_dir, self.listener_up)))

    @property
    def address(self) -> tuple[str, int]:
        return self._httpd.address

    def start(self) -> "HealthServer":
        self._httpd.start()
        event(log, "health_listening", host=self.address[0], port=self.address[1], paths="/healthz,/metrics")
        return self

    def stop(self) -> None:
        self._httpd.stop()
        try:
            REGISTRY.unregister(self._collector)
        except KeyError:
            pass

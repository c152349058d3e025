"""`svdmark serve`: the listener, the assembler, the analysis workers and the outbox, wired together.

Roles (``--roles``, all four by default): ``receive`` (the DICOM listener), ``assemble`` (decides when a
series is complete; one leader at a time on a shared journal), ``work`` (analysis jobs) and ``export``
(one outbox thread per destination). Processes with any mix of roles share the journal and the spool,
on one host (the embedded SQLite default) or on several (PostgreSQL and a shared spool: docs/scaling.md).

Threads besides pynetdicom's: one per role's loop, plus the heartbeat, which renews this process's
leases and tells other processes (``svdmark status``, the assembler) what it is doing, and where
``[retention]`` is set, the retention run (``svdmark purge``'s) every ``every_hours`` in the assembly leader, and
in a process that works, the models check (every active model as a job would load it, so /healthz turns
unhealthy when a model file is removed or altered, not only each job of its task failing; a shadow candidate's is
only logged). They share
nothing but the journal, so each can be killed at any instant. Each runs its step in a
:class:`GuardedLoop`: a failing step (a full disk, a journal that went away) backs off, logs once per
change and turns /healthz unhealthy until it recovers.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable

from . import health, retention, tls
from .assemble import Assembler
from .config import Config
from .export import CStoreExporter, Exporter, Outbox
from .guarded import GuardedLoop
from .journal import Journal
from .logs import event
from .pipeline import Context, build_context
from .receive import AssociationTracker, Receiver, build_ae
from .receive.scp import start_server
from .spool import Spool, write_durably
from .worker import HEALTH_COMPONENT as WORKER_COMPONENT, Worker

log = logging.getLogger("svdmark.service")
RETENTION_ACTOR = "svdmark serve"  # who the audit trail names for the service's own retention runs
RUNTIME_FILE = "service.json"  # where a running service says which port it listens on (for `svdmark status`)
OPEN_VIEW_HEARTBEATS = 3  # another receiver's open series count while it was heard from within this many heartbeats
ORPHAN_SWEEP_SECONDS = 6 * 3600.0  # how often the assembly leader removes the spool's unreferenced files
MODELS_CHECK_SECONDS = 60.0  # how often a working process checks its models (the sha256 of a few MB each)
MODELS_RECHECK_SECONDS = 10.0  # at most this long between checks while one fails: /healthz recovers soon after a fix


class Service:
    def __init__(self, config: Config, exporter: Exporter | None = None, context: Context | None = None):
        self.config = config
        self.roles = tuple(r for r in ("receive", "assemble", "work", "export") if r in config.roles)
        self.journal = Journal(config.journal_url, lease_seconds=config.lease_seconds)
        self.spool = Spool(config.spool_dir)
        self.tracker = AssociationTracker()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.receiver = (Receiver(config, self.journal, self.spool, self.tracker, on_stored=self._wake.set)
                         if "receive" in self.roles else None)
        self.assembler = Assembler(self.journal, self._open_series, config.settle_seconds,
                                   config.fallback_seconds, config.incomplete_max_wait_seconds,
                                   open_view_lag_seconds=OPEN_VIEW_HEARTBEATS * config.heartbeat_seconds
                                   if self.journal.shared else 0.0)
        self.context = context or (build_context(config) if "work" in self.roles else None)
        self.worker = Worker(config, self.journal, self.spool, self.context) if "work" in self.roles else None
        exporter = exporter or CStoreExporter(config.ae_title, tls_context=tls.exporter_context(config))
        self.outbox = Outbox(self.journal, exporter, config.destinations,
                             config.export_max_attempts, config.export_backoff_seconds,
                             config.export_backoff_cap_seconds)
        self.heartbeat_seconds = config.heartbeat_seconds
        self._leading = False
        self._reaped_at = 0.0
        self._server = None
        self._health: health.HealthServer | None = None
        self._threads: list[threading.Thread] = []

    @property
    def port(self) -> int:
        return self._server.server_address[1] if self._server else self.config.port

    def start(self) -> "Service":
        recovered = self._recover()
        if self.receiver is not None:
            if not self.config.allow_calling_ae:
                event(log, "no_calling_ae_allow_list", logging.WARNING,
                      detail="accepting associations from any calling AE title; set allow_calling_ae")
            self._server = start_server(build_ae(self.config), self.config, self.receiver)
        health.process_identity(self.roles, socket.gethostname())
        if self.config.metrics_port is not None:
            self._health = health.HealthServer(
                self.config.metrics_host, self.config.metrics_port, self.config.journal_url, self.config.spool_dir,
                listener_up=self._listener_up if self.receiver is not None else None).start()
        # a failing heartbeat tries again within one interval, not after a back-off of up to a minute: its leases
        # (four intervals) must be renewed as soon as the journal answers again, or a live process loses its work
        loops = [GuardedLoop("heartbeat", self._heartbeat_step, self._stop, idle_seconds=self.heartbeat_seconds,
                             backoff_cap_seconds=self.heartbeat_seconds)]
        if "assemble" in self.roles:
            loops.append(GuardedLoop("assembler", self._assemble_step, self._stop, idle_seconds=0.0))
            loops.append(GuardedLoop("orphans", self._orphans_step, self._stop, idle_seconds=ORPHAN_SWEEP_SECONDS))
            if self.config.retention_days is not None:
                loops.append(GuardedLoop("retention", self._retention_step, self._stop,
                                         idle_seconds=self.config.retention_every_hours * 3600.0))
        if self.worker is not None:
            loops += [GuardedLoop(f"worker-{i}", self.worker.run_one, self._stop, idle_seconds=0.2)
                      for i in range(max(1, self.config.workers))]
            loops.append(GuardedLoop("models", self._models_step, self._stop, idle_seconds=MODELS_CHECK_SECONDS,
                                     backoff_cap_seconds=MODELS_RECHECK_SECONDS))
        if "export" in self.roles:
            self._drop_unconfigured()
            loops += [GuardedLoop(f"outbox {d.name}", self._outbox_step(d.name), self._stop, idle_seconds=0.5)
                      for d in self.config.destinations]
            loops.append(GuardedLoop("outbox-unconfigured", self._drop_unconfigured, self._stop,
                                     idle_seconds=self.config.lease_seconds))
        self._heartbeat_step()  # in the process table before the first job is claimed
        for loop in loops:
            t = threading.Thread(target=loop.run, name=f"svdmark-{loop.name}", daemon=True)
            t.start()
            self._threads.append(t)
        write_durably(self.config.data_dir / RUNTIME_FILE, json.dumps(
            {"ae_title": self.config.ae_title, "host": self.config.host, "port": self.port, "pid": os.getpid(),
             "roles": list(self.roles), "destinations": [d.name for d in self.config.destinations],
             "started_at": time.time()}).encode())
        event(log, "listening" if self.receiver is not None else "started", ae_title=self.config.ae_title,
              host=self.config.host, port=self.port if self.receiver is not None else "",
              roles=",".join(self.roles), journal=self.journal.describe(),
              destinations=",".join(d.name for d in self.config.destinations) or "none",
              data_dir=str(self.config.data_dir), tls=self.config.tls_listener, **recovered)
        return self

    # ------------------------------------------------------------------ several processes, one journal
    def _heartbeat_step(self) -> bool:
        """This process is alive: renew its leases, publish its roles, current job and open series."""
        detail = {"port": self.port} if self.receiver is not None else {}
        self.journal.heartbeat(self.roles, current_job=self.worker.current_job if self.worker else None,
                               open_series=sorted(self.tracker.open_series()), detail=detail)
        return False

    def _open_series(self) -> set[str]:
        """Series with an open association here, or at a live receiver elsewhere (shared journal)."""
        here = self.tracker.open_series()
        if not self.journal.shared:
            return here
        live = self.journal.processes(max_age=OPEN_VIEW_HEARTBEATS * self.heartbeat_seconds)
        return here.union(*(p.open_series for p in live if p.id != self.journal.owner))

    def _assemble_step(self) -> bool:
        leading = self.journal.lead("assemble")
        if leading != self._leading:
            self._leading = leading
            event(log, "assembly_leader" if leading else "assembly_standby", owner=self.journal.owner)
        if not leading:
            self._stop.wait(1.0)
            return False
        if time.monotonic() - self._reaped_at > self.config.lease_seconds / 2:
            self._reap()
        queued = self.assembler.tick()
        self._wake.wait(0.5)
        self._wake.clear()
        return bool(queued)

    def _models_step(self) -> bool:
        """Raises while an active model would not load (its loop reports it to /healthz). A shadow candidate's
        problem is logged, not raised: it must never disturb the live service (a probe would restart it)."""
        from .errors import ModelError
        from .lifecycle import Lifecycle, problem_key

        models, problems = Lifecycle(self.config).in_use()
        shadows = {problem_key(m["name"], m["version"]) for m in models if m["shadow"] and not m["active"]}
        live = {k: v for k, v in problems.items() if k not in shadows}
        for where in sorted(set(problems) - set(live)):
            event(log, "shadow_model_unusable", logging.WARNING, model=where, reason=problems[where])
        if live:
            raise ModelError("; ".join(f"{where}: {why}" for where, why in sorted(live.items())))
        return False

    def _as_leader(self, work: Callable[[], None], every_seconds: float) -> bool:
        """A housekeeping loop's step: ``work`` in the assembly leader only, so one process at a time walks a shared
        spool; a process that does not lead (yet) looks again within seconds, not a whole interval later."""
        if not self._leading:
            self._stop.wait(min(5.0, every_seconds))
            return True
        work()
        return False

    def _orphans_step(self) -> bool:
        """The spool's files that nothing refers to and that are a day old go (:func:`retention.remove_orphans`)."""
        return self._as_leader(lambda: retention.remove_orphans(self.journal, self.spool, retention.ORPHAN_AGE_SECONDS),
                               ORPHAN_SWEEP_SECONDS)

    def _retention_step(self) -> bool:
        """``svdmark purge --older-than-days N`` (and the delivered results, unless kept) in the assembly leader (each
        series' removal is its own checked transaction, so a leadership change in between is harmless). Audited as
        ``svdmark serve``."""
        return self._as_leader(self._purge_old, self.config.retention_every_hours * 3600.0)

    def _purge_old(self) -> None:
        cutoff = retention.cutoff(self.journal, self.config.retention_days)
        ran = retention.run(self.journal, self.spool, cutoff, RETENTION_ACTOR, self.config.retention_keep_results)
        event(log, "retention_run", logging.WARNING if ran.failed else logging.INFO, series=len(ran.series),
              instances=sum(p.instances for p in ran.series), results=sum(ran.results.values()),
              failed=len(ran.failed), older_than_days=self.config.retention_days)

    def _recover(self, lapsed_only: bool = False) -> dict:
        """Interrupted work back to the queue: at the start on SQLite everything this data dir left running; on a
        shared journal (and ``lapsed_only``, later on SQLite) what lapsed leases or dead processes of this host held
        (other processes' work is theirs)."""
        shared = self.journal.shared
        dead = self.journal.dead_processes_here() if shared else []
        recovered = self.journal.recover(dead_owners=dead, expired_only=True if lapsed_only else None,
                                         spare_held=lapsed_only and not shared)
        if shared or not lapsed_only:  # their rows go too; on SQLite at the start every other row is a killed
            self.journal.forget_processes(older_than=10 * self.config.lease_seconds if shared else 0, ids=dead)
        for job_id, series_uid in recovered.pop("quarantined"):
            event(log, "job_quarantined", logging.ERROR, job_id=job_id, series_uid=series_uid,
                  reason="the service stopped repeatedly while analysing this series")
        for delivery_id in recovered.pop("quarantined_deliveries"):
            event(log, "delivery_quarantined", logging.ERROR, delivery_id=delivery_id,
                  reason="the service stopped (or lost its lease) repeatedly while sending it: a dead letter")
        return recovered

    def _reap(self) -> None:
        """The leader returns work whose process stopped renewing its lease, and forgets long-dead processes. On
        SQLite too: a try this process could not settle (the journal refused its outcome, a full disk) lapses and is
        returned here, not left ``sending`` until a restart."""
        self._reaped_at = time.monotonic()
        recovered = self._recover(lapsed_only=True)
        if any(recovered.values()):
            event(log, "leases_lapsed", logging.WARNING, **recovered)

    def _drop_unconfigured(self) -> bool:
        """Deliveries for a destination no longer configured go to the dead letters: at the start, and again each
        lease (a try cut off in a process with the old configuration comes back pending later, and no thread here
        sends to that destination). Every exporter reads the same ``[[destinations]]`` (docs/scaling.md)."""
        dropped = self.outbox.drop_unconfigured()
        if dropped:
            event(log, "deliveries_to_removed_destinations", logging.WARNING, dead_letters=dropped)
        return False

    def _listener_up(self) -> bool:
        server = self._server
        return server is not None and server.socket is not None and server.socket.fileno() != -1

    def stop(self, timeout: float = 30.0) -> None:
        """Stop accepting, let the job in hand finish (or stay journalled), then return."""
        if self._server is not None:
            self._server.shutdown()
        if self._health is not None:
            self._health.stop()
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            t.join(timeout)
        if self.worker is not None:  # its loops withdrew their problems as they ended; the worker's goes too
            health.clear_problem(WORKER_COMPONENT)
        try:
            self.journal.leave()
        except Exception as exc:  # the journal is gone: the row ages out instead
            event(log, "process_row_kept", logging.WARNING, reason=type(exc).__name__)
        event(log, "stopped")

    def _outbox_step(self, destination: str):
        return lambda: self.outbox.flush(destination=destination) > 0

    def serve_forever(self) -> None:
        self.start()
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

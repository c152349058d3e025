"""`svdmark serve`: the listener, the assembler, the analysis worker and the outbox, wired together.

Threads besides pynetdicom's: the assembler (completes series), the workers
(analyse jobs) and one outbox thread per destination (delivers results; a slow
destination delays only itself). They share nothing but the journal, so each
can be killed at any instant. Each runs its step in a :class:`GuardedLoop`: a
failing step (a full disk) backs off, logs once per change and turns /healthz
unhealthy until it recovers.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time

from . import health, tls
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
from .worker import Worker

log = logging.getLogger("svdmark.service")
RUNTIME_FILE = "service.json"  # where a running service says which port it listens on (for `svdmark status`)


class Service:
    def __init__(self, config: Config, exporter: Exporter | None = None, context: Context | None = None):
        self.config = config
        self.journal = Journal(config.journal_path)
        self.spool = Spool(config.spool_dir)
        self.tracker = AssociationTracker()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.receiver = Receiver(config, self.journal, self.spool, self.tracker, on_stored=self._wake.set)
        self.assembler = Assembler(self.journal, self.tracker.open_series, config.settle_seconds,
                                   config.fallback_seconds, config.incomplete_max_wait_seconds)
        self.context = context or build_context(config)
        self.worker = Worker(config, self.journal, self.spool, self.context)
        exporter = exporter or CStoreExporter(config.ae_title, tls_context=tls.exporter_context(config))
        self.outbox = Outbox(self.journal, exporter, config.destinations,
                             config.export_max_attempts, config.export_backoff_seconds,
                             config.export_backoff_cap_seconds)
        self._server = None
        self._health: health.HealthServer | None = None
        self._threads: list[threading.Thread] = []

    @property
    def port(self) -> int:
        return self._server.server_address[1] if self._server else self.config.port

    def start(self) -> "Service":
        recovered = self.journal.recover()
        for job_id, series_uid in recovered.pop("quarantined"):
            event(log, "job_quarantined", logging.ERROR, job_id=job_id, series_uid=series_uid,
                  reason="the service stopped repeatedly while analysing this series")
        if not self.config.allow_calling_ae:
            event(log, "no_calling_ae_allow_list", logging.WARNING,
                  detail="accepting associations from any calling AE title; set allow_calling_ae")
        ae = build_ae(self.config)
        self._server = start_server(ae, self.config, self.receiver)
        if self.config.metrics_port is not None:
            self._health = health.HealthServer(self.config.metrics_host, self.config.metrics_port,
                                               self.config.journal_path, self.config.spool_dir,
                                               listener_up=self._listener_up).start()
        dropped = self.outbox.drop_unconfigured()
        if dropped:
            event(log, "deliveries_to_removed_destinations", logging.WARNING, dead_letters=dropped)
        loops = [GuardedLoop("assembler", self._assemble_step, self._stop, idle_seconds=0.0)]
        loops += [GuardedLoop(f"worker-{i}", self.worker.run_one, self._stop, idle_seconds=0.2)
                  for i in range(max(1, self.config.workers))]
        loops += [GuardedLoop(f"outbox {d.name}", self._outbox_step(d.name), self._stop, idle_seconds=0.5)
                  for d in self.config.destinations]
        for loop in loops:
            t = threading.Thread(target=loop.run, name=f"svdmark-{loop.name}", daemon=True)
            t.start()
            self._threads.append(t)
        write_durably(self.config.data_dir / RUNTIME_FILE, json.dumps(
            {"ae_title": self.config.ae_title, "host": self.config.host, "port": self.port, "pid": os.getpid(),
             "destinations": [d.name for d in self.config.destinations], "started_at": time.time()}).encode())
        event(log, "listening", ae_title=self.config.ae_title, host=self.config.host, port=self.port,
              destinations=",".join(d.name for d in self.config.destinations) or "none",
              data_dir=str(self.config.data_dir), tls=self.config.tls_listener, **recovered)
        return self

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
        event(log, "stopped")

    def _assemble_step(self) -> bool:
        queued = self.assembler.tick()
        self._wake.wait(0.5)
        self._wake.clear()
        return bool(queued)

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

"""The DICOM listener: thin pynetdicom handlers over the spool and the journal.

C-STORE: inspect → durable write (fsync) → journal row (committed) → 0x0000.
An instance is never acknowledged before both are on disk.
"""
from __future__ import annotations

import hashlib
import logging
import socket
import threading
from collections import defaultdict
from typing import Callable

from pynetdicom import AE, evt
from pynetdicom.presentation import StoragePresentationContexts
from pynetdicom.sop_class import Verification
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
    JPEGLossless,
)

from .. import health, tls
from ..config import Config
from ..errors import Rejected
from ..journal import Journal
from ..logs import event
from ..spool import Spool
from .inspect import STATUS_OUT_OF_RESOURCES, SUPPORTED_SOP_CLASSES, inspect

log = logging.getLogger("svdmark.receive")

ACCEPTED_TRANSFER_SYNTAXES = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    JPEGLosslessSV1,
    JPEGLossless,
    JPEGLSLossless,
    JPEG2000Lossless,
    RLELossless,
    ExplicitVRBigEndian,
]


class AssociationTracker:
    """Which series each open association has delivered to (in memory only).

    After a restart nothing is open, which is the truth: the peer's association died with us.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_assoc: dict[int, set[str]] = defaultdict(set)

    def add(self, assoc_id: int, series_uid: str) -> None:
        with self._lock:
            self._by_assoc[assoc_id].add(series_uid)

    def close(self, assoc_id: int) -> set[str]:
        with self._lock:
            return self._by_assoc.pop(assoc_id, set())

    def open_series(self) -> set[str]:
        with self._lock:
            return set().union(*self._by_assoc.values()) if self._by_assoc else set()


class Receiver:
    """Handlers for one listener; ``on_stored`` wakes the assembler."""

    def __init__(self, config: Config, journal: Journal, spool: Spool, tracker: AssociationTracker,
                 on_stored: Callable[[], None] = lambda: None):
        self.config = config
        self.journal = journal
        self.spool = spool
        self.tracker = tracker
        self.on_stored = on_stored

    def handle_echo(self, event_) -> int:
        return 0x0000

    def handle_store(self, ev) -> int:
        assoc = ev.assoc
        calling = assoc.requestor.ae_title
        try:
            data = ev.encoded_dataset(include_meta=True)
            item = inspect(data, str(ev.request.AffectedSOPClassUID), self.config.max_dataset_bytes)
        except Rejected as exc:
            event(log, "instance_rejected", logging.WARNING, status=f"0x{exc.status:04X}", reason=exc.reason,
                  sop_uid=exc.sop_uid or str(ev.request.AffectedSOPInstanceUID), calling_ae=calling)
            health.instance_received("rejected", exc.status)
            return exc.status
        digest = hashlib.sha256(data).hexdigest()
        try:
            if self.journal.instance_digest(item.sop_uid) == digest:
                outcome = "duplicate"
            else:
                path = self.spool.write(self.spool.incoming, item.study_uid, item.series_uid, item.sop_uid, data)
                outcome = self.journal.record_instance(
                    sop_uid=item.sop_uid, study_uid=item.study_uid, series_uid=item.series_uid,
                    sop_class=item.sop_class, transfer_syntax=str(ev.file_meta.TransferSyntaxUID), path=path,
                    size=len(data), digest=digest, modality=item.modality, geometry=item.geometry, calling_ae=calling,
                )
        except OSError as exc:
            event(log, "store_failed", logging.ERROR, sop_uid=item.sop_uid, reason=str(exc))
            health.instance_received("error", STATUS_OUT_OF_RESOURCES)
            return STATUS_OUT_OF_RESOURCES
        health.instance_received(outcome)
        self.tracker.add(id(assoc), item.series_uid)
        event(log, "instance_stored", logging.DEBUG, sop_uid=item.sop_uid, series_uid=item.series_uid, outcome=outcome)
        if outcome == "replaced":
            event(log, "instance_replaced", sop_uid=item.sop_uid, series_uid=item.series_uid)
        self.on_stored()
        return 0x0000

    def handle_released(self, ev) -> None:
        series = self.tracker.close(id(ev.assoc))
        if series:
            self.journal.mark_released(sorted(series))
            event(log, "association_released", calling_ae=ev.assoc.requestor.ae_title, series=len(series))
            self.on_stored()

    def handle_closed(self, ev) -> None:
        series = self.tracker.close(id(ev.assoc))
        if series:
            event(log, "association_ended_without_release", logging.WARNING,
                  calling_ae=ev.assoc.requestor.ae_title, series=len(series))
            self.on_stored()

    def handle_rejected(self, ev) -> None:
        """pynetdicom refused the association (allow-list or association limit): say which and why."""
        rq = ev.assoc.requestor
        rj = ev.assoc.acceptor.primitive
        code = (getattr(rj, "result_source", None), getattr(rj, "diagnostic", None))
        if code == (0x01, 0x03):
            key, reason = "allow_list", (f"calling AE title {rq.ae_title.strip()!r} is not in the allow-list "
                                         f"({', '.join(self.config.allow_calling_ae)})")
        elif code == (0x03, 0x02):
            key, reason = "max_associations", f"maximum associations ({self.config.max_associations}) reached"
        elif code == (0x01, 0x07):
            key, reason = "called_ae", f"called AE title is not {self.config.ae_title!r}"
        else:
            key, reason = "other", f"rejected (source {code[0]}, diagnostic {code[1]})"
        health.association_refused(key)
        event(log, "association_rejected", logging.WARNING, calling_ae=rq.ae_title.strip(), address=rq.address,
              port=rq.port, reason=reason)

    def handle_requested(self, ev) -> None:
        """Host binding of the allow-list (``AET@HOST``): pynetdicom only checks the title."""
        rq = ev.assoc.requestor
        calling = str(ev.assoc.requestor.primitive.calling_ae_title).strip()
        allowed = self.allowed_hosts(calling)
        if allowed is None:  # no binding for this title: pynetdicom's title check decides
            return
        if rq.address in allowed:
            return
        health.association_refused("host_binding")
        event(log, "association_rejected", logging.WARNING, calling_ae=calling, address=rq.address, port=rq.port,
              reason=f"calling AE title {calling!r} is allowed only from "
                     f"{', '.join(sorted(allowed)) or '(an unresolvable host)'}")
        ev.assoc.acse.send_reject(0x01, 0x01, 0x03)  # permanent, service user, calling AE not recognised
        ev.assoc.kill()

    def allowed_hosts(self, calling_ae: str) -> set[str] | None:
        """Addresses a host-bound title may call from; None when the title is not host-bound."""
        bound, hosts = False, set()
        for entry in self.config.allow_calling_ae:
            aet, sep, host = entry.rpartition("@")
            if not sep:
                if entry.strip() == calling_ae:
                    return None  # also listed without a host: any address
            elif aet.strip() == calling_ae:
                bound = True
                hosts |= _resolve(host.strip())
        return hosts if bound else None

    def handle_conn_open(self, ev) -> None:
        """Run a deferred TLS handshake in this connection's thread; refuse the caller if it fails."""
        sock = ev.assoc.dul.socket
        raw = getattr(sock, "socket", None)
        if raw is None or not self.tls_timeout:
            return
        address, port = (ev.address[0], ev.address[1]) if isinstance(ev.address, tuple) else (str(ev.address), 0)
        try:
            facts = tls.handshake(raw, self.tls_timeout)
        except tls.TLSRefused as exc:
            health.association_refused("tls")
            event(log, "tls_refused", logging.WARNING, address=address, port=port, reason=str(exc))
            sock.close()
            return
        event(log, "tls_established", logging.DEBUG, address=address, port=port, **facts)

    tls_timeout: float = 0.0  # seconds; set by start_server() when the listener speaks TLS

    def handlers(self) -> list:
        return [
            (evt.EVT_C_ECHO, self.handle_echo),
            (evt.EVT_C_STORE, self.handle_store),
            (evt.EVT_RELEASED, self.handle_released),
            (evt.EVT_ABORTED, self.handle_closed),
            (evt.EVT_CONN_CLOSE, self.handle_closed),
            (evt.EVT_REJECTED, self.handle_rejected),
            (evt.EVT_REQUESTED, self.handle_requested),
            (evt.EVT_CONN_OPEN, self.handle_conn_open),
        ]


def _resolve(host: str) -> set[str]:
    """The addresses of an allow-list host (an IP address stays as it is)."""
    try:
        return {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return {host}


def build_ae(config: Config) -> AE:
    """An AE with deliberate limits and the accepted presentation contexts."""
    ae = AE(ae_title=config.ae_title)
    ae.maximum_associations = config.max_associations
    ae.maximum_pdu_size = config.max_pdu
    ae.acse_timeout = config.acse_timeout
    ae.dimse_timeout = config.dimse_timeout
    ae.network_timeout = config.network_timeout
    if config.allow_calling_ae:  # titles only; AET@HOST bindings are checked in Receiver.handle_requested
        ae.require_calling_aet = sorted({e.rpartition("@")[0] if "@" in e else e for e in config.allow_calling_ae})
    ae.add_supported_context(Verification)
    for uid in SUPPORTED_SOP_CLASSES:
        ae.add_supported_context(uid, ACCEPTED_TRANSFER_SYNTAXES)
    # Accept other storage classes too, so their senders get an explicit
    # "SOP class not supported" status with a reason instead of a silent context rejection.
    for cx in StoragePresentationContexts:
        if cx.abstract_syntax not in SUPPORTED_SOP_CLASSES:
            ae.add_supported_context(cx.abstract_syntax, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    return ae


def start_server(ae: AE, config: Config, receiver: Receiver):
    """Start the listener (TLS when configured) with the receiver's handlers; returns the server."""
    wrapper = tls.server_tls(config)
    if wrapper is not None:
        receiver.tls_timeout = wrapper.handshake_timeout
    return ae.start_server((config.host, config.port), block=False, evt_handlers=receiver.handlers(),
                           ssl_context=wrapper)

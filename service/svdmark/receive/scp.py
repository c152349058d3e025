"""The DICOM listener: thin pynetdicom handlers over the spool and the journal.

C-STORE: SOP class policy → size cap (on the received file, before it is read) → inspect →
durable write (fsync) → journal row (committed) → 0x0000. An instance is never acknowledged
before both are on disk; when either cannot be written the answer is 0xA700 and nothing is
left behind. Connection hygiene (request timeout, per-host limit, slots for negotiated
associations only) is :mod:`svdmark.receive.gate`; keeping values out of logs is
:mod:`svdmark.phi`; what pynetdicom costs per association, :mod:`svdmark.receive.pace`.

Datasets arrive through pynetdicom's ``STORE_RECV_CHUNKED_DATASET``: each C-STORE's P-DATA is
written to a temporary file (mode 0600, deleted by pynetdicom after the handler) as it arrives,
so a dataset over ``max_dataset_bytes`` is refused from its file size without ever being held in
memory. Where that file is on the spool's filesystem it becomes the spool's file (fsynced and
hard-linked, not copied: :meth:`svdmark.spool.Spool.place`).
"""
from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import threading
from collections import Counter, defaultdict
from pathlib import Path
from typing import Callable

from pydicom.uid import UID
from pynetdicom import AE, _config, evt
from pynetdicom.presentation import AllStoragePresentationContexts
from pynetdicom.sop_class import Verification
from pydicom.uid import (
    AllTransferSyntaxes,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2K,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
    JPEGLossless,
)

from .. import health, tls
from ..config import Config, pseudonym_key_from_env
from ..errors import Rejected
from ..journal_engine import ERRORS as JOURNAL_ERRORS
from ..journal_api import ReceiveJournal
from ..logs import event
from ..spool import Spool, make_private, valid_uid as _valid
from .. import phi
from . import datasetfile, fastpath, gate as gate_mod, pace
from .gate import ConnectionGate
from .groupcommit import CommitInterrupted, GroupCommit
from .sink import received_file
from .store import keep
from .inspect import (
    STATUS_CANNOT_UNDERSTAND,
    STATUS_DATASET_TOO_LARGE,
    STATUS_DOES_NOT_MATCH_SOP_CLASS,
    STATUS_OUT_OF_RESOURCES,
    STATUS_SOP_CLASS_NOT_SUPPORTED,
    SUPPORTED_SOP_CLASSES,
    inspect,
    unsupported_reason,
)

log = logging.getLogger("svdmark.receive")

# Image SOP classes: everything the pylibjpeg/openjpeg/RLE decoders read, lossless first. Lossy
# syntaxes are accepted (a PACS may hold only a lossy copy) and the instance is marked ``lossy``.
ACCEPTED_TRANSFER_SYNTAXES = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    JPEGLosslessSV1,
    JPEGLossless,
    JPEGLSLossless,
    JPEG2000Lossless,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    RLELossless,
    ExplicitVRBigEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLSNearLossless,
    JPEG2000,
    HTJ2K,
]
# Other storage classes are discarded or refused per instance, never at negotiation: any syntax.
OTHER_STORAGE_TRANSFER_SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian] + [
    ts for ts in AllTransferSyntaxes if ts not in (ExplicitVRLittleEndian, ImplicitVRLittleEndian)]
_CONTEXT_RESULT = {0x01: "refused by the user", 0x02: "no reason given",
                   0x03: "SOP class (abstract syntax) not supported",
                   0x04: "none of the proposed transfer syntaxes is supported"}


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


class StorageHealth:
    """Whether the spool and journal took the last write; logs each change once, not each refusal."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.failing: str | None = None  # "spool" or "journal" while writes fail
        self.refused = 0

    def failed(self, where: str, exc: BaseException) -> None:
        with self._lock:
            changed = self.failing != where
            self.failing = where
            self.refused += 1
        if changed:
            event(log, "storage_unavailable", logging.ERROR, where=where, status="0xA700", reason=_os_reason(exc),
                  detail="instances are refused with 0xA700 (out of resources) until a write succeeds")

    def succeeded(self) -> None:
        if self.failing is None:
            return
        with self._lock:
            where, refused, self.failing, self.refused = self.failing, self.refused, None, 0
        if where is not None:
            event(log, "storage_available", where=where, refused_while_unavailable=refused)


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        name = errno.errorcode.get(exc.errno or 0, "")
        return f"{name or type(exc).__name__}: {exc.strerror or 'I/O error'}"
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"  # sqlite3: no values


class Receiver:
    """Handlers for one listener; ``on_stored`` wakes the assembler."""

    def __init__(self, config: Config, journal: ReceiveJournal, spool: Spool, tracker: AssociationTracker,
                 on_stored: Callable[[], None] = lambda: None):
        self.config = config
        self.journal = GroupCommit(journal)  # concurrent associations share their journal commits
        self.spool = spool
        self.tracker = tracker
        self.on_stored = on_stored
        self.gate = ConnectionGate(config.max_associations, config.max_connections_per_host, config.request_timeout)
        self.storage = StorageHealth()
        self.pace = pace.Pace()
        self._discarded: dict[int, Counter] = defaultdict(Counter)
        self._discard_lock = threading.Lock()
        make_private(config.data_dir, [config.journal_path] if config.journal_is_local_file else [])
        phi.install(_site_key(config))
        gate_mod.quiet_dropped_connections()

    def handle_echo(self, event_) -> int:
        return 0x0000

    # ------------------------------------------------------------------ C-STORE
    def handle_store(self, ev) -> int:
        calling = ev.assoc.requestor.ae_title
        affected = str(ev.request.AffectedSOPClassUID)
        request_sop = str(ev.request.AffectedSOPInstanceUID)
        if affected not in SUPPORTED_SOP_CLASSES:
            return self._unsupported(ev, affected, request_sop, calling)
        if str(ev.context.abstract_syntax) != affected:  # pynetdicom serves a request by its class, not its context's
            reason = f"SOP class {affected} was sent on a presentation context negotiated for another SOP class"
            return self._rejected(Rejected(STATUS_SOP_CLASS_NOT_SUPPORTED, reason), request_sop, calling)
        try:
            data, source = _received_bytes(ev, self.config.max_dataset_bytes)
            item = inspect(data, affected, self.config.max_dataset_bytes)
            if item.sop_uid != request_sop:  # as dcmtk's storescp: the response would name an instance not stored
                raise Rejected(STATUS_DOES_NOT_MATCH_SOP_CLASS, "SOP Instance UID in the dataset differs from the "
                               "request's", item.sop_uid)
        except Rejected as exc:
            return self._rejected(exc, request_sop, calling)
        except Exception as exc:  # a bug or a pydicom surprise: a status and the type, never a traceback
            return self._rejected(Rejected(STATUS_CANNOT_UNDERSTAND, f"dataset cannot be parsed "
                                           f"({type(exc).__name__})"), request_sop, calling)
        return self._store(ev, item, data, calling, source)

    def _store(self, ev, item, data: bytes, calling: str, source: Path | None) -> int:
        try:  # the received file is fsynced and linked into the spool, not copied (Spool.place)
            outcome = keep(self.journal, self.spool, item, data, transfer_syntax=str(ev.context.transfer_syntax),
                           calling_ae=calling, source=source)
        except (OSError, CommitInterrupted, *JOURNAL_ERRORS) as exc:
            where = "spool" if isinstance(exc, OSError) else "journal"  # store.keep: OSError is the spool's
            self.storage.failed(where, exc)
            event(log, "instance_rejected", logging.DEBUG, status=f"0x{STATUS_OUT_OF_RESOURCES:04X}",
                  reason=f"{where} write failed", sop_uid=item.sop_uid, calling_ae=calling)
            health.instance_received("error", STATUS_OUT_OF_RESOURCES)
            return STATUS_OUT_OF_RESOURCES
        if outcome == "conflict":
            return self._rejected(Rejected(STATUS_CANNOT_UNDERSTAND, "its Series Instance UID already holds another "
                                           "study's instances (a Series Instance UID names one series of one study)",
                                           item.sop_uid), item.sop_uid, calling)
        if outcome != "duplicate":  # a write went through: the disk takes writes again
            self.storage.succeeded()
        health.instance_received(outcome)
        self.tracker.add(id(ev.assoc), item.series_uid)
        event(log, "instance_stored", logging.DEBUG, sop_uid=item.sop_uid, series_uid=item.series_uid, outcome=outcome,
              lossy=item.lossy)
        if outcome == "replaced":
            event(log, "instance_replaced", sop_uid=item.sop_uid, series_uid=item.series_uid)
        self.on_stored()
        return 0x0000

    def _rejected(self, exc: Rejected, request_sop: str, calling: str) -> int:
        sop = exc.sop_uid or request_sop
        event(log, "instance_rejected", logging.WARNING, status=f"0x{exc.status:04X}", reason=exc.reason,
              sop_uid=sop if _valid(sop) else phi.uid_hash(sop), calling_ae=calling)
        health.instance_received("rejected", exc.status)
        return exc.status

    def _unsupported(self, ev, sop_class: str, request_sop: str, calling: str) -> int:
        """A storage SOP class svdmark does not analyse (SR, PR, KO of a forwarded study...)."""
        if self.config.unsupported_sop_class == "refuse":
            return self._rejected(Rejected(STATUS_SOP_CLASS_NOT_SUPPORTED, unsupported_reason(sop_class)),
                                  request_sop, calling)
        with self._discard_lock:
            self._discarded[id(ev.assoc)][sop_class] += 1
        health.instance_received("discarded")
        return 0x0000

    def _report_discarded(self, ev) -> None:
        with self._discard_lock:
            counts = self._discarded.pop(id(ev.assoc), None)
        if counts:
            event(log, "instances_discarded", calling_ae=ev.assoc.requestor.ae_title.strip(),
                  count=sum(counts.values()),
                  sop_classes=", ".join(f"{UID(k).name or k} x{n}" for k, n in sorted(counts.items())),
                  detail="not analysed; acknowledged and not kept ([listener] unsupported_sop_class = \"discard\")")

    # ------------------------------------------------------------------ association life cycle
    def handle_released(self, ev) -> None:
        series = self.tracker.close(id(ev.assoc))
        if series:
            self.journal.mark_released(sorted(series))
            event(log, "association_released", calling_ae=ev.assoc.requestor.ae_title, series=len(series))
            self.on_stored()
        self.gate.closed(ev)
        self.pace.closed(ev.assoc)
        self._report_discarded(ev)

    def handle_closed(self, ev) -> None:
        if ev.event is evt.EVT_CONN_CLOSE:  # from the DUL thread, the only one that writes the data set's file
            _discard_partial_dataset(ev.assoc)
        series = self.tracker.close(id(ev.assoc))
        if series:
            event(log, "association_ended_without_release", logging.WARNING,
                  calling_ae=ev.assoc.requestor.ae_title, series=len(series))
            self.on_stored()
        self.gate.closed(ev)
        self.pace.closed(ev.assoc)
        self._report_discarded(ev)

    def handle_accepted(self, ev) -> None:
        """Pace the association (:mod:`.pace`); one line per presentation context it was refused,
        with what was proposed."""
        self.pace.opened(ev.assoc)
        rq = ev.assoc.requestor
        proposed = {cx.context_id: cx for cx in (rq.primitive.presentation_context_definition_list or [])}
        for cx in ev.assoc.rejected_contexts:
            asked = proposed.get(cx.context_id, cx)
            uid = str(asked.abstract_syntax)
            event(log, "presentation_context_refused", logging.WARNING, calling_ae=rq.ae_title.strip(),
                  address=rq.address, sop_class=uid if _valid(uid) else phi.uid_hash(uid),
                  sop_class_name=UID(uid).name if _valid(uid) else "",
                  transfer_syntaxes=",".join(str(t) if _valid(str(t)) else phi.uid_hash(str(t))
                                             for t in asked.transfer_syntax),
                  reason=_CONTEXT_RESULT.get(cx.result, f"result {cx.result}"))

    def handle_rejected(self, ev) -> None:
        """pynetdicom refused the association (allow-list or association limit): say which and why."""
        self.gate.closed(ev)
        rq = ev.assoc.requestor
        rj = ev.assoc.acceptor.primitive
        code = (getattr(rj, "result_source", None), getattr(rj, "diagnostic", None))
        if code == (0x01, 0x03):
            key, reason = "allow_list", (f"calling AE title {rq.ae_title.strip()!r} is not in the allow-list "
                                         f"({', '.join(self.config.allow_calling_ae)})")
        elif code == (0x03, 0x02):
            key, reason = "thread_ceiling", f"{gate_mod.THREAD_CEILING} connections are open"
        elif code == (0x01, 0x07):
            key, reason = "called_ae", f"called AE title is not {self.config.ae_title!r}"
        else:
            key, reason = "other", f"rejected (source {code[0]}, diagnostic {code[1]})"
        health.association_refused(key)
        event(log, "association_rejected", logging.WARNING, calling_ae=rq.ae_title.strip(), address=rq.address,
              port=rq.port, reason=reason)

    def handle_requested(self, ev) -> None:
        """The A-ASSOCIATE-RQ is complete: the association limit (negotiated associations only,
        echo-only exempt) and the host binding of the allow-list (pynetdicom checks only the title)."""
        rq = ev.assoc.requestor
        calling = str(ev.assoc.requestor.primitive.calling_ae_title).strip()
        if not self.gate.requested(ev):
            self._reject(ev, calling, "max_associations", f"maximum associations ({self.config.max_associations}) "
                         "reached", (0x02, 0x03, 0x02))  # transient, service provider (presentation), local limit
            return
        allowed = self.allowed_hosts(calling)
        if allowed is None or rq.address in allowed:  # no binding: pynetdicom's title check decides
            return
        self._reject(ev, calling, "host_binding", f"calling AE title {calling!r} is allowed only from "
                     f"{', '.join(sorted(allowed)) or '(an unresolvable host)'}", (0x01, 0x01, 0x03))

    def _reject(self, ev, calling: str, key: str, reason: str, code: tuple[int, int, int]) -> None:
        rq = ev.assoc.requestor
        self.gate.closed(ev)
        health.association_refused(key)
        event(log, "association_rejected", logging.WARNING, calling_ae=calling, address=rq.address, port=rq.port,
              reason=reason)
        ev.assoc.acse.send_reject(*code)
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
        """Per-host limit and request timer; then a deferred TLS handshake in this connection's thread."""
        sock = ev.assoc.dul.socket
        raw = getattr(sock, "socket", None)
        tls_now = raw is not None and bool(self.tls_timeout)
        if not self.gate.opened(ev, arm=not tls_now) or not tls_now:
            return
        address, port = (ev.address[0], ev.address[1]) if isinstance(ev.address, tuple) else (str(ev.address), 0)
        try:
            facts = tls.handshake(raw, self.tls_timeout)
        except tls.TLSRefused as exc:
            health.association_refused("tls")
            event(log, "tls_refused", logging.WARNING, address=address, port=port, reason=str(exc))
            self.gate.closed(ev)
            gate_mod._drop(ev.assoc)
            sock.close()
            return
        event(log, "tls_established", logging.DEBUG, address=address, port=port, **facts)
        self.gate.arm(ev.assoc)

    tls_timeout: float = 0.0  # seconds; set by start_server() when the listener speaks TLS

    def handlers(self) -> list:
        return [
            (evt.EVT_C_ECHO, self.handle_echo),
            (evt.EVT_C_STORE, self.handle_store),
            (evt.EVT_RELEASED, self.handle_released),
            (evt.EVT_ABORTED, self.handle_closed),
            (evt.EVT_CONN_CLOSE, self.handle_closed),
            (evt.EVT_ACCEPTED, self.handle_accepted),
            (evt.EVT_REJECTED, self.handle_rejected),
            (evt.EVT_REQUESTED, self.handle_requested),
            (evt.EVT_CONN_OPEN, self.handle_conn_open),
        ]


def _site_key(config: Config) -> bytes | None:
    """The site's pseudonymisation key if one exists (invalid UIDs in logs are hashed with it)."""
    key = pseudonym_key_from_env()
    if key:
        return key
    path = Path(config.data_dir) / ".pseudonym.key"
    try:
        return path.read_bytes().strip() or None
    except OSError:
        return None


def _received_bytes(ev, max_bytes: int) -> tuple[bytes, Path | None]:
    """The Part 10 bytes of a C-STORE, and the file pynetdicom received it into (None: received in memory);
    refused from the file size before reading when over the cap. Not fsynced here: :meth:`Spool.place` does
    that before it links the file, after inspection and the duplicate check, by which time the write-back
    started when the file was closed (:mod:`.datasetfile`) has mostly finished; a refused or duplicate
    instance costs no fsync."""
    path = received_file(ev)
    if path is None:  # received in memory (an AE built without build_ae)
        data = ev.encoded_dataset(include_meta=True)
        if len(data) > max_bytes:
            raise Rejected(STATUS_DATASET_TOO_LARGE, f"dataset of {len(data)} bytes exceeds the limit of {max_bytes}")
        return data, None
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)  # not a Python file object: 4 syscalls instead of 10
    try:
        size = os.fstat(fd).st_size
        if size > max_bytes:
            raise Rejected(STATUS_DATASET_TOO_LARGE, f"dataset of {size} bytes exceeds the limit of {max_bytes}")
        chunks, got = [], 0
        while got < size:
            chunk = os.read(fd, size - got)
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks), path  # one chunk: that chunk, not a copy
    finally:
        os.close(fd)


def _discard_partial_dataset(assoc) -> None:
    """Remove the temporary file of a C-STORE data set cut off by the end of its connection (an A-ABORT, a dropped
    connection): pynetdicom removes that file only after the C-STORE handler, which a partial data set never
    reaches, and it holds the patient's data."""
    message = getattr(getattr(assoc, "dimse", None), "message", None)
    partial = getattr(message, "_data_set_file", None)
    if partial is None:
        return
    message._data_set_file = None
    with contextlib.suppress(OSError):
        partial.close()
    with contextlib.suppress(OSError):
        os.unlink(partial.name)


def _resolve(host: str) -> set[str]:
    """The addresses of an allow-list host (an IP address stays as it is)."""
    try:
        return {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return {host}


def build_ae(config: Config) -> AE:
    """An AE with deliberate limits and the accepted presentation contexts."""
    _config.STORE_RECV_CHUNKED_DATASET = True  # datasets go to a temporary file as they arrive (module doc)
    # pynetdicom's standard handlers format every message and PDU for INFO/DEBUG lines: only when they are kept
    _config.LOG_HANDLER_LEVEL = "standard" if logging.getLogger("pynetdicom").isEnabledFor(logging.INFO) else "none"
    fastpath.install()  # pynetdicom's per-message pydicom work as bytes, and no poll before a request is served
    ae = AE(ae_title=config.ae_title)
    ae.maximum_associations = gate_mod.THREAD_CEILING  # the real limit is the gate's (negotiated only)
    ae.maximum_pdu_size = config.max_pdu
    ae.acse_timeout = config.request_timeout  # ARTIM: the wait for an A-ASSOCIATE-RQ
    ae.dimse_timeout = config.dimse_timeout
    ae.network_timeout = config.network_timeout
    datasetfile.GRACE_SECONDS = config.network_timeout  # then a data set must keep arriving (datasetfile's doc)
    if config.allow_calling_ae:  # titles only; AET@HOST bindings are checked in Receiver.handle_requested
        ae.require_calling_aet = sorted({e.rpartition("@")[0] if "@" in e else e for e in config.allow_calling_ae})
    ae.add_supported_context(Verification)
    for uid in SUPPORTED_SOP_CLASSES:
        ae.add_supported_context(uid, ACCEPTED_TRANSFER_SYNTAXES)
    # Every other storage class (retired ones included) in any syntax: a forwarded study's SR, PR, KO...
    # are acknowledged and discarded (or refused per instance with 0x0122), never refused at negotiation.
    for uid in _other_storage_classes():
        ae.add_supported_context(uid, OTHER_STORAGE_TRANSFER_SYNTAXES)
    return ae


def _other_storage_classes() -> list[str]:
    """pynetdicom's storage classes plus the composite storage classes only pydicom's dictionary
    knows (retired ones such as Ultrasound Image Storage 1.2.840.10008.5.1.4.1.1.6, trial SRs,
    DICOS), each registered with pynetdicom's Storage Service so its C-STORE reaches the handler
    instead of aborting the association."""
    from pydicom._uid_dict import UID_dictionary
    from pynetdicom import sop_class
    from pynetdicom.service_class import StorageServiceClass

    uids = [str(cx.abstract_syntax) for cx in AllStoragePresentationContexts]
    known = set(uids)
    for uid, (name, kind, _info, _retired, keyword) in UID_dictionary.items():
        if kind != "SOP Class" or not uid.startswith("1.2.840.10008.5.1.4.1.1.") or uid in known:
            continue
        if sop_class.uid_to_service_class(uid) is not StorageServiceClass:
            try:
                sop_class.register_uid(uid, keyword, StorageServiceClass)
            except (ValueError, TypeError):
                continue
        uids.append(uid)
    return [u for u in uids if u not in SUPPORTED_SOP_CLASSES]


def start_server(ae: AE, config: Config, receiver: Receiver):
    """Start the listener (TLS when configured) with the receiver's handlers; returns the server."""
    wrapper = tls.server_tls(config)
    if wrapper is not None:
        receiver.tls_timeout = wrapper.handshake_timeout
    return ae.start_server((config.host, config.port), block=False, evt_handlers=receiver.handlers(),
                           ssl_context=wrapper, contexts=pace.shared_contexts(ae.supported_contexts))

"""Exporters: C-STORE SCU (and a folder exporter for analyze and tests) behind one Protocol.

An exporter says when each object's C-STORE goes out (``on_start``) and reports its outcome as
soon as it is known (``on_outcome``), so the outbox journals each object ``sending`` and then
``delivered`` around its own C-STORE: a crash never re-sends what a destination has confirmed;
only the one object in flight at the crash (maybe stored there, not yet confirmed) is sent again.

When the association is lost after an object's C-STORE went out (the destination aborted, or stalled past the
timeout, on that object), the objects behind it in the batch were not tried: they are reported ``deferred``, and
the outbox leaves them due without counting a try, so an object a destination chokes on every time never keeps
the others from being delivered (the next batch begins with them; the failed one waits for its back-off).
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

import pydicom
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification
from pynetdicom.status import code_to_category
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from ..config import Destination
from ..nodelay import no_delay
from .requestor import responses_to_sender


@dataclass(frozen=True)
class SendOutcome:
    path: Path
    ok: bool
    detail: str  # status or error text
    permanent: bool = False  # retrying cannot help (the destination does not take this SOP class): a dead letter now
    deferred: bool = False  # not tried (an earlier object of the batch lost the connection): no try is counted
    unanswered: bool = False  # sent, and no answer came (a timeout, an abort): the destination may have stored it


OnOutcome = Callable[[SendOutcome], None]
# called just before an object's C-STORE request goes out; False: withdrawn meanwhile, skip it (no outcome)
OnStart = Callable[[Path], "bool | None"]

# C-STORE statuses that no retry changes: SOP class not supported, data set does not match the SOP class
# (0xA9xx), cannot understand (0xCxxx). Out of resources (0xA7xx) and the rest are retried.
_PERMANENT_STATUS = (0x0122, 0x0124)


def _permanent(code: int) -> bool:
    return code in _PERMANENT_STATUS or (code >> 8) == 0xA9 or (code >> 12) == 0xC


def _stored(code: int) -> bool:
    """Success, or a warning (PS3.7 Annex C: 0001, 0107, 0116, Bxxx; for storage B000, B006, B007): stored."""
    return code_to_category(code) in ("Success", "Warning")


class Exporter(Protocol):
    def send(self, destination: Destination, paths: Sequence[Path],
             on_outcome: OnOutcome | None = None, on_start: OnStart | None = None) -> list[SendOutcome]: ...


def _report(outcomes: list[SendOutcome], outcome: SendOutcome, on_outcome: OnOutcome | None) -> None:
    outcomes.append(outcome)
    if on_outcome is not None:
        on_outcome(outcome)


class CStoreExporter:
    """Sends files to a destination in one association; one outcome per file."""

    def __init__(self, calling_ae: str, timeout: float = 30.0, max_pdu: int = 262_144, tls_context=None):
        self.calling_ae = calling_ae
        self.tls_context = tls_context  # ssl.SSLContext for destinations with tls = true (svdmark.tls)
        self.timeout = timeout
        self.max_pdu = max_pdu

    def _ae(self) -> AE:
        ae = AE(ae_title=self.calling_ae)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout
        ae.connection_timeout = self.timeout
        ae.maximum_pdu_size = self.max_pdu
        return ae

    def send(self, destination: Destination, paths: Sequence[Path],
             on_outcome: OnOutcome | None = None, on_start: OnStart | None = None) -> list[SendOutcome]:
        """Send ``paths`` in one association; ``on_start`` is called before each C-STORE goes out and
        each outcome is reported (``on_outcome``) as soon as it is known.

        Each object's SOP class is proposed in its own presentation context (with Verification, so
        the association stands even if the destination accepts none of them): an object whose
        context the destination refuses fails permanently, alone, and the others are sent.
        """
        outcomes: list[SendOutcome] = []
        datasets = []
        for p in paths:
            try:
                datasets.append((p, pydicom.dcmread(p)))
            except Exception as exc:  # missing or unreadable spool file: retrying cannot bring it back
                _report(outcomes, SendOutcome(p, False, f"cannot read the result file: {type(exc).__name__}",
                                              permanent=True), on_outcome)
        if not datasets:
            return outcomes
        if destination.tls and self.tls_context is None:
            for p, _ in datasets:
                _report(outcomes, SendOutcome(p, False, "destination needs TLS but no [tls] context is configured"),
                        on_outcome)
            return outcomes
        ae = self._ae()
        ae.add_requested_context(Verification)
        for klass, ts in sorted({(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for _, ds in datasets}):
            syntaxes = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
            ae.add_requested_context(klass, [ts] + [s for s in syntaxes if s != ts])
        tls_args = (self.tls_context, destination.host) if destination.tls else None
        answers: list = []  # the A-ASSOCIATE response: a rejection's result, source and reason
        assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title, tls_args=tls_args,
                             evt_handlers=[(evt.EVT_ACSE_RECV, lambda event: answers.append(event.primitive))])
        if not assoc.is_established:
            why = "association rejected" if assoc.is_rejected else "no association (destination unreachable?)"
            rejection = next((p for p in answers if getattr(p, "result", None) in (1, 2)), None)
            if assoc.is_rejected and rejection is not None:
                why += f" ({rejection.result_str}, {rejection.source_str}: {rejection.reason_str})"
            if destination.tls and not assoc.is_rejected:
                why = "no association (destination unreachable, or the TLS handshake failed)"
            for p, _ in datasets:
                _report(outcomes, SendOutcome(p, False, why), on_outcome)
            return outcomes
        no_delay(assoc)
        responses_to_sender(assoc)
        try:
            accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
            sent = False  # a C-STORE went out on this association
            for k, (path, ds) in enumerate(datasets):
                if not assoc.is_established:
                    for p, _ in datasets[k:]:  # behind the object the association was lost on: not tried
                        _report(outcomes, SendOutcome(p, False, "association lost", deferred=sent), on_outcome)
                    break
                klass = str(ds.SOPClassUID)
                if klass not in accepted:
                    _report(outcomes, SendOutcome(
                        path, False, f"destination does not accept SOP class {klass} ({_class_name(klass)}): "
                        "no presentation context for it", permanent=True), on_outcome)
                    continue
                if on_start is not None and on_start(path) is False:
                    continue
                sent = True
                try:
                    status = assoc.send_c_store(_as_accepted(assoc, ds))
                except Exception as exc:  # pynetdicom refusing this object (no matching transfer syntax...)
                    _report(outcomes, SendOutcome(path, False, f"not sent: {type(exc).__name__}: {exc}"), on_outcome)
                    continue
                code = getattr(status, "Status", None)
                if code is None:
                    outcome = SendOutcome(path, False, "no response (timeout or aborted)", unanswered=True)
                elif _stored(code):
                    outcome = SendOutcome(path, True, f"0x{code:04X}")
                else:
                    outcome = SendOutcome(path, False, f"status 0x{code:04X}", permanent=_permanent(code))
                _report(outcomes, outcome, on_outcome)
        finally:
            if assoc.is_established:
                assoc.release()
        return outcomes


def _as_accepted(assoc, ds):
    """``ds`` in a transfer syntax the destination accepted for its SOP class: a compressed object
    (the RLE Lossless summary image) is decompressed for a destination that took the class only
    uncompressed, instead of failing."""
    ts = ds.file_meta.TransferSyntaxUID
    klass = str(ds.SOPClassUID)
    taken = {str(cx.transfer_syntax[0]) for cx in assoc.accepted_contexts if str(cx.abstract_syntax) == klass}
    if ts.is_compressed and str(ts) not in taken:
        ds.decompress(generate_instance_uid=False)  # lossless: the same object, Explicit VR Little Endian
    return ds


def _class_name(uid: str) -> str:
    from pydicom.uid import UID

    return UID(uid).name


class FolderExporter:
    """Copies results into a folder per destination (tests, offline runs)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def send(self, destination: Destination, paths: Sequence[Path],
             on_outcome: OnOutcome | None = None, on_start: OnStart | None = None) -> list[SendOutcome]:
        target = self.root / destination.ae_title
        target.mkdir(parents=True, exist_ok=True)
        out: list[SendOutcome] = []
        for p in paths:
            if on_start is not None and on_start(p) is False:
                continue
            shutil.copyfile(p, target / p.name)
            _report(out, SendOutcome(p, True, "copied"), on_outcome)
        return out


def echo(host: str, port: int, called_ae: str, calling_ae: str = "SVDMARK", timeout: float = 10.0) -> tuple[bool, str]:
    """C-ECHO a peer: (reachable, detail)."""
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout
    ae.add_requested_context(Verification)
    assoc = ae.associate(host, port, ae_title=called_ae)
    if not assoc.is_established:
        return False, "association rejected" if assoc.is_rejected else "unreachable"
    responses_to_sender(assoc)
    try:
        status = assoc.send_c_echo()
        code = getattr(status, "Status", None)
        return code == 0x0000, "ok" if code == 0x0000 else f"status {code}"
    finally:
        if assoc.is_established:
            assoc.release()

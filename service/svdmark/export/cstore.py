"""Exporters: C-STORE SCU (and a folder exporter for analyze and tests) behind one Protocol."""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import pydicom
from pynetdicom import AE
from pynetdicom.sop_class import Verification
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from ..config import Destination


@dataclass(frozen=True)
class SendOutcome:
    path: Path
    ok: bool
    detail: str  # status or error text


class Exporter(Protocol):
    def send(self, destination: Destination, paths: Sequence[Path]) -> list[SendOutcome]: ...


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

    def send(self, destination: Destination, paths: Sequence[Path]) -> list[SendOutcome]:
        datasets = [(p, pydicom.dcmread(p)) for p in paths]
        ae = self._ae()
        for klass, ts in sorted({(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for _, ds in datasets}):
            syntaxes = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
            ae.add_requested_context(klass, [ts] + [s for s in syntaxes if s != ts])
        if destination.tls and self.tls_context is None:
            return [SendOutcome(p, False, "destination needs TLS but no [tls] context is configured") for p in paths]
        tls_args = (self.tls_context, destination.host) if destination.tls else None
        assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title, tls_args=tls_args)
        if not assoc.is_established:
            why = "association rejected" if assoc.is_rejected else "no association (destination unreachable?)"
            if destination.tls and not assoc.is_rejected:
                why = "no association (destination unreachable, or the TLS handshake failed)"
            return [SendOutcome(p, False, why) for p in paths]
        outcomes = []
        try:
            for path, ds in datasets:
                status = assoc.send_c_store(ds)
                code = getattr(status, "Status", None)
                if code is None:
                    outcomes.append(SendOutcome(path, False, "no response (timeout or aborted)"))
                elif code == 0x0000 or code in (0xB000, 0xB007, 0xB006):
                    outcomes.append(SendOutcome(path, True, f"0x{code:04X}"))
                else:
                    outcomes.append(SendOutcome(path, False, f"status 0x{code:04X}"))
                if not assoc.is_established:
                    outcomes += [SendOutcome(p, False, "association lost") for p, _ in datasets[len(outcomes):]]
                    break
        finally:
            if assoc.is_established:
                assoc.release()
        return outcomes


class FolderExporter:
    """Copies results into a folder per destination (tests, offline runs)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def send(self, destination: Destination, paths: Sequence[Path]) -> list[SendOutcome]:
        target = self.root / destination.ae_title
        target.mkdir(parents=True, exist_ok=True)
        out = []
        for p in paths:
            shutil.copyfile(p, target / p.name)
            out.append(SendOutcome(p, True, "copied"))
        return out


def echo(host: str, port: int, called_ae: str, calling_ae: str = "SVDMARK", timeout: float = 10.0) -> tuple[bool, str]:
    """C-ECHO a peer: (reachable, detail)."""
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout
    ae.add_requested_context(Verification)
    assoc = ae.associate(host, port, ae_title=called_ae)
    if not assoc.is_established:
        return False, "association rejected" if assoc.is_rejected else "unreachable"
    try:
        status = assoc.send_c_echo()
        code = getattr(status, "Status", None)
        return code == 0x0000, "ok" if code == 0x0000 else f"status {code}"
    finally:
        if assoc.is_established:
            assoc.release()

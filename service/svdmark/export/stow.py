"""DICOMweb STOW-RS exporter: the outbox's other transport, beside C-STORE (``kind = "stow"``).

Each object is POSTed alone (``multipart/related; type="application/dicom"``, the spool file's
Part 10 bytes unchanged) on one keep-alive ``requests`` session, so the outbox journals each object
``sending`` and ``delivered`` around its own request, exactly as around a C-STORE.

Outcomes: a stored object (HTTP 200/202 and not in the response's Failed SOP Sequence) is
delivered; an HTTP 4xx (401 wrong credentials, 409, 415, ...) or a Failed SOP Sequence entry for
the object is permanent (a dead letter with its reason), except 408/429 and an out-of-resources
failure reason (0xA7xx), which are retried like 5xx, timeouts and refused connections. After a
connection failure the batch's other objects are not tried: they wait for the next round; after a read timeout
(the server took the request and did not answer in time) they are ``deferred`` (no try counted, due at once), so
an object whose request times out every time does not keep them from being delivered.

Why our own ~10 lines of multipart and not dicomweb-client: its ``store_instances`` takes pydicom
Datasets and re-encodes them (we hold the exact Part 10 bytes to send), raises on an error status
instead of giving us the status and the Failed SOP Sequence to judge per object, and brings its own
retry layer beside the outbox's. ``requests`` does HTTP, auth and TLS verification; the body is one
boundary-delimited part (PS3.18 STOW-RS request).
"""
from __future__ import annotations

import logging
import uuid
from io import BytesIO
from pathlib import Path
from typing import Sequence

import pydicom
import requests

from ..config import StowDestination, secret_from_env
from ..logs import event
from .cstore import OnOutcome, OnStart, SendOutcome, _report

log = logging.getLogger("svdmark.export.stow")

_RETRY_4XX = (408, 429)  # request timeout, too many requests: the server asks us to come back
_FAILED_SOP_SEQUENCE, _REFERENCED_SOP_SEQUENCE = "00081198", "00081199"
_REFERENCED_SOP_INSTANCE_UID, _FAILURE_REASON, _WARNING_REASON = "00081155", "00081197", "00081196"


class SecretUnavailable(Exception):
    """The configured password or token cannot be read (file gone, variable unset)."""


def _secret(file: Path | None, env: str | None, what: str) -> str:
    if file is not None:
        try:
            text = Path(file).read_text().strip()
        except OSError as exc:
            raise SecretUnavailable(f"cannot read the {what} file {file}: {type(exc).__name__}") from None
    else:
        text = secret_from_env(env)
        if not text:
            raise SecretUnavailable(f"the {what} environment variable {env} is not set")
    if not text:
        raise SecretUnavailable(f"the {what} file {file} is empty")
    return text


def _session(dest: StowDestination) -> requests.Session:
    s = requests.Session()
    if dest.username is not None:
        s.auth = (dest.username, _secret(dest.password_file, dest.password_env, "password"))
    elif dest.token_file is not None or dest.token_env is not None:
        s.headers["Authorization"] = f"Bearer {_secret(dest.token_file, dest.token_env, 'token')}"
    s.headers["Accept"] = "application/dicom+json"
    return s


def _verify(dest: StowDestination) -> bool | str:
    """requests' ``verify`` for each request (a Session's own ``verify`` loses to $REQUESTS_CA_BUNDLE)."""
    return str(dest.ca_file) if (dest.ca_file is not None and dest.tls_verify) else dest.tls_verify


def multipart(data: bytes) -> tuple[bytes, str]:
    """One DICOM object as a ``multipart/related`` body; returns (body, Content-Type)."""
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data
            + f"\r\n--{boundary}--\r\n".encode())
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def _items(doc, tag: str) -> list[dict]:
    return list(((doc or {}).get(tag) or {}).get("Value") or []) if isinstance(doc, dict) else []


def _first(item: dict, tag: str):
    values = (item.get(tag) or {}).get("Value") or []
    return values[0] if values else None


def judge(path: Path, sop_uid: str, status: int, reason: str, doc) -> SendOutcome:
    """The outcome of one object's STOW-RS request from the HTTP status and the response's JSON."""
    for item in _items(doc, _FAILED_SOP_SEQUENCE):
        if _first(item, _REFERENCED_SOP_INSTANCE_UID) == sop_uid:
            code = _first(item, _FAILURE_REASON)
            code_text = f"0x{int(code):04X}" if isinstance(code, int) else "not given"
            transient = isinstance(code, int) and (code >> 8) == 0xA7  # out of resources
            return SendOutcome(path, False, f"HTTP {status}: STOW-RS failure reason {code_text}",
                               permanent=not transient)
    if status in (200, 202):
        warning = next((_first(i, _WARNING_REASON) for i in _items(doc, _REFERENCED_SOP_SEQUENCE)
                        if _first(i, _REFERENCED_SOP_INSTANCE_UID) == sop_uid), None)
        return SendOutcome(path, True, f"HTTP {status}" + (f", warning 0x{warning:04X}" if isinstance(warning, int)
                                                           else ""))
    detail = f"HTTP {status} {reason}".strip()
    if status in (401, 403):
        detail += " (check the destination's username and password, or token)"
    if 400 <= status < 500 and status not in _RETRY_4XX:
        return SendOutcome(path, False, detail, permanent=True)
    if 300 <= status < 400:
        return SendOutcome(path, False, detail + " (redirect: configure the final STOW-RS URL)", permanent=True)
    return SendOutcome(path, False, detail)


class StowExporter:
    """Sends files to a STOW-RS URL, one POST per file on one session; one outcome per file."""

    def send(self, destination: StowDestination, paths: Sequence[Path],
             on_outcome: OnOutcome | None = None, on_start: OnStart | None = None) -> list[SendOutcome]:
        outcomes: list[SendOutcome] = []
        try:
            session = _session(destination)
        except SecretUnavailable as exc:  # an admin can put the file back: retried, not dead
            for p in paths:
                _report(outcomes, SendOutcome(p, False, str(exc)), on_outcome)
            return outcomes
        if not destination.tls_verify:
            event(log, "stow_tls_unverified", logging.WARNING, destination=destination.name)
        with session:
            for k, path in enumerate(paths):
                try:
                    data = Path(path).read_bytes()
                    sop_uid = str(pydicom.dcmread(BytesIO(data), stop_before_pixels=True).SOPInstanceUID)
                except Exception as exc:  # missing or unreadable spool file: retrying cannot bring it back
                    _report(outcomes, SendOutcome(path, False, f"cannot read the result file: {type(exc).__name__}",
                                                  permanent=True), on_outcome)
                    continue
                body, content_type = multipart(data)
                if on_start is not None and on_start(path) is False:
                    continue
                try:
                    r = session.post(destination.url, data=body, headers={"Content-Type": content_type},
                                     timeout=destination.timeout, allow_redirects=False,
                                     verify=_verify(destination))
                except requests.RequestException as exc:  # refused, reset, timed out, TLS failure
                    why = f"no response: {type(exc).__name__}"
                    if "CERTIFICATE_VERIFY_FAILED" in str(exc):
                        why += ": the server's certificate is not trusted (ca_file names its CA)"
                    # a read timeout: it took the request and did not answer in time, and may have stored it
                    _report(outcomes, SendOutcome(path, False, why, unanswered=isinstance(exc, requests.ReadTimeout)),
                            on_outcome)
                    # not tried: the destination is not answering. After a read timeout (it took the connection and
                    # the request but did not answer in time: maybe this object alone) they are deferred, not failed
                    deferred = isinstance(exc, requests.ReadTimeout)
                    for rest in paths[k + 1:]:
                        _report(outcomes, SendOutcome(rest, False, why + " (not tried)", deferred=deferred), on_outcome)
                    break
                try:
                    doc = r.json() if r.content else None
                except ValueError:
                    doc = None
                _report(outcomes, judge(path, sop_uid, r.status_code, r.reason or "", doc), on_outcome)
        return outcomes

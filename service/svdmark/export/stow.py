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
import urllib3

from ..config import StowDestination, secret_from_env
from ..logs import event
from .cstore import OnOutcome, OnStart, SendOutcome, _permanent, _report

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


def _uid_of(item: dict) -> str:
    """An item's Referenced SOP Instance UID, without the padding a server may leave on it."""
    return str(_first(item, _REFERENCED_SOP_INSTANCE_UID) or "").rstrip(" \x00")


def judge(path: Path, sop_uid: str, status: int, reason: str, doc, readable: bool = True) -> SendOutcome:
    """The outcome of one object's STOW-RS request from the HTTP status and the response's JSON (``readable``:
    the answer was empty or JSON, not an HTML page or XML).

    A failure reason is retried under a 5xx, or when out of resources (0xA7xx); refused under another 4xx (a 409:
    another study's URL); under a 200 or 202 judged as a C-STORE status is (:func:`.cstore._permanent`).
    Stored only where the answer says so: a 202 ("some failed") must list the instance in its Referenced SOP
    Sequence, and a 200 must not be a page that is no STOW-RS answer (a proxy's login page) nor leave it out of a
    Referenced SOP Sequence it gives."""
    for item in _items(doc, _FAILED_SOP_SEQUENCE):
        if _uid_of(item) == sop_uid:
            code = _first(item, _FAILURE_REASON)
            code_text = f"0x{int(code):04X}" if isinstance(code, int) else "not given"
            retried = status >= 500 or status in _RETRY_4XX or (isinstance(code, int) and (code >> 8) == 0xA7)
            # under another 4xx refused (e.g. Orthanc's 409 for another study), under a 2xx as its C-STORE status
            permanent = not retried and (status >= 400 or not isinstance(code, int) or _permanent(code))
            return SendOutcome(path, False, f"HTTP {status}: STOW-RS failure reason {code_text}", permanent=permanent)
    if status in (200, 202):
        referenced = [i for i in _items(doc, _REFERENCED_SOP_SEQUENCE) if _uid_of(i) == sop_uid]
        listed = isinstance(doc, dict) and _REFERENCED_SOP_SEQUENCE in doc
        if not readable or (status == 202 or listed) and not referenced:
            return SendOutcome(path, False, f"HTTP {status} without this instance among those stored"
                               + ("" if readable else " (the answer is no STOW-RS response: a proxy or login page?)"))
        warning = _first(referenced[0], _WARNING_REASON) if referenced else None
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


def _may_have_arrived(exc: requests.RequestException) -> bool:
    """Whether the request may have reached the server: anything but a connection never made (refused, a connect
    timeout, a TLS handshake that failed, a bad URL)."""
    if isinstance(exc, (requests.ConnectTimeout, requests.exceptions.SSLError, requests.exceptions.InvalidURL,
                        requests.exceptions.MissingSchema, requests.exceptions.InvalidSchema,
                        requests.exceptions.InvalidHeader, requests.exceptions.ProxyError)):
        return False  # (a proxy that refused or failed the connection: nothing reached the PACS)
    if isinstance(exc, requests.ConnectionError):
        cause = exc.args[0] if exc.args else None
        cause = getattr(cause, "reason", cause)  # urllib3's MaxRetryError names what went wrong
        return not isinstance(cause, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError,
                                      urllib3.exceptions.ProxyError))
    return True


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
        if destination.url.lower().startswith("http://") and (session.auth or "Authorization" in session.headers):
            event(log, "stow_credentials_over_http", logging.WARNING, destination=destination.name,
                  detail="the password or token goes over plain http: use https")
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
                    # connected, and then no answer (a read timeout, a reset): it may have stored it
                    sent = _may_have_arrived(exc)
                    _report(outcomes, SendOutcome(path, False, why, unanswered=sent), on_outcome)
                    # not tried: the destination is not answering. Where it took the connection and then failed on
                    # this object (maybe this object alone) they are deferred, not failed
                    for rest in paths[k + 1:]:
                        _report(outcomes, SendOutcome(rest, False, why + " (not tried)", deferred=sent), on_outcome)
                    break
                try:
                    doc = r.json() if r.content else None
                except ValueError:
                    doc = None
                if isinstance(doc, list) and len(doc) == 1:  # some servers wrap the answer's data set in an array
                    doc = doc[0]
                readable = not r.content or isinstance(doc, dict)
                _report(outcomes, judge(path, sop_uid, r.status_code, r.reason or "", doc, readable), on_outcome)
        return outcomes

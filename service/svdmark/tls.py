"""DICOM TLS (PS3.15 Annex B, BCP 195 profile): SSL contexts built from certificate paths.

The listener gets a server context (optionally mutual: the caller must present a certificate
signed by the configured CA); the exporter gets a client context per destination with
``tls = true`` (it verifies the destination against the CA and, when configured, presents our
own certificate for mutual TLS).

pynetdicom wraps each accepted socket in the *accept* thread. With the default
``do_handshake_on_connect=True`` one silent or slow client would hold every other caller off
until it gave up, and a failed handshake would vanish without a trace. :class:`ServerTLS`
therefore defers the handshake; :func:`handshake` runs it in the association's own thread
(svdmark calls it from the EVT_CONN_OPEN handler) with a timeout, and says why it failed.
"""
from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError


def _load_chain(ctx: ssl.SSLContext, cert: Path | None, key: Path | None) -> None:
    if cert is None:
        return
    try:
        ctx.load_cert_chain(str(cert), str(key) if key else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load TLS certificate {cert} / key {key}: {exc}") from None


def _load_ca(ctx: ssl.SSLContext, ca: Path | None) -> None:
    if ca is None:
        return
    try:
        ctx.load_verify_locations(cafile=str(ca))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load TLS CA bundle {ca}: {exc}") from None


def _harden(ctx: ssl.SSLContext) -> None:
    # BCP 195 (DICOM's non-downgrading profile): TLS 1.2 or newer, no compression, forward-secret ciphers.
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION
    try:
        ctx.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!eNULL:!MD5:!DSS")
    except ssl.SSLError:  # an OpenSSL build without some of them: keep its secure defaults
        pass


def server_context(cert: Path, key: Path, ca: Path | None = None, require_client_cert: bool = False) -> ssl.SSLContext:
    """The listener's context. With ``require_client_cert`` only callers holding a certificate
    signed by ``ca`` complete the handshake; without it a certificate is verified if offered."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _harden(ctx)
    _load_chain(ctx, cert, key)
    if ca is not None:
        _load_ca(ctx, ca)
        ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    elif require_client_cert:
        raise ConfigError("require_client_cert needs a CA bundle to verify the callers against")
    return ctx


def client_context(ca: Path | None, cert: Path | None = None, key: Path | None = None,
                   verify_hostname: bool = True) -> ssl.SSLContext:
    """The exporter's context: verify the destination against ``ca``; present ``cert`` if given."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _harden(ctx)
    if ca is None:
        raise ConfigError("TLS to a destination needs [tls] ca to verify its certificate")
    _load_ca(ctx, ca)
    ctx.check_hostname = verify_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    _load_chain(ctx, cert, key)
    return ctx


@dataclass(frozen=True)
class ServerTLS:
    """Stands in for an ``ssl.SSLContext`` on pynetdicom's server: wraps without a handshake."""

    context: ssl.SSLContext
    handshake_timeout: float = 30.0

    def wrap_socket(self, sock: socket.socket, server_side: bool = True, **kw) -> ssl.SSLSocket:
        return self.context.wrap_socket(sock, server_side=server_side, do_handshake_on_connect=False)

    def __bool__(self) -> bool:  # pynetdicom tests ``if self.ssl_context:``
        return True


def server_tls(config) -> ServerTLS | None:
    """The listener's TLS wrapper from a :class:`svdmark.config.Config`, or None for plain TCP."""
    if config.tls_cert is None:
        return None
    ctx = server_context(config.tls_cert, config.tls_key, config.tls_ca, config.tls_require_client_cert)
    return ServerTLS(ctx, handshake_timeout=config.request_timeout)


def exporter_context(config) -> ssl.SSLContext | None:
    """The exporter's client context, or None when no destination uses TLS."""
    if not any(d.tls for d in config.destinations):
        return None
    return client_context(config.tls_ca, config.tls_cert, config.tls_key, config.tls_verify_hostname)


def handshake(sock: socket.socket, timeout: float) -> dict[str, str]:
    """Run a deferred server-side handshake. Returns facts to log on success; raises
    ``TLSRefused`` with a reason a PACS admin can act on."""
    if not isinstance(sock, ssl.SSLSocket):
        return {}
    previous = sock.gettimeout()
    sock.settimeout(timeout)
    try:
        sock.do_handshake()
    except ssl.SSLCertVerificationError as exc:
        raise TLSRefused(f"client certificate rejected ({exc.verify_message or exc.reason}); it must be valid "
                         f"and signed by the CA in [tls] ca") from None
    except ssl.SSLError as exc:
        reason = exc.reason or str(exc)
        if reason in ("PEER_DID_NOT_RETURN_A_CERTIFICATE", "CERTIFICATE_REQUIRED"):
            reason = "client presented no certificate, and one is required"
        elif reason in ("TLSV1_ALERT_UNKNOWN_CA", "SSLV3_ALERT_BAD_CERTIFICATE", "TLSV1_ALERT_DECRYPT_ERROR"):
            reason = f"client refused our certificate ({reason})"
        elif reason in ("WRONG_VERSION_NUMBER", "HTTP_REQUEST", "UNKNOWN_PROTOCOL"):
            reason = f"not a TLS client hello; is the caller configured for TLS? ({reason})"
        raise TLSRefused(f"TLS handshake failed: {reason}") from None
    except (socket.timeout, TimeoutError):
        raise TLSRefused(f"TLS handshake did not complete within {timeout:g} s") from None
    except OSError as exc:
        raise TLSRefused(f"TLS handshake failed: connection error: {exc}") from None
    finally:
        try:
            sock.settimeout(previous)
        except OSError:
            pass
    peer = sock.getpeercert() or {}
    subject = ",".join("=".join(kv) for rdn in peer.get("subject", ()) for kv in rdn)
    return {"tls_version": sock.version() or "", "cipher": (sock.cipher() or ("",))[0],
            "peer_subject": subject or "(no client certificate)"}


class TLSRefused(Exception):
    """A caller's TLS handshake failed; the message says why."""

"""The TLS listener under failed handshakes and silent connections: none of them holds an association
slot, each is closed after ``request_timeout`` with one line, and a TLS C-ECHO gets through at once."""
from __future__ import annotations

import socket
import time

from tests.peers import wait_until

from .test_tls import TlsSvdmark, _client_ctx, _echo_tls, pki  # noqa: F401 - pki is a fixture

REQUEST_TIMEOUT = 3


def test_failed_handshakes_and_silent_connections_hold_no_slot(tmp_path, pki):  # noqa: F811
    cfg = tmp_path / "svdmark.toml"
    cfg.write_text(f"[listener]\nrequest_timeout = {REQUEST_TIMEOUT}\nmax_associations = 2\n")
    svc = TlsSvdmark(tmp_path / "data", pki, extra=("--config", str(cfg))).start()
    try:
        for _ in range(10):  # failed handshakes: plain DICOM on a TLS port
            assert not _echo_tls(svc.port, None)
        silent = [socket.create_connection(("127.0.0.1", svc.port)) for _ in range(8)]
        try:
            t0 = time.monotonic()
            assert _echo_tls(svc.port, _client_ctx(pki, "client"))
            assert time.monotonic() - t0 < 10
            for s in silent:  # closed by the listener once the handshake timeout has passed
                s.settimeout(REQUEST_TIMEOUT + 10)
                assert s.recv(1) == b""
        finally:
            for s in silent:
                s.close()
        lines = wait_until(lambda: [ln for ln in svc.log_text().splitlines() if "did not complete within" in ln]
                           if svc.log_text().count("did not complete within") >= 8 else None, 15, "8 timeouts")
        assert len(lines) == 8 and all(f"within {REQUEST_TIMEOUT} s" in ln for ln in lines)
        assert "association_request_timeout" not in svc.log_text()  # one line per connection, not two
    finally:
        svc.stop()

"""A STOW-RS destination (``kind = "stow"``) against a real Orthanc with its DICOMweb plugin and basic auth.

The destination comes from a TOML config file (password in a file), the deliveries from a real
journal, the sending from the real outbox: objects arrive (Orthanc's REST ``/instances``), a wrong
password is a dead letter with its reason after one try, Orthanc down is retried and delivered once
it is back, and an object Orthanc refuses (Failed SOP Sequence) is a dead letter with its reason.
The objects are pydicom's own test files (CT, MR, an RLE Lossless secondary capture).
"""
from __future__ import annotations

import logging
import shutil
import socket
import ssl
import threading
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from svdmark.config import StowDestination, load
from svdmark.domain import JobState
from svdmark.export import CStoreExporter, Outbox
from svdmark.journal import Journal, ResultObject
from tests.peers import DICOMWEB, DICOMWEB_SETTINGS, ORTHANC, Orthanc, wait_until
from tests import journaldb
from tests.unit.test_journal import record

USER, PASSWORD = "svdmark", "c0rrect-h0rse"
FILES = {"sr": "CT_small.dcm", "seg": "MR_small.dcm", "summary": "SC_rgb_rle.dcm"}

pytestmark = [
    pytest.mark.interop,
    pytest.mark.slow,
    pytest.mark.skipif(not (ORTHANC.exists() and DICOMWEB.exists()),
                       reason="needs Orthanc and its DICOMweb plugin (apt-get install orthanc orthanc-dicomweb)"),
]


# Orthanc with the DICOMweb plugin and basic auth (``Orthanc(root, **STOW)`` or ``Orthanc.started(root, **STOW)``)
STOW = {"settings": {"Name": "svdmark-stow-test", **DICOMWEB_SETTINGS}, "auth": (USER, PASSWORD)}


@pytest.fixture
def orthanc(tmp_path):
    o = Orthanc.started(tmp_path / "orthanc", **STOW)
    try:
        yield o
    finally:
        o.stop()


def _config(tmp_path: Path, url: str, password: str, extra: str = ""):
    tmp_path.mkdir(parents=True, exist_ok=True)
    secret = tmp_path / "stow-password"
    secret.write_text(password + "\n")
    toml = tmp_path / "svdmark.toml"
    toml.write_text(f'[storage]\ndata_dir = "{tmp_path / "data"}"\n\n[[destinations]]\nkind = "stow"\n'
                    f'url = "{url}"\nusername = "{USER}"\npassword_file = "{secret}"\n'
                    f'outputs = ["sr", "seg", "summary"]\ntimeout = 20\n{extra}')
    return load(toml, env={})


def _outbox(tmp_path: Path, url: str, password: str = PASSWORD,
            extra: str = "") -> tuple[Outbox, Journal, dict[str, str]]:
    """A journal holding three finished results for the configured STOW destination, and its outbox."""
    cfg = _config(tmp_path, url, password, extra)
    (dest,) = cfg.destinations
    assert isinstance(dest, StowDestination) and PASSWORD not in repr(dest)
    journal = Journal(journaldb.url_for(cfg.data_dir))
    record(journal, "1.1")
    journal.queue_job(journal.receiving_series()[0], "test")
    outs = [ResultObject(str(dcmread(get_testdata_file(f), stop_before_pixels=True).SOPInstanceUID), kind, "x",
                         Path(get_testdata_file(f))) for kind, f in FILES.items()]
    journal.finish_job(journal.claim_job(), JobState.DONE, outputs=outs,
                       deliveries=[(o.sop_uid, dest.name) for o in outs])
    box = Outbox(journal, CStoreExporter("SVDMARK"), cfg.destinations, cfg.export_max_attempts, 0.05, 0.1)
    return box, journal, {o.sop_uid: o.kind for o in outs}


def _rows(journal: Journal) -> dict[str, dict]:
    return {r["sop_uid"]: dict(r) for r in journal.deliveries()}


def test_stow_delivers_each_object_to_orthanc_with_basic_auth(tmp_path, orthanc, caplog):
    caplog.set_level(logging.DEBUG)
    box, journal, uids = _outbox(tmp_path, orthanc.base + "/dicom-web/studies")
    assert box.flush() == 3
    rows = _rows(journal)
    assert {r["state"] for r in rows.values()} == {"delivered"}
    assert all(r["attempts"] == 1 for r in rows.values())
    assert orthanc.sop_uids() == set(uids)
    assert box.flush() == 0  # nothing is sent twice
    assert PASSWORD not in caplog.text


def test_wrong_password_is_a_dead_letter_with_its_reason(tmp_path, orthanc, caplog):
    caplog.set_level(logging.DEBUG)
    box, journal, uids = _outbox(tmp_path, orthanc.base + "/dicom-web/studies", password="wrong-password")
    assert box.flush() == 0
    rows = _rows(journal)
    assert {r["state"] for r in rows.values()} == {"dead"}  # after one try, not after max_attempts
    assert all(r["attempts"] == 1 and r["last_error"].startswith("HTTP 401") for r in rows.values()), rows
    assert "password" in rows[next(iter(uids))]["last_error"]
    assert orthanc.sop_uids() == set()
    assert "wrong-password" not in caplog.text


def test_orthanc_down_is_retried_and_delivered_when_it_is_back(tmp_path):
    orthanc = Orthanc(tmp_path / "orthanc", **STOW)  # configured, not started: nothing listens on its port
    box, journal, uids = _outbox(tmp_path, orthanc.base + "/dicom-web/studies")
    try:
        assert box.flush(now=float("inf")) == 0
        rows = _rows(journal)
        assert {r["state"] for r in rows.values()} == {"pending"}  # transient: retried, not dead
        assert all(r["last_error"].startswith("no response: ConnectionError") for r in rows.values()), rows
        orthanc.start()

        def delivered() -> bool:
            box.flush()  # each delivery is due again after its (short) back-off
            return {r["state"] for r in journal.deliveries()} == {"delivered"}

        wait_until(delivered, 30, "delivery after the restart", interval=0.1)
        assert orthanc.sop_uids() == set(uids)
        assert all(r["attempts"] == 2 for r in _rows(journal).values())
    finally:
        orthanc.stop()


def test_an_object_orthanc_refuses_is_a_dead_letter_with_the_failure_reason(tmp_path, orthanc):
    """STOW-RS to one study's URL: objects of other studies are in the response's Failed SOP Sequence."""
    study = str(dcmread(get_testdata_file(FILES["sr"]), stop_before_pixels=True).StudyInstanceUID)
    box, journal, uids = _outbox(tmp_path, orthanc.base + f"/dicom-web/studies/{study}")
    box.flush()
    rows = {uids[u]: r for u, r in _rows(journal).items()}
    assert rows["sr"]["state"] == "delivered"
    others = [rows["seg"], rows["summary"]]
    assert all(r["state"] == "dead" and "STOW-RS failure reason 0x" in r["last_error"] for r in others), rows
    assert orthanc.sop_uids() == {u for u, k in uids.items() if k == "sr"}


class TlsTerminator:
    """HTTPS in front of Orthanc on a free port, as a site's reverse proxy does: Debian's Orthanc 1.10.1
    crashes on its own HTTPS (``SslEnabled``) here, so the TLS end is Python's ``ssl``, relaying bytes."""

    def __init__(self, cert: Path, key: Path, backend_port: int):
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(cert, key)
        self.backend_port = backend_port
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            tls = self.ctx.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError):  # the client refused our certificate
            conn.close()
            return
        backend = socket.create_connection(("127.0.0.1", self.backend_port))

        def pump(src, dst) -> None:
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        threading.Thread(target=pump, args=(backend, tls), daemon=True).start()
        pump(tls, backend)

    def close(self) -> None:
        self.sock.close()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl CLI makes the test certificates")
def test_https_is_verified_against_the_configured_ca(tmp_path):
    """Orthanc behind HTTPS with a certificate from a test CA: not trusted by default (retried, not sent),
    delivered once ``ca_file`` names that CA."""
    from tests.integration.test_tls import _ca, _leaf

    pki = tmp_path / "pki"
    pki.mkdir()
    _ca(pki, "ca")
    _leaf(pki, "server", "ca", server=True)
    orthanc = Orthanc.started(tmp_path / "orthanc", **STOW)
    proxy = TlsTerminator(pki / "server.crt", pki / "server.key", orthanc.http_port)
    try:
        url = f"https://127.0.0.1:{proxy.port}/dicom-web/studies"
        box, journal, _ = _outbox(tmp_path / "untrusted", url)
        assert box.flush(now=float("inf")) == 0
        rows = _rows(journal)
        untrusted = "no response: SSLError: the server's certificate is not trusted"
        assert all(r["state"] == "pending" and r["last_error"].startswith(untrusted) for r in rows.values()), rows
        box, journal, uids = _outbox(tmp_path / "trusted", url, extra=f'ca_file = "{pki / "ca.crt"}"\n')
        assert box.flush() == 3, [r["last_error"] for r in _rows(journal).values()]
        assert orthanc.sop_uids() == set(uids)
    finally:
        proxy.close()
        orthanc.stop()

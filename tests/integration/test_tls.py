"""DICOM TLS against `svdmark serve` (listener) and the C-STORE exporter (SCU side).

Certificates are generated here with the openssl CLI: a site CA, a server and a client
certificate signed by it, and a rogue CA with a client certificate the service must refuse.
Peers: pynetdicom with ``ssl`` and dcmtk's TLS-enabled echoscu/storescu/storescp.
"""
from __future__ import annotations

import shutil
import ssl
import subprocess
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from tests.peers import DCMTK, Svdmark, associate, free_port, wait_until

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl CLI is needed to make test certificates")


# --------------------------------------------------------------------------- certificates
def _openssl(*args: str, cwd: Path) -> None:
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def _ca(d: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout", f"{name}.key",
             "-out", f"{name}.crt", "-subj", f"/O=svdmark tests/CN={name}",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)


def _leaf(d: Path, name: str, ca: str, server: bool) -> None:
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
             "-subj", f"/O=svdmark tests/CN={name}", cwd=d)
    ext = d / f"{name}.ext"
    ext.write_text("basicConstraints=CA:FALSE\n"
                   + ("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n" if server
                      else "extendedKeyUsage=clientAuth\n"))
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
             "-days", "2", "-out", f"{name}.crt", "-extfile", ext.name, cwd=d)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    _ca(d, "ca")
    _ca(d, "rogue-ca")
    _leaf(d, "server", "ca", server=True)
    _leaf(d, "client", "ca", server=False)
    _leaf(d, "rogue", "rogue-ca", server=False)
    return d


def _client_ctx(pki: Path, cert: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki / "ca.crt"))
    if cert:
        ctx.load_cert_chain(str(pki / f"{cert}.crt"), str(pki / f"{cert}.key"))
    return ctx


def _echo_tls(port: int, ctx: ssl.SSLContext | None, calling: str = "TLSSCU") -> bool:
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = 10
    ae.add_requested_context(Verification)
    assoc = associate(ae, port, tls_args=(ctx, "127.0.0.1") if ctx else None)
    if not assoc.is_established:
        return False
    try:
        status = assoc.send_c_echo()
        return getattr(status, "Status", None) == 0x0000
    finally:
        assoc.release()


def tiny_ct(folder: Path, n: int = 1, size: int = 16, sop_uid: str | None = None) -> list[Path]:
    """n small CT slices of one series (enough for the listener to accept and journal them)."""
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    out = []
    for k in range(n):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid or generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality, ds.PatientName, ds.PatientID = "CT", "TLS^TEST", "TLS1"
        ds.SeriesDescription, ds.InstanceNumber = "tls test", k + 1
        ds.Rows = ds.Columns = size
        ds.ImagePositionPatient = [0.0, 0.0, float(k)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [1.0, 1.0]
        ds.SliceThickness = 1.0
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = np.full((size, size), 1024 + 30, dtype=np.uint16).tobytes()
        p = folder / f"{k:03d}.dcm"
        ds.save_as(p, enforce_file_format=True)
        out.append(p)
    return out


class TlsSvdmark(Svdmark):
    """`svdmark serve` with a TLS listener; waits for a TLS C-ECHO instead of dcmtk's plain one."""

    def __init__(self, data_dir: Path, pki: Path, extra: tuple[str, ...] = ()):
        super().__init__(data_dir, [], extra=(
            "--tls-cert", str(pki / "server.crt"), "--tls-key", str(pki / "server.key"),
            "--tls-ca", str(pki / "ca.crt"), "--tls-require-client-cert", "--allow-calling-ae", "TLSSCU",
            "--allow-calling-ae", "STORESCU", "--allow-calling-ae", "ECHOSCU", *extra))
        self.pki = pki

    def start(self) -> "TlsSvdmark":
        import os
        import sys

        cmd = [sys.executable, "-m", "svdmark.cli.main", "serve", "--port", str(self.port), "--ae-title", "SVDMARK",
               "--data-dir", str(self.data_dir), "--host", "127.0.0.1", *self.extra]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"),
                                     env=dict(os.environ, PYTHONUNBUFFERED="1"))
        ctx = _client_ctx(self.pki, "client")

        def up():
            if self.proc.poll() is not None:
                raise RuntimeError(f"svdmark serve exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            return _echo_tls(self.port, ctx)

        wait_until(up, 90, "svdmark's TLS listener to answer C-ECHO")
        return self


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory, pki):
    svc = TlsSvdmark(tmp_path_factory.mktemp("tls") / "data", pki).start()
    yield svc
    svc.stop()


def _log_has(svc: Svdmark, *needles: str, timeout: float = 10.0) -> str:
    def found():
        for line in svc.log_text().splitlines():
            if all(n in line for n in needles):
                return line
        return None

    return wait_until(found, timeout, f"a log line with {needles}", interval=0.2)


# --------------------------------------------------------------------------- listener
def test_mutual_tls_client_is_served(tls_server, pki, tmp_path):
    assert _echo_tls(tls_server.port, _client_ctx(pki, "client"))
    files = tiny_ct(tmp_path / "ct", 2)
    ae = AE(ae_title="TLSSCU")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = associate(ae, tls_server.port,
                      tls_args=(_client_ctx(pki, "client"), "127.0.0.1"))
    assert assoc.is_established
    try:
        statuses = [assoc.send_c_store(pydicom.dcmread(f)).Status for f in files]
    finally:
        assoc.release()
    assert statuses == [0x0000, 0x0000]
    uid = str(pydicom.dcmread(files[0]).SOPInstanceUID)
    assert list(tls_server.data_dir.rglob(f"{uid}.dcm")), "the instance was acknowledged but is not in the spool"


def test_unknown_client_certificate_is_refused_with_a_log_line(tls_server, pki):
    assert not _echo_tls(tls_server.port, _client_ctx(pki, "rogue"))
    line = _log_has(tls_server, "tls_refused", "address=\"127.0.0.1\"")
    assert "certificate" in line, line
    # the listener is still up for the right caller
    assert _echo_tls(tls_server.port, _client_ctx(pki, "client"))


def test_client_without_certificate_is_refused(tls_server, pki):
    assert not _echo_tls(tls_server.port, _client_ctx(pki, None))
    _log_has(tls_server, "tls_refused", "no certificate")


def test_plain_tcp_caller_is_refused(tls_server):
    assert not _echo_tls(tls_server.port, None)
    _log_has(tls_server, "tls_refused", "not a TLS client hello")


def test_a_silent_caller_does_not_block_the_listener(tls_server, pki):
    """The handshake runs per connection: a peer that connects and says nothing holds no one else up."""
    import socket

    with socket.create_connection(("127.0.0.1", tls_server.port)):
        t0 = time.time()
        assert _echo_tls(tls_server.port, _client_ctx(pki, "client"))
        assert time.time() - t0 < 10


needs_dcmtk_tls = pytest.mark.skipif(
    "+tls" not in subprocess.run([str(DCMTK / "storescu"), "--help"], capture_output=True, text=True).stdout,
    reason="this dcmtk build has no TLS support")


@pytest.mark.interop
@needs_dcmtk_tls
def test_dcmtk_storescu_over_tls(tls_server, pki, tmp_path):
    files = tiny_ct(tmp_path / "ct", 2)
    base = [str(DCMTK / "storescu"), "-aet", "STORESCU", "-aec", "SVDMARK", "+tls", str(pki / "client.key"),
            str(pki / "client.crt"), "+cf", str(pki / "ca.crt")]
    r = subprocess.run([*base, "127.0.0.1", str(tls_server.port), *map(str, files)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    rogue = [str(DCMTK / "storescu"), "-aet", "STORESCU", "-aec", "SVDMARK", "+tls", str(pki / "rogue.key"),
             str(pki / "rogue.crt"), "+cf", str(pki / "ca.crt"), "127.0.0.1", str(tls_server.port), str(files[0])]
    r = subprocess.run(rogue, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    _log_has(tls_server, "tls_refused", "certificate")


# --------------------------------------------------------------------------- exporter (SCU side)
@pytest.mark.interop
@needs_dcmtk_tls
@pytest.mark.parametrize("client_cert,trusted_ca,ok", [("client", "ca", True), ("rogue", "ca", False),
                                                        ("client", "rogue-ca", False)])
def test_exporter_speaks_mutual_tls_to_a_dcmtk_storescp(pki, tmp_path, client_cert, trusted_ca, ok):
    """svdmark's C-STORE SCU with [tls]: verified by the destination (mutual) and verifying it."""
    from svdmark import tls
    from svdmark.config import Destination
    from svdmark.export import CStoreExporter

    port = free_port()
    out = tmp_path / "received"
    out.mkdir()
    scp = subprocess.Popen([str(DCMTK / "storescp"), "-aet", "TLSPACS", "-od", str(out), "+tls",
                            str(pki / "server.key"), str(pki / "server.crt"), "+cf", str(pki / "ca.crt"), str(port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        import socket

        wait_until(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, 20, "storescp +tls to listen")
        ctx = tls.client_context(pki / f"{trusted_ca}.crt", pki / f"{client_cert}.crt", pki / f"{client_cert}.key")
        files = tiny_ct(tmp_path / "ct", 1)
        outcomes = CStoreExporter("SVDMARK", timeout=10, tls_context=ctx).send(
            Destination("TLSPACS", "127.0.0.1", port, tls=True), files)
        assert [o.ok for o in outcomes] == [ok], outcomes
        assert bool(list(out.iterdir())) is ok
    finally:
        scp.terminate()
        scp.wait(10)

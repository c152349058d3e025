"""`svdmark serve` against hostile and broken callers, as a site meets them.

* stalled half-sent A-ASSOCIATE-RQs and connect-and-close probes never lock out a C-ECHO;
* one address cannot hold more than ``max_connections_per_host`` connections;
* a fuzz corpus (bad lengths, wrong transfer syntax, unknown VR, empty pixel data, fake deflate,
  bad dates, invalid UIDs) carrying known fake identifiers gets specific statuses, and no log
  line anywhere carries those identifiers;
* the data directory, journal and spool are private whatever the umask.
"""
from __future__ import annotations

import io
import os
import socket
import stat
import struct
import subprocess
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from tests.peers import DCMTK, Svdmark, associate, storescu, wait_until

REQUEST_TIMEOUT = 3
PER_HOST = 12
FAKE_NAME, FAKE_ID, FAKE_BIRTH = "FUZZTEST^SECRETNAME", "SECRETID4711", "19230417"
FAKE_BAD_BIRTH = "17.04.1923"
CT = "1.2.840.10008.5.1.4.1.1.2"


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    cfg = root / "svdmark.toml"
    cfg.write_text(f"""
[listener]
allow_calling_ae = ["ECHOSCU", "STORESCU"]
request_timeout = {REQUEST_TIMEOUT}
max_connections_per_host = {PER_HOST}
""")
    service = Svdmark(root / "data", [], extra=("--config", str(cfg), "--settle-seconds", "1",
                                                "--fallback-seconds", "15"),
                      )
    old = os.umask(0o022)  # the service inherits a permissive umask, as from a default login shell
    try:
        service.start()
    finally:
        os.umask(old)
    yield service
    service.stop()


def _echo(port: int) -> subprocess.CompletedProcess:
    return subprocess.run([str(DCMTK / "echoscu"), "-aet", "ECHOSCU", "-aec", "SVDMARK", "-to", "10", "-ta", "10",
                           "127.0.0.1", str(port)], capture_output=True, text=True, timeout=30)


def _stalled(port: int, source: str = "127.0.0.1") -> socket.socket:
    """A caller that sends the first 10 bytes of an A-ASSOCIATE-RQ and then nothing."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(source, 0))
    s.sendall(b"\x01\x00" + struct.pack(">I", 205) + b"\x00\x01\x00\x00")
    return s


def _probe(port: int) -> None:
    """A port scan / TCP health check: connect and close at once."""
    socket.create_connection(("127.0.0.1", port), timeout=10).close()


def _closed_by_peer(s: socket.socket, within: float) -> bool:
    s.settimeout(within)
    try:
        return s.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


# --------------------------------------------------------------------------- connection hygiene
def test_stalled_connections_and_probes_do_not_lock_out_echo(svc):
    for _ in range(8):
        _probe(svc.port)
    stalled = [_stalled(svc.port) for _ in range(8)]
    try:
        t0 = time.monotonic()
        r = _echo(svc.port)
        took = time.monotonic() - t0
        assert r.returncode == 0, r.stderr
        assert took < 10, f"C-ECHO took {took:.1f} s with 8 stalled connections open"
        # and a storage association is not locked out either: stalled connections hold no slot
        assert not any(_closed_by_peer(s, 0.01) for s in stalled), "stalled sockets were closed before the echo test"
        # the listener closes each stalled connection once its request timeout has passed
        assert all(_closed_by_peer(s, REQUEST_TIMEOUT + 10) for s in stalled)
    finally:
        for s in stalled:
            s.close()
    lines = wait_until(lambda: [ln for ln in svc.log_text().splitlines() if "association_request_timeout" in ln]
                       if svc.log_text().count("association_request_timeout") >= 8 else None,
                       15, "8 association_request_timeout lines")
    assert all(f"within {REQUEST_TIMEOUT} s" in ln and 'address="127.0.0.1"' in ln for ln in lines)
    assert "shorter than expected" not in svc.log_text()  # one line per closed connection, not pynetdicom's too


def test_storage_goes_through_while_slots_are_stalled(svc, tmp_path):
    stalled = [_stalled(svc.port) for _ in range(8)]
    try:
        files = _ct_files(tmp_path, 2)
        storescu(files, svc.port)  # 8 stalled connections are not 8 associations
    finally:
        for s in stalled:
            s.close()


def test_one_host_cannot_hold_more_than_its_share(svc):
    held = [_stalled(svc.port, "127.0.0.2") for _ in range(PER_HOST)]
    try:
        extra = _stalled(svc.port, "127.0.0.2")
        line = wait_until(lambda: next((ln for ln in svc.log_text().splitlines()
                                        if "connection_refused" in ln and "127.0.0.2" in ln), None),
                          REQUEST_TIMEOUT - 0.5, "a connection_refused line for 127.0.0.2", interval=0.1)
        assert f"max_connections_per_host {PER_HOST}" in line
        assert _closed_by_peer(extra, 5)
        assert _echo(svc.port).returncode == 0  # another host is unaffected
    finally:
        for s in held:
            s.close()


# --------------------------------------------------------------------------- fuzz corpus without PHI in the logs
def _dataset(ts=ExplicitVRLittleEndian, **changes) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ts
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = CT
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = FAKE_NAME, FAKE_ID, FAKE_BIRTH
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = generate_uid(), generate_uid(), "CT"
    ds.ImagePositionPatient, ds.ImageOrientationPatient, ds.PixelSpacing = [0, 0, 0], [1, 0, 0, 0, 1, 0], [.5, .5]
    ds.Rows = ds.Columns = 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = np.zeros((8, 8), np.int16).tobytes()
    for k, v in changes.items():
        setattr(ds, k, v)
    return ds


def _bytes(ds: Dataset, **kw) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True, **kw)
    return buf.getvalue()


def _meta_end(data: bytes) -> int:
    return 132 + 12 + struct.unpack_from("<I", data, 140)[0]


def _with_meta(ds: Dataset, body: bytes) -> bytes:
    buf = io.BytesIO()
    buf.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(buf, ds.file_meta)
    return buf.getvalue() + body


def fuzz_corpus() -> dict[str, tuple[bytes, str]]:
    """name -> (Part 10 bytes, expected status). Every item carries the fake identifiers."""
    out = {}
    d = _bytes(_dataset())
    i = d.index(FAKE_NAME.encode())
    out["length_past_the_data"] = (d[:i - 2] + struct.pack("<H", 0xFFF0) + d[i:], "0xC001")
    i = d.rindex(b"\xe0\x7f\x10\x00OW")
    out["pixel_data_2gb"] = (d[:i + 8] + struct.pack("<I", 0x7FFFFFF0) + d[i + 12:], "0xC001")
    implicit = _bytes(_dataset(ImplicitVRLittleEndian), implicit_vr=True, little_endian=True)
    out["implicit_body_explicit_ts"] = (_with_meta(_dataset(), implicit[_meta_end(implicit):]), "0xC002")
    i = d.index(b"CS\x02\x00CT")
    out["unknown_vr"] = (d[:i] + b"ZZ" + d[i + 2:], "0xC003")
    out["empty_pixel_data"] = (_bytes(_dataset(PixelData=b"")), "0xA900")
    out["deflated_not_deflated"] = (_with_meta(_dataset(DeflatedExplicitVRLittleEndian), d[_meta_end(d):]), "0xC002")
    out["invalid_uid_with_id"] = (_bytes(_dataset(SeriesInstanceUID=f"1.2.{FAKE_ID}.7")), "0xA900")
    out["bad_birth_date"] = (_bytes(_dataset(PatientBirthDate=FAKE_BAD_BIRTH)), "0x0000")
    return out


def _send_raw(port: int, data: bytes) -> int:
    """C-STORE exactly these bytes (pynetdicom SCU, chunked from a file, no re-encoding)."""
    from pynetdicom import AE, _config

    path = Path(f"/tmp/svdmark-fuzz-{os.getpid()}-{time.monotonic_ns()}.dcm")
    path.write_bytes(data)
    old = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        meta = pydicom.dcmread(io.BytesIO(data[:_meta_end(data)]), force=True).file_meta
        ae = AE(ae_title="STORESCU")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
        ae.add_requested_context(CT, str(meta.TransferSyntaxUID))
        assoc = associate(ae, port)
        assert assoc.is_established
        try:
            status = assoc.send_c_store(path)
            return int(status.Status)
        finally:
            assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = old
        path.unlink()


def test_fuzz_corpus_gets_specific_statuses_and_no_identifier_reaches_the_log(svc):
    before = len(svc.log_text().splitlines())
    for name, (data, expected) in fuzz_corpus().items():
        got = f"0x{_send_raw(svc.port, data):04X}"
        assert got == expected, f"{name}: {got}, expected {expected}"
    assert _echo(svc.port).returncode == 0
    wait_until(lambda: svc.log_text().count("instance_rejected") >= 7, 10, "7 instance_rejected lines")
    lines = svc.log_text().splitlines()[before:]
    rejected = [ln for ln in lines if "instance_rejected" in ln]
    assert len(rejected) == 7, "\n".join(rejected)
    leaks = [ln for ln in svc.log_text().splitlines()
             if any(s in ln for s in (FAKE_NAME, "SECRETNAME", FAKE_ID, FAKE_BIRTH, FAKE_BAD_BIRTH))]
    assert not leaks, "\n".join(leaks)
    assert any("uid#" in ln and "SeriesInstanceUID is not a valid UID" in ln for ln in rejected)
    assert not any("Traceback" in ln for ln in lines)


# --------------------------------------------------------------------------- permissions
def test_data_dir_journal_and_spool_are_private(svc, tmp_path):
    storescu(_ct_files(tmp_path, 1), svc.port)
    data = svc.data_dir
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    journal = data / "journal.sqlite"
    for p in (journal, Path(f"{journal}-wal")):
        if p.exists():
            assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    spooled = [p for p in (data / "spool").rglob("*")]
    assert any(p.is_file() for p in spooled)
    for p in spooled:
        assert stat.S_IMODE(p.stat().st_mode) == (0o700 if p.is_dir() else 0o600), p


def _ct_files(folder: Path, n: int) -> list[Path]:
    from .test_tls import tiny_ct

    return tiny_ct(folder / f"ct{time.monotonic_ns()}", n)

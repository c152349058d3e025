"""The listener against dcmtk storescu: good, duplicate and bad input; it never goes down.

Runs the receive stage alone (no analysis), so failures point here.
"""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from svdmark.config import Config
from svdmark.journal import Journal
from tests import journaldb
from svdmark.receive import AssociationTracker, Receiver, build_ae
from svdmark.spool import Spool

from tests.peers import echo_ok, storescu, wait_until

CT = "1.2.840.10008.5.1.4.1.1.2"
SC = "1.2.840.10008.5.1.4.1.1.7"


def ct_slice(path: Path, series_uid: str, k: int, sop_class: str = CT, drop: str | None = None) -> Path:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.SeriesInstanceUID = series_uid
    ds.Modality = "CT"
    ds.PatientName, ds.PatientID = "PHANTOM^RECEIVE", "PH-RCV"
    ds.ImagePositionPatient = [0, 0, 5.0 * k]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [0.5, 0.5]
    ds.Rows = ds.Columns = 16
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = np.full((16, 16), k, dtype=np.int16).tobytes()
    if drop:
        delattr(ds, drop)
    ds.save_as(path, enforce_file_format=True)
    return path


def _listen(tmp_path, **settings):
    cfg = Config(host="127.0.0.1", port=0, data_dir=tmp_path / "data", **settings).validate()
    journal = Journal(journaldb.url_for(cfg.data_dir))
    receiver = Receiver(cfg, journal, Spool(cfg.spool_dir), AssociationTracker())
    return build_ae(cfg).start_server(("127.0.0.1", 0), block=False, evt_handlers=receiver.handlers()), journal


@pytest.fixture
def listener(tmp_path):
    server, journal = _listen(tmp_path)
    yield server.server_address[1], journal
    server.shutdown()


def test_stores_durably_and_resend_is_harmless(tmp_path, listener):
    port, journal = listener
    series = generate_uid()
    files = [ct_slice(tmp_path / f"{k}.dcm", series, k) for k in range(5)]
    storescu(files, port)
    stored = journal.instances(series)
    assert len(stored) == 5
    for inst in stored:
        assert pydicom.dcmread(inst.path).SOPInstanceUID == inst.sop_uid
    # association release is recorded by the listener after it has answered the release: poll
    wait_until(lambda: journal.series_row(series).released, 10, "the association release in the journal",
               interval=0.05)
    storescu(files, port)  # identical resend
    assert len(journal.instances(series)) == 5
    assert journal.series_row(series).generation == 1


@pytest.mark.parametrize(
    "make, status, reason",
    [
        (lambda p, s: _truncate(ct_slice(p, s, 0)), "0xC001", "truncated"),
        (lambda p, s: ct_slice(p, s, 0, drop="ImagePositionPatient"), "0xA900", "ImagePositionPatient"),
        (lambda p, s: ct_slice(p, s, 0, drop="SeriesInstanceUID"), "0xA900", "SeriesInstanceUID"),
    ],
    ids=["truncated", "missing-position", "missing-series-uid"],
)
def test_bad_instances_get_specific_status_and_listener_stays_up(tmp_path, listener, caplog, make, status, reason):
    port, journal = listener
    bad = make(tmp_path / "bad.dcm", generate_uid())
    with caplog.at_level("WARNING", logger="svdmark.receive"):
        r = storescu([bad], port, check=False, extra=("-d",))
    assert status.lower()[2:] in (r.stdout + r.stderr).lower(), r.stderr
    lines = [rec for rec in caplog.records if rec.getMessage() == "instance_rejected"]
    assert len(lines) == 1 and reason in lines[0].fields["reason"]
    assert journal.counts()["instances"]["total"] == 0
    assert echo_ok(port, "SVDMARK")


def test_unsupported_sop_class_is_discarded_by_default(tmp_path, listener, caplog):
    """A forwarded study's other objects are acknowledged (so the sender goes on) and not kept."""
    port, journal = listener
    series = generate_uid()
    files = [ct_slice(tmp_path / "sc.dcm", series, 0, sop_class=SC), ct_slice(tmp_path / "ct.dcm", series, 1)]
    with caplog.at_level("INFO", logger="svdmark.receive"):
        storescu(files, port)  # check=True: both answered 0x0000
    assert [i.sop_class for i in journal.instances(series)] == [CT]
    lines = [r for r in caplog.records if r.getMessage() == "instances_discarded"]
    assert len(lines) == 1 and lines[0].fields["count"] == 1 and "Secondary Capture" in lines[0].fields["sop_classes"]


def test_unsupported_sop_class_refused_when_configured(tmp_path, caplog):
    server, journal = _listen(tmp_path, unsupported_sop_class="refuse")
    try:
        with caplog.at_level("WARNING", logger="svdmark.receive"):
            r = storescu([ct_slice(tmp_path / "sc.dcm", generate_uid(), 0, sop_class=SC)], server.server_address[1],
                         check=False, extra=("-d",))
        assert "0x0122" in (r.stdout + r.stderr).lower()
        lines = [rec for rec in caplog.records if rec.getMessage() == "instance_rejected"]
        assert len(lines) == 1 and "not analysed" in lines[0].fields["reason"]
        assert journal.counts()["instances"]["total"] == 0
    finally:
        server.shutdown()


def test_non_dicom_file_does_not_hurt(tmp_path, listener):
    port, _ = listener
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"this is not DICOM" * 10)
    storescu([junk], port, check=False)
    assert echo_ok(port, "SVDMARK")


def test_concurrent_associations(tmp_path, listener):
    port, journal = listener
    series = [generate_uid() for _ in range(4)]
    files = {s: [ct_slice(tmp_path / f"{i}-{k}.dcm", s, k) for k in range(6)] for i, s in enumerate(series)}
    threads = [threading.Thread(target=storescu, args=(files[s], port)) for s in series]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [len(journal.instances(s)) for s in series] == [6, 6, 6, 6]


def _truncate(path: Path) -> Path:
    """Pixel data shorter than Rows x Columns says (a sender that cut the stream short)."""
    ds = pydicom.dcmread(path)
    ds.PixelData = ds.PixelData[:312]
    ds.save_as(path, enforce_file_format=True)
    return path

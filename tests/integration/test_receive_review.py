"""The listener against what a hospital network sends it, found in the receive review.

Each test is one defect that was found, against a listener started in-process (as tests/integration/test_receive.py
does) and a pynetdicom requestor that sends what a broken or hostile peer sends: a C-STORE cut off by an abort or
a dropped connection, a request whose SOP Instance UID is not its data set's, a request whose SOP class is not its
presentation context's, a data set whose SOP Class UID is not a UID.
"""
from __future__ import annotations

import io
import socket
import tempfile
import time

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode

from svdmark.config import Config
from svdmark.journal import Journal
from svdmark.receive import AssociationTracker, Receiver, build_ae
from svdmark.spool import Spool
from tests import journaldb
from tests.peers import associate, echo_ok, wait_until

CT = "1.2.840.10008.5.1.4.1.1.2"
SC = "1.2.840.10008.5.1.4.1.1.7"
JPEG2000_PART2 = "1.2.840.10008.1.2.4.92"  # negotiated for other storage classes only: svdmark cannot decode it
FAKE_NAME, FAKE_ID = "REVIEW^SECRETNAME", "SECRETID0815"


def ct(rows: int = 8, **changes) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = CT
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.PatientName, ds.PatientID = FAKE_NAME, FAKE_ID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = generate_uid(), generate_uid(), "CT"
    ds.ImagePositionPatient, ds.ImageOrientationPatient, ds.PixelSpacing = [0, 0, 0], [1, 0, 0, 0, 1, 0], [.5, .5]
    ds.Rows = ds.Columns = rows
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = np.zeros((rows, rows), np.int16).tobytes()
    for k, v in changes.items():
        setattr(ds, k, v)
    return ds


@pytest.fixture
def rx_tmp(tmp_path, monkeypatch):
    """The folder pynetdicom receives each C-STORE's data set into (``tempfile.gettempdir()``), of this test only."""
    folder = tmp_path / "rx-tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture
def listener(tmp_path, rx_tmp):
    cfg = Config(host="127.0.0.1", port=0, data_dir=tmp_path / "data").validate()
    journal = Journal(journaldb.url_for(cfg.data_dir))
    receiver = Receiver(cfg, journal, Spool(cfg.spool_dir), AssociationTracker())
    server = build_ae(cfg).start_server(("127.0.0.1", 0), block=False, evt_handlers=receiver.handlers())
    yield server.server_address[1], journal
    server.shutdown()


def _requestor(*contexts) -> AE:
    ae = AE(ae_title="STORESCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
    for abstract, syntax in contexts:
        ae.add_requested_context(abstract, syntax)
    return ae


def _c_store(assoc, ds: Dataset, sop_class: str, sop_instance: str, context_class: str) -> int:
    """A C-STORE whose command names ``sop_class`` / ``sop_instance``, sent on the accepted context of
    ``context_class``, whatever the data set says (pynetdicom's send_c_store takes both from the data set)."""
    cx = next(c for c in assoc.accepted_contexts if c.abstract_syntax == context_class)
    req = C_STORE()
    req.MessageID, req.Priority = 1, 2
    req.AffectedSOPClassUID, req.AffectedSOPInstanceUID = sop_class, sop_instance
    req.DataSet = io.BytesIO(encode(ds, cx.transfer_syntax[0].is_implicit_VR, True))
    assoc.dimse.send_msg(req, cx.context_id)
    _, rsp = assoc.dimse.get_msg(block=True)
    return int(rsp.Status)


def _refused(port, journal, caplog, ds: Dataset, context: tuple, sop_instance: str, context_class: str,
             status: str) -> str:
    """C-STORE ``ds`` (as CT) on a fresh association with ``context``: the DIMSE status must be ``status``, nothing
    kept, one rejection line; returns its reason."""
    assoc = associate(_requestor(context), port)
    assert assoc.is_established
    try:
        with caplog.at_level("WARNING", logger="svdmark.receive"):
            got = _c_store(assoc, ds, CT, sop_instance, context_class)
    finally:
        assoc.release()
    assert f"0x{got:04X}" == status
    assert journal.counts()["instances"]["total"] == 0
    lines = _rejections(caplog)
    assert len(lines) == 1
    assert echo_ok(port, "SVDMARK")
    return lines[0].fields["reason"]


def _rejections(caplog) -> list:
    return [r for r in caplog.records if r.getMessage() == "instance_rejected"]


def _leaks(caplog) -> list[str]:
    return [r.getMessage() + str(getattr(r, "fields", "")) for r in caplog.records
            if any(s in r.getMessage() + str(getattr(r, "fields", "")) for s in (FAKE_NAME, "SECRETNAME", FAKE_ID))]


# --------------------------------------------------------------------------- a C-STORE cut off halfway
@pytest.mark.parametrize("end", ["abort", "connection_dropped"])
def test_a_cut_off_c_store_leaves_no_partial_file_behind(listener, rx_tmp, end):
    """An association aborted (or a connection dropped) in the middle of a C-STORE data set: pynetdicom removes the
    temporary file it receives a data set into only after the C-STORE handler has run, which a data set cut off
    never reaches. The partial file (the patient's name and ID in its first PDU) stayed in the temporary folder for
    good, one per interrupted transfer."""
    port, journal = listener
    ds = ct(rows=64)
    assoc = associate(_requestor((CT, ExplicitVRLittleEndian)), port)
    assert assoc.is_established
    cx = assoc.accepted_contexts[0]
    req = C_STORE()
    req.MessageID, req.Priority = 1, 2
    req.AffectedSOPClassUID, req.AffectedSOPInstanceUID = CT, ds.SOPInstanceUID
    req.DataSet = io.BytesIO(encode(ds, False, True))
    msg = C_STORE_RQ()
    msg.primitive_to_message(req)
    pdus = list(msg.encode_msg(cx.context_id, 1024))  # the command, then the data set in ~1 KiB fragments
    assert len(pdus) > 4
    for pdu in pdus[:3]:  # the command and the first data set fragments, never the last
        assoc.dul.send_pdu(pdu)
    wait_until(lambda: list(rx_tmp.iterdir()), 10, "the listener to start receiving the data set", interval=0.05)
    if end == "abort":
        assoc.abort()
    else:
        assoc.dul.socket.socket.shutdown(socket.SHUT_RDWR)
        assoc.dul.socket.socket.close()
        assoc.kill()
    try:
        wait_until(lambda: not list(rx_tmp.iterdir()), 5, "the partial data set's file to be removed", interval=0.1)
    finally:
        left = list(rx_tmp.iterdir())
    assert not left, [p.name for p in left]
    assert journal.counts()["instances"]["total"] == 0
    assert echo_ok(port, "SVDMARK")


# --------------------------------------------------------------------------- the request and its data set disagree
def test_request_sop_instance_uid_not_the_data_sets_is_refused(listener, caplog):
    """The C-STORE-RQ names one SOP instance, its data set is another (a sender that re-identified or merged a file
    and kept its old File Meta, as pydicom's bad_sequence.dcm does). svdmark answered 0x0000 for the request's
    instance and stored the data set's: the sender's record says an instance was stored that svdmark does not
    hold. dcmtk's storescp answers 0xA900; so does svdmark now, and keeps nothing."""
    port, journal = listener
    reason = _refused(port, journal, caplog, ct(), (CT, ExplicitVRLittleEndian), generate_uid(), CT, "0xA900")
    assert "SOP Instance UID" in reason and not _leaks(caplog)


def test_sop_class_other_than_its_presentation_context_is_refused(listener, caplog):
    """A C-STORE of CT Image Storage sent on a presentation context negotiated for Secondary Capture. Other
    storage classes are negotiated in any transfer syntax (to be discarded), the four image classes only in those
    svdmark decodes: such a request got a CT image into the spool and the journal in JPEG 2000 Part 2, which the
    listener refuses for CT at negotiation and the pipeline cannot read. pynetdicom serves a request by its own
    Affected SOP Class UID, never comparing it with its context's; now it is refused with 0x0122."""
    port, journal = listener
    ds = ct()
    ds.file_meta.TransferSyntaxUID = JPEG2000_PART2
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(28) + b"\xff\xd9"])
    ds["PixelData"].VR = "OB"
    # the context is accepted for Secondary Capture (to be discarded)
    reason = _refused(port, journal, caplog, ds, (SC, JPEG2000_PART2), ds.SOPInstanceUID, SC, "0x0122")
    assert "presentation context" in reason


def test_sop_class_uid_that_is_no_uid_gets_0xa900(listener, caplog):
    """A data set whose SOP Class UID is not a valid UID (and so differs from the request's): the conformance
    statement (§3.3) answers 0xA900 for a malformed UID and for a SOP Class UID other than the request's; svdmark
    answered 0xC000."""
    port, journal = listener
    ds = ct(SOPClassUID=f"1.2.{FAKE_ID}")
    reason = _refused(port, journal, caplog, ds, (CT, ExplicitVRLittleEndian), ds.SOPInstanceUID, CT, "0xA900")
    assert "uid#" in reason and not _leaks(caplog)


# --------------------------------------------------------------------------- after all of it
def test_listener_keeps_serving_and_stores_once(listener):
    """A good instance after the above on the same listener: stored once; an identical resend is a no-op."""
    port, journal = listener
    ds = ct()
    for _ in range(2):
        assoc = associate(_requestor((CT, ExplicitVRLittleEndian)), port)
        assert assoc.is_established
        try:
            assert _c_store(assoc, ds, CT, ds.SOPInstanceUID, CT) == 0
        finally:
            assoc.release()
    time.sleep(0.1)
    assert journal.counts()["instances"]["total"] == 1
    assert len(journal.instances(ds.SeriesInstanceUID)) == 1


# --------------------------------------------------------------------------- one Series Instance UID, two studies
def test_a_series_uid_another_study_already_holds_is_refused_with_a_failure_status(listener, caplog):
    """A sender's UID collision: a second study's image under a Series Instance UID the spool holds for another
    study would have joined that series (and its next analysis); it is refused, the first study's image kept."""
    port, journal = listener
    first = ct()
    second = ct(SeriesInstanceUID=first.SeriesInstanceUID)  # its own study and SOP Instance UID
    assoc = associate(_requestor((CT, ExplicitVRLittleEndian)), port)
    assert assoc.is_established
    try:
        with caplog.at_level("WARNING", logger="svdmark.receive"):
            statuses = [int(assoc.send_c_store(ds).Status) for ds in (first, second)]
    finally:
        assoc.release()
    assert statuses == [0x0000, 0xC000]
    assert [i.sop_uid for i in journal.instances(first.SeriesInstanceUID)] == [first.SOPInstanceUID]
    (line,) = _rejections(caplog)
    assert "already holds another study's instances" in line.fields["reason"] and not _leaks(caplog)

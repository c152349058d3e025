"""P-DATA straight to DIMSE: the same values as pynetdicom's own decoding, the same datasets over a real
association, and pynetdicom's path wherever the direct one would skip something."""
from __future__ import annotations

import struct
from types import SimpleNamespace

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, _config, evt, transport as pn_transport
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA

from svdmark.receive import fastpath, pdata
from tests.peers import associate


def _pdu(pdvs: list[tuple[int, bytes]]) -> bytes:
    primitive = P_DATA()
    primitive.presentation_data_value_list = [list(p) for p in pdvs]
    pdu = P_DATA_TF()
    pdu.from_primitive(primitive)
    return pdu.encode()


@pytest.mark.parametrize("pdvs", [
    [(1, b"\x03" + b"\x00" * 158)],  # a whole command set
    [(3, b"\x00" + bytes(range(256)) * 512)],  # a dataset fragment
    [(1, b"\x03abc"), (1, b"\x02" + b"\x01" * 4095), (5, b"\x00\x07")],  # several, odd lengths
])
def test_split_gives_pynetdicoms_values(pdvs):
    encoded = _pdu(pdvs)
    theirs = P_DATA_TF()
    theirs.decode(encoded)
    expected = theirs.to_primitive().presentation_data_value_list
    ours = pdata.split_pdvs(bytearray(encoded[6:]))
    assert [[cx, bytes(value)] for cx, value in ours] == [list(p) for p in expected]


@pytest.mark.parametrize("body", [
    b"",  # no item
    struct.pack(">LB", 1, 1) + b"",  # an item too short for its control header
    struct.pack(">LB", 10, 1) + b"\x03abc",  # an item longer than the PDU
    struct.pack(">LB", 4, 1) + b"\x03abc" + b"\x00\x00",  # bytes left over that are not an item
])
def test_a_pdu_that_does_not_add_up_is_left_to_pynetdicom(body):
    assert pdata.split_pdvs(bytearray(body)) is None


class _Socket:
    """Hands out a byte string in pieces of at most ``piece`` bytes, then end of file."""

    def __init__(self, data: bytes, piece: int):
        self.data, self.piece = data, piece

    def recv(self, n: int) -> bytes:
        out, self.data = self.data[:min(n, self.piece)], self.data[min(n, self.piece):]
        return out

    def recv_into(self, view, n: int = 0) -> int:
        chunk = self.recv(n or len(view))
        view[:len(chunk)] = chunk
        return len(chunk)


@pytest.mark.parametrize("piece", [1, 4096, 70_000, 1_000_000])
@pytest.mark.parametrize("reads", [[6, 150_000, 6, 100, 6, 400_000, 50], [6, 10], [300_000, 300_000, 10]])
def test_the_inbox_reads_what_pynetdicom_reads(piece, reads):
    data = bytes(range(256)) * 2000  # 512,000 bytes: the last reads run past the end
    theirs = SimpleNamespace(socket=_Socket(data, piece))
    box, ours = pdata.Inbox(), _Socket(data, piece)
    for n in reads:
        expected = bytes(pn_transport.AssociationSocket.recv(theirs, n))
        assert bytes(box.take(ours, n)) == expected


def test_the_inbox_reads_ahead_and_says_so():
    box, sock = pdata.Inbox(), _Socket(b"\x04\x00" + bytes(range(20)), 1_000_000)
    assert bytes(box.take(sock, 6)) == b"\x04\x00" + bytes(range(4))
    assert box.pending() == 16 and sock.data == b""  # one recv took it all
    assert bytes(box.take(sock, 16)) == bytes(range(4, 20)) and box.pending() == 0


def test_a_declared_length_is_not_allocated_before_the_bytes_arrive():
    box, sock = pdata.Inbox(), _Socket(b"x" * 3_000_000, 70_000)  # 3 MB sent of 4 GiB declared, then closed
    got = box.take(sock, 0xFFFFFFFF)
    assert bytes(got) == b"x" * 3_000_000
    assert len(box.buf) < 8_000_000  # at most about twice what arrived
    del got
    box2, sock2 = pdata.Inbox(), _Socket(b"y" * 2_000_000 + b"tail", 1_000_000)
    assert len(box2.take(sock2, 2_000_000)) == 2_000_000
    assert bytes(box2.take(sock2, 4)) == b"tail" and len(box2.buf) == pdata.CHUNK  # back to its usual size


def _dataset(rows: int) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, generate_uid()
    ds.PatientName, ds.Modality, ds.Rows, ds.Columns = "Direct^Path", "CT", rows, 512
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = bytes(range(256)) * (rows * 512 * 2 // 256)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def _send(datasets: list[Dataset], bind_pdu_handler: bool, chunked: bool, monkeypatch) -> tuple[list[Dataset], int, int]:
    """The datasets through a pynetdicom SCU (16 KiB PDUs) to an SCP set up as svdmark's listener sets up
    its associations (scp.build_ae); what the SCP received and how many PDUs took the direct path."""
    monkeypatch.setattr(_config, "LOG_HANDLER_LEVEL", "none")
    monkeypatch.setattr(_config, "STORE_RECV_CHUNKED_DATASET", chunked)
    assert fastpath.install()
    direct, received = [0], []
    split = pdata.split_pdvs

    def counting(body):
        direct[0] += 1
        return split(body)

    monkeypatch.setattr(pdata, "split_pdvs", counting)

    def on_store(ev):
        received.append(ev.dataset)
        return 0x0000

    handlers = [(evt.EVT_C_STORE, on_store), (evt.EVT_ESTABLISHED, lambda ev: fastpath.wake_on_requests(ev.assoc)),
                (evt.EVT_RELEASED, lambda ev: fastpath.forget(ev.assoc))]
    pdata_tf = [0]
    if bind_pdu_handler:  # counts the P-DATA-TF PDUs pynetdicom decodes
        handlers.append((evt.EVT_PDU_RECV, lambda ev: pdata_tf.__setitem__(0, pdata_tf[0] + isinstance(ev.pdu, P_DATA_TF))))
    scp = AE(ae_title="SCP")
    scp.add_supported_context(CTImageStorage, ExplicitVRLittleEndian)
    scp.maximum_pdu_size = 16384
    server = scp.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers)
    try:
        scu = AE(ae_title="SCU")
        scu.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        assoc = associate(scu, server.server_address[1], "SCP")
        assert assoc.is_established
        statuses = [assoc.send_c_store(ds).Status for ds in datasets]
        assoc.release()
    finally:
        server.shutdown()
    assert statuses == [0x0000] * len(datasets)
    return received, direct[0], pdata_tf[0]


@pytest.mark.parametrize("chunked", [True, False])  # svdmark's: the dataset to a file as it arrives; in memory
def test_datasets_arrive_whole_either_way(chunked, monkeypatch):
    sent = [_dataset(rows) for rows in (1, 300, 37)]  # one PDU; ~20 PDUs; an odd tail
    direct_received, direct, _ = _send(sent, False, chunked, monkeypatch)
    # EVT_PDU_RECV bound: it wants pynetdicom's PDU objects, so every PDU goes pynetdicom's way
    own_received, none, decoded = _send(sent, True, chunked, monkeypatch)
    assert none == 0
    assert direct == decoded > 20  # without it, every P-DATA-TF PDU went the direct way
    for received in (direct_received, own_received):
        assert [ds.SOPInstanceUID for ds in received] == [ds.SOPInstanceUID for ds in sent]
        assert [ds.PixelData for ds in received] == [ds.PixelData for ds in sent]
        assert [str(ds.PatientName) for ds in received] == ["Direct^Path"] * 3

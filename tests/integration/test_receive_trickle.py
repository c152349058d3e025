"""A peer that trickles a data set (a few bytes every second, within the network timeout, which restarts with
each PDU) no longer holds a listener slot for as long as it likes: once the network timeout has passed, the data
set must arrive at datasetfile.MIN_RATE on average or the association is aborted, its partial file removed, and a
real sender gets the slot."""
from __future__ import annotations

import io
import os
import struct
import time

import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode

from svdmark.config import Config
from svdmark.journal import Journal
from svdmark.receive import AssociationTracker, Receiver, build_ae, datasetfile
from svdmark.spool import Spool
from tests import journaldb
from tests.integration.test_receive_review import CT, _requestor, ct, rx_tmp  # noqa: F401 - rx_tmp is a fixture
from tests.peers import associate


@pytest.fixture
def one_slot(tmp_path, rx_tmp, monkeypatch):  # noqa: F811
    monkeypatch.setattr(datasetfile, "GRACE_SECONDS", datasetfile.GRACE_SECONDS)  # build_ae sets it; restored after
    cfg = Config(host="127.0.0.1", port=0, data_dir=tmp_path / "data", max_associations=1,
                 network_timeout=2.0, dimse_timeout=2.0).validate()
    journal = Journal(journaldb.url_for(cfg.data_dir))
    receiver = Receiver(cfg, journal, Spool(cfg.spool_dir), AssociationTracker())
    server = build_ae(cfg).start_server(("127.0.0.1", 0), block=False, evt_handlers=receiver.handlers())
    yield server.server_address[1]
    server.shutdown()


def _pdv(context_id: int, data: bytes, control: int) -> bytes:
    item = struct.pack(">LB", len(data) + 2, context_id) + bytes([control]) + data
    return b"\x04\x00" + struct.pack(">L", len(item)) + item


def test_a_trickled_data_set_is_aborted_and_its_slot_freed(one_slot, rx_tmp):  # noqa: F811
    port = one_slot
    trickler = associate(_requestor((CT, ExplicitVRLittleEndian)), port)
    assert trickler.is_established
    sock, context_id = trickler.dul.socket.socket, trickler.accepted_contexts[0].context_id
    request = C_STORE()
    request.MessageID, request.AffectedSOPClassUID, request.Priority = 1, CT, 2
    request.AffectedSOPInstanceUID = ct().SOPInstanceUID
    request.DataSet = io.BytesIO(b"\x08\x00\x16\x00")
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    sock.sendall(_pdv(context_id, encode(message.command_set, True, True), 0x03))  # the command, complete
    started, cut_off = time.monotonic(), None
    while time.monotonic() - started < 12 and cut_off is None:
        try:
            sock.sendall(_pdv(context_id, b"\x08\x00\x16\x00", 0x00))  # 4 bytes a second, never the last
        except OSError:
            cut_off = time.monotonic() - started
        time.sleep(1.0)
        if not trickler.is_established:
            cut_off = time.monotonic() - started
    assert cut_off is not None and cut_off < 8, "the trickling association still held its slot"
    time.sleep(0.5)
    assert os.listdir(rx_tmp) == []  # the partial data set is gone
    sender = associate(_requestor((CT, ExplicitVRLittleEndian)), port)
    assert sender.is_established  # the one slot is free again
    sender.release()

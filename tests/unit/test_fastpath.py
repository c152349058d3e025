"""The receive fast path writes the bytes pynetdicom and pydicom would have written, and steps aside otherwise."""
from __future__ import annotations

import io
import queue
import socket
import threading
import time
from types import SimpleNamespace

import pytest
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, JPEG2000Lossless, generate_uid
from pynetdicom import dimse as pn_dimse, dimse_messages, dimse_primitives as pn_primitives, dul as pn_dul
from pynetdicom import transport as pn_transport
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import create_file_meta, encode
from pynetdicom.pdu_primitives import P_DATA

from svdmark.receive import command, datasetfile, fastpath, pdata

EVEN_UID = "1.2.34"  # 6 characters
ODD_UID = "1.2.345"  # 7 characters: padded with a NUL


def pynetdicom_rsp(message_id: int, status: int, sop_class, sop_instance, **extra) -> bytes:
    primitive = C_STORE()
    primitive.MessageIDBeingRespondedTo = message_id
    primitive.AffectedSOPClassUID = sop_class
    primitive.AffectedSOPInstanceUID = sop_instance
    primitive.Status = status
    for key, value in extra.items():
        setattr(primitive, key, value)
    msg = C_STORE_RSP()
    msg.primitive_to_message(primitive)
    return encode(msg.command_set, True, True)


@pytest.mark.parametrize("status", [0x0000, 0xA700, 0xC000, 0x0122])
@pytest.mark.parametrize("sop_class,sop_instance", [(CTImageStorage, EVEN_UID), (CTImageStorage, ODD_UID),
                                                    (None, ODD_UID), (CTImageStorage, None)])
def test_store_rsp_is_byte_identical(status, sop_class, sop_instance):
    ours = fastpath.store_rsp_command(7, status, sop_class, sop_instance)
    assert ours == pynetdicom_rsp(7, status, sop_class, sop_instance)


def test_a_store_rsp_with_an_error_comment_is_left_to_pynetdicom():
    primitive = C_STORE()
    primitive.MessageIDBeingRespondedTo, primitive.Status = 3, 0xC000
    primitive.AffectedSOPClassUID, primitive.AffectedSOPInstanceUID = CTImageStorage, ODD_UID
    assert fastpath._plain_store_rsp(primitive) is not None
    primitive.ErrorComment = "cannot understand"
    assert fastpath._plain_store_rsp(primitive) is None
    request = C_STORE()
    request.MessageID = 3
    assert fastpath._plain_store_rsp(request) is None  # a request, not a response


# a generated UID, the same on every pytest-xdist worker (they must collect the same test ids)
@pytest.mark.parametrize("instance", [EVEN_UID, ODD_UID, generate_uid(entropy_srcs=["fastpath"])])
@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, JPEG2000Lossless])
def test_file_meta_is_byte_identical(instance, syntax):
    theirs = io.BytesIO()
    write_file_meta_info(theirs, create_file_meta(sop_class_uid=CTImageStorage, sop_instance_uid=instance,
                                                  transfer_syntax=syntax))
    assert fastpath.file_meta_bytes(CTImageStorage, instance, syntax) == theirs.getvalue()
    ours = io.BytesIO()
    fastpath._write_file_meta(ours, fastpath._create_file_meta(sop_class_uid=CTImageStorage,
                                                                sop_instance_uid=instance, transfer_syntax=syntax))
    assert ours.getvalue() == theirs.getvalue()


def test_a_file_meta_that_is_not_ascii_is_written_by_pydicom():
    theirs, ours = io.BytesIO(), io.BytesIO()
    odd = "1.2.3\u00e9"
    write_file_meta_info(theirs, create_file_meta(sop_class_uid=CTImageStorage, sop_instance_uid=odd,
                                                  transfer_syntax=ExplicitVRLittleEndian))
    fastpath._write_file_meta(ours, fastpath._create_file_meta(sop_class_uid=CTImageStorage, sop_instance_uid=odd,
                                                                transfer_syntax=ExplicitVRLittleEndian))
    assert ours.getvalue() == theirs.getvalue()


def test_install_replaces_and_uninstall_restores():
    installed = fastpath._installed
    fastpath.uninstall()
    try:
        originals = (dimse_messages.create_file_meta, pn_dimse.DIMSEServiceProvider.send_msg, pn_dul.time,
                     pn_dul.DULServiceProvider._read_pdu_data, pn_transport.AssociationSocket.ready,
                     pn_primitives.set_uid, dimse_messages.NamedTemporaryFile, dimse_messages.decode)
        assert fastpath.install()
        assert dimse_messages.decode is command.decode
        assert dimse_messages.NamedTemporaryFile is datasetfile.named_temporary_file
        assert pn_dul.DULServiceProvider._read_pdu_data is pdata.read_pdu_data
        assert pn_transport.AssociationSocket.ready.fget is fastpath._ready
        assert pn_primitives.set_uid is fastpath._set_uid
        assert dimse_messages.create_file_meta is fastpath._create_file_meta
        assert pn_dimse.DIMSEServiceProvider.send_msg is fastpath._send_msg
        assert pn_dul.time.sleep is fastpath._Time.sleep and pn_dul.time.monotonic is not None
        fastpath.uninstall()
        assert (dimse_messages.create_file_meta, pn_dimse.DIMSEServiceProvider.send_msg, pn_dul.time,
                pn_dul.DULServiceProvider._read_pdu_data, pn_transport.AssociationSocket.ready,
                pn_primitives.set_uid, dimse_messages.NamedTemporaryFile, dimse_messages.decode) == originals
    finally:
        if installed:
            fastpath.install()


def test_another_pynetdicom_version_is_left_alone(monkeypatch):
    installed = fastpath._installed
    fastpath.uninstall()
    try:
        monkeypatch.setattr(fastpath.pynetdicom, "__version__", "3.1.0")
        original = pn_dimse.DIMSEServiceProvider.send_msg
        assert fastpath.install() is False
        assert pn_dimse.DIMSEServiceProvider.send_msg is original
    finally:
        monkeypatch.undo()
        if installed:
            fastpath.install()


def _wait_returns(wake) -> bool:
    """Whether ``wake.wait()`` returns within 10 s while IDLE_WAIT is an hour: woken, not timed out."""
    done = threading.Event()
    threading.Thread(target=lambda: (wake.wait(), done.set()), daemon=True).start()
    return done.wait(10)


def test_the_dul_wait_wakes_for_an_answer_and_for_data(monkeypatch):
    monkeypatch.setattr(fastpath, "IDLE_WAIT", 3600.0)
    ours, peer = socket.socketpair()
    try:
        to_provider = queue.Queue()
        wake = fastpath._Wake(ours, to_provider)
        to_provider.put(P_DATA())  # an answer queued to send
        assert _wait_returns(wake)
        assert to_provider.get_nowait() is not None
        peer.sendall(b"\x04")  # a PDU arriving
        assert _wait_returns(wake)
    finally:
        ours.close()
        peer.close()


def test_the_reactor_wait_wakes_for_a_request(monkeypatch):
    monkeypatch.setattr(fastpath, "IDLE_WAIT", 3600.0)
    requests = queue.Queue()
    done = threading.Event()

    def reactor():
        setattr(threading.current_thread(), fastpath._REQUESTS, requests)
        try:
            fastpath._Time.sleep(fastpath._REACTOR_POLL)
        finally:
            setattr(threading.current_thread(), fastpath._REQUESTS, None)
        done.set()

    threading.Thread(target=reactor, daemon=True).start()
    time.sleep(0.2)  # most likely waiting by now; either way the wait must end when the request is queued
    requests.put((1, C_STORE()))
    assert done.wait(10)


@pytest.mark.parametrize("value", [CTImageStorage, "1.2.840.10008.5.1.4.1.1.2", "1.2.3", "", None, b"1.2.3\x00"])
def test_set_uid_remembers_what_pynetdicom_returns(value):
    theirs = fastpath._ORIGINAL["set_uid"]
    for _ in range(2):  # the second from the cache
        assert fastpath._set_uid(value, "Affected SOP Class UID") == theirs(value, "Affected SOP Class UID")


def test_a_uid_pynetdicom_refuses_is_refused_every_time():
    bad = "1." + "2" * 70  # longer than 64 characters
    for _ in range(2):
        with pytest.raises(ValueError):
            fastpath._set_uid(bad, "Affected SOP Instance UID")
        with pytest.raises(ValueError):
            fastpath._set_uid(bad, "Affected SOP Instance UID", allow_empty=False)


def test_ready_trusts_the_wait_once_then_asks_the_socket(monkeypatch):
    monkeypatch.setattr(fastpath, "IDLE_WAIT", 3600.0)
    ours, peer = socket.socketpair()
    to_provider = queue.Queue()  # kept: the wait's pipe closes with it
    assoc_socket = SimpleNamespace(socket=ours, _is_connected=True, event_queue=queue.Queue())
    wake = fastpath._Wake(ours, to_provider, assoc_socket)
    setattr(threading.current_thread(), fastpath._WAKE, wake)
    try:
        peer.sendall(b"\x04")
        wake.wait()
        assert wake.readable
        assert fastpath._ready(assoc_socket) is True and not wake.readable  # from the wait, used once
        assert fastpath._ready(assoc_socket) is True  # pynetdicom's select: the byte is still there
        ours.recv(1)
        assert fastpath._ready(assoc_socket) is False
        wake.readable = True
        other = SimpleNamespace(socket=ours, _is_connected=True, event_queue=queue.Queue())
        assert fastpath._ready(other) is False  # the wait of another association's socket never answers for it
        assoc_socket._is_connected = False
        assert fastpath._ready(assoc_socket) is False  # a closed socket is never ready
    finally:
        setattr(threading.current_thread(), fastpath._WAKE, None)
        ours.close()
        peer.close()


def test_ready_is_true_while_bytes_read_ahead_wait():
    ours, peer = socket.socketpair()
    assoc_socket = SimpleNamespace(socket=ours, _is_connected=True, event_queue=queue.Queue())
    try:
        peer.sendall(b"\x04\x00\x00\x00\x00\x02ab" + b"\x05")  # one PDU and the first byte of the next
        box = pdata.inbox(assoc_socket)
        assert bytes(box.take(ours, 8)) == b"\x04\x00\x00\x00\x00\x02ab"
        assert fastpath._ready(assoc_socket) is True  # the socket is empty now: the byte is in the inbox
        box.take(ours, 1)
        assert fastpath._ready(assoc_socket) is False
    finally:
        ours.close()
        peer.close()


def test_the_dul_wait_does_not_wait_while_bytes_read_ahead_wait(monkeypatch):
    monkeypatch.setattr(fastpath, "IDLE_WAIT", 3600.0)
    ours, peer = socket.socketpair()
    assoc_socket = SimpleNamespace(socket=ours, _is_connected=True)
    try:
        to_provider = queue.Queue()  # kept: the wait's pipe closes with it
        wake = fastpath._Wake(ours, to_provider, assoc_socket)
        peer.sendall(b"\x04\x00\x00")
        pdata.inbox(assoc_socket).take(ours, 1)  # two bytes read ahead, none left on the socket
        assert _wait_returns(wake)
    finally:
        ours.close()
        peer.close()

"""A received command set decodes to what pydicom's reader gives pynetdicom, or is left to pydicom."""
from __future__ import annotations

import struct
from io import BytesIO

import pytest
from pydicom.uid import CTImageStorage
from pynetdicom.sop_class import Verification
from pynetdicom import dimse_messages, dimse_primitives as prim
from pynetdicom.dsutils import decode as pydicom_decode, encode

from svdmark.receive import command

EVEN, ODD = "1.2.34", "1.2.345"


def _encoded(primitive_cls, message_cls, **values) -> bytes:
    primitive = primitive_cls()
    for key, value in values.items():
        setattr(primitive, key, value)
    message = message_cls()
    message.primitive_to_message(primitive)
    return encode(message.command_set, True, True)


def _as_read(ds) -> list:
    return [(e.tag, e.VR, e.value, type(e.value), e.VM, e.keyword) for e in ds]


CASES = {
    "store-rq": (prim.C_STORE, dimse_messages.C_STORE_RQ,
                 dict(MessageID=7, AffectedSOPClassUID=CTImageStorage, AffectedSOPInstanceUID=ODD, Priority=2,
                      DataSet=BytesIO(b"\0\0"))),
    "store-rq-moved": (prim.C_STORE, dimse_messages.C_STORE_RQ,
                       dict(MessageID=65535, AffectedSOPClassUID=CTImageStorage, AffectedSOPInstanceUID=EVEN,
                            Priority=0, MoveOriginatorApplicationEntityTitle="MOVER", MoveOriginatorMessageID=3,
                            DataSet=BytesIO(b"\0\0"))),
    "store-rsp": (prim.C_STORE, dimse_messages.C_STORE_RSP,
                  dict(MessageIDBeingRespondedTo=7, AffectedSOPClassUID=CTImageStorage,
                       AffectedSOPInstanceUID=ODD, Status=0xA700)),
    "store-rsp-comment": (prim.C_STORE, dimse_messages.C_STORE_RSP,  # ErrorComment (LO): pydicom's
                          dict(MessageIDBeingRespondedTo=7, AffectedSOPClassUID=CTImageStorage,
                               AffectedSOPInstanceUID=ODD, Status=0xC000, ErrorComment="no")),
    "echo-rq": (prim.C_ECHO, dimse_messages.C_ECHO_RQ, dict(MessageID=1, AffectedSOPClassUID=Verification)),
    "echo-rsp": (prim.C_ECHO, dimse_messages.C_ECHO_RSP,
                 dict(MessageIDBeingRespondedTo=1, AffectedSOPClassUID=Verification, Status=0)),
    "event-report": (prim.N_EVENT_REPORT, dimse_messages.N_EVENT_REPORT_RQ,
                     dict(MessageID=9, AffectedSOPClassUID=CTImageStorage, AffectedSOPInstanceUID=EVEN,
                          EventTypeID=2)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_dataset_as_pydicoms_reader(case):
    primitive_cls, message_cls, values = CASES[case]
    encoded = _encoded(primitive_cls, message_cls, **values)
    ours, theirs = command.decode(BytesIO(encoded), True, True), pydicom_decode(BytesIO(encoded), True, True)
    assert _as_read(ours) == _as_read(theirs)
    assert ours.original_encoding == theirs.original_encoding
    if case == "store-rsp-comment":
        assert command.plain(encoded) is None  # an element of another kind: the whole set is pydicom's
    else:
        assert command.plain(encoded) is not None


def _element(element: int, value: bytes) -> bytes:
    return struct.pack("<HHI", 0, element, len(value)) + value


@pytest.mark.parametrize("pad", [b"\0", b" "])
def test_a_uid_padded_either_way_reads_as_pydicom_reads_it(pad):
    uid = b"1.2.840.10008.5.1.4.1.1.2"  # 25 characters: padded to 26
    encoded = _element(0x0002, uid + pad) + _element(0x0100, b"\x01\x00") + _element(0x0800, b"\x01\x01")
    ours, theirs = command.plain(encoded), pydicom_decode(BytesIO(encoded), True, True)
    assert ours is not None and _as_read(ours) == _as_read(theirs)
    assert ours.AffectedSOPClassUID == "1.2.840.10008.5.1.4.1.1.2"


@pytest.mark.parametrize("encoded", [
    _element(0x0100, b"\x01\x00\x00"),  # a US of three bytes
    _element(0x1000, b"1.2\\3.4\x00"),  # two UIDs
    _element(0x1030, "MÖVER ".encode("latin-1")),  # not ASCII
    _element(0x1030, b"  "),  # an empty AE
    _element(0x0002, b""),  # an empty UID
    struct.pack("<HHI", 8, 0x0016, 4) + b"1.2\x00",  # not group 0000
    _element(0x0100, b"\x01\x00")[:-1],  # cut short
])
def test_anything_unusual_is_left_to_pydicom(encoded):
    assert command.plain(encoded) is None


def test_another_stream_is_pydicoms():
    encoded = _encoded(*CASES["echo-rq"][:2], **CASES["echo-rq"][2])
    assert _as_read(command.decode(BytesIO(encoded), True, True, deflated=False)) == \
        _as_read(pydicom_decode(BytesIO(encoded), True, True))
    explicit = command.decode(BytesIO(b""), False, True)  # not a command set's encoding: pydicom reads it
    assert len(explicit) == 0

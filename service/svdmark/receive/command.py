"""A received DIMSE command set decoded without pydicom's reader, to the same Dataset.

pynetdicom 3.0 decodes every command set (Implicit VR Little Endian, PS3.7 §6.3.1) with pydicom's
``read_dataset``; reading ``CommandField``, ``CommandDataSetType`` and the two UIDs then converts each raw
element through pydicom's hooks and validates each UID with a regular expression. Under four associations that
was a tenth of the receiver's time holding the GIL (bench/README.md). :func:`decode` replaces
``pynetdicom.dimse_messages.decode`` (used there for command sets only): a command set whose elements are all
of the plain kinds below is read here into the same Dataset, every element already a ``DataElement`` with
pydicom's value (``int``, ``UID``, ``str``); the UIDs are still validated, once, where pynetdicom sets them
on the primitive (``set_uid``), which is where an invalid one refuses the message. Anything else (another
tag, a multi-valued or odd-length value, non-ASCII, a deflated or explicit stream) is pydicom's, as before.
"""
from __future__ import annotations

import struct

from pydicom import config
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import dsutils

_ORIGINAL = dsutils.decode
_ELEMENT = struct.Struct("<HHI")  # group, element, value length (Implicit VR Little Endian)
_US, _UL = struct.Struct("<H"), struct.Struct("<I")
# group 0000 elements of the DIMSE-C and DIMSE-N command sets with a single plain value (PS3.7 Table E.1-1)
_VR = {
    0x0000: "UL", 0x0002: "UI", 0x0003: "UI", 0x0100: "US", 0x0110: "US", 0x0120: "US", 0x0600: "AE",
    0x0700: "US", 0x0800: "US", 0x0900: "US", 0x1000: "UI", 0x1001: "UI", 0x1002: "US", 0x1008: "US",
    0x1020: "US", 0x1021: "US", 0x1022: "US", 0x1023: "US", 0x1030: "AE", 0x1031: "US",
}


def _value(vr: str, raw: bytes):
    """pydicom's value for one element, or None where it is not one plain value (pydicom reads it then)."""
    if vr == "US":
        return _US.unpack(raw)[0] if len(raw) == 2 else None
    if vr == "UL":
        return _UL.unpack(raw)[0] if len(raw) == 4 else None
    if not raw or b"\\" in raw or len(raw) % 2:
        return None
    text = raw.decode("ascii")  # UnicodeDecodeError: not plain
    if vr == "UI":
        text = text.rstrip("\0 ")  # pydicom's convert_UI: trailing NULs and spaces (both seen as padding)
        return UID(text, validation_mode=config.IGNORE) if text and "\0" not in text else None
    text = text.strip(" ")  # AE: leading and trailing spaces are not significant
    return text or None


def plain(encoded: bytes) -> Dataset | None:
    """The command set ``encoded`` as pydicom would read it, or None where this module leaves it to pydicom."""
    ds, offset, end = Dataset(), 0, len(encoded)
    while offset < end:
        if offset + 8 > end:
            return None
        group, element, length = _ELEMENT.unpack_from(encoded, offset)
        vr = _VR.get(element) if group == 0 else None
        start = offset + 8
        if vr is None or length == 0xFFFFFFFF or start + length > end:
            return None
        try:
            value = _value(vr, encoded[start:start + length])
        except UnicodeDecodeError:
            return None
        if value is None:
            return None
        ds.add(DataElement(element, vr, value, validation_mode=config.IGNORE))
        offset = start + length
    ds.set_original_encoding(True, True)
    return ds


def decode(bytestring, is_implicit_vr: bool, is_little_endian: bool, deflated: bool = False) -> Dataset:
    """``pynetdicom.dsutils.decode`` as ``dimse_messages`` calls it for a received command set (module doc)."""
    if is_implicit_vr and is_little_endian and not deflated:
        ds = plain(bytestring.getvalue())
        if ds is not None:
            return ds
    return _ORIGINAL(bytestring, is_implicit_vr, is_little_endian, deflated)

"""Does a received body really hold what its transfer syntax and element lengths claim?

pydicom reads leniently, which suits files on disk but not a listener that must refuse bad input:
it silently reads past a declared length to the end of the data (a 2 GB Pixel Data length
parses as a short one), switches to implicit VR when the negotiated syntax says explicit, and
raises assorted exceptions (with element values in their text) for an unknown VR or a
"deflated" body that is not deflated. No library offers a strict structural check, so this
module walks the element headers itself, without reading any value, and names the first
problem by kind and tag only, never by value. The same walk hands back where the top-level elements a
caller asks for lie (:class:`Span`), so the receiver builds its dataset from them without a second parse.
"""
from __future__ import annotations

import struct
import zlib
from typing import NamedTuple

from pydicom.datadict import dictionary_VR
from pydicom.valuerep import VR

_KNOWN_VR = {v.value for v in VR if len(v.value) == 2}
_LONG_VR = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT", "SV", "UV"}
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_PIXEL_DATA = 0x7FE00010
_MAX_DEPTH = 32

LENGTH, ENCODING, UNKNOWN_VR, TOO_LARGE = "length", "encoding", "vr", "too large"

# Explicit VR Little Endian, nearly every received instance: one unpack per header, the VR looked up as bytes
_EXPLICIT_LE = struct.Struct("<HH2sH")  # group, element, VR, 2-byte length
_UL_LE = struct.Struct("<I")
_SHORT_VR_LE = {v.encode(): v for v in _KNOWN_VR - _LONG_VR}
_LONG_VR_LE = {v.encode(): v for v in _KNOWN_VR & _LONG_VR}


class Span(NamedTuple):
    """Where one top-level element's value lies in the body: ``offset`` and ``length`` of the value bytes
    (for an undefined length, up to the sequence delimiter); ``vr`` is None in implicit VR."""
    vr: str | None
    offset: int
    length: int
    undefined: bool


class StructureError(Exception):
    """``kind`` is LENGTH, ENCODING or UNKNOWN_VR; the message names a tag, never a value."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def _tag(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def body_offset(data: bytes) -> int:
    """Where the dataset starts after the preamble and the (explicit VR little endian) file meta."""
    if len(data) < 132 or data[128:132] != b"DICM":
        raise StructureError(ENCODING, "no 'DICM' prefix at byte 128")
    pos = 132
    while pos + 8 <= len(data):
        group = struct.unpack_from("<H", data, pos)[0]
        if group != 0x0002:
            return pos
        vr = data[pos + 4:pos + 6].decode("ascii", "replace")
        if vr in _LONG_VR:
            if pos + 12 > len(data):
                break
            length, hdr = struct.unpack_from("<I", data, pos + 8)[0], 12
        else:
            length, hdr = struct.unpack_from("<H", data, pos + 6)[0], 8
        if length == _UNDEFINED or pos + hdr + length > len(data):
            raise StructureError(LENGTH, "a file meta element's declared length runs past the data")
        pos += hdr + length
    return pos


def inflate(body: bytes, limit: int) -> bytes:
    """The inflated body of a Deflated Explicit VR Little Endian dataset, at most ``limit`` bytes."""
    d = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        out = d.decompress(body, limit)
    except zlib.error:
        raise StructureError(ENCODING, "the transfer syntax says deflated, but the body is not a deflate stream") \
            from None
    if d.unconsumed_tail:
        raise StructureError(TOO_LARGE, f"the deflated dataset inflates to more than {limit} bytes")
    return out


def check(body: bytes, implicit: bool, little: bool, collect: frozenset[int] = frozenset(),
          start: int = 0) -> dict[int, Span]:
    """Walk every element header of the dataset in ``body[start:]`` (nested sequences included); raise on the
    first problem. (``start``: a received file's dataset is checked where it lies, never copied out.)

    Returns the spans of the top-level elements whose tags are in ``collect``, offsets into ``body``."""
    if len(body) <= start:
        raise StructureError(LENGTH, "the dataset is empty")
    _sniff(body, start, implicit, little)
    found: dict[int, Span] = {}
    end = _walk(body, start, len(body), implicit, little, 0, until_delimiter=False, collect=collect, found=found)
    if end != len(body):  # pragma: no cover - _walk consumes to the end or raises
        raise StructureError(LENGTH, "trailing bytes after the dataset")
    return found


def _sniff(body: bytes, start: int, implicit: bool, little: bool) -> None:
    """The first element tells whether the body is encoded as declared (explicit vs implicit VR)."""
    if len(body) - start < 8:
        raise StructureError(LENGTH, "the dataset ends inside its first element header")
    fmt = "<HH" if little else ">HH"
    group, elem = struct.unpack_from(fmt, body, start)
    vr = body[start + 4:start + 6]
    looks_explicit = vr.isalpha() and vr.isupper() and vr.decode() in _KNOWN_VR
    if implicit and looks_explicit:
        try:
            expected = dictionary_VR((group << 16) | elem)
        except KeyError:
            expected = ""
        if vr.decode() in expected.split(" or "):
            raise StructureError(ENCODING, "the body is explicit VR, but the transfer syntax says implicit VR")
    if not implicit and not (vr.isalpha() and vr.isupper()):
        raise StructureError(ENCODING, "the body is not explicit VR, as the transfer syntax says "
                                       f"(first element {_tag((group << 16) | elem)})")


def _header(body: bytes, pos: int, end: int, implicit: bool, little: bool) -> tuple[int, str | None, int, int]:
    """(tag, VR or None, length, header size) of the element at ``pos``."""
    if little and not implicit and pos + 12 <= end:  # a long VR (_walk reads the short ones itself); else below
        group, elem, raw, _ = _EXPLICIT_LE.unpack_from(body, pos)
        vr = _LONG_VR_LE.get(raw) if group != 0xFFFE else None
        if vr is not None:
            return (group << 16) | elem, vr, _UL_LE.unpack_from(body, pos + 8)[0], 12
    e = "<" if little else ">"
    if pos + 8 > end:
        raise StructureError(LENGTH, f"the data ends inside an element header at offset {pos}")
    group, elem = struct.unpack_from(e + "HH", body, pos)
    tag = (group << 16) | elem
    if group == 0xFFFE or implicit:
        return tag, None, struct.unpack_from(e + "I", body, pos + 4)[0], 8
    raw = body[pos + 4:pos + 6]
    vr = raw.decode("ascii", "replace")
    if not (raw.isalpha() and raw.isupper()):
        raise StructureError(ENCODING, f"element {_tag(tag)} has no explicit VR where the transfer syntax "
                                       "requires one")
    if vr not in _KNOWN_VR:
        raise StructureError(UNKNOWN_VR, f"element {_tag(tag)} has an unknown VR")
    if vr in _LONG_VR:
        if pos + 12 > end:
            raise StructureError(LENGTH, f"the data ends inside the header of {_tag(tag)}")
        return tag, vr, struct.unpack_from(e + "I", body, pos + 8)[0], 12
    return tag, vr, struct.unpack_from(e + "H", body, pos + 6)[0], 8


def _is_sequence(tag: int, vr: str | None) -> bool:
    if vr is not None:
        return vr == "SQ"
    try:
        return dictionary_VR(tag) == "SQ"
    except KeyError:
        return False


def _walk(body: bytes, pos: int, end: int, implicit: bool, little: bool, depth: int, until_delimiter: bool,
          collect: frozenset[int] = frozenset(), found: dict[int, Span] | None = None) -> int:
    if depth > _MAX_DEPTH:
        raise StructureError(ENCODING, f"sequences nested deeper than {_MAX_DEPTH} levels")
    fast = little and not implicit
    while pos < end:
        if fast and pos + 12 <= end:  # most elements (_header's first case, inlined): a 2-byte length, no sequence
            group, elem, raw, length = _EXPLICIT_LE.unpack_from(body, pos)
            if group != 0xFFFE and raw in _SHORT_VR_LE:
                pos += 8
                if pos + length > end:
                    raise StructureError(LENGTH, f"element {_tag((group << 16) | elem)} declares {length} bytes, "
                                                 f"but only {end - pos} remain")
                if found is not None and (tag := (group << 16) | elem) in collect:
                    found[tag] = Span(_SHORT_VR_LE[raw], pos, length, False)
                pos += length
                continue
        tag, vr, length, hdr = _header(body, pos, end, implicit, little)
        if tag in (_ITEM_END, _SEQ_END) or tag == _ITEM:
            if until_delimiter and tag == _ITEM_END:
                return pos + hdr
            raise StructureError(ENCODING, f"unexpected delimiter {_tag(tag)} inside a dataset")
        pos += hdr
        if length == _UNDEFINED:
            if not (_is_sequence(tag, vr) or tag == _PIXEL_DATA or vr == "UN" or implicit):
                raise StructureError(ENCODING, f"element {_tag(tag)} has an undefined length, which its VR forbids")
            # undefined-length UN holds implicit VR little endian items (PS3.5 6.2.2)
            start, pos = pos, _items(body, pos, end, implicit or vr == "UN", little, depth, fragments=tag == _PIXEL_DATA)
            if tag in collect and found is not None:
                found[tag] = Span(vr, start, pos - 8 - start, True)  # the value stops before the delimiter item
            continue
        if pos + length > end:
            raise StructureError(LENGTH, f"element {_tag(tag)} declares {length} bytes, but only {end - pos} remain")
        if _is_sequence(tag, vr) and length:
            _items(body, pos, pos + length, implicit, little, depth, fragments=False, bounded=True)
        if tag in collect and found is not None:
            found[tag] = Span(vr, pos, length, False)
        pos += length
    if until_delimiter:
        raise StructureError(LENGTH, "the data ends inside a sequence item without its delimiter")
    return pos


def _items(body: bytes, pos: int, end: int, implicit: bool, little: bool, depth: int, fragments: bool,
           bounded: bool = False) -> int:
    """Walk sequence items (or encapsulated fragments) from ``pos``; returns the offset after them."""
    e = "<" if little else ">"
    while pos < end:
        if pos + 8 > end:
            break
        group, elem = struct.unpack_from(e + "HH", body, pos)
        tag, length = (group << 16) | elem, struct.unpack_from(e + "I", body, pos + 4)[0]
        pos += 8
        if tag == _SEQ_END:
            return pos
        if tag != _ITEM:
            raise StructureError(ENCODING, f"expected a sequence item, found {_tag(tag)}")
        if length == _UNDEFINED:
            if fragments:
                raise StructureError(ENCODING, "an encapsulated pixel data fragment has an undefined length")
            pos = _walk(body, pos, end, implicit, little, depth + 1, until_delimiter=True)
            continue
        if pos + length > end:
            raise StructureError(LENGTH, f"a sequence item declares {length} bytes, but only {end - pos} remain")
        if not fragments:
            _walk(body, pos, pos + length, implicit, little, depth + 1, until_delimiter=False)
        pos += length
    if bounded and pos == end:
        return pos
    raise StructureError(LENGTH, "the data ends inside a sequence without its delimiter")

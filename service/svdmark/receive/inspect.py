"""Check one received instance before it is acknowledged.

Pure: bytes in, ``Inspected`` out, or ``Rejected`` with the DIMSE status that names the
problem. Nothing here touches the network or the disk. Reasons name tags and kinds of problem,
never element values: a value may be a patient identifier (an invalid UID is told by a keyed
hash, see :func:`svdmark.phi.uid_hash`).

Own code where pydicom would do: the receiver inspects every instance before answering, and pydicom's
reader (a second parse of the body, a Dataset, a regular expression per value) was two thirds of that
time; the plain forms of the five VRs read are decoded here (:data:`_PLAIN`), tested against pydicom's
reading value for value, and everything else still goes through pydicom's hooks.
"""
from __future__ import annotations

import functools
import math
import struct
from dataclasses import dataclass

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.tag import BaseTag
from pydicom.hooks import hooks
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from ..errors import Rejected
from ..geometry import SliceGeometry
from ..volume.lossy import LOSSY_TRANSFER_SYNTAXES, LOSSY_WARNING, is_lossy, lossy_flag  # noqa: F401 (re-exported)
from ..spool import valid_uid
from . import structure
from ..phi import uid_hash

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2.1"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4.1"
SUPPORTED_SOP_CLASSES = (CT_IMAGE, ENHANCED_CT_IMAGE, MR_IMAGE, ENHANCED_MR_IMAGE)
ENHANCED = (ENHANCED_CT_IMAGE, ENHANCED_MR_IMAGE)

# DIMSE statuses used (see docs/conformance-statement.md §3.3)
STATUS_SOP_CLASS_NOT_SUPPORTED = 0x0122
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_DATASET_TOO_LARGE = 0xA701
STATUS_DOES_NOT_MATCH_SOP_CLASS = 0xA900
STATUS_CANNOT_UNDERSTAND = 0xC000
STATUS_TRUNCATED = 0xC001  # pixel data short of its size, or an element's declared length past the data
STATUS_WRONG_ENCODING = 0xC002  # body not encoded in the negotiated transfer syntax
STATUS_UNKNOWN_VR = 0xC003
_STRUCTURE_STATUS = {structure.LENGTH: STATUS_TRUNCATED, structure.ENCODING: STATUS_WRONG_ENCODING,
                     structure.UNKNOWN_VR: STATUS_UNKNOWN_VR, structure.TOO_LARGE: STATUS_DATASET_TOO_LARGE}

_REQUIRED = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Modality", "Rows", "Columns")
_REQUIRED_SINGLE_FRAME = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing")
# The only attributes parsed: the required ones, what the geometry, the pixel length check and the
# lossy flag read, and Specific Character Set (for text VRs pydicom decodes). structure.check finds them in
# the one walk that covers every element header; no other value is decoded, so a value the pipeline does not
# read cannot get an instance refused.
_PARSED = (*_REQUIRED, *_REQUIRED_SINGLE_FRAME, "NumberOfFrames", "ImagesInAcquisition", "AcquisitionNumber",
           "SamplesPerPixel", "BitsAllocated", "LossyImageCompression", "PixelData")
_PARSED_TAG_SET = frozenset([tag_for_keyword(k) for k in (*_PARSED, "SpecificCharacterSet")])
_PIXEL_DATA, _CHARSET = tag_for_keyword("PixelData"), tag_for_keyword("SpecificCharacterSet")
_META_TAGS = frozenset([tag_for_keyword("TransferSyntaxUID")])  # the only File Meta value read
_PARSED_VR = {tag: dictionary_VR(tag) for tag in _PARSED_TAG_SET | _META_TAGS}  # for implicit VR
_KEYWORD = {tag: keyword_for_tag(tag) for tag in _PARSED_TAG_SET | _META_TAGS}  # structure.check finds only these


@dataclass(frozen=True)
class Inspected:
    sop_uid: str
    sop_class: str
    study_uid: str
    series_uid: str
    modality: str
    geometry: SliceGeometry  # what the assembler needs (and whether the pixel data was lossy-compressed)
    transfer_syntax: str = ""  # the file meta's (a receiver journals the negotiated one, which it equals)

    @property
    def lossy(self) -> bool:
        """Pixel data was lossy-compressed (now or earlier): the pipeline warns."""
        return self.geometry.lossy_source


def inspect(data: bytes, affected_sop_class: str | None = None, max_bytes: int | None = None) -> Inspected:
    """Parse a Part 10 byte string and check it is an analysable image instance."""
    if max_bytes is not None and len(data) > max_bytes:
        raise Rejected(STATUS_DATASET_TOO_LARGE, f"dataset of {len(data)} bytes exceeds the limit of {max_bytes}")
    header = _parse(data, max_bytes)
    sop_uid = _uid_or_none(header.get("SOPInstanceUID"))
    sop_class = str(header.get("SOPClassUID") or "")
    if sop_class and not valid_uid(sop_class):
        raise Rejected(STATUS_DOES_NOT_MATCH_SOP_CLASS, f"SOP Class UID is not a valid UID ({uid_hash(sop_class)})",
                       sop_uid)
    if affected_sop_class and sop_class and sop_class != affected_sop_class:
        raise Rejected(
            STATUS_DOES_NOT_MATCH_SOP_CLASS,
            f"SOP Class UID in the dataset ({sop_class}) differs from the request's ({affected_sop_class})",
            sop_uid,
        )
    klass = sop_class or affected_sop_class or ""
    if klass not in SUPPORTED_SOP_CLASSES:
        raise Rejected(STATUS_SOP_CLASS_NOT_SUPPORTED, unsupported_reason(klass), sop_uid)
    missing = [k for k in _REQUIRED if header.get(k) in (None, "")]
    if klass not in ENHANCED:
        missing += [k for k in _REQUIRED_SINGLE_FRAME if header.get(k) in (None, "")]
    if header.pixels is None:
        missing.append("PixelData")
    if missing:
        raise Rejected(STATUS_DOES_NOT_MATCH_SOP_CLASS, f"missing required attributes: {', '.join(missing)}", sop_uid)
    for key in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        value = str(header[key])
        if not valid_uid(value):
            raise Rejected(STATUS_DOES_NOT_MATCH_SOP_CLASS, f"{key} is not a valid UID ({uid_hash(value)})", sop_uid)
    try:
        _check_pixel_length(header, sop_uid)
        geometry = SliceGeometry.from_dataset(header, lossy=lossy_flag(header.get("LossyImageCompression"),
                                                                        header.transfer_syntax))
        modality = str(header["Modality"])
    except Rejected:
        raise
    except Exception as exc:  # a value that does not convert (e.g. Rows as text): no value in the reason
        raise Rejected(STATUS_DOES_NOT_MATCH_SOP_CLASS, f"an image attribute has an unusable value "
                                                        f"({type(exc).__name__})", sop_uid) from None
    return Inspected(
        sop_uid=str(header["SOPInstanceUID"]),
        sop_class=klass,
        study_uid=str(header["StudyInstanceUID"]),
        series_uid=str(header["SeriesInstanceUID"]),
        modality=modality,
        geometry=geometry,
        transfer_syntax=str(header.transfer_syntax),
    )


def unsupported_reason(sop_class: str) -> str:
    what = (f"SOP class {sop_class} ({UID(sop_class).name})" if valid_uid(sop_class) else
            f"SOP class {uid_hash(sop_class)}" if sop_class else
            "a data set that names no SOP class (a DICOMDIR, or another object that is no image)")
    return f"{what} is not analysed; svdmark analyses CT, MR, Enhanced CT and Enhanced MR images"


def lossy_source(instances) -> bool:
    """Whether any journalled instance (``journal.StoredInstance``) of a series was lossy-compressed:
    the pipeline then adds the quality warning :data:`LOSSY_WARNING`."""
    return any(i.geometry.lossy_source for i in instances)


class _Header(dict):
    """The parsed attributes by keyword (values as pydicom converts them; an empty value is None), the transfer
    syntax, and where the pixel data lies (never copied: only its length is checked, or its fragments)."""

    def __init__(self, values: dict, transfer_syntax: UID, body: bytes, pixels: structure.Span | None):
        super().__init__(values)
        self.transfer_syntax, self.body, self.pixels = transfer_syntax, body, pixels


def _parse(data: bytes, max_bytes: int | None) -> _Header:
    """Strict structure check, which also finds the parsed attributes; pydicom converts their values
    (and only theirs). Every failure is a status and a value-free reason."""
    try:
        start = structure.body_offset(data)
    except structure.StructureError as exc:
        raise Rejected(_STRUCTURE_STATUS[exc.kind], str(exc)) from None
    try:
        spans = structure.check(data[132:start], implicit=False, little=True, collect=_META_TAGS) if start > 132 else {}
        ts = _transfer_syntax(str(_values(data, 132, spans, False, True).get("TransferSyntaxUID") or ""))
    except Exception as exc:  # StructureError names a tag only; other types may hold values: the type only
        reason = str(exc) if isinstance(exc, structure.StructureError) else type(exc).__name__
        raise Rejected(STATUS_CANNOT_UNDERSTAND, f"the file meta cannot be parsed ({reason})") from None
    if not ts or not ts.is_transfer_syntax:
        raise Rejected(STATUS_CANNOT_UNDERSTAND, "the file meta names no known transfer syntax")
    body = data  # the dataset is checked and read where it lies, from ``start`` (a copy of it costs more)
    try:
        if ts == DeflatedExplicitVRLittleEndian:
            # inflated, no larger than the size cap a plain dataset has: 4 MB of deflate must not take 4 GB of memory
            body, start = structure.inflate(data[start:], max_bytes or len(data) * 64), 0
        spans = structure.check(body, ts.is_implicit_VR, ts.is_little_endian, collect=_PARSED_TAG_SET, start=start)
    except structure.StructureError as exc:
        raise Rejected(_STRUCTURE_STATUS[exc.kind], str(exc)) from None
    pixels = spans.pop(_PIXEL_DATA, None)
    try:
        values = _values(body, 0, spans, ts.is_implicit_VR, ts.is_little_endian)
    except Exception as exc:  # pydicom raises many types, some with values in their text: keep the type only
        raise Rejected(STATUS_CANNOT_UNDERSTAND, f"dataset cannot be parsed ({type(exc).__name__})") from None
    return _Header(values, ts, body, pixels)


@functools.lru_cache(maxsize=64)
def _transfer_syntax(value: str) -> UID:
    """The File Meta's transfer syntax as a pydicom UID: a handful of values, each validated once."""
    return UID(value)


def _values(buf: bytes, base: int, spans: dict[int, structure.Span], implicit: bool, little: bool) -> dict:
    """The elements ``structure.check`` found in ``buf[base:]``, by keyword, converted by pydicom's own reading
    hooks (the VR, a UN with a known VR, the value) without building a Dataset, whose per-element bookkeeping
    and validation cost more than the whole walk. An empty value is None."""
    encodings = None
    if _CHARSET in spans:
        encodings = _convert(_raw(buf, base, _CHARSET, spans[_CHARSET], implicit, little), None) or None
    return {_KEYWORD[tag]: _convert(_raw(buf, base, tag, span, implicit, little), encodings)
            if span.length else None for tag, span in spans.items()}


def _convert(raw: RawDataElement, encodings):
    """One value: the plain forms of the few VRs inspect reads decoded here (:data:`_PLAIN`), anything
    else (another VR, UN, a value that does not parse plainly) by pydicom's reading hooks."""
    vr = raw.VR or _PARSED_VR.get(raw.tag)
    plain = _PLAIN.get(vr)
    if plain is not None:
        try:
            return plain(raw.value, raw.is_little_endian)
        except (ValueError, UnicodeDecodeError, struct.error):
            pass  # pydicom decides what it becomes (or that it is unusable)
    data: dict = {}
    hooks.raw_element_vr(raw, data, encoding=encodings, ds=None)
    hooks.raw_element_value(raw, data, encoding=encodings, ds=None)
    return data["value"]


# Plain decoders of the VRs inspect reads (PS3.5 §6.2): each returns one value or a list, as pydicom does, but
# without pydicom's per-value validation (a regular expression per value, most of a 512x512 CT image's
# inspection time). Every value is checked by inspect where it is used (UIDs by valid_uid, numbers by use).
def _text(value: bytes) -> list[str]:
    return value.decode("ascii").strip("\0 ").split("\\")


def _finite(number: float) -> float:
    if not math.isfinite(number):  # "nan", "inf": not a DS value (PS3.5 Table 6.2-1); pydicom decides
        raise ValueError("not finite")
    return number


def _one_or_list(items: list):
    return items[0] if len(items) == 1 else items


def _us(value: bytes, little: bool):
    count, odd = divmod(len(value), 2)
    if odd:
        raise ValueError("odd length")
    return _one_or_list(list(struct.unpack(("<" if little else ">") + "H" * count, value)))


_PLAIN = {
    "UI": lambda value, little: value.decode("ascii").rstrip("\0 "),
    "CS": lambda value, little: _one_or_list([v.strip() for v in _text(value)]),
    "DS": lambda value, little: _one_or_list([_finite(float(v)) for v in _text(value)]),
    "IS": lambda value, little: _one_or_list([int(v) for v in _text(value)]),
    "US": _us,
}


def _raw(buf: bytes, base: int, tag: int, span: structure.Span, implicit: bool, little: bool) -> RawDataElement:
    at = base + span.offset
    return RawDataElement(BaseTag(tag), span.vr, 0xFFFFFFFF if span.undefined else span.length,
                          buf[at:at + span.length], at, implicit, little, True)


def _uid_or_none(value) -> str | None:
    text = str(value or "")
    return text if valid_uid(text) else None


def _check_pixel_length(header: _Header, sop_uid: str | None) -> None:
    frames = int(header.get("NumberOfFrames") or 1)
    span = header.pixels
    if header.transfer_syntax.is_compressed:
        if not span.undefined and span.length == 0:
            raise Rejected(STATUS_DOES_NOT_MATCH_SOP_CLASS, "Pixel Data is empty", sop_uid)
        try:
            from pydicom.encaps import generate_fragmented_frames

            fragments = header.body[span.offset:span.offset + span.length]
            n = sum(1 for _ in generate_fragmented_frames(fragments, number_of_frames=frames))
        except Exception as exc:  # malformed encapsulation: pydicom raises several types
            raise Rejected(STATUS_TRUNCATED, f"encapsulated pixel data is malformed ({type(exc).__name__})",
                           sop_uid) from None
        if n < frames:
            raise Rejected(STATUS_TRUNCATED, f"encapsulated pixel data holds {n} of {frames} frames", sop_uid)
        return
    if not span.length:
        raise Rejected(STATUS_DOES_NOT_MATCH_SOP_CLASS, "Pixel Data is empty", sop_uid)
    samples = int(header.get("SamplesPerPixel") or 1)
    bits = int(header.get("BitsAllocated") or 16)
    expected = int(header["Rows"]) * int(header["Columns"]) * samples * frames * math.ceil(bits / 8)
    actual = span.length
    if actual < expected:
        raise Rejected(
            STATUS_TRUNCATED, f"pixel data is truncated: {actual} of {expected} bytes for {frames} frame(s)", sop_uid
        )

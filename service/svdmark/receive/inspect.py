"""Check one received instance before it is acknowledged.

Pure: bytes in, ``Inspected`` out, or ``Rejected`` with the DIMSE status that names the
problem. Nothing here touches the network or the disk. Reasons name tags and kinds of problem,
never element values: a value may be a patient identifier (an invalid UID is told by a keyed
hash, see :func:`svdmark.receive.phi.uid_hash`).
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass

import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.filereader import read_dataset
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from ..errors import Rejected
from ..geometry import SliceGeometry
from ..volume.lossy import LOSSY_TRANSFER_SYNTAXES, LOSSY_WARNING, is_lossy  # noqa: F401 (re-exported)
from ..spool import valid_uid
from . import structure
from .phi import uid_hash

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
                     structure.UNKNOWN_VR: STATUS_UNKNOWN_VR}
INFLATE_FACTOR = 8  # a deflated body may inflate to this many times the size cap, no more

_REQUIRED = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Modality", "Rows", "Columns")
_REQUIRED_SINGLE_FRAME = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing")
# The only attributes parsed: the required ones, what the geometry, the pixel length check and the
# lossy flag read (pydicom adds Specific Character Set). Every other element is only walked by
# structure.check, never decoded: a value the pipeline does not read cannot get an instance refused.
_PARSED = (*_REQUIRED, *_REQUIRED_SINGLE_FRAME, "NumberOfFrames", "ImagesInAcquisition", "AcquisitionNumber",
           "SamplesPerPixel", "BitsAllocated", "LossyImageCompression", "PixelData")
_PARSED_TAGS = [tag_for_keyword(k) for k in _PARSED]


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
    ds = _parse(data, max_bytes)
    sop_uid = _uid_or_none(ds.get("SOPInstanceUID"))
    sop_class = str(ds.get("SOPClassUID", "") or "")
    if sop_class and not valid_uid(sop_class):
        raise Rejected(STATUS_CANNOT_UNDERSTAND, f"SOP Class UID is not a valid UID ({uid_hash(sop_class)})", sop_uid)
    if affected_sop_class and sop_class and sop_class != affected_sop_class:
        raise Rejected(
            STATUS_DOES_NOT_MATCH_SOP_CLASS,
            f"SOP Class UID in the dataset ({sop_class}) differs from the request's ({affected_sop_class})",
            sop_uid,
        )
    klass = sop_class or affected_sop_class or ""
    if klass not in SUPPORTED_SOP_CLASSES:
        raise Rejected(STATUS_SOP_CLASS_NOT_SUPPORTED, unsupported_reason(klass), sop_uid)
    missing = [k for k in _REQUIRED if k not in ds or ds[k].value in (None, "")]
    if klass not in ENHANCED:
        missing += [k for k in _REQUIRED_SINGLE_FRAME if k not in ds or ds[k].value in (None, "")]
    if "PixelData" not in ds:
        missing.append("PixelData")
    if missing:
        raise Rejected(STATUS_DOES_NOT_MATCH_SOP_CLASS, f"missing required attributes: {', '.join(missing)}", sop_uid)
    for key in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        value = str(ds[key].value)
        if not valid_uid(value):
            raise Rejected(STATUS_DOES_NOT_MATCH_SOP_CLASS, f"{key} is not a valid UID ({uid_hash(value)})", sop_uid)
    try:
        _check_pixel_length(ds, sop_uid)
        geometry = SliceGeometry.from_dataset(ds, lossy=is_lossy(ds))
        modality = str(ds.Modality)
    except Rejected:
        raise
    except Exception as exc:  # a value pydicom cannot convert (e.g. Rows as text): no value in the reason
        raise Rejected(STATUS_DOES_NOT_MATCH_SOP_CLASS, f"an image attribute has an unusable value "
                                                        f"({type(exc).__name__})", sop_uid) from None
    return Inspected(
        sop_uid=str(ds.SOPInstanceUID),
        sop_class=klass,
        study_uid=str(ds.StudyInstanceUID),
        series_uid=str(ds.SeriesInstanceUID),
        modality=modality,
        geometry=geometry,
        transfer_syntax=str(ds.file_meta.TransferSyntaxUID),
    )


def unsupported_reason(sop_class: str) -> str:
    name = UID(sop_class).name if sop_class and valid_uid(sop_class) else "none"
    return (f"SOP class {sop_class if valid_uid(sop_class) else uid_hash(sop_class)} ({name}) is not analysed; "
            "svdmark analyses CT, MR, Enhanced CT and Enhanced MR images")


def lossy_source(instances) -> bool:
    """Whether any journalled instance (``journal.StoredInstance``) of a series was lossy-compressed:
    the pipeline then adds the quality warning :data:`LOSSY_WARNING`."""
    return any(i.geometry.lossy_source for i in instances)


def _parse(data: bytes, max_bytes: int | None) -> pydicom.Dataset:
    """Strict structure check, then pydicom's parse; every failure is a status and a value-free reason."""
    try:
        start = structure.body_offset(data)
        meta = pydicom.dcmread(io.BytesIO(data[:start]), force=True).file_meta
        ts = UID(str(meta.get("TransferSyntaxUID", "") or ""))
        if not ts or not ts.is_transfer_syntax:
            raise Rejected(STATUS_CANNOT_UNDERSTAND, "the file meta names no known transfer syntax")
        body = data[start:]
        if ts == DeflatedExplicitVRLittleEndian:
            body = structure.inflate(body, INFLATE_FACTOR * (max_bytes or len(data) * 64))
        structure.check(body, ts.is_implicit_VR, ts.is_little_endian)
    except structure.StructureError as exc:
        raise Rejected(_STRUCTURE_STATUS[exc.kind], str(exc)) from None
    except Rejected:
        raise
    except Exception as exc:
        raise Rejected(STATUS_CANNOT_UNDERSTAND, f"the file meta cannot be parsed ({type(exc).__name__})") from None
    try:  # the body once (inflated already), the parsed attributes only
        ds = read_dataset(io.BytesIO(body), ts.is_implicit_VR, ts.is_little_endian, specific_tags=_PARSED_TAGS)
        ds.file_meta = meta
        for elem in ds:  # convert them now, inside this try
            elem.value  # noqa: B018
    except Exception as exc:  # pydicom raises many types, some with values in their text: keep the type only
        raise Rejected(STATUS_CANNOT_UNDERSTAND, f"dataset cannot be parsed ({type(exc).__name__})") from None
    return ds


def _uid_or_none(value) -> str | None:
    text = str(value or "")
    return text if valid_uid(text) else None


def _check_pixel_length(ds: pydicom.Dataset, sop_uid: str | None) -> None:
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    elem = ds["PixelData"]
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        if not getattr(elem, "is_undefined_length", True) and len(elem.value) == 0:
            raise Rejected(STATUS_DOES_NOT_MATCH_SOP_CLASS, "Pixel Data is empty", sop_uid)
        try:
            from pydicom.encaps import generate_fragmented_frames

            n = sum(1 for _ in generate_fragmented_frames(elem.value, number_of_frames=frames))
        except Exception as exc:  # malformed encapsulation: pydicom raises several types
            raise Rejected(STATUS_TRUNCATED, f"encapsulated pixel data is malformed ({type(exc).__name__})",
                           sop_uid) from None
        if n < frames:
            raise Rejected(STATUS_TRUNCATED, f"encapsulated pixel data holds {n} of {frames} frames", sop_uid)
        return
    if not elem.value:
        raise Rejected(STATUS_DOES_NOT_MATCH_SOP_CLASS, "Pixel Data is empty", sop_uid)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    bits = int(ds.get("BitsAllocated", 16) or 16)
    expected = int(ds.Rows) * int(ds.Columns) * samples * frames * math.ceil(bits / 8)
    actual = len(ds.PixelData)
    if actual < expected:
        raise Rejected(
            STATUS_TRUNCATED, f"pixel data is truncated: {actual} of {expected} bytes for {frames} frame(s)", sop_uid
        )



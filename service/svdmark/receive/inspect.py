"""Check one received instance before it is acknowledged.

Pure: bytes in, ``Inspected`` out, or ``Rejected`` with the DIMSE status that
names the problem. Nothing here touches the network or the disk.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass

import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from ..errors import Rejected
from ..spool import valid_uid

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2.1"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4.1"
SUPPORTED_SOP_CLASSES = (CT_IMAGE, ENHANCED_CT_IMAGE, MR_IMAGE, ENHANCED_MR_IMAGE)
ENHANCED = (ENHANCED_CT_IMAGE, ENHANCED_MR_IMAGE)

# DIMSE statuses used (see docs/conformance-statement.md)
STATUS_SOP_CLASS_NOT_SUPPORTED = 0x0122
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_DATASET_TOO_LARGE = 0xA701
STATUS_DOES_NOT_MATCH_SOP_CLASS = 0xA900
STATUS_CANNOT_UNDERSTAND = 0xC000
STATUS_TRUNCATED = 0xC001

_REQUIRED = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Modality", "Rows", "Columns")
_REQUIRED_SINGLE_FRAME = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing")


@dataclass(frozen=True)
class Inspected:
    sop_uid: str
    sop_class: str
    study_uid: str
    series_uid: str
    modality: str
    geometry: dict  # what the assembler needs: ipp, iop, frames, images_in_acquisition, acquisition


def inspect(data: bytes, affected_sop_class: str | None = None, max_bytes: int | None = None) -> Inspected:
    """Parse a Part 10 byte string and check it is an analysable image instance."""
    if max_bytes is not None and len(data) > max_bytes:
        raise Rejected(STATUS_DATASET_TOO_LARGE, f"dataset of {len(data)} bytes exceeds the limit of {max_bytes}")
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
        ds.get("PixelData")  # force parsing up to and including pixel data
    except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError, OverflowError, IndexError, OSError) as exc:
        raise Rejected(STATUS_CANNOT_UNDERSTAND, f"dataset cannot be parsed: {type(exc).__name__}: {exc}") from None
    sop_uid = str(ds.get("SOPInstanceUID", "")) or None
    sop_class = str(ds.get("SOPClassUID", ""))
    if sop_class and not valid_uid(sop_class):
        raise Rejected(STATUS_CANNOT_UNDERSTAND, "dataset cannot be parsed: SOP Class UID is garbled", sop_uid)
    if affected_sop_class and sop_class and sop_class != affected_sop_class:
        raise Rejected(
            STATUS_DOES_NOT_MATCH_SOP_CLASS,
            f"SOP Class UID in the dataset ({sop_class}) differs from the request's ({affected_sop_class})",
            sop_uid,
        )
    klass = sop_class or affected_sop_class or ""
    if klass not in SUPPORTED_SOP_CLASSES:
        name = UID(klass).name if klass else "none"
        raise Rejected(
            STATUS_SOP_CLASS_NOT_SUPPORTED,
            f"SOP class {klass} ({name}) is not analysed; svdmark accepts CT, MR, Enhanced CT and Enhanced MR images",
            sop_uid,
        )
    missing = [k for k in _REQUIRED if k not in ds or ds[k].value in (None, "")]
    if klass not in ENHANCED:
        missing += [k for k in _REQUIRED_SINGLE_FRAME if k not in ds or ds[k].value in (None, "")]
    if "PixelData" not in ds:
        missing.append("PixelData")
    if missing:
        raise Rejected(STATUS_DOES_NOT_MATCH_SOP_CLASS, f"missing required attributes: {', '.join(missing)}", sop_uid)
    for key in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        if not valid_uid(str(ds[key].value)):
            raise Rejected(STATUS_DOES_NOT_MATCH_SOP_CLASS, f"{key} {str(ds[key].value)!r} is not a valid UID", sop_uid)
    _check_pixel_length(ds, sop_uid)
    return Inspected(
        sop_uid=str(ds.SOPInstanceUID),
        sop_class=klass,
        study_uid=str(ds.StudyInstanceUID),
        series_uid=str(ds.SeriesInstanceUID),
        modality=str(ds.Modality),
        geometry=_geometry(ds),
    )


def _check_pixel_length(ds: pydicom.Dataset, sop_uid: str | None) -> None:
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        elem = ds["PixelData"]
        if not getattr(elem, "is_undefined_length", True) and len(elem.value) == 0:
            raise Rejected(STATUS_TRUNCATED, "compressed pixel data is empty", sop_uid)
        try:
            from pydicom.encaps import generate_fragmented_frames

            n = sum(1 for _ in generate_fragmented_frames(elem.value, number_of_frames=frames))
        except Exception as exc:  # malformed encapsulation: pydicom raises several types
            raise Rejected(STATUS_TRUNCATED, f"encapsulated pixel data is malformed: {exc}", sop_uid) from None
        if n < frames:
            raise Rejected(STATUS_TRUNCATED, f"encapsulated pixel data holds {n} of {frames} frames", sop_uid)
        return
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    bits = int(ds.get("BitsAllocated", 16) or 16)
    expected = int(ds.Rows) * int(ds.Columns) * samples * frames * math.ceil(bits / 8)
    actual = len(ds.PixelData)
    if actual < expected:
        raise Rejected(
            STATUS_TRUNCATED, f"pixel data is truncated: {actual} of {expected} bytes for {frames} frame(s)", sop_uid
        )


def _floats(value) -> list[float] | None:
    try:
        return [float(v) for v in value] if value is not None else None
    except (TypeError, ValueError):
        return None


def _geometry(ds: pydicom.Dataset) -> dict:
    frames = ds.get("NumberOfFrames")
    return {
        "ipp": _floats(ds.get("ImagePositionPatient")),
        "iop": _floats(ds.get("ImageOrientationPatient")),
        "frames": int(frames) if frames not in (None, "") else None,
        "images_in_acquisition": int(ds.ImagesInAcquisition) if ds.get("ImagesInAcquisition") not in (None, "") else None,
        "acquisition": int(ds.AcquisitionNumber) if ds.get("AcquisitionNumber") not in (None, "") else None,
    }

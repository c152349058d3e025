"""What both writers share (classic per-slice and Enhanced MR): DS strings, stored pixel values per vendor,
transfer syntaxes and the file write (pydicom, or dcmtk's dcmcjpeg for JPEG lossless process 14 SV1,
which pydicom cannot encode)."""
from __future__ import annotations

import math
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

from .types import SeriesKind, Vendor
from .vendors import VendorStyle

IMPLEMENTATION_UID = UID("1.2.826.0.1.3680043.8.498.1.77.1")
TS_ALIASES = {
    "implicit": ImplicitVRLittleEndian,
    "explicit": ExplicitVRLittleEndian,
    "deflated": DeflatedExplicitVRLittleEndian,
    "rle": RLELossless,
    "jpegls": JPEGLSLossless,
    "jpeg-ls": JPEGLSLossless,
    "j2k": JPEG2000Lossless,
    "jpeg2000": JPEG2000Lossless,
    "jpeg14": JPEGLosslessSV1,
    "jpeg-lossless": JPEGLosslessSV1,
    "jpeglosslesssv1": JPEGLosslessSV1,
}
ALL_TRANSFER_SYNTAXES = (ImplicitVRLittleEndian, ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, RLELossless,
                         JPEGLSLossless, JPEG2000Lossless, JPEGLosslessSV1)
DCMCJPEG = "/usr/bin/dcmcjpeg"


def resolve_ts(ts) -> UID:
    if ts is None:
        return ExplicitVRLittleEndian
    s = str(ts)
    if s.lower() in TS_ALIASES:
        return UID(TS_ALIASES[s.lower()])
    uid = UID(s)
    if uid not in ALL_TRANSFER_SYNTAXES:
        raise ValueError(f"unsupported transfer syntax {ts!r}; use one of {[str(u) for u in ALL_TRANSFER_SYNTAXES]}")
    return uid


# --------------------------------------------------------------------------- header values


def ds_str(v, nd=6) -> str:
    """DS string for a float (≤ 16 chars)."""
    s = f"{float(v):.{nd}g}"
    return s if len(s) <= 16 else f"{float(v):.8g}"


def ds_vec(v, nd=6) -> list[str]:
    """DS strings for a vector."""
    return [ds_str(x, nd) for x in v]

# --------------------------------------------------------------------------- pixel encoding


def ct_stored(hu: np.ndarray, vst: VendorStyle):
    inter, slope = vst.ct_intercept, 1.0
    stored = np.rint((hu - inter) / slope)
    if vst.ct_signed:
        lo, hi = -(2 ** (vst.ct_bits_stored - 1)), 2 ** (vst.ct_bits_stored - 1) - 1
        return np.clip(stored, lo, hi).astype(np.int16), inter, slope, 1
    return np.clip(stored, 0, 2 ** vst.ct_bits_stored - 1).astype(np.uint16), inter, slope, 0


def mr_stored(img: np.ndarray, vst: VendorStyle, kind: SeriesKind, ref: float):
    if kind == SeriesKind.SWI_PHASE:  # radians in
        if vst.vendor == Vendor.GE:  # signed milliradians
            return np.rint(img * 1000).astype(np.int16), 0.0, 1.0, 1
        if vst.vendor == Vendor.PHILIPS:
            slope = 2 * math.pi / 4095
            return np.clip(np.rint((img + math.pi) / slope), 0, 4095).astype(np.uint16), -math.pi, slope, 0
        return np.clip(np.rint((img / math.pi) * 2048 + 2048), 0, 4095).astype(np.uint16), -4096.0, 2.0, 0
    scale = 3000.0 / max(ref, 1e-6)
    vals = np.clip(np.rint(img * scale), 0, 4095)
    if vst.vendor == Vendor.PHILIPS:
        slope = 1.0 + (abs(hash(kind.value)) % 100) / 80.0
        vals = np.clip(np.rint(img * scale / slope), 0, 4095)
        return vals.astype(np.uint16), 0.0, slope, 0
    if vst.mr_signed:
        return vals.astype(np.int16), 0.0, 1.0, 1
    return vals.astype(np.uint16), 0.0, 1.0, 0


def set_pixels(ds: Dataset, arr: np.ndarray, bits_stored: int, signed: int):
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(arr.shape[-2]), int(arr.shape[-1])
    ds.BitsAllocated = 16
    ds.BitsStored = int(bits_stored)
    ds.HighBit = int(bits_stored) - 1
    ds.PixelRepresentation = int(signed)
    ds.PixelData = np.ascontiguousarray(arr).tobytes()
    ds["PixelData"].VR = "OW"


def save(ds: Dataset, sop_class: str, sop_uid: str, path: Path, ts: UID):
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.InstanceCreationDate = ds.get("StudyDate", "")
    ds.InstanceCreationTime = ds.get("StudyTime", "")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPLEMENTATION_UID
    meta.ImplementationVersionName = "SVDMARK_PHANTOM"
    ds.file_meta = meta
    path.parent.mkdir(parents=True, exist_ok=True)
    if ts in (ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian):
        meta.TransferSyntaxUID = ts
        ds.save_as(path, enforce_file_format=True)
    elif ts in (RLELossless, JPEGLSLossless, JPEG2000Lossless):
        ds.compress(ts, encoding_plugin="pylibjpeg" if ts == RLELossless else "")
        ds.save_as(path, enforce_file_format=True)
    elif ts == JPEGLosslessSV1:
        with tempfile.TemporaryDirectory() as td:
            tmp = Path(td) / "in.dcm"
            ds.save_as(tmp, enforce_file_format=True)
            r = subprocess.run([DCMCJPEG, "+e1", "+un", str(tmp), str(path)], capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(f"dcmcjpeg failed ({r.returncode}): {r.stderr.strip()}")
    else:  # pragma: no cover - resolve_ts guards this
        raise ValueError(ts)
    return path

"""Whether a source image went through lossy compression: the volume then carries a quality warning.

The listener accepts lossy JPEG / JPEG 2000 / JPEG-LS near-lossless / HTJ2K CT and MR (a PACS forwarding a
study sends what it stores); measurements on them are made, and the SR and summary say the source was lossy.
"""
from __future__ import annotations

import pydicom
from pydicom.uid import HTJ2K, JPEG2000, JPEG2000MC, JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLSNearLossless

# Transfer syntaxes whose pixel data may have lost information (PS3.5 8.2; 4.91/4.93/4.203 may also be
# reversible: then Lossy Image Compression (0028,2110) "00" says so).
LOSSY_TRANSFER_SYNTAXES = frozenset({JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLSNearLossless, JPEG2000, JPEG2000MC,
                                     HTJ2K})
LOSSY_WARNING = "lossy-compressed source"


def is_lossy(ds: pydicom.Dataset) -> bool:
    """Lossy Image Compression (0028,2110) "01", or a lossy transfer syntax not declared reversible."""
    meta = getattr(ds, "file_meta", None)
    return lossy_flag(ds.get("LossyImageCompression"), getattr(meta, "TransferSyntaxUID", None) if meta else None)


def lossy_flag(lossy_image_compression, transfer_syntax) -> bool:
    """:func:`is_lossy` from the two values it reads."""
    flag = str(lossy_image_compression or "").strip()
    return flag == "01" or (transfer_syntax in LOSSY_TRANSFER_SYNTAXES and flag != "00")

"""The pydicom test corpus (pydicom's own test files and the ``pydicom-data`` package): real DICOM files
from many sources that nobody here wrote. Helpers to find its CT/MR series and its character sets; no tests.

What the corpus holds (pydicom 3, pydicom-data 1.0), and what each CT/MR series is:

==========================================  ===================================================================
dicomdirtests/98892001/CT5N (5 files)       GE "SmartScore - Gated 0.5 sec": cardiac calcium-score CT (16 px)
dicomdirtests/98892001/CT2N (2)             GE scout (localiser)
dicomdirtests/77654033/CT2 (4)              GE "Routine Brain" head CT, 16 px, 200 mm gap between slices
dicomdirtests/98892003/MR1, MR2 (3 + 6)     GE fast localisers / pilots (body)
dicomdirtests/98892003/MR700 (7)            MR angiography projections
dicomdirtests/TINY_ALPHA (50)               CT without geometry or pixels (a File-set test)
CT_small.dcm                                chest/spine CT with contrast (ISOVUE), one slice
693_*.dcm                                   head CT "5/5mm Plain", one slice (J2KI/UNCI marked DERIVED)
J2K_pixelrep_mismatch.dcm                   head CT (skull base), one slice, ISO 2022 IR 13\\ISO 2022 IR 87
bad_sequence.dcm                            CT, body part NECK (spine), one slice
explicit_VR-UN.dcm                          CT pancreas (abdomen) secondary capture, one slice
eCT_Supplemental.dcm                        enhanced CT, DERIVED
MR_small*.dcm, MR_truncated.dcm             MR, DERIVED, one 64 px slice
MR2_*.dcm                                   MR shoulder (study description SHOULDER), one slice
MR-SIEMENS-DICOM-WithOverlays.dcm,          MR abdomen (body part ABDOMEN)
examples_overlay.dcm
emri_small*.dcm                             enhanced MR head, 10 frames, not SWI
==========================================  ===================================================================

There is no knee or spine MR *volume* in the corpus (only the localisers above); the tests generate
those (``tests/body_phantoms.py``).
"""
from __future__ import annotations

import os
import warnings
from collections import defaultdict
from pathlib import Path

import pydicom
import pydicom.data


def roots() -> list[Path]:
    out = [Path(pydicom.data.__file__).parent / "test_files"]
    try:
        import data_store  # the pydicom-data package

        out.append(Path(data_store.__file__).parent / "data")
    except ImportError:  # pragma: no cover - a test extra
        pass
    return out


def _read(path: Path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return pydicom.dcmread(path, **kw)
        except Exception:
            return None


def files() -> list[Path]:
    """Every DICOM file of the corpus (DICOMDIRs excluded), sorted."""
    out = []
    for root in roots():
        for dirpath, _, names in os.walk(root):
            for name in sorted(names):
                path = Path(dirpath) / name
                ds = _read(path, stop_before_pixels=True)
                if ds is not None and "DirectoryRecordSequence" not in ds:
                    out.append(path)
    return sorted(out)


def ct_mr_series() -> dict[str, list[Path]]:
    """CT and MR files grouped by folder and SeriesInstanceUID: ``{"<folder>/<series uid>": [paths]}``."""
    groups: dict[str, list[Path]] = defaultdict(list)
    for path in files():
        ds = _read(path, stop_before_pixels=True)
        if ds is not None and ds.get("Modality") in ("CT", "MR"):
            key = f"{path.parent.name}/{ds.get('SeriesInstanceUID', path.name)}"
            groups[key].append(path)
    return dict(sorted(groups.items()))


def with_charset() -> dict[str, list[Path]]:
    """Files that carry a Specific Character Set, grouped by its value as written (``"\\ISO 2022 IR 87"``)."""
    groups: dict[str, list[Path]] = defaultdict(list)
    for path in files() + sorted(Path(p) for p in pydicom.data.get_charset_files("*.dcm")):
        ds = _read(path, stop_before_pixels=True)
        if ds is None or "SpecificCharacterSet" not in ds:
            continue
        raw = ds.get_item(0x00080005).value
        text = raw.decode("ascii", "replace") if isinstance(raw, bytes) else (
            raw if isinstance(raw, str) else "\\".join(raw))
        if path not in groups[text]:
            groups[text].append(path)
    return dict(sorted(groups.items()))


def dataset(path: Path):
    return _read(path)

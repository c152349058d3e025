"""Acquisition descriptors of a series for the research table, from its DICOM header.

Study date (ISO ``YYYY-MM-DD``), scanner manufacturer and model, reconstruction kernel, slice
thickness, the scanner's software versions, the patient's age in whole years and sex. Never the
patient's name, ID or birth date: age comes from Patient's Age, else from the birth date and the
study date, and only the age leaves this module.

Date shifting (``shift_dates=True``, off by default): every date of one patient moves by the same
number of days, drawn from the patient's ID with the pseudonymisation key (HMAC-SHA256), between
-365 and +365, never 0. Intervals between a patient's studies are kept; the calendar date is not.
The offset depends only on key and patient, so runs with the same key agree.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re

MAX_SHIFT_DAYS = 365
DESCRIPTOR_COLUMNS = ("study_date", "study_date_shifted", "manufacturer", "scanner_model", "kernel",
                      "slice_thickness_mm", "scanner_software", "patient_age_years", "patient_sex")


def shift_days(patient_id: str, key: bytes) -> int:
    """The patient's date offset in days: keyed, in [-365, 365], never 0."""
    digest = hmac.new(key, b"svdmark-date-shift\0" + patient_id.encode("utf-8"), hashlib.sha256).digest()
    n = int.from_bytes(digest[:8], "big") % (2 * MAX_SHIFT_DAYS)
    return n - MAX_SHIFT_DAYS if n < MAX_SHIFT_DAYS else n - MAX_SHIFT_DAYS + 1


def _date(value) -> dt.date | None:
    text = str(value or "").strip()
    if not re.fullmatch(r"\d{8}", text):
        return None
    try:
        return dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None


def _age_years(header, study: dt.date | None) -> int | None:
    """Patient's Age in whole years (``065Y``, ``018M``, ``104W``, ``400D``), else from birth and study date."""
    m = re.fullmatch(r"(\d{3})([YMWD])", str(header.get("PatientAge", "") or "").strip())
    if m:
        n, unit = int(m[1]), m[2]
        return {"Y": n, "M": n // 12, "W": n // 52, "D": n // 365}[unit]
    born = _date(header.get("PatientBirthDate"))
    if born is None or study is None or born > study:
        return None
    return study.year - born.year - ((study.month, study.day) < (born.month, born.day))


def _text(value) -> str | None:
    if value is None:
        return None
    items = list(value) if not isinstance(value, str) and hasattr(value, "__iter__") else [value]
    text = "/".join(str(v).strip() for v in items if str(v).strip())
    return text or None


def _float(value) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if x == x else None


def descriptors(header, key: bytes, shift_dates: bool = False) -> dict:
    """The ``DESCRIPTOR_COLUMNS`` of one series from its header (a pydicom Dataset)."""
    study = _date(header.get("StudyDate")) or _date(header.get("SeriesDate")) or _date(header.get("AcquisitionDate"))
    shown = study
    if study is not None and shift_dates:
        pid = str(header.get("PatientID", "") or "").strip()
        shown = study + dt.timedelta(days=shift_days(pid, key)) if pid else None  # no ID: no consistent shift
    sex = str(header.get("PatientSex", "") or "").strip().upper()
    return {
        "study_date": shown.isoformat() if shown else None,
        "study_date_shifted": bool(shift_dates) and shown is not None,
        "manufacturer": _text(header.get("Manufacturer")),
        "scanner_model": _text(header.get("ManufacturerModelName")),
        "kernel": _text(header.get("ConvolutionKernel")),
        "slice_thickness_mm": _float(header.get("SliceThickness")),
        "scanner_software": _text(header.get("SoftwareVersions")),
        "patient_age_years": _age_years(header, study),
        "patient_sex": sex if sex in ("M", "F", "O") else None,
    }

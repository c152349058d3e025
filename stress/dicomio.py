"""Minimal DICOM writer (pydicom only): CT Image Storage and MR Image Storage, one file per slice.

Vendor header styles for Siemens, GE, Philips and Canon: description, ImageType,
kernel / sequence names, rescale convention, pixel representation, transfer
syntax. Gantry tilt is written as scanners store it: tilted
ImageOrientationPatient, GantryDetectorTilt, and slice positions either sheared
(table steps along z) or along the tilted normal.
"""
from __future__ import annotations

import datetime as _dt
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ROOT = "1.2.826.0.1.3680043.8.498."

CT_VENDORS = {
    "siemens": dict(Manufacturer="SIEMENS", ManufacturerModelName="SOMATOM Definition AS+",
                    kernels={"soft": "H31s", "standard": "J40s", "sharp-brain": "Hr40"},
                    desc="Head {thk} {kernel}", body="HEAD", intercept=-1024.0, signed=0, ts="explicit",
                    image_type=["ORIGINAL", "PRIMARY", "AXIAL"], protocol="Routine_Head"),
    "ge": dict(Manufacturer="GE MEDICAL SYSTEMS", ManufacturerModelName="Revolution CT",
               kernels={"soft": "SOFT", "standard": "STANDARD", "sharp-brain": "DETAIL"},
               desc="{thk}mm Stnd Brain", body="HEAD", intercept=-1024.0, signed=1, ts="implicit",
               image_type=["ORIGINAL", "PRIMARY", "AXIAL"], protocol="5.1 Routine Head"),
    "philips": dict(Manufacturer="Philips", ManufacturerModelName="Ingenuity CT",
                    kernels={"soft": "UB", "standard": "UC", "sharp-brain": "B"},
                    desc="Brain {thk}mm", body="BRAIN", intercept=-1000.0, signed=0, ts="explicit",
                    image_type=["ORIGINAL", "PRIMARY", "AXIAL"], protocol="Brain routine"),
    "canon": dict(Manufacturer="TOSHIBA", ManufacturerModelName="Aquilion ONE",
                  kernels={"soft": "FC21", "standard": "FC26", "sharp-brain": "FC41"},
                  desc="HEAD {thk} {kernel}", body=None, intercept=0.0, signed=1, ts="explicit",
                  image_type=["ORIGINAL", "PRIMARY", "AXIAL", "HELICAL"], protocol="Head plain"),
}

MR_VENDORS = {
    "siemens": dict(Manufacturer="SIEMENS", model={1.5: "MAGNETOM Aera", 3.0: "MAGNETOM Skyra"},
                    desc="SWI_Images", protocol="t2_swi_tra_p2_{thk}mm",
                    image_type=["ORIGINAL", "PRIMARY", "M", "SWI", "NORM", "DIS2D"], seq="*swi3d1r",
                    slope=None, ts="explicit"),
    "ge": dict(Manufacturer="GE MEDICAL SYSTEMS", model={1.5: "Optima MR450w", 3.0: "Discovery MR750"},
               desc="Ax SWAN", protocol="SWAN brain", image_type=["ORIGINAL", "PRIMARY", "OTHER", "SWAN"],
               seq="swan", slope=None, ts="implicit"),
    "philips": dict(Manufacturer="Philips Medical Systems", model={1.5: "Ingenia", 3.0: "Achieva dStream"},
                    desc="SWIp", protocol="SWIp_3D_tra", image_type=["ORIGINAL", "PRIMARY", "M_SWI", "M", "SWI"],
                    seq="FFE3D", slope=(1.2345, 0.0), ts="explicit"),
    "canon": dict(Manufacturer="CANON_MEC", model={1.5: "Vantage Orian", 3.0: "Vantage Galan 3T"},
                  desc="SWI FSBB tra", protocol="SWI", image_type=["ORIGINAL", "PRIMARY", "OTHER", "SWI"],
                  seq="FSBB", slope=None, ts="explicit"),
}


def uid(*parts) -> str:
    return generate_uid(prefix=ROOT, entropy_srcs=["svdmark-stress", *[str(p) for p in parts]])


def _ds(v: float, n: int = 6) -> str:
    s = f"{v:.{n}f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def _common(ds: Dataset, study: dict, series_uid: str, number: int) -> None:
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = study["patient_name"]
    ds.PatientID = study["patient_id"]
    ds.PatientBirthDate = study["birth_date"]
    ds.PatientSex = study["sex"]
    ds.PatientAge = f"{study['age']:03d}Y"
    ds.StudyInstanceUID = study["study_uid"]
    ds.StudyDate = study["date"]
    ds.StudyTime = "101500"
    ds.SeriesDate = study["date"]
    ds.AccessionNumber = study["accession"]
    ds.StudyID = "1"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = study["study_description"]
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = number
    ds.FrameOfReferenceUID = study["for_uid"]
    ds.PositionReferenceIndicator = ""
    ds.PatientPosition = "HFS"
    ds.InstitutionName = "Stress Test Hospital"


def write_series(out_dir: Path, *, modality: str, vendor: str, stored: list[np.ndarray], acq, study: dict,
                 series_uid: str, slope: float, intercept: float, signed: int, extra: dict, seed: int) -> list[str]:
    """Write one file per slice; returns the SOPInstanceUIDs in slice order."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sop_class = CT_IMAGE_STORAGE if modality == "CT" else MR_IMAGE_STORAGE
    ts = ImplicitVRLittleEndian if extra.pop("_ts", "explicit") == "implicit" else ExplicitVRLittleEndian
    uids = []
    n = len(stored)
    order = np.random.default_rng(seed).permutation(n)  # files are named in no geometric order
    for k in range(n):
        sop = uid(series_uid, k)
        uids.append(sop)
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ts
        ds.file_meta.MediaStorageSOPClassUID = sop_class
        ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.file_meta.ImplementationClassUID = ROOT + "1"
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = sop
        ds.Modality = modality
        _common(ds, study, series_uid, extra.get("SeriesNumber", 2))
        for key, val in extra.items():
            if key != "SeriesNumber" and not key.startswith("_"):
                setattr(ds, key, val)
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [_ds(v, 4) for v in acq.positions[k]]
        ds.ImageOrientationPatient = [_ds(v, 6) for v in (*acq.row_dir, *acq.col_dir)]
        ds.SliceLocation = _ds(float(acq.positions[k] @ acq.normal), 3)
        ds.PixelSpacing = [_ds(acq.spacing[0], 6), _ds(acq.spacing[1], 6)]
        ds.SliceThickness = _ds(acq.thickness, 4)
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = stored[k].shape
        ds.BitsAllocated = 16
        ds.BitsStored = 16 if signed else 12 if stored[k].max() < 4096 else 16
        ds.HighBit = ds.BitsStored - 1
        ds.PixelRepresentation = signed
        if slope is not None:
            ds.RescaleSlope = _ds(slope, 6)
            ds.RescaleIntercept = _ds(intercept, 4)
            if modality == "CT":
                ds.RescaleType = "HU"
        arr = stored[k].astype(np.int16 if signed else np.uint16)
        ds.PixelData = arr.tobytes()
        ds.save_as(out_dir / f"IM{order[k] + 1:05d}.dcm", enforce_file_format=True)
    return uids


def study_info(rng: np.random.Generator, task: str, seed: int, age: int) -> dict:
    date = _dt.date(2024, 1, 1) + _dt.timedelta(days=int(rng.integers(0, 600)))
    return {
        "patient_name": f"STRESS^{task.upper()}{seed}", "patient_id": f"ST{task[0].upper()}{seed}",
        "birth_date": f"{date.year - age}0101", "sex": str(rng.choice(["F", "M"])), "age": age,
        "study_uid": uid(task, seed, "study"), "for_uid": uid(task, seed, "for"), "date": date.strftime("%Y%m%d"),
        "accession": f"A{seed:08d}",
        "study_description": "CT HEAD WITHOUT CONTRAST" if task == "wml" else "MRI BRAIN",
    }

"""CT Image Storage writer with a few vendor header styles (explicit VR little endian, one file per slice,
file names in shuffled order). UIDs, dates and names are derived from the seed, so a case is reproducible.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"

STYLES = {
    "SIEMENS": dict(
        manufacturer="SIEMENS", models=["SOMATOM Definition AS+", "SOMATOM Force", "SOMATOM go.Top"],
        kernels={"soft": ["H30s", "J30s", "Hr32"], "standard": ["H40s", "J40s", "Hr40"],
                 "sharp": ["H45s", "J45s", "Hr44"]},
        descriptions=["Head {t:.1f} {k}", "Brain  {t:.1f}  {k}", "HEAD ROUTINE {t:g}mm"],
        intercept=-1024.0, unsigned=False, pad_hu=-3024.0, software="syngo CT VA48A",
    ),
    "GE": dict(
        manufacturer="GE MEDICAL SYSTEMS", models=["Revolution CT", "Discovery CT750 HD", "LightSpeed VCT"],
        kernels={"soft": ["SOFT"], "standard": ["STANDARD", "STND"], "sharp": ["DETAIL"]},
        descriptions=["HEAD {t:g}mm", "{t:g}mm Stnd", "Routine Head {t:g}"],
        intercept=-1024.0, unsigned=False, pad_hu=-3024.0, software="gmp_vct.42",
    ),
    "PHILIPS": dict(
        manufacturer="Philips", models=["Brilliance 64", "iCT 256", "IQon - Spectral CT"],
        kernels={"soft": ["UA", "UB"], "standard": ["UB", "UC"], "sharp": ["UC", "EC"]},
        descriptions=["Brain {t:g}mm", "HEAD SEQ {t:g}", "Hersenen {t:g}mm"],
        intercept=-1024.0, unsigned=True, pad_hu=-1024.0, software="4.1.6",
    ),
    "CANON": dict(
        manufacturer="CANON_MEC", models=["Aquilion ONE", "Aquilion Prime SP", "Aquilion Lightning"],
        kernels={"soft": ["FC21", "FC20"], "standard": ["FC26", "FC23"], "sharp": ["FC43", "FC41"]},
        descriptions=["Brain {t:g}mm", "HEAD {t:g}", "Cerebrum {t:.1f}"],
        intercept=-1000.0, unsigned=True, pad_hu=-1000.0, software="V10.2",
    ),
}


def draw_style(rng: np.random.Generator, vendor: str, kernel_class: str, thickness: float) -> dict:
    st = STYLES[vendor]
    kernel = str(rng.choice(st["kernels"][kernel_class]))
    desc = str(rng.choice(st["descriptions"])).format(t=thickness, k=kernel)
    return dict(manufacturer=st["manufacturer"], model=str(rng.choice(st["models"])), kernel=kernel,
                description=desc, intercept=st["intercept"], unsigned=st["unsigned"], pad_hu=st["pad_hu"],
                software=st["software"], body_part=str(rng.choice(["HEAD", "BRAIN", ""], p=[0.6, 0.2, 0.2])),
                age=int(rng.integers(58, 95)), sex=str(rng.choice(["F", "M"])),
                date=f"2025{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}",
                number_from_top=bool(rng.random() < 0.4))


def _ds(v: float) -> str:
    """A DICOM decimal string: at most six decimals, no trailing zeros."""
    s = f"{v:.6f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def uid(seed: int, what: str, namespace: str = "devset") -> str:
    """A deterministic UUID-derived UID (2.25.<128-bit integer>) of the seed and a role."""
    digest = hashlib.sha256(f"{namespace}:{seed}:{what}".encode()).hexdigest()[:32]
    return "2.25." + str(int(digest, 16))


def series_names(seed: int, n: int, rng: np.random.Generator, namespace: str = "devset"):
    """((study, series, frame of reference) UIDs, the n SOP Instance UIDs in slice order, the shuffled file numbers)."""
    uids = uid(seed, "study", namespace), uid(seed, "series", namespace), uid(seed, "for", namespace)
    return uids, [uid(seed, f"sop:{k}", namespace) for k in range(n)], rng.permutation(n) + 1


def new_slice_file(path: Path, sop_class: str, sop: str, version: str) -> FileDataset:
    """An empty Part 10 data set for one slice: File Meta (Explicit VR Little Endian) and character set."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = "1.2.826.0.1.3680043.8.498.1"
    meta.ImplementationVersionName = version
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop
    return ds


def set_patient_study(ds, style: dict, modality: str, accession: str, patient: tuple[str, str],
                      study_description: str) -> None:
    """The synthetic patient (``patient``: name, ID; no real person, an empty birth date), the study and the
    equipment."""
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = style["date"]
    ds.AccessionNumber = accession
    ds.Modality = modality
    ds.Manufacturer = style["manufacturer"]
    ds.InstitutionName = "DEVSET SYNTHETIC"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = study_description
    ds.SeriesDescription = style["description"]
    ds.ManufacturerModelName = style["model"]
    ds.PatientName, ds.PatientID = patient
    ds.PatientBirthDate = ""
    ds.PatientSex = style["sex"]
    ds.PatientAge = f"{style['age']:03d}Y"
    if style["body_part"]:
        ds.BodyPartExamined = style["body_part"]


def set_frame(ds, uids: tuple[str, str, str], k: int, n: int, style: dict, series_number: str, ipp: list,
              iop: list) -> None:
    """Study, series and frame of reference UIDs, numbering and the slice's position (``uids``: study, series,
    frame of reference)."""
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = uids
    ds.StudyID = "1"
    ds.SeriesNumber = series_number
    ds.AcquisitionNumber = "1"
    ds.InstanceNumber = str(n - k if style["number_from_top"] else k + 1)
    ds.ImagePositionPatient = ipp
    ds.ImageOrientationPatient = iop
    ds.PositionReferenceIndicator = ""


def write_series(out_dir: Path, seed: int, img: np.ndarray, outside: np.ndarray, geo, acq, style: dict,
                 rng: np.random.Generator) -> list[str]:
    """Write one file per slice; returns the SOPInstanceUIDs in slice order (ascending along the normal)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    n = img.shape[0]
    uids, sops, names = series_names(seed, n, rng)
    slope, icpt = 1.0, style["intercept"]
    lo, hi = (0, 65535) if style["unsigned"] else (-32768, 32767)
    pad = int(round(style["pad_hu"] - icpt))
    iop = [_ds(v) for v in (*geo.row, *geo.col)]
    for k in range(n):
        stored = np.rint((img[k] - icpt) / slope)
        stored = np.clip(stored, lo, hi)
        stored[outside] = pad
        arr = stored.astype(np.uint16 if style["unsigned"] else np.int16)
        ds = new_slice_file(out_dir / f"IM{names[k]}.dcm", CT_IMAGE_STORAGE, sops[k], "DEVSET_1")
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        set_patient_study(ds, style, "CT", f"DEV{seed}", (f"DEVSET^{seed}", f"DEVSET{seed}"), "CT HEAD")
        ds.StudyTime = ds.SeriesTime = "101500"
        ds.AcquisitionTime = ds.ContentTime = f"1016{k % 60:02d}"
        ds.SliceThickness = _ds(acq.thickness)
        ds.KVP = str(acq.kvp)
        ds.SoftwareVersions = style["software"]
        ds.ProtocolName = "DEVSET Head"
        ds.ReconstructionDiameter = _ds(acq.fov)
        ds.GantryDetectorTilt = _ds(acq.tilt_deg)
        ds.TableHeight = "150"
        ds.RotationDirection = "CW"
        ds.XRayTubeCurrent = str(int(acq.ctdi_mgy * 5))
        ds.ConvolutionKernel = style["kernel"]
        ds.FilterType = "HEAD FILTER"
        ds.PatientPosition = "HFS"
        ds.CTDIvol = round(float(acq.ctdi_mgy), 2)
        set_frame(ds, uids, k, n, style, "2", [_ds(v) for v in geo.ipp[k]], iop)
        ds.SliceLocation = _ds(float(geo.ipp[k] @ geo.normal))
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = arr.shape
        ds.PixelSpacing = [_ds(acq.pixel_spacing), _ds(acq.pixel_spacing)]
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0 if style["unsigned"] else 1
        ds.WindowCenter = "40"
        ds.WindowWidth = "80"
        ds.RescaleIntercept = _ds(icpt)
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.PixelData = arr.tobytes()
        ds.save_as(out_dir / f"IM{names[k]}.dcm", enforce_file_format=True)
    return sops


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
    s = f"{v:.6f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def uid(seed: int, what: str) -> str:
    """A deterministic UUID-derived UID (2.25.<128-bit integer>) of the seed and a role."""
    digest = hashlib.sha256(f"devset:{seed}:{what}".encode()).hexdigest()[:32]
    return "2.25." + str(int(digest, 16))


def write_series(out_dir: Path, seed: int, img: np.ndarray, outside: np.ndarray, geo, acq, style: dict,
                 rng: np.random.Generator) -> list[str]:
    """Write one file per slice; returns the SOPInstanceUIDs in slice order (ascending along the normal)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    n = img.shape[0]
    study, series, frame = uid(seed, "study"), uid(seed, "series"), uid(seed, "for")
    sops = [uid(seed, f"sop:{k}") for k in range(n)]
    names = rng.permutation(n) + 1
    slope, icpt = 1.0, style["intercept"]
    lo, hi = (0, 65535) if style["unsigned"] else (-32768, 32767)
    pad = int(round(style["pad_hu"] - icpt))
    iop = [_ds(v) for v in (*geo.row, *geo.col)]
    for k in range(n):
        stored = np.rint((img[k] - icpt) / slope)
        stored = np.clip(stored, lo, hi)
        stored[outside] = pad
        arr = stored.astype(np.uint16 if style["unsigned"] else np.int16)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = sops[k]
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = "1.2.826.0.1.3680043.8.498.1"
        meta.ImplementationVersionName = "DEVSET_1"
        ds = FileDataset(str(out_dir / f"IM{names[k]}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID = CT_IMAGE_STORAGE
        ds.SOPInstanceUID = sops[k]
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = style["date"]
        ds.StudyTime = ds.SeriesTime = "101500"
        ds.AcquisitionTime = ds.ContentTime = f"1016{k % 60:02d}"
        ds.AccessionNumber = f"DEV{seed}"
        ds.Modality = "CT"
        ds.Manufacturer = style["manufacturer"]
        ds.InstitutionName = "DEVSET SYNTHETIC"
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = "CT HEAD"
        ds.SeriesDescription = style["description"]
        ds.ManufacturerModelName = style["model"]
        ds.PatientName = f"DEVSET^{seed}"
        ds.PatientID = f"DEVSET{seed}"
        ds.PatientBirthDate = ""
        ds.PatientSex = style["sex"]
        ds.PatientAge = f"{style['age']:03d}Y"
        if style["body_part"]:
            ds.BodyPartExamined = style["body_part"]
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
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.StudyID = "1"
        ds.SeriesNumber = "2"
        ds.AcquisitionNumber = "1"
        ds.InstanceNumber = str(n - k if style["number_from_top"] else k + 1)
        ds.ImagePositionPatient = [_ds(v) for v in geo.ipp[k]]
        ds.ImageOrientationPatient = iop
        ds.FrameOfReferenceUID = frame
        ds.PositionReferenceIndicator = ""
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


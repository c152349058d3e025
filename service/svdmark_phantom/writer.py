"""Vendor-styled DICOM writers: CT / MR Image Storage, Enhanced MR Image Storage, studies with distractors."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from pydicom import Dataset, dcmread
from pydicom.sequence import Sequence
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    MRImageStorage,
    RLELossless,
)
from scipy import ndimage

from svdmark.domain import BurdenGrade

from .encoding import ct_stored, ds_str, ds_vec, mr_stored, resolve_ts, save, set_pixels
from .enhanced import write_enhanced_mr
from .generate import make_ncct, make_swi
from .types import Phantom, SeriesKind, SeriesTruth, StudyInfo, StudyTruth, Vendor, synthetic_uid
from .vendors import SeriesStyle, VendorStyle, series_style, style

# --------------------------------------------------------------------------- derived images


def _rng(p: Phantom, kind: SeriesKind, salt: int = 0):
    return np.random.default_rng([int(p.seed), 0xD1C, list(SeriesKind).index(kind), salt])


def bone_kernel(p: Phantom) -> np.ndarray:
    """A sharp (bone) kernel reconstruction of the same CT: edge enhancement and more noise."""
    img = p.image
    rng = _rng(p, SeriesKind.CT_BONE)
    blur = ndimage.gaussian_filter(img, (0, 1.0, 1.0))
    out = img + 1.6 * (img - blur)
    noise = rng.standard_normal(img.shape, dtype=np.float32)
    noise = noise - ndimage.gaussian_filter(noise, (0, 1.5, 1.5)) * 0.5
    sd = float(p.meta.get("noise_hu", 4.0)) * 3.5
    body = img > -900
    out = out + noise * np.float32(sd) * body
    return np.clip(out, -1024, 3071).astype(np.float32)


def swi_phase(p: Phantom) -> np.ndarray:
    """High-pass filtered phase (radians) consistent with the dark veins / bleeds of the magnitude."""
    img = np.maximum(p.image, 1e-3)
    rng = _rng(p, SeriesKind.SWI_PHASE)
    thr = np.percentile(img, 60) * 0.25
    head = ndimage.binary_erosion(img > thr, iterations=1)
    logm = np.log(img)
    hp = logm - ndimage.gaussian_filter(logm, (1.0, 4.0, 4.0))
    ph = -1.6 * hp * head
    ph += rng.normal(0, 0.05, img.shape).astype(np.float32) * head
    ph = np.where(head, ph, rng.uniform(-np.pi, np.pi, img.shape).astype(np.float32))
    return np.clip(ph, -np.pi, np.pi).astype(np.float32)


def swi_minip(p: Phantom, slab_mm: float = 8.0) -> tuple[np.ndarray, float]:
    w = max(3, int(round(slab_mm / max(p.spacing_between_slices, 0.1))))
    return ndimage.minimum_filter1d(p.image, w, axis=0, mode="nearest"), w * p.spacing_between_slices


def swi_raw_magnitude(p: Phantom) -> np.ndarray:
    """GRE magnitude before phase-mask multiplication: veins less dark."""
    sm = ndimage.median_filter(p.image, size=(1, 3, 3))
    return np.where(p.image < sm, p.image + 0.6 * (sm - p.image), p.image).astype(np.float32)


def mr_contrast(p: Phantom, kind: SeriesKind) -> np.ndarray:
    """T1-like or FLAIR-like remap of the SWI volume (a distractor, not a physical simulation)."""
    img = p.image
    ref = float(np.percentile(img[img > np.percentile(img, 50)], 50)) or 1.0
    x = img / ref
    rng = _rng(p, kind)
    noise = rng.normal(0, 0.02, img.shape).astype(np.float32)
    if kind == SeriesKind.T1:  # CSF dark, WM brighter than GM
        y = np.where(x > 1.35, 0.25, np.where(x > 0.6, 1.45 - 0.55 * x, x * 1.5))
    else:  # FLAIR: CSF dark, GM slightly brighter than WM
        y = np.where(x > 1.35, 0.15, x * 0.9)
    return np.clip((y + noise) * ref, 0, None).astype(np.float32)


def _localizer_frames(p: Phantom):
    """(image, position, row_dir, col_dir, pixel_spacing) of each localizer frame."""
    img = p.image
    frames = []
    order = np.argsort(p.positions[:, 2])[::-1]  # superior first (top of the image)
    vol = img[order]
    step = abs(float(p.positions[order[0], 2] - p.positions[order[-1], 2])) / max(len(order) - 1, 1)
    ps = p.pixel_spacing[0]
    zoom = max(step / ps, 1e-3)
    if p.modality == "CT":
        att = np.clip(vol + 1000.0, 0, None) / 1000.0
        for axis, row_dir in ((2, (0.0, 1.0, 0.0)), (1, (1.0, 0.0, 0.0))):  # lateral, then AP
            proj = att.sum(axis=axis) * ps
            proj = ndimage.zoom(proj, (zoom, 1.0), order=1)
            proj = proj / max(float(proj.max()), 1e-6) * 2600.0 - 1024.0
            top = p.positions[order[0]].copy()
            if axis == 2:
                top[0] = float(p.index_to_patient(0, 0, img.shape[2] / 2)[0])
            else:
                top[1] = float(p.index_to_patient(0, img.shape[1] / 2, 0)[1])
            frames.append((proj.astype(np.float32), top, row_dir, (0.0, 0.0, -1.0), (ps, ps)))
        return frames
    nz, nr, nc = img.shape
    mid = nz // 2
    frames.append((img[mid], p.positions[mid], p.row_direction, p.column_direction, p.pixel_spacing))
    for axis in (2, 1):
        if axis == 2:
            sl = ndimage.zoom(vol[:, :, nc // 2], (zoom, 1.0), order=1)
            top = p.index_to_patient(order[0], 0, nc // 2)
            row_dir = p.column_direction
        else:
            sl = ndimage.zoom(vol[:, nr // 2, :], (zoom, 1.0), order=1)
            top = p.index_to_patient(order[0], nr // 2, 0)
            row_dir = p.row_direction
        frames.append((sl.astype(np.float32), np.asarray(top, float), row_dir, (0.0, 0.0, -1.0), (ps, ps)))
    return frames


# --------------------------------------------------------------------------- header helpers


def _pick(options, seed):
    return options[int(seed) % len(options)]


def _base_dataset(p: Phantom, vst: VendorStyle, sst: SeriesStyle, kind: SeriesKind, study: StudyInfo,
                  series_uid: str, series_number: int, modality: str, kernel: str) -> Dataset:
    ds = Dataset()
    if vst.charset:
        ds.SpecificCharacterSet = vst.charset
    # patient
    ds.PatientName = study.patient_name
    ds.PatientID = study.patient_id
    ds.PatientBirthDate = study.patient_birth_date
    ds.PatientSex = study.patient_sex
    ds.PatientAge = study.patient_age
    ds.PatientIdentityRemoved = "NO"  # synthetic phantom, never real patient data
    # study
    ds.StudyInstanceUID = study.study_uid
    ds.StudyDate = study.study_date
    ds.StudyTime = study.study_time
    ds.ReferringPhysicianName = study.referring_physician
    ds.StudyID = study.study_id
    ds.AccessionNumber = study.accession_number
    ds.StudyDescription = study.study_description
    # series
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = int(series_number)
    t0 = int(study.study_time[:2]) * 3600 + int(study.study_time[2:4]) * 60 + int(study.study_time[4:6])
    ts = t0 + 60 * int(series_number)
    ds.SeriesDate = study.study_date
    ds.SeriesTime = f"{(ts // 3600) % 24:02d}{(ts // 60) % 60:02d}{ts % 60:02d}.000000"
    thk = f"{p.slice_thickness:.1f}" if vst.vendor != Vendor.GE else f"{p.slice_thickness:g}"
    ds.SeriesDescription = sst.description.format(thk=thk, kernel=kernel)
    ds.ProtocolName = sst.protocol
    ds.BodyPartExamined = "HEAD"
    ds.PatientPosition = "HFS"
    # frame of reference
    ds.FrameOfReferenceUID = p.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    # equipment
    ct = modality == "CT"
    ds.Manufacturer = vst.manufacturer_ct if ct else vst.manufacturer_mr
    ds.InstitutionName = study.institution_name or vst.institution
    ds.StationName = vst.station
    ds.ManufacturerModelName = _pick(vst.models_ct if ct else vst.models_mr, p.seed)
    ds.DeviceSerialNumber = f"{10000 + p.seed % 89999}"
    ds.SoftwareVersions = vst.software_ct if ct else vst.software_mr
    ds.InstitutionalDepartmentName = "Radiologie" if vst.vendor == Vendor.SIEMENS else "RADIOLOGY"
    ds.AcquisitionNumber = 1 if kind != SeriesKind.LOCALIZER else 1
    ds.ImageType = list(sst.image_type)
    ds.BurnedInAnnotation = "NO"
    return ds


def _ct_attrs(ds: Dataset, p: Phantom, vst: VendorStyle, kind: SeriesKind, kernel: str, rng):
    ds.KVP = ds_str(_pick([120, 120, 100, 140], p.seed))
    ds.DataCollectionDiameter = "500"
    ds.ReconstructionDiameter = ds_str(p.pixel_spacing[1] * p.image.shape[2], 5)
    ds.DistanceSourceToDetector = "1085.6"
    ds.DistanceSourceToPatient = "595"
    ds.GantryDetectorTilt = ds_str(p.gantry_tilt_deg, 4)
    ds.TableHeight = ds_str(140 + (p.seed % 30), 5)
    ds.RotationDirection = "CW"
    ds.ExposureTime = str(1000)
    ds.XRayTubeCurrent = str(int(rng.integers(180, 350)))
    ds.Exposure = str(int(rng.integers(200, 400)))
    ds.FilterType = {"siemens": "FLAT", "ge": "HEAD FILTER", "philips": "B", "canon": "LARGE"}[vst.vendor.value]
    ds.GeneratorPower = str(int(rng.integers(30, 60)))
    ds.FocalSpots = ds_str(_pick([0.7, 1.2, 0.9], p.seed))
    ds.ConvolutionKernel = kernel
    ds.CTDIvol = round(float(rng.uniform(38, 60)), 2)
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "113690", "DCM", "IEC Head Dosimetry Phantom"
    ds.CTDIPhantomTypeCodeSequence = Sequence([code])
    ds.RescaleType = "HU"
    if vst.vendor != Vendor.PHILIPS:
        ds.SpiralPitchFactor = float(_pick([0.55, 0.6, 0.8], p.seed))
    if kind == SeriesKind.CT_CONTRAST:
        ds.ContrastBolusAgent = vst.contrast_agent
        ds.ContrastBolusRoute = "IV"
        ds.ContrastBolusVolume = "60"
        ds.ContrastBolusTotalDose = "60"
        ds.ContrastBolusIngredient = "IODINE"
        ds.ContrastBolusIngredientConcentration = "350"
        ds.ContrastBolusStartTime = "101500.000000"


def _mr_attrs(ds: Dataset, p: Phantom, vst: VendorStyle, sst: SeriesStyle, kind: SeriesKind, rng):
    f = vst.mr_field if vst.vendor != Vendor.SIEMENS or "Skyra" not in ds.ManufacturerModelName else 3.0
    if (p.meta or {}).get("field_t") == 1.5:  # a 1.5 T look (make_swi(field_t=1.5)) says so in its header
        f = 1.5
    ds.ScanningSequence = sst.scanning_sequence.split("\\") if "\\" in sst.scanning_sequence else sst.scanning_sequence
    ds.SequenceVariant = sst.sequence_variant.split("\\") if "\\" in sst.sequence_variant else sst.sequence_variant
    ds.ScanOptions = sst.scan_options.split("\\") if "\\" in sst.scan_options else sst.scan_options
    ds.MRAcquisitionType = "2D" if kind in (SeriesKind.FLAIR,) or kind == SeriesKind.LOCALIZER else "3D"
    ds.SequenceName = sst.sequence_name
    ds.AngioFlag = "N"
    if kind in (SeriesKind.T1, SeriesKind.FLAIR):
        ds.RepetitionTime = "2300" if kind == SeriesKind.T1 else "9000"
        ds.EchoTime = "2.98" if kind == SeriesKind.T1 else "81"
        ds.InversionTime = "900" if kind == SeriesKind.T1 else "2500"
        ds.FlipAngle = "9" if kind == SeriesKind.T1 else "150"
    else:
        ds.RepetitionTime = ds_str(27 if f >= 3 else 49)
        ds.EchoTime = ds_str(20 if f >= 3 else 40)
        ds.FlipAngle = "15"
    ds.NumberOfAverages = "1"
    ds.ImagingFrequency = ds_str(42.577478 * f, 8)
    ds.ImagedNucleus = "1H"
    ds.EchoNumbers = "1"
    ds.MagneticFieldStrength = ds_str(f)
    ds.SpacingBetweenSlices = ds_str(p.spacing_between_slices, 6)
    ds.NumberOfPhaseEncodingSteps = str(int(p.image.shape[1] * 0.8))
    ds.EchoTrainLength = "1"
    ds.PercentSampling = "100"
    ds.PercentPhaseFieldOfView = ds_str(100.0 * p.image.shape[1] / p.image.shape[2], 6)
    ds.PixelBandwidth = "120"
    ds.ReceiveCoilName = {"siemens": "HeadNeck_64", "ge": "HNS Head", "philips": "dS Head 32ch",
                          "canon": "Head SPEEDER"}[vst.vendor.value]
    ds.TransmitCoilName = "Body"
    ds.AcquisitionMatrix = [0, int(p.image.shape[2]), int(p.image.shape[1] * 0.8), 0]
    ds.InPlanePhaseEncodingDirection = "ROW"
    ds.SAR = ds_str(rng.uniform(0.05, 0.4), 5)
    ds.dBdt = "0"
    ds.VariableFlipAngleFlag = "N"


# --------------------------------------------------------------------------- write_series


def write_series(
    p: Phantom,
    out_dir,
    vendor="siemens",
    kind: SeriesKind | str | None = None,
    transfer_syntax=ExplicitVRLittleEndian,
    enhanced: bool = False,
    study: StudyInfo | None = None,
    series_number: int | None = None,
    *,
    series_uid: str | None = None,
    kernel: str | None = None,
    file_prefix: str = "IM",
) -> list[Path]:
    """Write one series of ``p`` in a vendor's style; returns the file paths (sorted by instance).

    ``kind`` chooses what is written from the phantom: the target itself (NCCT / SWI)
    or a distractor derived from it (CT_BONE, SWI_PHASE, SWI_MINIP, SWI_MAG, LOCALIZER,
    T1, FLAIR). CT_CONTRAST expects a phantom made with ``make_ncct(..., contrast=True)``.
    """
    vendor = Vendor(str(vendor.value if isinstance(vendor, Vendor) else vendor).lower())
    kind = SeriesKind(kind) if kind is not None else p.kind
    ts = resolve_ts(transfer_syntax)
    out_dir = Path(out_dir)
    vst = style(vendor)
    modality = p.modality
    if kind.modality != modality and kind != SeriesKind.LOCALIZER:
        raise ValueError(f"cannot write a {kind.value} series from a {modality} phantom")
    sst = series_style(vendor, kind, modality)
    study = study or StudyInfo.synthetic(p.seed, "ncct" if modality == "CT" else "swi", vendor.value)
    if series_number is None:
        series_number = {SeriesKind.LOCALIZER: 1, SeriesKind.NCCT: 2, SeriesKind.CT_BONE: 3,
                         SeriesKind.CT_CONTRAST: 5, SeriesKind.SWI_MAG: 7, SeriesKind.SWI_PHASE: 8,
                         SeriesKind.SWI: 9, SeriesKind.SWI_MINIP: 10, SeriesKind.T1: 4,
                         SeriesKind.FLAIR: 5}.get(kind, 2)
    series_uid = series_uid or synthetic_uid(study.study_uid, "series", series_number, kind.value, vendor.value)
    rng = _rng(p, kind, series_number)
    if modality == "CT":
        soft, bone = vst.ct_kernels
        kernel = kernel or (_pick(bone, p.seed) if kind == SeriesKind.CT_BONE else
                            sst.kernel if sst.kernel else _pick(soft, p.seed))
    else:
        kernel = ""

    # ---- the pixel volume and per-frame geometry
    thickness = p.slice_thickness
    if kind == SeriesKind.LOCALIZER:
        frames = _localizer_frames(p)
    else:
        if kind == SeriesKind.CT_BONE:
            vol = bone_kernel(p)
        elif kind == SeriesKind.SWI_PHASE:
            vol = swi_phase(p)
        elif kind == SeriesKind.SWI_MINIP:
            vol, thickness = swi_minip(p)
        elif kind == SeriesKind.SWI_MAG:
            vol = swi_raw_magnitude(p)
        elif kind in (SeriesKind.T1, SeriesKind.FLAIR):
            vol = mr_contrast(p, kind)
        else:
            vol = p.image
        frames = [(vol[k], p.positions[k], p.row_direction, p.column_direction, p.pixel_spacing)
                  for k in range(vol.shape[0])]
    ref = float(np.percentile(p.image, 99.5)) if modality == "MR" else 1.0

    base = _base_dataset(p, vst, sst, kind, study, series_uid, series_number, modality, kernel)
    if modality == "CT":
        _ct_attrs(base, p, vst, kind, kernel, rng)
        if kind == SeriesKind.LOCALIZER:
            for kw in ("GantryDetectorTilt", "SpiralPitchFactor", "ReconstructionDiameter"):
                if kw in base:
                    del base[kw]
    else:
        _mr_attrs(base, p, vst, sst, kind, rng)
    if enhanced:
        if modality != "MR":
            raise ValueError("enhanced=True is implemented for MR (Enhanced MR Image Storage)")
        return [write_enhanced_mr(base, p, frames, vst, sst, kind, ref, out_dir, series_uid, ts, thickness,
                                  file_prefix)]

    sop_class = CTImageStorage if modality == "CT" else MRImageStorage
    paths = []
    n = len(frames)
    order = list(range(n))
    t0 = int(study.study_time[:2]) * 3600 + int(study.study_time[2:4]) * 60 + 60 * int(series_number)
    normal = np.cross(np.asarray(p.row_direction), np.asarray(p.column_direction))
    for inst, k in enumerate(order, start=1):
        img, pos, rdir, cdir, ps = frames[k]
        ds = Dataset()
        ds.update(base)
        ds.InstanceNumber = inst
        tt = t0 + inst * (0.5 if modality == "CT" else 0.0)
        ds.ContentDate = study.study_date
        ds.ContentTime = f"{int(tt // 3600) % 24:02d}{int(tt // 60) % 60:02d}{int(tt % 60):02d}.{int((tt % 1) * 1e6):06d}"
        ds.AcquisitionDate = study.study_date
        ds.AcquisitionTime = ds.ContentTime
        ds.ImagePositionPatient = ds_vec(pos)
        ds.ImageOrientationPatient = ds_vec(list(rdir) + list(cdir), 8)
        ds.PixelSpacing = ds_vec(ps)
        ds.SliceThickness = ds_str(thickness)
        if kind == SeriesKind.LOCALIZER:
            ds.SliceLocation = ds_str(0.0)
        else:
            centre = np.asarray(pos) + (img.shape[1] - 1) / 2 * ps[1] * np.asarray(rdir) + (
                img.shape[0] - 1) / 2 * ps[0] * np.asarray(cdir)
            ds.SliceLocation = ds_str(float(centre[2]) if modality == "CT" else float(np.dot(centre, normal)), 7)
        if vst.images_in_acquisition:
            ds.ImagesInAcquisition = n
        if modality == "CT":
            arr, inter, slope, signed = ct_stored(img, vst)
            bits = vst.ct_bits_stored
            ds.RescaleIntercept = ds_str(inter)
            ds.RescaleSlope = ds_str(slope)
            if kind == SeriesKind.LOCALIZER:
                ds.WindowCenter, ds.WindowWidth = "500", "1000"
            elif kind == SeriesKind.CT_BONE:
                ds.WindowCenter, ds.WindowWidth = "700", "3200"
            elif kind == SeriesKind.CT_CONTRAST:
                ds.WindowCenter, ds.WindowWidth = "80", "300"
            else:
                ds.WindowCenter, ds.WindowWidth = (["40", "80"], ["80", "200"]) if vendor == Vendor.SIEMENS else ("40", "80")
        else:
            arr, inter, slope, signed = mr_stored(img, vst, kind, ref)
            bits = vst.mr_bits_stored if kind != SeriesKind.SWI_PHASE else (16 if signed else 12)
            if kind == SeriesKind.SWI_PHASE or vst.vendor == Vendor.PHILIPS:
                ds.RescaleIntercept = ds_str(inter)
                ds.RescaleSlope = ds_str(slope, 8)
                ds.RescaleType = "US"
            ds.WindowCenter = ds_str(2048 if kind == SeriesKind.SWI_PHASE else 1500)
            ds.WindowWidth = ds_str(4096 if kind == SeriesKind.SWI_PHASE else 3000)
        set_pixels(ds, arr, bits, signed)
        if ts in (JPEGLSLossless, JPEG2000Lossless, JPEGLosslessSV1, RLELossless) and signed:
            pass  # encoders handle signed data; BitsStored stays as the vendor sets it
        sop_uid = synthetic_uid(series_uid, "sop", inst)
        path = out_dir / f"{file_prefix}{inst:06d}.dcm"
        paths.append(save(ds, sop_class, sop_uid, path, ts))
    return paths


# --------------------------------------------------------------------------- write_study


def write_study(
    out_dir,
    seed: int = 0,
    kind: str = "ncct",
    vendor="siemens",
    distractors: bool = True,
    transfer_syntax=ExplicitVRLittleEndian,
    tilt_deg: float | None = 0.0,
    matrix=128,
    *,
    slice_thickness: float | None = None,
    wml_ml: float | None = None,
    n_cmb: int | None = None,
    enhanced: bool = False,
    mimics: bool = True,
    study: StudyInfo | None = None,
    n_slices: int | None = None,
) -> StudyTruth:
    """Write a whole study (target + distractors) under ``out_dir`` and return its truth.

    Layout: ``out_dir/<NN>_<kind>/IM000001.dcm ...`` and ``out_dir/truth.json``.
    ``tilt_deg=None`` samples a tilt (CT); ``matrix`` may be an int or (rows, cols).
    """
    kind = str(kind).lower()
    vendor = Vendor(str(vendor.value if isinstance(vendor, Vendor) else vendor).lower())
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([int(seed), 0x57D])
    study = study or StudyInfo.synthetic(seed, kind, vendor.value)
    ts = resolve_ts(transfer_syntax)
    written: list[SeriesTruth] = []

    def emit(ph, sk, number, target, ts_=ts, enh=False):
        folder = f"{number:02d}_{sk.value}"
        d = out_dir / folder
        if d.exists():
            shutil.rmtree(d)
        paths = write_series(ph, d, vendor=vendor, kind=sk, transfer_syntax=ts_, enhanced=enh, study=study,
                             series_number=number)
        h = dcmread(paths[0], stop_before_pixels=True)
        written.append(SeriesTruth(series_uid=str(h.SeriesInstanceUID), series_number=number, kind=sk.value,
                                   target=target, description=str(h.get("SeriesDescription", "")), folder=folder,
                                   n_instances=len(paths), transfer_syntax=str(ts_), sop_class_uid=str(h.SOPClassUID)))

    if kind == "ncct":
        if tilt_deg is None:
            tilt_deg = float(rng.choice([0.0, 0.0, rng.uniform(8, 30)]))
        thk = slice_thickness or float(rng.choice([2.5, 3.0, 4.0, 5.0]))
        p = make_ncct(seed=seed, matrix=matrix, slice_thickness=thk, tilt_deg=tilt_deg, wml_ml=wml_ml, mimics=mimics,
                      n_slices=n_slices)
        if distractors:
            emit(p, SeriesKind.LOCALIZER, 1, False)
        emit(p, SeriesKind.NCCT, 2, True)
        if distractors:
            emit(p, SeriesKind.CT_BONE, 3, False)
            pc = make_ncct(seed=seed, matrix=matrix, slice_thickness=thk, tilt_deg=0.0, wml_ml=wml_ml,
                           mimics=mimics, contrast=True, n_slices=n_slices)
            emit(pc, SeriesKind.CT_CONTRAST, 5, False)
        truth = StudyTruth(study_uid=study.study_uid, kind=kind, vendor=vendor.value, seed=int(seed),
                           series=tuple(written), truth_wml_ml=round(p.truth_wml_ml, 4), gantry_tilt_deg=float(tilt_deg),
                           matrix=tuple(p.image.shape[1:]), slice_thickness=p.slice_thickness, out_dir=str(out_dir))
    elif kind == "swi":
        thk = slice_thickness or float(rng.choice([1.0, 1.5, 2.0, 2.5]))
        p = make_swi(seed=seed, matrix=matrix, slice_thickness=thk, n_cmb=n_cmb, n_slices=n_slices)
        if distractors:
            emit(p, SeriesKind.LOCALIZER, 1, False)
            if vendor == Vendor.SIEMENS:
                emit(p, SeriesKind.SWI_MAG, 7, False)
            emit(p, SeriesKind.SWI_PHASE, 8, False)
        emit(p, SeriesKind.SWI, 9, True, enh=enhanced)
        if distractors:
            emit(p, SeriesKind.SWI_MINIP, 10, False)
            emit(p, SeriesKind.FLAIR, 4, False)
        n = p.n_microbleeds
        truth = StudyTruth(study_uid=study.study_uid, kind=kind, vendor=vendor.value, seed=int(seed),
                           series=tuple(written), microbleeds=tuple(p.microbleeds), cmb_count=n,
                           grade=int(BurdenGrade.from_count(n)), matrix=tuple(p.image.shape[1:]),
                           slice_thickness=p.slice_thickness, out_dir=str(out_dir))
    else:
        raise ValueError(f"kind must be 'ncct' or 'swi', not {kind!r}")
    (out_dir / "truth.json").write_text(json.dumps(truth.to_dict(), indent=2))
    return truth

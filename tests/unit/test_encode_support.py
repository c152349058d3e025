"""Small synthetic DICOM sources + AnalysisResults for the encoder tests (no tests here).

Built with pydicom alone so the encoder tests do not depend on the phantom
package. Kept tiny (64 x 64 matrices, a dozen slices).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from svdmark.domain import (
    AnalysisResult,
    CmbFindings,
    FrameRef,
    Interval,
    Microbleed,
    ModelSpec,
    Quality,
    RoutingDecision,
    RouteKind,
    Series,
    Task,
    Volume,
    WmlFindings,
)
from svdmark.rules import RuleSet

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"
FAKE_SHA = "fa4e" * 16  # a fake sha256 for tests, not of any real model

ROWS = COLS = 64
SLICES = 12


def _patient_study(ds: Dataset, study_uid: str, charset: str = "ISO_IR 100") -> None:
    ds.SpecificCharacterSet = charset
    ds.PatientName = "Müller^Jörg"
    ds.PatientID = "SVD-TEST-1"
    ds.PatientBirthDate = "19500101"
    ds.PatientSex = "M"
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = "20250101"
    ds.StudyTime = "120000"
    ds.AccessionNumber = "ACC1"
    ds.StudyID = "1"
    ds.ReferringPhysicianName = ""


def _file_meta(ds: Dataset) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta


def _image(rng: np.random.Generator, base: float, noise: float) -> np.ndarray:
    yy, xx = np.mgrid[:ROWS, :COLS]
    head = ((yy - ROWS / 2) ** 2 + (xx - COLS / 2) ** 2) < (ROWS * 0.42) ** 2
    return (np.where(head, base, -1000 if base > 0 and noise > 5 else 0) + rng.normal(0, noise, (ROWS, COLS)))


def ct_series(tilt_deg: float = 0.0, seed: int = 0) -> tuple[Series, Volume]:
    """Single-frame CT stack; with ``tilt_deg`` the image planes are tilted about x and the
    table moves along z, giving the sheared grid of a gantry-tilted acquisition."""
    rng = np.random.default_rng(seed)
    study, series_uid, for_uid = generate_uid(), generate_uid(), generate_uid()
    t = np.radians(tilt_deg)
    row = (1.0, 0.0, 0.0)
    col = (0.0, float(np.cos(t)), float(-np.sin(t)))
    spacing = (0.8, 0.8)
    step = np.array([0.0, 0.0, 5.0])
    datasets, frames, positions, arrays = [], [], [], []
    for k in range(SLICES):
        ds = Dataset()
        _patient_study(ds, study)
        ds.SOPClassUID = CT_IMAGE
        ds.SOPInstanceUID = generate_uid()
        ds.Modality = "CT"
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = 3
        ds.SeriesDescription = "Head NCCT"
        ds.Manufacturer = "TestVendor"
        ds.FrameOfReferenceUID = for_uid
        ds.PositionReferenceIndicator = ""
        ds.InstanceNumber = k + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        pos = np.array([-25.6, -25.6, -30.0]) + k * step
        ds.ImagePositionPatient = [float(x) for x in pos]
        ds.ImageOrientationPatient = list(row) + list(col)
        ds.PixelSpacing = list(spacing)
        ds.SliceThickness = 5.0
        ds.GantryDetectorTilt = tilt_deg
        ds.KVP = 120
        ds.AcquisitionNumber = 1
        ds.Rows, ds.Columns = ROWS, COLS
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.RescaleType = "HU"
        hu = _image(rng, 30.0, 3.0)
        ds.PixelData = (hu + 1024).astype(np.int16).tobytes()
        _file_meta(ds)
        datasets.append(ds)
        frames.append(FrameRef(ds.SOPInstanceUID, CT_IMAGE))
        positions.append(pos)
        arrays.append(hu.astype(np.float32))
    warnings = ("Slice thickness 5.0 mm (thick slices): small lesions may be missed",)
    if tilt_deg:
        warnings += (f"Gantry tilt {tilt_deg:.1f} degrees: volume measured on the sheared source grid",)
    vol = Volume(array=np.stack(arrays), row_direction=row, column_direction=col, pixel_spacing=spacing,
                 positions=np.array(positions), frames=tuple(frames), frame_of_reference_uid=for_uid,
                 slice_thickness=5.0, warnings=warnings)
    rev = list(reversed(datasets))  # "no particular order"
    return Series(study, series_uid, tuple(rev)), vol


def swi_series(seed: int = 1) -> tuple[Series, Volume]:
    rng = np.random.default_rng(seed)
    study, series_uid, for_uid = generate_uid(), generate_uid(), generate_uid()
    row, col, spacing = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.9, 0.9)
    datasets, frames, positions, arrays = [], [], [], []
    for k in range(SLICES):
        ds = Dataset()
        _patient_study(ds, study)
        ds.SOPClassUID = MR_IMAGE
        ds.SOPInstanceUID = generate_uid()
        ds.Modality = "MR"
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = 7
        ds.SeriesDescription = "SWI"
        ds.Manufacturer = "TestVendor"
        ds.FrameOfReferenceUID = for_uid
        ds.PositionReferenceIndicator = ""
        ds.InstanceNumber = k + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "SWI"]
        pos = np.array([-28.8, -28.8, -20.0 + 2.0 * k])
        ds.ImagePositionPatient = [float(x) for x in pos]
        ds.ImageOrientationPatient = list(row) + list(col)
        ds.PixelSpacing = list(spacing)
        ds.SliceThickness = 2.0
        ds.ScanningSequence = "GR"
        ds.SequenceVariant = "SP"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "3D"
        ds.EchoTime = 20
        ds.EchoTrainLength = 1
        ds.Rows, ds.Columns = ROWS, COLS
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        img = np.clip(_image(rng, 400.0, 20.0), 0, 4000)
        ds.PixelData = img.astype(np.uint16).tobytes()
        _file_meta(ds)
        datasets.append(ds)
        frames.append(FrameRef(ds.SOPInstanceUID, MR_IMAGE))
        positions.append(pos)
        arrays.append(img.astype(np.float32))
    vol = Volume(array=np.stack(arrays), row_direction=row, column_direction=col, pixel_spacing=spacing,
                 positions=np.array(positions), frames=tuple(frames), frame_of_reference_uid=for_uid,
                 slice_thickness=2.0)
    return Series(study, series_uid, tuple(datasets)), vol


def enhanced_mr_series(seed: int = 2) -> tuple[Series, Volume]:
    """One Enhanced MR multi-frame instance; frames stored in reverse spatial order."""
    rng = np.random.default_rng(seed)
    study, series_uid, for_uid = generate_uid(), generate_uid(), generate_uid()
    row, col, spacing = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.9, 0.9)
    ds = Dataset()
    _patient_study(ds, study)
    ds.SOPClassUID = ENHANCED_MR
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "MR"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = 8
    ds.SeriesDescription = "SWI enhanced"
    ds.Manufacturer = "TestVendor"
    ds.FrameOfReferenceUID = for_uid
    ds.PositionReferenceIndicator = ""
    ds.InstanceNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.ContentDate, ds.ContentTime = "20250101", "120000"
    ds.AcquisitionDateTime = "20250101120000"
    ds.NumberOfFrames = SLICES
    ds.Rows, ds.Columns = ROWS, COLS
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    shared = Dataset()
    pm = Dataset()
    pm.PixelSpacing = list(spacing)
    pm.SliceThickness = 2.0
    shared.PixelMeasuresSequence = [pm]
    po = Dataset()
    po.ImageOrientationPatient = list(row) + list(col)
    shared.PlaneOrientationSequence = [po]
    ds.SharedFunctionalGroupsSequence = [shared]
    per_frame, pixel_frames = [], []
    frames: list[FrameRef | None] = [None] * SLICES
    positions = [None] * SLICES
    arrays = [None] * SLICES
    for f in range(SLICES):
        k = SLICES - 1 - f  # spatial slice index of stored frame f
        pos = np.array([-28.8, -28.8, -20.0 + 2.0 * k])
        item = Dataset()
        pp = Dataset()
        pp.ImagePositionPatient = [float(x) for x in pos]
        item.PlanePositionSequence = [pp]
        fc = Dataset()
        fc.DimensionIndexValues = [f + 1]
        item.FrameContentSequence = [fc]
        per_frame.append(item)
        img = np.clip(_image(rng, 400.0, 20.0), 0, 4000).astype(np.uint16)
        pixel_frames.append(img)
        frames[k] = FrameRef(ds.SOPInstanceUID, ENHANCED_MR, frame_number=f + 1)
        positions[k] = pos
        arrays[k] = img.astype(np.float32)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    dim_org = generate_uid()
    ds.DimensionOrganizationSequence = [Dataset()]
    ds.DimensionOrganizationSequence[0].DimensionOrganizationUID = dim_org
    di = Dataset()
    di.DimensionOrganizationUID = dim_org
    di.DimensionIndexPointer = 0x00200032
    di.FunctionalGroupPointer = 0x00209113
    ds.DimensionIndexSequence = [di]
    ds.PixelData = np.stack(pixel_frames).tobytes()
    _file_meta(ds)
    vol = Volume(array=np.stack(arrays), row_direction=row, column_direction=col, pixel_spacing=spacing,
                 positions=np.array(positions), frames=tuple(frames), frame_of_reference_uid=for_uid,
                 slice_thickness=2.0)
    return Series(study, series_uid, (ds,)), vol


def model(task: Task) -> ModelSpec:
    name = "svdmark-wml-ncct" if task is Task.WML else "svdmark-cmb-swi"
    return ModelSpec(name=name, version="0.1.0", task=task, sha256=FAKE_SHA, path=Path("/nonexistent/model.onnx"))


def wml_mask(vol: Volume, n_lesions: int = 3, seed: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mask = np.zeros(vol.shape, np.uint8)
    zz, yy, xx = np.mgrid[: vol.shape[0], : vol.shape[1], : vol.shape[2]]
    for _ in range(n_lesions):
        c = (rng.integers(3, vol.shape[0] - 3), rng.integers(20, 44), rng.integers(20, 44))
        r = rng.uniform(3, 7)
        mask |= (((yy - c[1]) ** 2 + (xx - c[2]) ** 2) < r * r) & (np.abs(zz - c[0]) <= 1)
    return mask


# The quality gate's verdict for a withheld result, worded like the real gate's reasons.
WITHHELD = Quality(measurable=False,
                   reasons=("Image noise 14 HU exceeds the model's limit of 9 HU",
                            "Out-of-distribution score 3.1 above 2.0"),
                   scores={"noise_hu": 14.0, "ood_score": 3.1})
MEASURABLE = Quality(measurable=True, scores={"noise_hu": 4.0, "ood_score": 0.4})


def wml_result(series: Series, vol: Volume, mask: np.ndarray, ruleset: RuleSet | None = None,
               warnings: tuple[str, ...] = (), interval: Interval | None = None,
               quality: Quality | None = None, volume_ml: float | None = None) -> AnalysisResult:
    """``volume_ml`` defaults to the mask's volume; pass it to place a result next to the cut-point."""
    ruleset = ruleset or RuleSet.load()
    if volume_ml is None:
        volume_ml = float(mask.sum()) * vol.voxel_volume_mm3 / 1000.0
    findings = WmlFindings(volume_ml=volume_ml, mask=mask, warnings=warnings, interval=interval, quality=quality)
    return AnalysisResult(series=series, routing=RoutingDecision(RouteKind.WML, "test", "test"),
                          model=model(Task.WML), volume=vol, findings=findings,
                          flags=ruleset.evaluate(findings), ruleset=ruleset.info)


def microbleeds(vol: Volume, n: int, seed: int = 9) -> tuple[tuple[Microbleed, ...], np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = np.zeros(vol.shape, np.uint8)
    mbs = []
    locs = ("lobar", "deep", "infratentorial", "unspecified")
    for idx in range(n):
        k, i, j = int(rng.integers(1, vol.shape[0] - 1)), int(rng.integers(12, 52)), int(rng.integers(12, 52))
        mask[k, i - 1 : i + 2, j - 1 : j + 2] = 1
        centre = vol.index_to_patient(k, i, j)
        mbs.append(Microbleed(center_mm=tuple(float(x) for x in centre), diameter_mm=round(float(rng.uniform(2, 8)), 3),
                              confidence=round(float(rng.uniform(0.5, 1.0)), 4), location=locs[idx % 4]))
    return tuple(mbs), mask


def cmb_result(series: Series, vol: Volume, n: int, ruleset: RuleSet | None = None,
               interval: Interval | None = None, quality: Quality | None = None) -> AnalysisResult:
    ruleset = ruleset or RuleSet.load()
    mbs, mask = microbleeds(vol, n)
    findings = CmbFindings(microbleeds=mbs, mask=mask, warnings=("Test warning: synthetic data",),
                           interval=interval, quality=quality)
    return AnalysisResult(series=series, routing=RoutingDecision(RouteKind.CMB, "test", "test"),
                          model=model(Task.CMB), volume=vol, findings=findings,
                          flags=ruleset.evaluate(findings), ruleset=ruleset.info)

"""Enhanced MR Image Storage: one multi-frame instance with functional groups."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import EnhancedMRImageStorage

from .encoding import ds_str, ds_vec, mr_stored, save, set_pixels
from .types import SeriesKind, synthetic_uid

_MOVE_TO_FG = ("ImageType", "SliceThickness", "PixelSpacing", "ImagePositionPatient", "ImageOrientationPatient",
               "RepetitionTime", "EchoTime", "FlipAngle", "ScanningSequence", "SequenceVariant", "ScanOptions",
               "SequenceName", "AngioFlag", "NumberOfAverages", "ImagingFrequency", "EchoNumbers",
               "SpacingBetweenSlices", "NumberOfPhaseEncodingSteps", "EchoTrainLength", "PercentSampling",
               "PercentPhaseFieldOfView", "PixelBandwidth", "ReceiveCoilName", "TransmitCoilName", "AcquisitionMatrix",
               "InPlanePhaseEncodingDirection", "SAR", "dBdt", "VariableFlipAngleFlag", "ImagedNucleus",
               "SliceLocation", "WindowCenter", "WindowWidth", "InversionTime", "ImagesInAcquisition", "AcquisitionNumber",
               "MRAcquisitionType")


def _item(**kw) -> Dataset:
    d = Dataset()
    for k, v in kw.items():
        setattr(d, k, v)
    return d


def write_enhanced_mr(base: Dataset, p, frames, vst, sst, kind, ref, out_dir: Path, series_uid: str, ts, thickness,
                      file_prefix="IM") -> Path:
    ds = Dataset()
    ds.update(base)
    for kw in _MOVE_TO_FG:
        if kw in ds:
            del ds[kw]
    n = len(frames)
    vol = np.stack([f[0] for f in frames])
    arr, inter, slope, signed = mr_stored(vol, vst, kind, ref)
    bits = vst.mr_bits_stored if kind != SeriesKind.SWI_PHASE else (16 if signed else 12)
    date = ds.get("SeriesDate", "20240101")
    time = str(ds.get("SeriesTime", "120000"))
    ds.ImageType = ["DERIVED", "PRIMARY", "VOLUME", "NONE"]
    ds.PixelPresentation = "MONOCHROME"
    ds.VolumetricProperties = "VOLUME"
    ds.VolumeBasedCalculationTechnique = "NONE"
    ds.ComplexImageComponent = "PHASE" if kind == SeriesKind.SWI_PHASE else "MAGNITUDE"
    ds.AcquisitionContrast = "T2_STAR"
    ds.ContentQualification = "RESEARCH"
    ds.ResonantNucleus = "1H"
    ds.KSpaceFiltering = "NONE"
    ds.MagneticFieldStrength = ds_str(vst.mr_field)
    ds.ImageComments = "svdmark synthetic phantom"
    ds.ApplicableSafetyStandardAgency = "IEC"
    ds.AcquisitionDateTime = f"{date}{time}"
    ds.AcquisitionDuration = 240.0
    ds.LossyImageCompression = "00"
    ds.PresentationLUTShape = "IDENTITY"
    ds.BurnedInAnnotation = "NO"
    ds.InstanceNumber = 1
    ds.ContentDate = date
    ds.ContentTime = time
    ds.NumberOfFrames = n
    ds.AcquisitionContextSequence = Sequence([])
    # dimensions: stack id, in-stack position
    dim_uid = synthetic_uid(series_uid, "dimorg")
    ds.DimensionOrganizationSequence = Sequence([_item(DimensionOrganizationUID=dim_uid)])
    ds.DimensionOrganizationType = "3D"
    ds.DimensionIndexSequence = Sequence([
        _item(DimensionIndexPointer=Tag("StackID"), FunctionalGroupPointer=Tag("FrameContentSequence"),
              DimensionOrganizationUID=dim_uid, DimensionDescriptionLabel="Stack ID"),
        _item(DimensionIndexPointer=Tag("InStackPositionNumber"), FunctionalGroupPointer=Tag("FrameContentSequence"),
              DimensionOrganizationUID=dim_uid, DimensionDescriptionLabel="In-Stack Position Number"),
    ])
    # shared functional groups
    _, _, rdir, cdir, ps = frames[0]
    shared = Dataset()
    shared.PixelMeasuresSequence = Sequence([_item(PixelSpacing=ds_vec(ps), SliceThickness=ds_str(thickness),
                                                   SpacingBetweenSlices=ds_str(p.spacing_between_slices))])
    shared.PlaneOrientationSequence = Sequence([_item(ImageOrientationPatient=ds_vec(list(rdir) + list(cdir), 8))])
    anat = _item(CodeValue="12738006", CodingSchemeDesignator="SCT", CodeMeaning="Brain")
    shared.FrameAnatomySequence = Sequence([_item(AnatomicRegionSequence=Sequence([anat]), FrameLaterality="U")])
    shared.MRImageFrameTypeSequence = Sequence([_item(
        FrameType=["DERIVED", "PRIMARY", "VOLUME", "NONE"], PixelPresentation="MONOCHROME", VolumetricProperties="VOLUME",
        VolumeBasedCalculationTechnique="NONE", ComplexImageComponent=ds.ComplexImageComponent,
        AcquisitionContrast="T2_STAR")])
    shared.PixelValueTransformationSequence = Sequence([_item(RescaleIntercept=ds_str(inter), RescaleSlope=ds_str(slope, 8),
                                                              RescaleType="US")])
    shared.FrameVOILUTSequence = Sequence([_item(WindowCenter=ds_str(2048 if kind == SeriesKind.SWI_PHASE else 1500),
                                                 WindowWidth=ds_str(4096 if kind == SeriesKind.SWI_PHASE else 3000))])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    # per-frame functional groups
    per = []
    for k, (_, pos, _, _, _) in enumerate(frames):
        it = Dataset()
        it.FrameContentSequence = Sequence([_item(StackID="1", InStackPositionNumber=k + 1,
                                                  DimensionIndexValues=[1, k + 1],
                                                  FrameAcquisitionNumber=1,
                                                  FrameAcquisitionDateTime=f"{date}{time}",
                                                  FrameReferenceDateTime=f"{date}{time}",
                                                  FrameAcquisitionDuration=240000.0)])
        it.PlanePositionSequence = Sequence([_item(ImagePositionPatient=ds_vec(pos))])
        per.append(it)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per)
    set_pixels(ds, arr, bits, signed)
    sop_uid = synthetic_uid(series_uid, "sop", "enhanced")
    return save(ds, EnhancedMRImageStorage, sop_uid, Path(out_dir) / f"{file_prefix}000001.dcm", ts)

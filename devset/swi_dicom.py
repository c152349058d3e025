"""MR Image Storage writer for the SWI set: one file per slice, shuffled names, vendor header styles
(Siemens SWI, GE SWAN, Philips SWIp / VenBOLD, Canon FSBB) with their ImageType, SequenceName, coil names,
a few private-looking elements, 12- or 16-bit stored values and (Philips) a rescale slope.
UIDs are 2.25.<UUID-derived integer> from the seed and a role (no real patient data).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from devset import dicomio
from devset.dicomio import _ds, set_patient_study

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"

STYLES = {
    "SIEMENS": dict(
        manufacturer=["SIEMENS", "Siemens Healthineers"],
        models={3.0: ["Prisma_fit", "Skyra", "Vida"], 1.5: ["Avanto_fit", "Aera", "Sola"]},
        descriptions=["SWI_Images", "t2_swi_tra_p2_{t:g}mm_SWI", "SWI_tra_{t:g}mm"],
        image_type=[["ORIGINAL", "PRIMARY", "M", "SWI", "ND", "NORM"], ["DERIVED", "PRIMARY", "M", "SWI", "NORM",
                                                                       "DIS2D"]],
        sequence="*swi3d1r", coil=["Head_32", "HeadNeck_20", "HC1-7"], software="syngo MR XA30",
        bits=12, signed=False, slope=False, peak=(2000, 3800)),
    "GE": dict(
        manufacturer=["GE MEDICAL SYSTEMS"],
        models={3.0: ["DISCOVERY MR750", "SIGNA Premier", "SIGNA Architect"], 1.5: ["SIGNA Artist", "Optima MR450w"]},
        descriptions=["Ax SWAN", "3D SWAN", "AX SWAN {t:g}mm"],
        image_type=[["ORIGINAL", "PRIMARY", "OTHER"]],
        sequence="swan3d", coil=["8HRBRAIN", "HNS Head", "48HAP"], software="27\\LX\\MR Software release:RX27.0",
        bits=16, signed=True, slope=False, peak=(1500, 9000)),
    "PHILIPS": dict(
        manufacturer=["Philips", "Philips Medical Systems"],
        models={3.0: ["Ingenia", "Achieva dStream", "Ingenia Elition X"], 1.5: ["Ingenia", "Achieva"]},
        descriptions={"swip": ["SWIp", "sSWIp", "SWIp {t:g}mm"], "venbold": ["VenBOLD", "SWIp VenBOLD"]},
        image_type=[["ORIGINAL", "PRIMARY", "M_SWI", "M", "SWI"], ["ORIGINAL", "PRIMARY", "M_FFE", "M", "FFE"]],
        sequence="FFE3D", coil=["SENSE-Head-32", "dS Head 32ch", "SENSE-NV-16"], software="5.7.1\\5.7.1.2",
        bits=12, signed=False, slope=True, peak=(1200, 4000)),
    "CANON": dict(
        manufacturer=["CANON_MEC", "TOSHIBA_MEC"],
        models={3.0: ["Vantage Galan 3T", "Vantage Centurian"], 1.5: ["Vantage Orian", "Vantage Titan"]},
        descriptions=["FSBB", "3D FSBB ax", "FSBB tra {t:g}mm"],
        image_type=[["ORIGINAL", "PRIMARY", "OTHER"]],
        sequence="FSBB", coil=["Head SPEEDER", "Atlas Head/Neck", "16ch Head"], software="V10.0",
        bits=16, signed=False, slope=False, peak=(8000, 30000)),
}


def draw_style(rng: np.random.Generator, acq) -> dict:
    st = STYLES[acq.vendor]
    descs = st["descriptions"][acq.technique] if isinstance(st["descriptions"], dict) else st["descriptions"]
    return dict(
        manufacturer=str(rng.choice(st["manufacturer"])), model=str(rng.choice(st["models"][acq.field_t])),
        description=str(rng.choice(descs)).format(t=acq.thickness),
        image_type=list(st["image_type"][int(rng.integers(0, len(st["image_type"])))]),
        sequence=st["sequence"], coil=str(rng.choice(st["coil"])), software=st["software"], bits=st["bits"],
        signed=st["signed"], slope=float(rng.uniform(1.2, 3.5)) if st["slope"] else 1.0,
        peak=float(rng.uniform(*st["peak"])), body_part=str(rng.choice(["BRAIN", "HEAD", ""], p=[0.5, 0.3, 0.2])),
        age=int(rng.integers(55, 95)), sex=str(rng.choice(["F", "M"])),
        date=f"2026{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}",
        number_from_top=bool(rng.random() < 0.3), series_number=int(rng.integers(3, 30)))


NAMESPACE = "devset-swi"  # of its UIDs (devset.dicomio.uid)


def to_stored(img: np.ndarray, style: dict) -> tuple[np.ndarray, float]:
    """Integer pixel data and the rescale slope (value = stored × slope)."""
    top = float(np.percentile(img[:, ::4, ::4], 99.9)) or 1.0
    vmax = (1 << style["bits"]) - 1 if not style["signed"] else min(32767, (1 << style["bits"]) - 1)
    scale = style["peak"] / top  # display value per image unit
    slope = style["slope"]
    stored = np.clip(np.rint(img * (scale / slope)), 0, vmax)
    return stored.astype(np.int16 if style["signed"] else np.uint16), slope


def write_series(out_dir: Path, seed: int, img: np.ndarray, geo, acq, style: dict,
                 rng: np.random.Generator) -> list[str]:
    """One file per slice; returns SOPInstanceUIDs in slice order (ascending along the normal)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    n = img.shape[0]
    uids, sops, names = dicomio.series_names(seed, n, rng, namespace=NAMESPACE)
    stored, slope = to_stored(img, style)
    iop = [_ds(round(v, 6)) for v in (*geo.row, *geo.col)]
    freq = 42.577478 * acq.field_t * (1 + rng.uniform(-2e-6, 2e-6))
    for k in range(n):
        arr = stored[k]
        ds = dicomio.new_slice_file(out_dir / f"IM{names[k]}.dcm", MR_IMAGE_STORAGE, sops[k], "DEVSET_SWI_1")
        ds.ImageType = style["image_type"]
        set_patient_study(ds, style, "MR", f"DVS{seed}", (f"DEVSET^SWI{seed}", f"DEVSWI{seed}"), "MR BRAIN")
        ds.StudyTime, ds.SeriesTime = "093000", "094210"
        ds.AcquisitionTime = ds.ContentTime = "094211"
        ds.ProtocolName = style["description"]
        ds.ScanningSequence = "GR"
        ds.SequenceVariant = ["SP", "OSP"] if acq.vendor != "GE" else ["SS", "SK"]
        ds.ScanOptions = "PFP" if acq.pf < 1 else ""
        ds.MRAcquisitionType = "3D"
        ds.SequenceName = style["sequence"]
        ds.SliceThickness = _ds(acq.thickness)
        ds.SpacingBetweenSlices = _ds(acq.spacing)
        ds.RepetitionTime = _ds(acq.tr_ms)
        ds.EchoTime = _ds(acq.te_ms if acq.technique != "swan" else acq.te_eff_ms)
        ds.EchoTrainLength = str(acq.n_echoes)
        ds.NumberOfAverages = "1"
        ds.ImagingFrequency = _ds(round(freq, 6))
        ds.ImagedNucleus = "1H"
        ds.MagneticFieldStrength = _ds(acq.field_t)
        ds.FlipAngle = _ds(acq.flip_deg)
        ds.PercentPhaseFieldOfView = "100"
        ds.SoftwareVersions = style["software"]
        ds.ReceiveCoilName = style["coil"]
        ds.InPlanePhaseEncodingDirection = acq.pe_dir
        ds.PatientPosition = "HFS"
        dicomio.set_frame(ds, uids, k, n, style, str(style["series_number"]),
                          [_ds(round(v, 5)) for v in geo.ipp[k]], iop)
        ds.SliceLocation = _ds(round(float(geo.ipp[k] @ geo.normal), 5))
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = arr.shape
        ds.PixelSpacing = [_ds(acq.pixel_spacing), _ds(acq.pixel_spacing)]
        ds.BitsAllocated = 16
        ds.BitsStored = style["bits"]
        ds.HighBit = style["bits"] - 1
        ds.PixelRepresentation = 1 if style["signed"] else 0
        ds.WindowCenter = _ds(round(style["peak"] * 0.45))
        ds.WindowWidth = _ds(round(style["peak"] * 0.9))
        if acq.vendor == "PHILIPS":
            ds.RescaleIntercept = "0"
            ds.RescaleSlope = _ds(round(slope, 6))
            ds.RescaleType = "normalized"
            ds.add_new(0x20050010, "LO", "Philips MR Imaging DD 001")
            ds.add_new(0x2005100E, "FL", float(1.0 / slope))
            ds.add_new(0x20010010, "LO", "Philips Imaging DD 001")
            ds.add_new(0x20011020, "LO", "FFE")
        elif acq.vendor == "SIEMENS":
            ds.add_new(0x00290010, "LO", "SIEMENS CSA HEADER")
            ds.add_new(0x00291008, "CS", "IMAGE NUM 4")
            ds.add_new(0x00510010, "LO", "SIEMENS MR HEADER")
            ds.add_new(0x0051100F, "LO", style["coil"])
        elif acq.vendor == "GE":
            ds.add_new(0x00430010, "LO", "GEMS_PARM_01")
            ds.add_new(0x0043102F, "SS", 0)  # magnitude
            ds.add_new(0x00190010, "LO", "GEMS_ACQU_01")
            ds.add_new(0x0019109C, "LO", "swan")
        else:
            ds.add_new(0x70050010, "LO", "TOSHIBA_MEC_MR3")
            ds.add_new(0x70051008, "LO", "FSBB")
        ds.PixelData = arr.tobytes()
        ds.save_as(out_dir / f"IM{names[k]}.dcm", enforce_file_format=True)
    return sops

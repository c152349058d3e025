"""The vendor-styled DICOM writer: transfer syntaxes, validity (dciodvfy), vendor styles, study truth."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_rescale

from svdmark_phantom import ALL_TRANSFER_SYNTAXES, SeriesKind, StudyTruth, make_ncct, make_swi, write_series

DCIODVFY = shutil.which("dciodvfy") or "/usr/bin/dciodvfy"
needs_dciodvfy = pytest.mark.skipif(not Path(DCIODVFY).exists(), reason="dicom3tools dciodvfy not installed")
needs_dcmcjpeg = pytest.mark.skipif(not Path("/usr/bin/dcmcjpeg").exists(), reason="dcmtk dcmcjpeg not installed")


@pytest.fixture(scope="module")
def tiny():
    return (make_ncct(seed=1, matrix=48, n_slices=2, wml_ml=0.0),
            make_swi(seed=1, matrix=(40, 48), n_slices=3, n_cmb=0))


@pytest.mark.parametrize("ts", ALL_TRANSFER_SYNTAXES, ids=lambda u: u.name)
@pytest.mark.parametrize("vendor", ["siemens", "canon", "ge"])
def test_transfer_syntax_round_trip(tmp_path, tiny, ts, vendor):
    if ts.name.startswith("JPEG Lossless") and not Path("/usr/bin/dcmcjpeg").exists():
        pytest.skip("dcmcjpeg not installed")
    for p in tiny:
        paths = write_series(p, tmp_path / p.modality, vendor=vendor, transfer_syntax=ts)
        assert len(paths) == p.image.shape[0]
        for k, path in enumerate(paths):
            ds = pydicom.dcmread(path)
            assert ds.file_meta.TransferSyntaxUID == ts
            arr = ds.pixel_array
            assert arr.shape == p.image.shape[1:]
            if p.modality == "CT":
                hu = apply_rescale(arr, ds)
                assert np.abs(hu - np.clip(np.rint(p.image[k]), -1024, 3071)).max() <= 0.5


def test_enhanced_mr_round_trip_and_frames(tmp_path, tiny):
    p = tiny[1]
    for ts in ("explicit", "rle", "j2k"):
        (path,) = write_series(p, tmp_path / ts, vendor="philips", kind=SeriesKind.SWI, enhanced=True, transfer_syntax=ts)
        ds = pydicom.dcmread(path)
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4.1"
        assert int(ds.NumberOfFrames) == p.image.shape[0]
        assert ds.pixel_array.shape == p.image.shape
        shared = ds.SharedFunctionalGroupsSequence[0]
        assert [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing] == pytest.approx(p.pixel_spacing)
        for k, fr in enumerate(ds.PerFrameFunctionalGroupsSequence):
            pos = [float(v) for v in fr.PlanePositionSequence[0].ImagePositionPatient]
            assert pos == pytest.approx(p.positions[k], abs=1e-3)
            assert list(fr.FrameContentSequence[0].DimensionIndexValues) == [1, k + 1]


def _errors(path) -> list[str]:
    r = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True)
    return [ln for ln in (r.stdout + r.stderr).splitlines() if ln.startswith("Error")]


@needs_dciodvfy
def test_dciodvfy_reports_no_errors(tmp_path, tiny, ncct_study, swi_study):
    ct, mr = tiny
    files = [write_series(ct, tmp_path / "ct", vendor="ge")[0],
             write_series(mr, tmp_path / "mr", vendor="siemens")[0],
             write_series(mr, tmp_path / "emr", vendor="siemens", enhanced=True)[0]]
    for st in (ncct_study, swi_study):
        for s in st.series:
            files.append(sorted((Path(st.out_dir) / s.folder).glob("*.dcm"))[0])
    for f in files:
        assert _errors(f) == [], f



def test_a_1p5t_look_says_so_in_its_header(tmp_path):
    kw = dict(seed=2, matrix=32, n_slices=8, n_cmb=1)
    fields = {}
    for field_t in (1.5, 3.0):
        path = write_series(make_swi(field_t=field_t, **kw), tmp_path / str(field_t), vendor="siemens")[0]
        fields[field_t] = float(pydicom.dcmread(path, stop_before_pixels=True).MagneticFieldStrength)
    assert fields[1.5] == 1.5 and fields[3.0] == 3.0  # the 3 T look keeps the vendor style's field (here 3 T)


@pytest.mark.parametrize("vendor", ["siemens", "ge", "philips", "canon"])
def test_vendor_styles_swi(tmp_path, vendor):
    p = make_swi(seed=2, matrix=32, n_slices=8, n_cmb=1)
    expected = {
        "siemens": ("SIEMENS", "SWI_Images", "Pha_Images", "mIP_Images(SW)"),
        "ge": ("GE MEDICAL SYSTEMS", "SWAN", "Phase", "MinIP"),
        "philips": ("Philips", "SWIp", "Pha", "mIP"),
        "canon": ("TOSHIBA", "SWI", "PHASE", "MinIP"),
    }[vendor]
    heads = {}
    for kind in (SeriesKind.SWI, SeriesKind.SWI_PHASE, SeriesKind.SWI_MINIP, SeriesKind.LOCALIZER):
        path = write_series(p, tmp_path / kind.value, vendor=vendor, kind=kind)[0]
        heads[kind] = pydicom.dcmread(path, stop_before_pixels=True)
    swi, pha, mip, loc = (heads[k] for k in (SeriesKind.SWI, SeriesKind.SWI_PHASE, SeriesKind.SWI_MINIP,
                                              SeriesKind.LOCALIZER))
    assert swi.Manufacturer.startswith(expected[0]) and expected[1] in swi.SeriesDescription
    assert expected[2] in pha.SeriesDescription and expected[3] in mip.SeriesDescription
    assert ("P" in pha.ImageType) or ("PHASE" in pha.ImageType) or ("P_FFE" in pha.ImageType)
    assert mip.ImageType[0] == "DERIVED"
    assert "LOCALIZER" in loc.ImageType
    assert swi.ScanningSequence == "GR" and swi.SequenceName
    for h in heads.values():
        assert h.Modality == "MR" and h.PatientName.family_name == "PHANTOM"
        assert len({h.StudyInstanceUID for h in heads.values()}) == 1
    assert len({h.SeriesInstanceUID for h in heads.values()}) == 4


@pytest.mark.parametrize("vendor", ["siemens", "ge", "philips", "canon"])
def test_vendor_styles_ct(tmp_path, vendor):
    from svdmark_phantom.vendors import style

    p = make_ncct(seed=2, matrix=32, n_slices=3, tilt_deg=12.0, wml_ml=0.0)
    soft, bone = style(vendor).ct_kernels
    nc = pydicom.dcmread(write_series(p, tmp_path / "n", vendor=vendor)[0])
    bn = pydicom.dcmread(write_series(p, tmp_path / "b", vendor=vendor, kind=SeriesKind.CT_BONE)[0])
    lo = pydicom.dcmread(write_series(p, tmp_path / "l", vendor=vendor, kind=SeriesKind.LOCALIZER)[0])
    assert nc.ConvolutionKernel in soft and bn.ConvolutionKernel in bone
    assert "LOCALIZER" in lo.ImageType and "LOCALIZER" not in nc.ImageType
    assert "ContrastBolusAgent" not in nc
    assert float(nc.GantryDetectorTilt) == pytest.approx(12.0)
    assert nc.ImageType[0] == "ORIGINAL" and nc.RescaleType == "HU"
    pc = make_ncct(seed=2, matrix=32, n_slices=3, contrast=True, wml_ml=0.0)
    ce = pydicom.dcmread(write_series(pc, tmp_path / "c", vendor=vendor)[0], stop_before_pixels=True)
    assert ce.ContrastBolusAgent and ce.ContrastBolusRoute == "IV"
    manu = {"siemens": "SIEMENS", "ge": "GE MEDICAL SYSTEMS", "philips": "Philips", "canon": "CANON_MEC"}[vendor]
    assert nc.Manufacturer == manu
    signed = {"siemens": 1, "ge": 0, "philips": 0, "canon": 1}[vendor]
    assert nc.PixelRepresentation == signed


def test_latin1_institution_round_trips(tmp_path, tiny):
    path = write_series(tiny[0], tmp_path, vendor="siemens")[0]
    raw = path.read_bytes()
    assert "Universitätsklinikum".encode("latin-1") in raw
    ds = pydicom.dcmread(path)
    assert ds.SpecificCharacterSet == "ISO_IR 100" and ds.InstitutionName.startswith("Universitätsklinikum")


def test_dicom_geometry_matches_phantom(tmp_path):
    p = make_ncct(seed=5, matrix=32, n_slices=4, tilt_deg=20.0, wml_ml=0.0)
    dss = [pydicom.dcmread(f) for f in write_series(p, tmp_path, vendor="ge", transfer_syntax="implicit")]
    pos = np.array([[float(v) for v in d.ImagePositionPatient] for d in dss])
    assert np.allclose(pos, p.positions, atol=1e-3)
    iop = np.array([float(v) for v in dss[0].ImageOrientationPatient])
    assert np.allclose(iop, list(p.row_direction) + list(p.column_direction), atol=1e-6)
    assert float(dss[0].SliceThickness) == p.slice_thickness
    assert all(d.ImagesInAcquisition == 4 for d in dss)
    assert [d.InstanceNumber for d in dss] == [1, 2, 3, 4]


def test_study_truth(ncct_study: StudyTruth, swi_study: StudyTruth):
    for st in (ncct_study, swi_study):
        saved = json.loads((Path(st.out_dir) / "truth.json").read_text())
        assert StudyTruth.from_dict(saved) == st
        assert len(st.targets) == 1 and st.distractors
        uids = set()
        for s in st.series:
            files = sorted((Path(st.out_dir) / s.folder).glob("*.dcm"))
            assert len(files) == s.n_instances
            h = pydicom.dcmread(files[0], stop_before_pixels=True)
            assert h.StudyInstanceUID == st.study_uid and h.SeriesInstanceUID == s.series_uid
            uids.add(s.series_uid)
        assert len(uids) == len(st.series)
    assert {s.kind for s in ncct_study.distractors} == {"localizer", "ct_bone", "ct_contrast"}
    assert {s.kind for s in swi_study.distractors} >= {"localizer", "swi_phase", "swi_minip"}
    assert ncct_study.truth_wml_ml > 0 and ncct_study.targets[0].kind == "ncct"
    assert swi_study.cmb_count == 5 and swi_study.grade == 1 and len(swi_study.microbleeds) == 5

"""svdmark.volume: sorting, rescale, gantry tilt, multi-frame, bad stacks."""
from __future__ import annotations

import math
import random

import numpy as np
import pytest
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import RLELossless, ExplicitVRLittleEndian, generate_uid

from svdmark import volume as vol
from svdmark.domain import Series
from svdmark.errors import InvalidSeries

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"


# --------------------------------------------------------------------------- builders


def _tilted_axes(tilt_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Row/column directions of a gantry tilted about the patient x axis (GE-style sheared stack)."""
    t = math.radians(tilt_deg)
    return np.array([1.0, 0.0, 0.0]), np.array([0.0, math.cos(t), -math.sin(t)])


def _base(ds: Dataset, sop_class: str) -> Dataset:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    return ds


def ct_stack(
    n: int = 6,
    rows: int = 12,
    cols: int = 10,
    *,
    pixel_spacing: tuple[float, float] = (0.8, 0.6),
    increment: float = 2.5,
    tilt_deg: float = 0.0,
    signed: bool = True,
    slope: float = 1.0,
    intercept: float = -1024.0,
    hu=None,
    thickness: float = 2.5,
    origin=(-3.0, -4.0, 10.0),
    for_uid: str | None = None,
) -> tuple[list[Dataset], dict]:
    """A CT stack; the table moves ``increment`` mm along z per slice, IOP tilted by ``tilt_deg``.

    ``hu(k, i, j, xyz)`` gives the HU of a voxel (default: 10*k + i - j); stored = (HU - intercept) / slope.
    Returns datasets in slice order and the truth (positions, row/col, hu array).
    """
    row, col = _tilted_axes(tilt_deg)
    for_uid = for_uid or generate_uid()
    series_uid = generate_uid()
    out, truth_hu, positions = [], [], []
    for k in range(n):
        pos = np.asarray(origin, float) + np.array([0.0, 0.0, k * increment])
        positions.append(pos)
        grid = np.zeros((rows, cols))
        for i in range(rows):
            for j in range(cols):
                xyz = pos + j * pixel_spacing[1] * row + i * pixel_spacing[0] * col
                grid[i, j] = hu(k, i, j, xyz) if hu else 10 * k + i - j
        stored = np.round((grid - intercept) / slope)
        truth_hu.append(stored * slope + intercept)
        ds = _base(Dataset(), CT_IMAGE)
        ds.Modality = "CT"
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = for_uid
        ds.Rows, ds.Columns = rows, cols
        ds.PixelSpacing = [f"{pixel_spacing[0]:.6g}", f"{pixel_spacing[1]:.6g}"]
        ds.ImageOrientationPatient = [f"{x:.8f}" for x in (*row, *col)]
        ds.ImagePositionPatient = [f"{x:.6f}" for x in pos]
        ds.SliceThickness = thickness
        ds.GantryDetectorTilt = tilt_deg
        ds.InstanceNumber = k + 1
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        ds.PixelRepresentation = 1 if signed else 0
        dtype = np.int16 if signed else np.uint16
        info = np.iinfo(dtype)
        assert stored.min() >= info.min and stored.max() <= info.max
        ds.PixelData = stored.astype(dtype).tobytes()
        out.append(ds)
    truth = {"positions": np.array(positions), "row": row, "col": col, "hu": np.array(truth_hu)}
    return out, truth


def series_of(datasets) -> Series:
    return Series(study_uid="1.2.3", series_uid=str(getattr(datasets[0], "SeriesInstanceUID", "1.2.3.4")), datasets=tuple(datasets))


def enhanced_mr(n: int = 5, rows: int = 8, cols: int = 9, *, order=None, spacing: float = 1.5) -> tuple[Dataset, np.ndarray]:
    """An Enhanced MR object whose frames are stored in ``order`` (frame f holds slice order[f])."""
    order = list(order if order is not None else range(n))
    ds = _base(Dataset(), ENHANCED_MR)
    ds.Modality = "MR"
    ds.SeriesInstanceUID = generate_uid()
    ds.FrameOfReferenceUID = generate_uid()
    ds.Rows, ds.Columns = rows, cols
    ds.NumberOfFrames = n
    ds.PixelRepresentation = 0
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    shared = Dataset()
    po = Dataset()
    po.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    pm = Dataset()
    pm.PixelSpacing = [0.5, 0.5]
    pm.SliceThickness = 1.5
    shared.PlaneOrientationSequence = Sequence([po])
    shared.PixelMeasuresSequence = Sequence([pm])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames, per = [], []
    slices = np.stack([np.full((rows, cols), 100 * (s + 1), np.uint16) + np.arange(cols, dtype=np.uint16) for s in range(n)])
    for f, s in enumerate(order):
        item = Dataset()
        pp = Dataset()
        pp.ImagePositionPatient = [0.0, 0.0, -20.0 + s * spacing]
        item.PlanePositionSequence = Sequence([pp])
        fc = Dataset()
        fc.InStackPositionNumber = s + 1
        item.FrameContentSequence = Sequence([fc])
        per.append(item)
        frames.append(slices[s])
    ds.PerFrameFunctionalGroupsSequence = Sequence(per)
    ds.PixelData = np.stack(frames).astype(np.uint16).tobytes()
    return ds, slices


# --------------------------------------------------------------------------- single-frame CT


def test_sorting_and_hu_values_signed():
    dss, truth = ct_stack(n=7)
    shuffled = dss[:]
    random.Random(3).shuffle(shuffled)
    v = vol.load(series_of(shuffled))
    assert v.shape == (7, 12, 10)
    assert v.array.dtype == np.float32
    assert [f.sop_instance_uid for f in v.frames] == [d.SOPInstanceUID for d in dss]
    np.testing.assert_allclose(v.positions, truth["positions"], atol=1e-5)
    np.testing.assert_array_equal(v.array, truth["hu"].astype(np.float32))
    assert v.array[0, 0, 9] == -9.0 and v.array[6, 11, 0] == 71.0  # stored values were HU + 1024
    assert v.frames[0].frame_number is None
    assert v.warnings == ()
    assert v.slice_spacing == pytest.approx(2.5)
    assert v.voxel_volume_mm3 == pytest.approx(0.8 * 0.6 * 2.5)


def test_unsigned_with_slope_and_intercept():
    dss, truth = ct_stack(signed=False, slope=0.5, intercept=-1000.0, hu=lambda k, i, j, xyz: -1000 + 40 * k + 3 * i)
    v = vol.load(series_of(dss[::-1]))
    np.testing.assert_allclose(v.array, truth["hu"], atol=1e-4)
    assert v.array[0, 0, 0] == pytest.approx(-1000.0)
    assert v.array[2, 4, 0] == pytest.approx(-1000 + 80 + 12)


def test_mr_without_rescale_and_rle_compressed():
    dss, truth = ct_stack(n=4, signed=False, slope=1.0, intercept=0.0, hu=lambda k, i, j, xyz: 50 + k + i)
    for ds in dss:
        ds.Modality = "MR"
        del ds.RescaleSlope, ds.RescaleIntercept
        ds.compress(RLELossless)
    v = vol.load(series_of(dss))
    np.testing.assert_array_equal(v.array, truth["hu"])


def test_index_to_patient_matches_ipp_and_pixels():
    dss, truth = ct_stack(n=6, tilt_deg=15.0)
    v = vol.load(series_of(dss))
    for k in range(6):
        np.testing.assert_allclose(v.index_to_patient(k, 0, 0), truth["positions"][k], atol=1e-5)
    expect = truth["positions"][3] + 4 * 0.6 * truth["row"] + 7 * 0.8 * truth["col"]
    np.testing.assert_allclose(v.index_to_patient(3, 7, 4), expect, atol=1e-5)
    mid = (truth["positions"][2] + truth["positions"][3]) / 2
    np.testing.assert_allclose(v.index_to_patient(2.5, 0, 0), mid, atol=1e-5)


def test_gantry_tilt_voxel_volume_and_warnings():
    dss, _ = ct_stack(n=5, tilt_deg=20.0, increment=5.0, thickness=5.0)
    v = vol.load(series_of(dss))
    assert v.gantry_tilt_degrees == pytest.approx(20.0, abs=1e-3)
    assert v.slice_spacing == pytest.approx(5.0 * math.cos(math.radians(20)), rel=1e-6)
    assert v.voxel_volume_mm3 == pytest.approx(0.8 * 0.6 * 5.0 * math.cos(math.radians(20)), rel=1e-6)
    assert "gantry tilt 20.0°: sheared grid, volumes measured along the slice normal" in v.warnings
    assert "thick slices (5.0 mm): small lesions are diluted by partial volume" in v.warnings


def test_known_lesion_volume_on_tilted_grid():
    """A 12 mm radius sphere in patient space, rasterised on a 20° sheared grid."""
    centre = np.array([24.0, 20.0, 40.0])
    radius = 12.0

    def hu(k, i, j, xyz):
        return 60 if np.linalg.norm(xyz - centre) <= radius else 20

    dss, _ = ct_stack(
        n=44, rows=48, cols=48, pixel_spacing=(1.0, 1.0), increment=2.0, tilt_deg=20.0, origin=(0.0, 0.0, 0.0), hu=hu
    )
    v = vol.load(series_of(dss))
    voxels = int((v.array > 40).sum())
    truth = 4 / 3 * math.pi * radius**3
    assert voxels * v.voxel_volume_mm3 == pytest.approx(truth, rel=0.03)
    naive = voxels * 1.0 * 1.0 * 2.0  # pixel area × table increment: the mistake a naive reader makes
    assert abs(naive - truth) / truth > 0.04
    # the lesion centre found in voxel space maps back to the right patient position
    k, i, j = np.argwhere(v.array > 40).mean(axis=0)
    np.testing.assert_allclose(v.index_to_patient(k, i, j), centre, atol=0.6)


# --------------------------------------------------------------------------- bad stacks


def test_missing_slice_says_where_and_how_many():
    dss, _ = ct_stack(n=9)
    del dss[4:6]
    with pytest.raises(InvalidSeries) as e:
        vol.load(series_of(dss))
    msg = str(e.value)
    assert msg.startswith("missing slices")
    assert "7.50 mm gap" in msg and "about 2 slices missing" in msg
    assert dss[3].SOPInstanceUID in msg and dss[4].SOPInstanceUID in msg


def test_duplicate_position_names_both_instances():
    dss, _ = ct_stack(n=5)
    dup = Dataset()
    dup.update(dss[2])
    dup.file_meta = dss[2].file_meta
    dup.SOPInstanceUID = generate_uid()
    with pytest.raises(InvalidSeries) as e:
        vol.load(series_of(dss + [dup]))
    msg = str(e.value)
    assert msg.startswith("duplicate slice position")
    assert dss[2].SOPInstanceUID in msg and dup.SOPInstanceUID in msg


def test_mixed_orientation():
    dss, _ = ct_stack(n=5)
    dss[1].ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    with pytest.raises(InvalidSeries, match=r"^mixed orientations: .*90\.0° apart"):
        vol.load(series_of(dss))


def test_mixed_matrix_and_pixel_spacing():
    dss, _ = ct_stack(n=4)
    dss[2].PixelSpacing = [0.9, 0.6]
    with pytest.raises(InvalidSeries, match=r"^mixed pixel spacing"):
        vol.load(series_of(dss))
    dss, _ = ct_stack(n=4)
    dss[3].Rows = 14
    with pytest.raises(InvalidSeries, match=r"^mixed matrix sizes"):
        vol.load(series_of(dss))


def test_too_few_slices_and_missing_geometry():
    dss, _ = ct_stack(n=2)
    with pytest.raises(InvalidSeries, match=r"only 2 slices .* at least 3"):
        vol.load(series_of(dss))
    dss, _ = ct_stack(n=4)
    del dss[1].ImagePositionPatient
    with pytest.raises(InvalidSeries, match=rf"SOP {dss[1].SOPInstanceUID} lacks ImagePositionPatient"):
        vol.load(series_of(dss))
    with pytest.raises(InvalidSeries, match="no instances"):
        vol.load(Series("1", "2", ()))


def test_in_plane_drift_rejected():
    dss, _ = ct_stack(n=6)
    p = [float(x) for x in dss[3].ImagePositionPatient]
    dss[3].ImagePositionPatient = [p[0] + 5.0, p[1], p[2]]
    with pytest.raises(InvalidSeries, match="inconsistent slice positions"):
        vol.load(series_of(dss))


def test_mixed_magnitude_and_phase_keeps_magnitude():
    mag, truth = ct_stack(n=4, hu=lambda k, i, j, xyz: 7)
    pha, _ = ct_stack(n=4, hu=lambda k, i, j, xyz: -5, for_uid=mag[0].FrameOfReferenceUID)
    for d in mag:
        d.Modality, d.ImageType = "MR", ["ORIGINAL", "PRIMARY", "M", "FFE"]
    for d in pha:
        d.Modality, d.ImageType = "MR", ["ORIGINAL", "PRIMARY", "P", "FFE"]
    v = vol.load(series_of(mag + pha))
    assert v.shape[0] == 4 and np.all(v.array == 7)
    assert any("magnitude and phase" in w for w in v.warnings)


# --------------------------------------------------------------------------- enhanced multi-frame


def test_enhanced_mr_frames_out_of_order_are_sorted():
    order = [3, 0, 4, 1, 2]
    ds, slices = enhanced_mr(order=order)
    v = vol.load(series_of([ds]))
    assert v.shape == (5, 8, 9)
    np.testing.assert_array_equal(v.array, slices.astype(np.float32))
    # slice s sits in stored frame order.index(s) (1-based frame numbers)
    assert [f.frame_number for f in v.frames] == [order.index(s) + 1 for s in range(5)]
    assert {f.sop_instance_uid for f in v.frames} == {ds.SOPInstanceUID}
    np.testing.assert_allclose(v.positions[:, 2], -20.0 + 1.5 * np.arange(5))
    assert v.slice_thickness == pytest.approx(1.5)
    assert v.voxel_volume_mm3 == pytest.approx(0.5 * 0.5 * 1.5)


def test_enhanced_ct_rescale_from_functional_groups():
    ds, slices = enhanced_mr(n=4)
    pvt = Dataset()
    pvt.RescaleSlope, pvt.RescaleIntercept, pvt.RescaleType = 2, -1024, "HU"
    ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence = Sequence([pvt])
    v = vol.load(series_of([ds]))
    np.testing.assert_allclose(v.array, slices * 2.0 - 1024)


def test_enhanced_duplicate_frame_reported():
    ds, _ = enhanced_mr(n=6, spacing=2.0)
    ds.PerFrameFunctionalGroupsSequence[2].PlanePositionSequence[0].ImagePositionPatient = [0.0, 0.0, -20.0 + 3 * 2.0]
    with pytest.raises(InvalidSeries, match=r"duplicate slice position: .*frame 3 .*frame 4|duplicate slice position: .*frame 4 .*frame 3"):
        vol.load(series_of([ds]))


def test_lossy_source_is_a_volume_warning_and_lossless_is_not():
    """A lossy-compressed source (JPEG-LS near-lossless, or Lossy Image Compression "01") gives the volume the
    warning the SR and summary show; reversible RLE does not."""
    from pydicom.uid import JPEGLSNearLossless

    from svdmark.volume.lossy import LOSSY_WARNING

    dss, _ = ct_stack(n=4, rows=16, cols=16, signed=False, intercept=0.0, hu=lambda k, i, j, xyz: 40 + 3 * k + i)
    for ds in dss:
        ds.compress(RLELossless)
    assert LOSSY_WARNING not in vol.load(series_of(dss)).warnings

    dss, _ = ct_stack(n=4, rows=16, cols=16, signed=False, intercept=0.0, hu=lambda k, i, j, xyz: 40 + 3 * k + i)
    dss[2].LossyImageCompression = "01"
    assert LOSSY_WARNING in vol.load(series_of(dss)).warnings

    dss, _ = ct_stack(n=4, rows=16, cols=16, signed=False, intercept=0.0, hu=lambda k, i, j, xyz: 40 + 3 * k + i)
    for ds in dss:
        ds.compress(JPEGLSNearLossless, jls_error=3)  # pyjpegls (test extra)
        ds.pop("LossyImageCompression", None)  # only the transfer syntax tells
    v = vol.load(series_of(dss))
    assert LOSSY_WARNING in v.warnings

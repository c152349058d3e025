"""svdmark.volume against real DICOM files nobody on this project wrote (the pydicom test corpus).

Each stack is built from a real instance (its pixel data, transfer syntax and header as shipped), copied to
further slice positions where one image is not a volume; the expected values come from pydicom's own
modality LUT and from the headers by independent arithmetic.
"""
from __future__ import annotations

import copy
import glob
import os
import warnings

import numpy as np
import pydicom
import pydicom.data
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.pixels import apply_modality_lut
from pydicom.tag import Tag
from pydicom.uid import generate_uid

from svdmark import volume as vol
from svdmark.domain import Series
from svdmark.errors import InvalidSeries
from tests.unit.test_volume import ct_stack, series_of

pytestmark = pytest.mark.filterwarnings("ignore")


def _read(name: str) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(pydicom.data.get_testdata_file(name))


def _series(datasets) -> Series:
    return Series("1.2.3", "1.2.3.4", tuple(datasets))


def _stack(name: str, n: int = 3, step=None, geometry: bool = False) -> list[pydicom.Dataset]:
    """``n`` copies of a real instance, moved ``step`` mm per slice (default 2 mm along its normal).

    ``geometry``: give an image without patient geometry (secondary capture, US) an axial one.
    """
    ds0 = _read(name)
    if geometry:
        ds0.ImagePositionPatient = [0.0, 0.0, 0.0]
        ds0.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds0.PixelSpacing = [0.5, 0.5]
    iop = np.array([float(x) for x in ds0.ImageOrientationPatient])
    step = np.cross(iop[:3], iop[3:]) * 2.0 if step is None else np.asarray(step, float)
    out = []
    for k in range(n):
        ds = copy.deepcopy(ds0)
        ds.SOPInstanceUID = generate_uid()
        ds.ImagePositionPatient = [float(x) + k * s for x, s in zip(ds0.ImagePositionPatient, step)]
        out.append(ds)
    return out


def _raw(ds: pydicom.Dataset, keyword: str, vr: str, value: bytes) -> None:
    """Put ``value`` into ``ds`` as the bytes of a file would carry it (pydicom parses it on access)."""
    tag = Tag(keyword)
    ds[tag] = RawDataElement(tag, vr, len(value), value, 0, False, True)


# --------------------------------------------------------------------------- handled correctly (kept as checks)


def test_real_ct_series_positions_and_hu():
    """dicomdirtests CT5N: five real CT slices, sent out of order, come back sorted with their own HU."""
    base = os.path.dirname(pydicom.data.get_testdata_file("CT_small.dcm"))
    files = sorted(glob.glob(os.path.join(base, "dicomdirtests", "98892001", "CT5N", "*")))
    datasets = [pydicom.dcmread(f) for f in files]
    v = vol.load(_series(datasets))
    z = sorted(float(ds.ImagePositionPatient[2]) for ds in datasets)
    assert v.positions[:, 2].tolist() == z
    by_uid = {ds.SOPInstanceUID: ds for ds in datasets}
    for k, ref in enumerate(v.frames):
        ds = by_uid[ref.sop_instance_uid]
        np.testing.assert_array_equal(v.array[k], apply_modality_lut(ds.pixel_array, ds))
    assert v.slice_spacing == pytest.approx(2.5, abs=1e-4)


def test_real_gantry_tilted_ct_is_sheared_not_resampled():
    """J2K_pixelrep_mismatch.dcm: a real CT with a -22° tilted IOP; the table moves along z."""
    datasets = _stack("J2K_pixelrep_mismatch.dcm", n=3, step=(0.0, 0.0, -5.0))
    v = vol.load(_series(datasets))
    col = np.array([float(x) for x in datasets[0].ImageOrientationPatient[3:]])
    normal = np.cross([1.0, 0.0, 0.0], col / np.linalg.norm(col))
    assert v.gantry_tilt_degrees == pytest.approx(22.0, abs=0.05)
    assert v.slice_spacing == pytest.approx(5.0 * abs(normal[2]), abs=1e-3)
    ps = [float(x) for x in datasets[0].PixelSpacing]
    expected = np.asarray(v.positions[0]) + 20 * ps[1] * np.array([1.0, 0, 0]) + 10 * ps[0] * col / np.linalg.norm(col)
    np.testing.assert_allclose(v.index_to_patient(0, 10, 20), expected, atol=1e-3)
    assert any("gantry tilt 22.0" in w for w in v.warnings)


def _enhanced_pair():
    """eCT_Supplemental.dcm and a copy of it (another SOP Instance UID) moved 20 mm down."""
    e0 = _read("eCT_Supplemental.dcm")
    e1 = copy.deepcopy(e0)
    e1.SOPInstanceUID = generate_uid()
    for pf in e1.PerFrameFunctionalGroupsSequence:
        p = pf.PlanePositionSequence[0]
        p.ImagePositionPatient = [float(p.ImagePositionPatient[0]), float(p.ImagePositionPatient[1]),
                                  float(p.ImagePositionPatient[2]) - 20.0]
    return e0, e1


def test_real_enhanced_ct_frames_of_two_instances():
    """eCT_Supplemental.dcm (2 frames) and a copy moved 20 mm: four frames, each with its own position and HU."""
    e0, e1 = _enhanced_pair()
    v = vol.load(_series([e0, e1]))
    by_uid = {e0.SOPInstanceUID: e0, e1.SOPInstanceUID: e1}
    for k, ref in enumerate(v.frames):
        ds = by_uid[ref.sop_instance_uid]
        pf = ds.PerFrameFunctionalGroupsSequence[ref.frame_number - 1]
        assert v.positions[k].tolist() == [float(x) for x in pf.PlanePositionSequence[0].ImagePositionPatient]
        np.testing.assert_array_equal(v.array[k], ds.pixel_array[ref.frame_number - 1].astype(float) - 1024.0)


@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "MR_small_bigendian.dcm", "MR_small_jp2klossless.dcm",
                                  "MR_small_jpeg_ls_lossless.dcm", "MR_small_implicit.dcm"])
def test_real_transfer_syntaxes_give_the_same_volume(name):
    reference = _read("MR_small.dcm").pixel_array
    v = vol.load(_series(_stack(name)))
    for k in range(3):
        np.testing.assert_array_equal(v.array[k], reference)


def test_real_localiser_series_is_refused_as_mixed_planes():
    """dicomdirtests MR2: a real tri-plane localiser series."""
    base = os.path.dirname(pydicom.data.get_testdata_file("CT_small.dcm"))
    datasets = [pydicom.dcmread(f) for f in glob.glob(os.path.join(base, "dicomdirtests", "98892003", "MR2", "*"))]
    datasets = [ds for ds in datasets if ds.SeriesInstanceUID.endswith(".136")]
    with pytest.raises(InvalidSeries, match="mixed orientations"):
        vol.load(_series(datasets))


# --------------------------------------------------------------------------- defects


def test_malformed_number_of_frames_is_invalid_series_not_a_traceback():
    """badVR.dcm (pydicom corpus) carries NumberOfFrames '1A': a header error, not an internal one."""
    with pytest.raises(InvalidSeries, match="NumberOfFrames"):
        vol.load(_series([_read("badVR.dcm")]))


@pytest.mark.parametrize("keyword, raw", [
    ("SliceThickness", b"5mm "),
    ("RescaleSlope", b"1\\1 "),
    ("RescaleIntercept", b"abc "),
    ("GantryDetectorTilt", b"x "),
])
def test_malformed_decimal_header_is_invalid_series(keyword, raw):
    datasets = _stack("CT_small.dcm")
    _raw(datasets[1], keyword, "DS", raw)
    with pytest.raises(InvalidSeries, match=keyword):
        vol.load(_series(datasets))


@pytest.mark.parametrize("raw", [b"0 ", b"NaN ", b"inf "])
def test_unusable_rescale_slope_is_refused_not_a_flat_or_nan_volume(raw):
    datasets = _stack("CT_small.dcm")
    _raw(datasets[1], "RescaleSlope", "DS", raw)
    with pytest.raises(InvalidSeries, match="RescaleSlope"):
        vol.load(_series(datasets))


def test_unusable_rescale_in_enhanced_functional_groups_is_refused():
    e0, e1 = _enhanced_pair()
    _raw(e1.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0], "RescaleSlope", "DS", b"0 ")
    with pytest.raises(InvalidSeries, match="RescaleSlope"):
        vol.load(_series([e0, e1]))


@pytest.mark.parametrize("name", ["examples_palette.dcm", "OBXXXX1A_rle.dcm"])
def test_palette_colour_image_is_refused_not_read_as_grey(name):
    """One sample per pixel but PALETTE COLOR: the values are indices into a colour table, not intensities."""
    with pytest.raises(InvalidSeries, match="PALETTE COLOR"):
        vol.load(_series(_stack(name, geometry=True)))


def test_modality_lut_sequence_is_applied():
    """mlut_18.dcm: stored values reach output units through a Modality LUT Sequence, not a rescale."""
    datasets = _stack("mlut_18.dcm", geometry=True)
    v = vol.load(_series(datasets))
    expected = apply_modality_lut(datasets[0].pixel_array, datasets[0]).astype(np.float32)
    for k in range(3):
        np.testing.assert_array_equal(v.array[k], expected)


def test_pipeline_blames_the_input_for_a_malformed_header():
    """pipeline.failure: a header error in the volume stage is the input's fault, not svdmark's."""
    from svdmark.pipeline import Stage, failure

    try:
        vol.load(_series([_read("badVR.dcm")]))
    except Exception as exc:  # noqa: BLE001 - the pipeline's own catch-all
        result = failure(Stage.VOLUME, exc)
    assert (result.blame, result.expected, result.error) == ("input", True, "InvalidSeries")


def _padded_ct(padding: int, limit: int | None = None) -> tuple[list[pydicom.Dataset], np.ndarray]:
    """Real CT_small slices whose corners are padding (outside the field-of-view circle), as a GE scanner writes."""
    stack = _stack("CT_small.dcm")
    px = stack[0].pixel_array.copy()
    rows, cols = px.shape
    yy, xx = np.mgrid[:rows, :cols]
    outside = (yy - rows / 2) ** 2 + (xx - cols / 2) ** 2 > (rows / 2) ** 2
    px[outside] = padding
    for ds in stack:
        ds.PixelData = px.astype(stack[0].pixel_array.dtype).tobytes()
        ds.PixelPaddingValue = padding
        if limit is not None:
            ds.PixelPaddingRangeLimit = limit
    return stack, outside


@pytest.mark.parametrize("padding, limit", [(-2000, None), (-2000, -1500)])
def test_pixel_padding_outside_the_field_of_view_reads_as_the_lowest_real_value(padding, limit):
    """PS3.3 C.7.5.1.1.2: padding is not image. Read as stored it would be a ring far below air (or, unsigned, far
    above bone) that a head mask or a model would take for anatomy."""
    stack, outside = _padded_ct(padding, limit)
    v = vol.load(_series(stack))
    ds = stack[0]
    real = apply_modality_lut(ds.pixel_array, ds)[~outside]
    assert np.all(v.array[:, outside] == real.min())
    np.testing.assert_array_equal(v.array[0][~outside], real)


def test_a_padding_value_that_cannot_be_read_leaves_the_image_as_stored():
    stack, outside = _padded_ct(-2000)
    for ds in stack:
        _raw(ds, "PixelPaddingValue", "SS", b"\x01")  # one byte: no SS value
    v = vol.load(_series(stack))
    np.testing.assert_array_equal(v.array[0], apply_modality_lut(stack[0].pixel_array, stack[0]))


def test_a_padding_value_written_with_the_other_signedness_still_marks_the_padding():
    """CT_small's pixels are signed; a vendor writes the padding -2000 as US 63536 (two's complement), which as
    written never matches a pixel: the field-of-view ring stayed at -2000 HU."""
    stack, outside = _padded_ct(-2000)
    for ds in stack:
        _raw(ds, "PixelPaddingValue", "US", (63536).to_bytes(2, "little"))
    v = vol.load(_series(stack))
    real = apply_modality_lut(stack[0].pixel_array, stack[0])[~outside]
    assert np.all(v.array[:, outside] == real.min())


def _two_acquisitions(offset_mm: float, n: int = 11, increment: float = 5.0) -> list[pydicom.Dataset]:
    a, _ = ct_stack(n=n, increment=increment, hu=lambda k, i, j, xyz: 30.0)
    b, _ = ct_stack(n=n, increment=increment, origin=(-3.0, -4.0, 10.0 + offset_mm), hu=lambda k, i, j, xyz: 70.0)
    for ds in a:
        ds.AcquisitionNumber = 1
    for ds in b:
        ds.SeriesInstanceUID, ds.FrameOfReferenceUID = a[0].SeriesInstanceUID, a[0].FrameOfReferenceUID
        ds.AcquisitionNumber = 2
    return a + b


@pytest.mark.parametrize("offset_mm", [2.5, 2.2, 1.7, 12.5])
def test_a_repeat_scan_sent_in_the_same_series_is_refused_not_interleaved(offset_mm):
    """Half a slice apart, the two acquisitions made one evenly spaced 2.5 mm stack of alternating scans: every
    slice weighed half its thickness, and the model read alternating images."""
    with pytest.raises(InvalidSeries, match="two acquisitions in one series cover the same part"):
        vol.load(series_of(_two_acquisitions(offset_mm)))


def test_acquisitions_that_follow_each_other_along_the_head_are_one_volume():
    """Step-and-shoot CT numbers each rotation's slices as an acquisition of its own."""
    stack = _two_acquisitions(offset_mm=55.0)  # 11 slices of 5 mm each: the second starts where the first ends
    v = vol.load(series_of(stack))
    assert v.shape[0] == 22
    per_slice, _ = ct_stack(n=8, increment=5.0)
    for k, ds in enumerate(per_slice):
        ds.AcquisitionNumber = k + 1  # every slice an acquisition of its own
    assert vol.load(series_of(per_slice)).shape[0] == 8

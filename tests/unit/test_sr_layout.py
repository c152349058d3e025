"""The SR's viewer layout, checked on the dataset itself (tests/viewer runs the viewers' own libraries).

Every NUM carries exactly one child, an INFERRED FROM SCOORD POINT on a source image; values are written
at their measured precision; the procedure is head CT / brain MR; flag groups have no finding type; a
withheld group is placed by a circle on the middle slice.
"""
from __future__ import annotations

import re

import numpy as np
import pytest
from highdicom.sr.utils import find_content_items

from svdmark.domain import Interval
from svdmark.encode import results
from tests.unit.test_encode_support import (
    WITHHELD,
    cmb_result,
    ct_series,
    enhanced_mr_series,
    swi_series,
    wml_mask,
    wml_result,
)


def _code(item) -> str:
    return item.ConceptNameCodeSequence[0].CodeValue


def _groups(sr):
    (imaging,) = [i for i in sr.ContentSequence if _code(i) == "126010"]
    return [g for g in imaging.ContentSequence if _code(g) == "125007"]


def _nums(sr):
    return [i for i in find_content_items(sr, recursive=True) if i.ValueType == "NUM"]


@pytest.fixture(scope="module")
def encoded():
    ct, ct_vol = ct_series()
    tilt, tilt_vol = ct_series(tilt_deg=20.0, seed=4)
    swi, swi_vol = swi_series()
    emr, emr_vol = enhanced_mr_series()
    cases = {
        "wml": wml_result(ct, ct_vol, wml_mask(ct_vol), interval=Interval(1.234, 2.345, "TTA")),
        "wml-tilted": wml_result(tilt, tilt_vol, wml_mask(tilt_vol, seed=8)),
        "wml-zero": wml_result(ct, ct_vol, np.zeros(ct_vol.shape, np.uint8)),
        "cmb": cmb_result(swi, swi_vol, 12, interval=Interval(10, 15, "thresholds")),
        "cmb-emr": cmb_result(emr, emr_vol, 5),
        "wml-withheld": wml_result(ct, ct_vol, wml_mask(ct_vol), quality=WITHHELD),
        "cmb-withheld": cmb_result(swi, swi_vol, 12, quality=WITHHELD),
    }
    return {k: (r, results(r, uid_seed=f"layout-{k}")) for k, r in cases.items()}


@pytest.mark.parametrize("name", ["wml", "wml-tilted", "wml-zero", "cmb", "cmb-emr"])
def test_every_num_has_one_image_point(encoded, name):
    result, enc = encoded[name]
    frames = {(f.sop_instance_uid, f.frame_number) for f in result.volume.frames}
    nums = _nums(enc.sr)
    assert nums
    for n in nums:
        (child,) = n.ContentSequence
        assert (child.RelationshipType, child.ValueType, child.GraphicType) == ("INFERRED FROM", "SCOORD", "POINT")
        (image,) = child.ContentSequence
        assert (image.RelationshipType, image.ValueType) == ("SELECTED FROM", "IMAGE")
        ref = image.ReferencedSOPSequence[0]
        frame = int(ref.ReferencedFrameNumber) if "ReferencedFrameNumber" in ref else None
        assert (ref.ReferencedSOPInstanceUID, frame) in frames
        col, row = child.GraphicData
        assert 0 <= col <= result.volume.shape[2] and 0 <= row <= result.volume.shape[1]


@pytest.mark.parametrize("name", ["cmb", "cmb-emr"])
def test_microbleed_point_is_its_centre_on_the_nearest_slice(encoded, name):
    result, enc = encoded[name]
    vol = result.volume
    bleeds = [g for g in _groups(enc.sr) if any(i.ValueType == "SCOORD3D" for i in g.ContentSequence)]
    assert len(bleeds) == result.findings.count
    index = {(f.sop_instance_uid, f.frame_number): k for k, f in enumerate(vol.frames)}
    for g, mb in zip(bleeds, result.findings.microbleeds):
        for n in (i for i in g.ContentSequence if i.ValueType == "NUM"):
            (child,) = n.ContentSequence
            ref = child.ContentSequence[0].ReferencedSOPSequence[0]
            k = index[(ref.ReferencedSOPInstanceUID, int(ref.get("ReferencedFrameNumber", 0)) or None)]
            col, row = child.GraphicData
            p = vol.index_to_patient(k, row - 0.5, col - 0.5)
            off = np.asarray(mb.center_mm) - p
            along = float(off @ vol.normal)
            assert abs(along) <= vol.slice_spacing / 2 + 1e-3
            np.testing.assert_allclose(off - along * vol.normal, 0, atol=1e-3)


def test_whole_series_point_is_on_the_largest_mask_slice(encoded):
    result, enc = encoded["wml"]
    mask = result.findings.mask
    k = int(np.argmax(mask.reshape(mask.shape[0], -1).sum(axis=1)))
    (vol_num,) = [n for n in _nums(enc.sr) if _code(n) == "118565006"]
    ref = vol_num.ContentSequence[0].ContentSequence[0].ReferencedSOPSequence[0]
    assert ref.ReferencedSOPInstanceUID == result.volume.frames[k].sop_instance_uid
    col, row = vol_num.ContentSequence[0].GraphicData
    assert mask[k, int(row), int(col)] or mask[k].sum() < 4  # inside the lesion (centroid of a blob)


def test_values_at_measured_precision(encoded):
    wml = {_code(n): n.MeasuredValueSequence[0].NumericValue.original_string for n in _nums(encoded["wml"][1].sr)}
    assert re.fullmatch(r"\d+\.\d\d", wml["118565006"]) and wml["FLAGINPUT"] == wml["118565006"]
    assert (wml["UNCLOW"], wml["UNCHIGH"]) == ("1.23", "2.35")
    cmb = {}
    for n in _nums(encoded["cmb"][1].sr):
        cmb.setdefault(_code(n), []).append(n.MeasuredValueSequence[0].NumericValue.original_string)
    assert cmb["246206008"] == ["12"] and cmb["CMBGRADEN"] == ["2"] and cmb["FLAGINPUT"] == ["12"]
    assert (cmb["UNCLOW"], cmb["UNCHIGH"]) == (["10"], ["15"])
    assert all(re.fullmatch(r"\d+\.\d", v) for v in cmb["81827009"])
    assert all(re.fullmatch(r"\d\.\d\d", v) for v in cmb["CMBCONF"])


def test_procedure_and_flag_group_codes(encoded):
    for name, procedure in (("wml", "24725-4"), ("cmb", "24590-2")):
        sr = encoded[name][1].sr
        (proc,) = [i for i in sr.ContentSequence if _code(i) == "121058"]
        assert proc.ConceptCodeSequence[0].CodeValue == procedure
        flag = [g for g in _groups(sr) if any(_code(i) == "FLAGINPUT" for i in g.ContentSequence if i.ValueType == "NUM")]
        assert len(flag) == 1
        assert not [i for i in flag[0].ContentSequence if _code(i) == "121071"]  # no "Finding = Lesion"
        (comment,) = [i.TextValue for i in flag[0].ContentSequence if _code(i) == "121106"]
        assert comment == encoded[name][0].flags[0].statement


@pytest.mark.parametrize("name", ["wml-withheld", "cmb-withheld"])
def test_withheld_groups_are_placed_without_a_number(encoded, name):
    result, enc = encoded[name]
    assert not _nums(enc.sr)
    groups = _groups(enc.sr)
    assert len(groups) == 1 + len(result.flags)
    mid = result.volume.frames[result.volume.shape[0] // 2].sop_instance_uid
    for g in groups:
        (region,) = [i for i in g.ContentSequence if i.ValueType in ("SCOORD", "SCOORD3D")]
        assert (region.GraphicType, _code(region)) == ("CIRCLE", "ANALYSED")
        assert region.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == mid

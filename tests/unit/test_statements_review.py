"""Where a review of what the SR, the summary image and the table state found them disagreeing: a negative or
reversed WML figure was reported when no flag applied (the aspirin rule refuses it when it does), and a count's
fractional interval end was rounded in the SR's coded values but not in its text, the image or the table."""
from __future__ import annotations

import dataclasses
import io

import highdicom as hd
import pydicom
import pytest

from svdmark.domain import Interval, OutputKind
from svdmark.encode import EncodeError, results, summary_text
from svdmark.encode.templates import Templates
from svdmark.rules import RuleSet
from svdmark.summary import summarise

from .test_encode_support import cmb_result, ct_series, swi_series, wml_mask, wml_result


def _nums(sr) -> dict[str, float]:
    buf = io.BytesIO()
    sr.save_as(buf, enforce_file_format=True)
    buf.seek(0)
    return {i.ConceptNameCodeSequence[0].CodeValue: float(i.MeasuredValueSequence[0].NumericValue)
            for i in hd.sr.utils.find_content_items(pydicom.dcmread(buf), recursive=True) if i.ValueType == "NUM"}


@pytest.mark.parametrize("findings, why", [
    (dict(volume_ml=-1.5), "WML volume is -1.5"),
    (dict(volume_ml=0.5, interval=Interval(-0.5, 1.0, "tta")), "reversed or starts below 0"),
    (dict(volume_ml=5.0, interval=Interval(6.0, 4.0, "tta")), "reversed or starts below 0"),
], ids=["negative volume", "negative interval", "reversed interval"])
def test_an_impossible_wml_figure_is_refused_when_no_flag_applies(findings, why):
    series, vol = ct_series()
    with pytest.raises(ValueError):  # the aspirin rule's own refusal, when it applies
        wml_result(series, vol, wml_mask(vol), **findings)
    r = wml_result(series, vol, wml_mask(vol), ruleset=RuleSet.load().configured(mode="never"), **findings)
    assert r.flags == ()
    with pytest.raises(EncodeError, match=why):
        results(r, uid_seed="neg", profile={OutputKind.SR})


def test_a_withheld_result_has_no_number_to_check_and_a_measured_nan_is_refused():
    from svdmark.domain import Quality, check_reportable

    series, vol = ct_series()
    good = wml_result(series, vol, wml_mask(vol)).findings
    check_reportable(good)
    withheld = Quality(measurable=False, reasons=("motion",), scores={})
    check_reportable(dataclasses.replace(good, volume_ml=float("nan"), quality=withheld))
    with pytest.raises(ValueError, match="volume is nan"):
        check_reportable(dataclasses.replace(good, volume_ml=float("nan")))


def test_a_counts_fractional_interval_end_is_written_as_it_is_in_the_sr():
    series, vol = swi_series()
    r = cmb_result(series, vol, 9, interval=Interval(8.0, 9.4, "thresholds"))
    nums = _nums(results(r, uid_seed="frac", profile={OutputKind.SR}).sr)
    s = summarise(r)
    assert (nums["UNCLOW"], nums["UNCHIGH"]) == (s.cmb_count_low, s.cmb_count_high) == (8.0, 9.4)
    # 9.4 is fewer than 10 microbleeds: grade 1 like 8, so the grade is not uncertain (rule set 1.4.0)
    assert s.category_uncertain is False and any("8–9.4" in line for line in summary_text(r, Templates.load()))
    whole = _nums(results(cmb_result(series, vol, 9, interval=Interval(8.0, 11.0, "t")), uid_seed="w",
                          profile={OutputKind.SR}).sr)
    assert (whole["UNCLOW"], whole["UNCHIGH"]) == (8.0, 11.0)

"""stress.score: what the SR states of each finding's category, and how often it is wrong without saying so."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root holds stress/

from svdmark.domain import CmbFindings, Interval, Microbleed, WmlFindings  # noqa: E402
from svdmark.rules import RuleSet  # noqa: E402
from stress.score import flag_fields, summarise_cmb, summarise_wml  # noqa: E402


def _wml(volume_ml: float, interval: tuple[float, float] | None) -> dict:
    f = WmlFindings(volume_ml=volume_ml, mask=np.zeros((1, 1, 1), np.uint8),
                    interval=None if interval is None else Interval(*interval, "test"))
    return flag_fields(RuleSet.load().evaluate(f))


def test_the_wml_flags_category_and_its_uncertainty_are_read_from_the_packaged_rules():
    cut = RuleSet.load().rule("aspirin-sich-wml").thresholds["cut_point_ml"]
    assert _wml(cut + 1, (cut + 0.5, cut + 2)) == {"flag_category": "large-wml", "flag_uncertain": False,
                                                    "cut_point_ml": cut}
    assert _wml(cut - 1, (cut - 3, cut + 2))["flag_uncertain"]
    assert _wml(cut - 1, None) == {"flag_category": "below-cut-point", "flag_uncertain": False, "cut_point_ml": cut}


def test_category_agreement_counts_a_wrong_category_the_sr_did_not_mark_uncertain():
    cut = 17.0
    rows = [{"truth_ml": t, "pred_ml": p, "cut_point_ml": cut, "flag_uncertain": u, "withheld": False, "dice": None}
            for t, p, u in [(30.0, 10.0, False),  # large read as below, stated as certain
                            (30.0, 15.0, True),  # large read as below, the interval crosses the cut-point
                            (2.0, 3.0, False), (20.0, 18.0, False)]]
    s = summarise_wml(rows)
    assert s["category_agreement"] == pytest.approx(0.5)
    assert s["category_wrong_unflagged"] == pytest.approx(0.25)
    withheld = summarise_wml(rows + [{"truth_ml": 30.0, "pred_ml": 0.0, "withheld": True, "cut_point_ml": cut,
                                      "flag_uncertain": False}])
    assert withheld["category_agreement"] == pytest.approx(0.5)  # a withheld result states no category


def test_a_wrong_grade_is_counted_unless_the_sr_marked_it_uncertain():
    f = CmbFindings(microbleeds=tuple(Microbleed((0.0, 0.0, float(k)), 3.0, 0.9, "lobar") for k in range(9)),
                    mask=np.zeros((1, 1, 1), np.uint8), interval=Interval(8, 12, "test"))
    got = flag_fields(RuleSet.load().evaluate(f))
    assert got["flag_uncertain"] and "cut_point_ml" not in got
    rows = [{"count": c, "pred_count": p, "grade": g, "pred_grade": pg, "tp": min(c, p), "fp": max(p - c, 0),
             "flag_uncertain": u, "withheld": False, "interval": None}
            for c, p, g, pg, u in [(12, 9, 2, 1, True), (40, 25, 3, 2, False), (0, 0, 0, 0, False)]]
    assert summarise_cmb(rows)["grade_wrong_unflagged"] == pytest.approx(1 / 3)

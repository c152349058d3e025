"""training.site_zones: the frame's error at another site's truth mimics, and what a zone about it would remove of
the findings that the shipped zones keep."""
from __future__ import annotations

import numpy as np

from svdmark.measure import frame
from training.frame_error import error_stats
from training.site_zones import removals, site_errors

AT = np.array([[-5.0, -20.0, -8.0], [5.0, -20.0, -8.0]])  # template (RAS) positions
IDENTITY = frame.Frame(np.eye(3), np.zeros(3), 0.0)  # patient LPS -> template RAS is the axis flip alone


def _lps(ras) -> list[float]:
    return (np.asarray(ras, float) * frame.RAS_LPS).tolist()


def test_errors_are_taken_against_the_nearer_position_and_only_for_the_site():
    truth = {"mimics": [{"site": "red nucleus", "center_mm": _lps([4.0, -23.0, -8.0])},
                        {"site": "red nucleus", "center_mm": _lps([-5.0, -20.0, -6.0])},
                        {"site": "substantia nigra", "center_mm": _lps([9.0, -20.0, -12.0])},
                        {"site": "red nucleus"}]}
    errs = site_errors(truth, IDENTITY, "red nucleus", AT)
    assert np.allclose(errs, [[0.0, 0.0, 2.0], [-1.0, -3.0, 0.0]])  # paired side by side, left first
    s = error_stats(errs)
    assert s["n"] == 2 and s["mean_mm"] == [-0.5, -1.5, 1.0]
    assert error_stats([]) == {"n": 0}


def test_a_pair_is_matched_side_by_side_and_a_lone_mimic_to_the_nearer_position():
    """Both nuclei drawn 6-7 mm to the right: the left one is still the left one (the nearer position would be the
    right one, and the left-right error would read 4 mm instead of 6)."""
    pair = {"mimics": [{"site": "red nucleus", "center_mm": _lps([12.0, -20.0, -8.0])},
                       {"site": "red nucleus", "center_mm": _lps([1.0, -20.0, -8.0])}]}
    assert np.allclose(site_errors(pair, IDENTITY, "red nucleus", AT), [[6.0, 0.0, 0.0], [7.0, 0.0, 0.0]])
    lone = {"mimics": [pair["mimics"][1]]}
    assert np.allclose(site_errors(lone, IDENTITY, "red nucleus", AT), [[-4.0, 0.0, 0.0]])


def _find(ras, tp, p=0.999):
    return {"probability": p, "tp": tp, "center_mm": _lps(ras), "core_level": 0.1, "surround_level": 1.0}


def test_a_zone_removes_what_it_holds_after_the_shipped_zones_and_a_head_without_a_frame_removes_nothing():
    pineal = frame.SITES["pineal"][0]
    finds = [_find([5.0, -21.0, -8.0], False),   # in a 3 mm zone about the right red nucleus
             _find([5.0, -20.0, -3.0], True),    # 5 mm above it: only in the 6 mm zone
             _find(pineal, False),               # at the pineal: the shipped zone takes it
             _find([5.0, -20.0, -8.0], False, p=0.5),  # not called
             _find([40.0, 10.0, 20.0], True)]    # far away
    shipped = {"pineal": (7.0, 9.0, 8.0)}
    res = removals([({"finds": finds}, IDENTITY), ({"finds": finds}, None)], AT, [(3, 3, 3), (6, 6, 6)], 0.99, 0.6,
                   shipped)
    assert res["kept_by_the_shipped_zones"] == {"false": 1 + 2, "true": 2 + 2}  # the frameless head keeps its pineal
    assert res["zone_removes"]["[3.0, 3.0, 3.0]"] == {"false": 1, "true": 0}
    assert res["zone_removes"]["[6.0, 6.0, 6.0]"] == {"false": 1, "true": 1}

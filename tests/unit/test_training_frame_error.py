"""training.frame_error: each truth calcification's error in the template, and the zone it implies."""
from __future__ import annotations

import numpy as np

from svdmark.measure import frame
from training.frame_error import site_errors, summary


def test_errors_are_taken_in_the_template_against_the_nearer_site():
    fit = frame.Frame(np.eye(3), np.zeros(3), 0.0)  # patient LPS -> template RAS is the axis flip alone
    pineal = np.asarray(frame.SITES["pineal"][0]) * frame.RAS_LPS
    right_glomus = np.asarray(frame.SITES["choroid plexus glomus"][1]) * frame.RAS_LPS
    truth = {"mimics": [
        {"kind": "calcification", "site": "pineal", "center_mm": (pineal + [0.0, -3.0, 0.0]).tolist()},
        {"kind": "calcification", "site": "choroid plexus", "center_mm": (right_glomus + [2.0, 0.0, 1.0]).tolist()},
        {"kind": "iron-rich nucleus", "site": "red nucleus", "center_mm": [0.0, 0.0, 0.0]},
        {"kind": "vein (medullary)"},
    ]}
    errs = dict(site_errors(truth, fit))
    assert np.allclose(errs["pineal"], [0.0, 3.0, 0.0])  # 3 mm anterior: -y in LPS, +y in the template (RAS)
    assert np.allclose(errs["choroid plexus glomus"], [-2.0, 0.0, 1.0])
    s = summary(list(site_errors(truth, fit)))
    assert s["pineal"]["zone_mm"] == [2, 5, 2] and s["pineal"]["n"] == 1

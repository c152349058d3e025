"""training.interval_table: two WML calibrations compared on one evaluation's readings."""
from __future__ import annotations

import pytest

from training.interval_table import table

ROWS = [dict(truth=0.0, model=2.0, passes=[2.0], measurable=True),
        dict(truth=20.0, model=10.0, passes=[9.0, 11.0], measurable=None),  # no gate ran: kept
        dict(truth=5.0, model=4.0, passes=[4.0], measurable=False)]  # withheld: no interval, left out


def test_coverage_width_and_low_end_of_each_calibration():
    one = table(ROWS, {"a_ml": 3.0, "b": 0.0})  # [0, 5] and [6, 14]
    assert one["n"] == 2 and one["coverage"] == 0.5
    assert one["mean_width_ml"] == pytest.approx((5 + 8) / 2) and one["mean_low_end_ml"] == pytest.approx(6.0)
    wider = table(ROWS, {"a_ml": 1.0, "b": 0.5})  # h = 2 and 6: [0, 4] and [3, 17]
    assert wider["coverage"] == 0.5 and wider["n_low_end"] == 1
    assert wider["mean_low_end_ml"] == pytest.approx(3.0) and wider["mean_width_ml"] == pytest.approx(9.0)

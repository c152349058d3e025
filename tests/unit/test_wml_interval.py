"""The WML volume's interval (``measure.uncertainty.wml_interval``), one margin or one per side, and its calibration
(``training.calibrate``): what the calibration reports is what the runtime then gives."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from svdmark.measure.uncertainty import wml_interval

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root holds training/

from training.calibrate import wml_uncertainty, wml_uncertainty_asymmetric  # noqa: E402


def test_one_margin_or_one_per_side():
    sym = wml_interval(10.0, [9.0, 11.0], {"a_ml": 1.0, "b": 0.1})  # h = 2
    assert (sym.low, sym.high) == (7.0, 13.0) and "± calibrated error" in sym.method
    per_side = wml_interval(10.0, [9.0, 11.0], {"a_low_ml": 0.5, "b_low": 0.0, "a_high_ml": 2.0, "b_high": 0.5})
    assert (per_side.low, per_side.high) == (8.5, 18.0) and "below and above" in per_side.method
    assert wml_interval(1.0, [1.0], {"a_low_ml": 3.0, "b_low": 0.0, "a_high_ml": 1.0, "b_high": 0.0}).low == 0.0
    assert wml_interval(1.0, [1.0], None) is None


def _rows(seed: int = 0, n: int = 60):
    """Readings biased as on heads built by other code: small loads over-read by up to 2 mL, large ones under-read
    by up to half their volume."""
    rng = np.random.default_rng(seed)
    truth = rng.uniform(0, 40, n)
    model = np.where(truth < 3, truth + rng.uniform(0, 2, n), truth * rng.uniform(0.5, 1.05, n))
    return [{"truth": float(t), "model": float(m), "passes": [float(m) * 0.98, float(m) * 1.02]}
            for t, m in zip(truth, model)]


def _held(rows, spec) -> tuple[float, float]:
    """Coverage and mean width of the runtime's intervals."""
    ivs = [wml_interval(r["model"], r["passes"], spec) for r in rows]
    return (float(np.mean([iv.low <= r["truth"] <= iv.high for iv, r in zip(ivs, rows)])),
            float(np.mean([iv.high - iv.low for iv in ivs])))


def test_the_calibration_s_coverage_and_width_are_the_runtime_s():
    rows = _rows()
    spec = wml_uncertainty_asymmetric(rows, 0.9)
    cov, width = _held(rows, spec)
    assert cov >= 0.9 and cov == spec["validation_coverage"]
    assert abs(width - spec["validation_mean_width_ml"]) < 0.01
    # the bias is mostly upwards (under-read loads): the upper margin is the wider one
    assert spec["a_high_ml"] + 20 * spec["b_high"] > spec["a_low_ml"] + 20 * spec["b_low"]


def test_a_margin_per_side_is_no_wider_than_one_margin_at_the_same_coverage():
    rows = _rows(1)
    one = wml_uncertainty(rows, 0.9)
    per_side = wml_uncertainty_asymmetric(rows, 0.9)
    assert _held(rows, per_side)[0] >= 0.9 and _held(rows, one)[0] >= 0.9
    assert _held(rows, per_side)[1] <= _held(rows, one)[1]

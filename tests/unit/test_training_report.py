"""training.evaluate's report: a baseline that was not run (--no-baseline) prints no figures, not zeros."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root holds training/

from training.evaluate import measured, report  # noqa: E402


def _cmb(baseline):
    model = {"sensitivity": 0.9, "fp_per_scan": 0.5, "grade_agreement": 0.95}
    return {"model_label": "cmb-swi 9.9.9", "split": "heldout", "n": 1, "cases": [{"n_truth": 3}], "model": model,
            "baseline": baseline, "seconds_mean": 1.0}


def test_a_baseline_not_run_is_left_out():
    text = report(None, _cmb(None))
    assert "model    sensitivity 0.900" in text and "baseline" not in text
    assert [who for who, _ in measured(_cmb(None))] == ["model"]


def test_a_baseline_that_ran_is_reported():
    text = report(None, _cmb({"sensitivity": 0.7, "fp_per_scan": 17.0, "grade_agreement": 0.3}))
    assert "baseline sensitivity 0.700  FP/scan 17.00" in text

"""Uncertainty intervals for the WML volume and the microbleed count.

Both come from the model itself plus an error model calibrated on validation phantoms (never on a
reported split); the manifest's ``uncertainty`` section holds the calibration and says where it was
chosen:

* **WML** — the runtime's test-time-augmentation passes (manifest ``input.tta``) each give a volume;
  the interval is [min(passes) − h, max(passes) + h] with h = ``a_ml`` + ``b`` × volume, where a and b
  were fitted so that ``coverage`` of validation cases had their truth inside.
* **CMB** — the count at a stricter and at a looser classifier threshold (``threshold_high`` /
  ``threshold_low``, chosen on validation for the same coverage): the bleeds the model is sure of, and
  those it would call if it erred on the side of calling.

No library computes calibrated intervals from these two model-specific inputs; the arithmetic is a
few lines, kept here with the calibration's provenance.
"""
from __future__ import annotations

from typing import Callable, Sequence

from ..domain import Interval


def wml_interval(volume_ml: float, pass_volumes_ml: Sequence[float], spec: dict | None) -> Interval | None:
    """The interval for a WML volume, or None when the manifest has no WML calibration."""
    if not spec:
        return None
    h = float(spec.get("a_ml", 0.0)) + float(spec.get("b", 0.0)) * volume_ml
    lo = min([volume_ml, *pass_volumes_ml]) - h
    hi = max([volume_ml, *pass_volumes_ml]) + h
    n = len(pass_volumes_ml) or 1
    cov = float(spec.get("coverage", 0.9))
    return Interval(round(max(0.0, lo), 2), round(hi, 2),
                    f"{cov:.0%} interval: {n} test-time-augmentation pass{'es' if n > 1 else ''} "
                    f"± calibrated error (validation phantoms)")


def cmb_interval(count_at: Callable[[float], int], count: int, spec: dict | None) -> Interval | None:
    """The interval for a microbleed count; ``count_at(threshold)`` counts the bleeds called at a threshold."""
    if not spec:
        return None
    lo = min(count, count_at(float(spec["threshold_high"])))
    hi = max(count, count_at(float(spec["threshold_low"])))
    cov = float(spec.get("coverage", 0.9))
    return Interval(float(lo), float(hi),
                    f"{cov:.0%} interval: counts at classifier thresholds {spec['threshold_high']} and "
                    f"{spec['threshold_low']} (calibrated on validation phantoms)")

"""Uncertainty intervals for the WML volume and the microbleed count.

Both come from the model itself plus an error model calibrated on validation phantoms (never on a
reported split); the manifest's ``uncertainty`` section holds the calibration and says where it was
chosen:

* **WML** — the runtime's test-time-augmentation passes (manifest ``input.tta``) each give a volume;
  the interval is [min(passes) − h, max(passes) + h] with h = ``a_ml`` + ``b`` × volume, where a and b
  were fitted so that ``coverage`` of validation cases had their truth inside.
* **CMB** — the count at a stricter and at a looser classifier threshold (``threshold_high`` /
  ``threshold_low``): the bleeds the model is sure of, and those it would call if it erred on the side of
  calling; widened by h = ``a`` + ``b`` × count either side (rounded outwards to whole bleeds), for the
  bleeds no threshold finds and the false findings every threshold keeps. All four chosen on validation
  for the same coverage; without ``a`` and ``b`` there is no margin.

No library computes calibrated intervals from these two model-specific inputs; the arithmetic is a
few lines, kept here with the calibration's provenance.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

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
    a, b = float(spec.get("a", 0.0)), float(spec.get("b", 0.0))
    lo, hi = count_bounds(count, count_at(float(spec["threshold_high"])), count_at(float(spec["threshold_low"])), a, b)
    cov = float(spec.get("coverage", 0.9))
    margin = f" ± ({a:g} + {b:g} × count)" if a or b else ""
    return Interval(float(lo), float(hi),
                    f"{cov:.0%} interval: counts at classifier thresholds {spec['threshold_high']} and "
                    f"{spec['threshold_low']}{margin} (calibrated on validation phantoms)")


def count_bounds(count, strict, loose, a: float = 0.0, b: float = 0.0):
    """The count interval's ends from the count, the counts at the strict and the loose threshold and the margin
    h = ``a`` + ``b`` × count: (floor(min(count, strict) - h) but at least 0, ceil(max(count, loose) + h)). Works
    element-wise on arrays too (``training.calibrate`` uses it so that it rounds as the runtime does)."""
    h = a + b * np.asarray(count, float)
    lo = np.maximum(np.floor(np.minimum(count, strict) - h + 1e-9), 0)
    hi = np.ceil(np.maximum(count, loose) + h - 1e-9)
    if np.ndim(lo) == 0:
        return int(lo), int(hi)
    return lo.astype(int), hi.astype(int)

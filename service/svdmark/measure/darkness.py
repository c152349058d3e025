"""The darkness criterion for microbleed candidates: a microbleed is *black* on T2*/SWI.

The consensus criteria for a cerebral microbleed (Greenberg et al., Lancet Neurol 2009; BOMBS, MARS) begin with a
black, markedly hypointense focus. The candidate classifier decides from a patch and can give a high probability to
a focus that is only grey (on another generator's heads, session 21: most of cmb-swi 1.4.2's false findings). The
criterion measures each candidate's darkest voxel within max(1 mm, its predicted radius) of its centre, in units of
the head's foreground median (the classifier's own normalisation), and the manifest's ``output.max_core_level``
rejects candidates brighter than that.

A level against the whole head does not tell a grey focus in bright tissue from a bleed that partial volume has
made grey. The second criterion measures the core against the candidate's own surroundings: the median of the
shell from 1 to 3 mm beyond max(1 mm, its predicted radius). ``output.max_core_to_surround`` rejects candidates
whose core is brighter than that fraction of their surroundings ("markedly hypointense" relative to the adjacent
parenchyma). Hand-written (numpy): a few lines on the source grid, which no imaging library offers as such.
"""
from __future__ import annotations

import numpy as np

from ..domain import Volume
from .geometry import balls

MIN_RADIUS_MM = 1.0
SURROUND_GAP_MM = 1.0  # the shell starts this far beyond the core's radius ...
SURROUND_WIDTH_MM = 2.0  # ... and is this thick


def _radii(diameters_mm) -> list[float]:
    return [max(MIN_RADIUS_MM, 0.5 * float(d)) for d in diameters_mm]


def core_levels(volume: Volume, centres_kij, diameters_mm, reference: float) -> np.ndarray:
    """The darkest voxel within max(``MIN_RADIUS_MM``, diameter / 2) of each centre (the voxel nearest the centre
    always counts), divided by ``reference``; infinite for a centre whose ball lies outside the grid."""
    arr = volume.array
    lows = [np.inf if b is None else min(float(arr[b[0]][b[1]].min(initial=np.inf)), float(arr[b[2]]))
            for b in balls(volume, centres_kij, _radii(diameters_mm))]
    return np.asarray(lows, float) / float(reference)


def surround_levels(volume: Volume, centres_kij, diameters_mm, reference: float) -> np.ndarray:
    """The median of the shell from max(``MIN_RADIUS_MM``, diameter / 2) + ``SURROUND_GAP_MM`` to that +
    ``SURROUND_WIDTH_MM`` around each centre, divided by ``reference``; NaN where no voxel of the shell is on the
    grid."""
    inner = [r + SURROUND_GAP_MM for r in _radii(diameters_mm)]
    outer = [r + SURROUND_WIDTH_MM for r in inner]
    arr = volume.array
    out = []
    for b_in, b_out in zip(balls(volume, centres_kij, inner), balls(volume, centres_kij, outer)):
        if b_out is None:
            out.append(np.nan)
            continue
        box, shell = b_out[0], b_out[1].copy()
        if b_in is not None:  # the inner ball's box lies within the outer one's: cut the ball out on that box
            shell[tuple(slice(i.start - o.start, i.stop - o.start) for i, o in zip(b_in[0], box))] &= ~b_in[1]
        vals = arr[box][shell]
        out.append(float(np.median(vals)) if vals.size else np.nan)
    return np.asarray(out, float) / float(reference)


def dark_mask(levels, max_core_level: float = np.inf, surrounds=None,
              max_core_to_surround: float = np.inf) -> np.ndarray:
    """Which candidates are dark enough: core level at most ``max_core_level`` and at most ``max_core_to_surround`` x
    the surround level (``surrounds`` is read only when that limit is finite; a NaN surround, no shell on the grid,
    does not reject)."""
    levels = np.asarray(levels, float)
    keep = levels <= max_core_level
    if np.isfinite(max_core_to_surround):
        keep &= ~(levels > max_core_to_surround * np.asarray(surrounds, float))
    return keep


def dark_enough(volume: Volume, candidates: list, reference: float, max_core_level: float = np.inf,
                max_core_to_surround: float = np.inf) -> list:
    """The ``(index, probability, diameter_mm)`` candidates that :func:`dark_mask` keeps (the surround is measured
    only when ``max_core_to_surround`` is finite)."""
    centres, diameters = [c[0] for c in candidates], [c[2] for c in candidates]
    levels = core_levels(volume, centres, diameters, reference)
    surrounds = (surround_levels(volume, centres, diameters, reference) if np.isfinite(max_core_to_surround)
                 else None)
    keep = dark_mask(levels, max_core_level, surrounds, max_core_to_surround)
    return [c for c, k in zip(candidates, keep) if k]

"""The darkness criterion for microbleed candidates: a microbleed is *black* on T2*/SWI.

The consensus criteria for a cerebral microbleed (Greenberg et al., Lancet Neurol 2009; BOMBS, MARS) begin with a
black, markedly hypointense focus. The candidate classifier decides from a patch and can give a high probability to
a focus that is only grey (on another generator's heads, session 21: most of cmb-swi 1.4.2's false findings). The
criterion measures each candidate's darkest voxel within max(1 mm, its predicted radius) of its centre, in units of
the head's foreground median (the classifier's own normalisation), and the manifest's ``output.max_core_level``
rejects candidates brighter than that. Hand-written (numpy): a few lines on the source grid, which no imaging
library offers as such.
"""
from __future__ import annotations

import numpy as np

from ..domain import Volume
from .geometry import balls

MIN_RADIUS_MM = 1.0


def core_levels(volume: Volume, centres_kij, diameters_mm, reference: float) -> np.ndarray:
    """The darkest voxel within max(``MIN_RADIUS_MM``, diameter / 2) of each centre (the voxel nearest the centre
    always counts), divided by ``reference``; infinite for a centre whose ball lies outside the grid."""
    radii = [max(MIN_RADIUS_MM, 0.5 * float(d)) for d in diameters_mm]
    arr = volume.array
    lows = [np.inf if b is None else min(float(arr[b[0]][b[1]].min(initial=np.inf)), float(arr[b[2]]))
            for b in balls(volume, centres_kij, radii)]
    return np.asarray(lows, float) / float(reference)


def dark_enough(volume: Volume, candidates: list, reference: float, max_core_level: float) -> list:
    """The ``(index, probability, diameter_mm)`` candidates whose core level is at most ``max_core_level``."""
    levels = core_levels(volume, [c[0] for c in candidates], [c[2] for c in candidates], reference)
    return [c for c, lv in zip(candidates, levels) if lv <= max_core_level]

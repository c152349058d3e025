"""Is a series complete? Decided from evidence, with a quiet timer as the last resort.

Evidence, in order of strength:
  * declared counts: an Enhanced multi-frame instance is complete in itself; all
    instances declaring Images in Acquisition = N and N present;
  * association release plus a geometrically complete stack (one orientation,
    no duplicate positions, even spacing along the slice normal).
A stack that looks complete while its association is still open may be a prefix
of what is coming, so it is not enough on its own. After release, a series that
is not a single stack at all (a 3-plane localiser, one image) completes too;
one with a gap waits, since the missing slices may follow. The fallback timer completes
anything that has been quiet long enough; ``volume.load`` then rejects a bad
stack with a clear reason.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

ORIENTATION_TOLERANCE = 1e-3
SPACING_TOLERANCE = 0.1  # fraction of the median spacing


@dataclass(frozen=True)
class SeriesEvidence:
    instances: Sequence[dict]  # the geometry dicts recorded at receive time
    released: bool  # an association that delivered to it has released normally
    association_open: bool  # an association is still delivering to it
    quiet_seconds: float  # since the last instance


def stack_problem(geoms: Sequence[dict]) -> str | None:
    """None if single-frame geometry forms a complete stack, else what is wrong."""
    if len(geoms) < 3:
        return f"only {len(geoms)} slice(s)"
    if any(g.get("ipp") is None or g.get("iop") is None for g in geoms):
        return "slices without position or orientation"
    iops = np.array([g["iop"] for g in geoms], dtype=float)
    if np.abs(iops - iops[0]).max() > ORIENTATION_TOLERANCE:
        return "mixed orientations"
    normal = np.cross(iops[0][:3], iops[0][3:])
    z = np.sort(np.array([g["ipp"] for g in geoms], dtype=float) @ normal)
    steps = np.diff(z)
    median = float(np.median(steps))
    if median <= 0 or steps.min() < SPACING_TOLERANCE * median:
        return "duplicate slice positions"
    if np.abs(steps - median).max() > SPACING_TOLERANCE * median:
        return f"uneven spacing along the normal (gaps up to {steps.max():.2f} mm, median {median:.2f} mm)"
    return None


def counts_complete(geoms: Sequence[dict]) -> bool:
    if len(geoms) == 1 and (geoms[0].get("frames") or 0) > 1:
        return True  # one multi-frame instance carries the whole series
    declared = {g.get("images_in_acquisition") for g in geoms}
    acquisitions = {g.get("acquisition") for g in geoms}
    if len(declared) == 1 and len(acquisitions) <= 1:
        n = declared.pop()
        return n is not None and n == len(geoms)
    return False


def decide(ev: SeriesEvidence, settle_seconds: float, fallback_seconds: float) -> str | None:
    """The completion reason, or None if the series should wait."""
    if ev.quiet_seconds >= fallback_seconds:
        return f"quiet for {ev.quiet_seconds:.0f} s (fallback timer)"
    if ev.quiet_seconds < settle_seconds:
        return None
    if counts_complete(ev.instances):
        if len(ev.instances) == 1:
            return "multi-frame instance received"
        return f"declared count reached ({len(ev.instances)} images in acquisition)"
    if ev.association_open or not ev.released:
        return None
    problem = stack_problem(ev.instances)
    if problem is None:
        return f"association released and stack geometrically complete ({len(ev.instances)} slices)"
    if not problem.startswith(("uneven spacing", "duplicate")):
        # not one stack at all (a 3-plane localiser, a single image): more instances would not make it one
        return f"association released; not a single stack ({problem})"
    return None  # a gap or a repeat suggests instances still to come: wait for the fallback timer

"""Is a series complete? Decided from evidence; a part is never reported as the whole.

Evidence, in order of strength:
  * declared counts: an Enhanced multi-frame instance is complete in itself once its association has ended (an
    enhanced series may be split over several objects, the next on its way while it is open); instances that
    declare Images in Acquisition = N (one acquisition) are complete when N are present, and
    **not before**, whatever the geometry or the association says: a first association
    carrying 14 of 29 slices is a gap-free stack, but not the series;
  * association release plus a geometrically complete stack (one orientation, no duplicate
    positions, no gap along the slice normal: :func:`svdmark.geometry.stack_problem`, the
    tolerances ``volume.load`` applies too), when nothing is declared.
A stack that looks complete while its association is still open may be a prefix of what is
coming, so it is not enough on its own. After release, a series that is not a single stack at
all (a 3-plane localiser, one image) completes too; one with a gap waits, since the missing
slices may follow.

The quiet timer (``fallback_seconds``, default 60 s) completes a series that has nothing
against it (an association left open, a stack that looks whole). A series with evidence that
something is missing — short of its declared count, a gap in the stack, or an association that
ended without a normal release (a sender killed mid-send) — is not completed by the timer: it
waits up to ``max_wait_seconds`` (``[assemble] incomplete_max_wait_seconds``, default 600 s,
never less than the timer) for the rest, and is then completed with a :attr:`Completion.warning`
``"incomplete series: N of M images (...)"`` that the worker carries into the result (or, with
``incomplete_policy = "reject"``, ends as a failed job).

The service's assembler (``svdmark.assemble``) decides on live evidence; ``svdmark analyze`` asks the same
questions of an archive, as if its sender had released the association long ago (``batch.discover``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .geometry import SliceGeometry, stack_problem, stack_spacing

INCOMPLETE = "incomplete series"  # every warning starts with this


@dataclass(frozen=True)
class SeriesEvidence:
    instances: Sequence[SliceGeometry]  # the geometry recorded at receive time
    released: bool  # an association that delivered to it has released normally
    association_open: bool  # an association is still delivering to it
    quiet_seconds: float  # since the last instance


@dataclass(frozen=True)
class Completion:
    """Why a series is taken as complete; ``warning`` when it is analysed although something is missing."""

    reason: str
    warning: str | None = None


def declared_count(geoms: Sequence[SliceGeometry]) -> int | None:
    """The Images in Acquisition all instances agree on, within one acquisition; None if there is none."""
    declared = {g.images_in_acquisition for g in geoms}
    acquisitions = {g.acquisition for g in geoms}
    if len(declared) == 1 and len(acquisitions) <= 1:
        n = declared.pop()
        return n if isinstance(n, int) and n > 0 else None
    return None


def _multiframe(geoms: Sequence[SliceGeometry]) -> bool:
    return len(geoms) == 1 and (geoms[0].frames or 0) > 1


def counts_complete(geoms: Sequence[SliceGeometry]) -> bool:
    if _multiframe(geoms):
        return True  # one multi-frame instance carries the whole series
    n = declared_count(geoms)
    return n is not None and n == len(geoms)


def missing(ev: SeriesEvidence) -> str | None:
    """The ``incomplete series: ...`` warning if the evidence says something is missing, else None."""
    n = len(ev.instances)
    if _multiframe(ev.instances):
        return None
    declared = declared_count(ev.instances)
    if declared is not None and n < declared:
        return f"{INCOMPLETE}: {n} of {declared} images (Images in Acquisition declares {declared})"
    problem = stack_problem(ev.instances)
    if problem is not None and problem.startswith("uneven spacing"):
        expected = stack_spacing(ev.instances).expected_count()
        return f"{INCOMPLETE}: {n} of {expected} images (gap in the slice positions)"
    if not ev.released and not ev.association_open:
        return (f"{INCOMPLETE}: {n} images, number expected unknown (the sending association ended "
                "without a normal release)")
    return None


def settling(quiet_seconds: float, settle_seconds: float) -> bool:
    """A series that received an instance this recently waits, whatever else the evidence says."""
    return quiet_seconds < settle_seconds


def decide(ev: SeriesEvidence, settle_seconds: float, fallback_seconds: float,
           max_wait_seconds: float | None = None) -> Completion | None:
    """How the series completes now, or None if it should wait."""
    max_wait = max(fallback_seconds, max_wait_seconds if max_wait_seconds is not None else fallback_seconds)
    if settling(ev.quiet_seconds, settle_seconds):
        return None
    n = len(ev.instances)
    if counts_complete(ev.instances):
        if not _multiframe(ev.instances):
            return Completion(f"declared count reached ({n} image{'s' if n != 1 else ''} in acquisition)")
        if not ev.association_open:  # while it is open, another object of an enhanced series split in parts may come
            return Completion("multi-frame instance received")
    if ev.quiet_seconds >= fallback_seconds:
        warning = missing(ev)
        if warning is None:
            return Completion(f"quiet for {ev.quiet_seconds:.0f} s (fallback timer)")
        if ev.quiet_seconds >= max_wait:
            return Completion(f"quiet for {ev.quiet_seconds:.0f} s (longest wait for an incomplete series)", warning)
        return None  # something is missing: the rest may still come
    declared = declared_count(ev.instances)
    if declared is not None and n < declared:
        return None  # the declared count wins over release and geometry
    if ev.association_open or not ev.released:
        return None
    problem = stack_problem(ev.instances)
    if problem is None:
        return Completion(f"association released and stack geometrically complete ({n} slices)")
    if not problem.startswith(("uneven spacing", "duplicate")):
        # not one stack at all (a 3-plane localiser, a single image): more instances would not make it one
        return Completion(f"association released; not a single stack ({problem})")
    return None  # a gap or a repeat suggests instances still to come

"""Slice geometry as received, and the one stack check that completion and volume loading share.

``SliceGeometry`` is parsed once from an instance's header at receive time (``from_dataset``),
journalled as JSON (``to_json``; the shape of the rows already stored) and read back
(``from_json``). The assembler judges a series from these header-only records; ``volume.load``
judges the same stack again from the full datasets, with the same functions and tolerances below,
so a stack that completion takes as whole is not found gapped when it is loaded.

Hand-written rather than highdicom's volume utilities: the checks must name the slices and
the kind of problem (gap, duplicate, mixed planes) for sheared (gantry-tilted) stacks, which
highdicom's ``get_volume_from_series`` rejects outright.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

# --------------------------------------------------------------------------- tolerances (one set)

MIN_SLICES = 3
#: two image planes whose row or column directions differ by more than this are "mixed"
ORIENTATION_TOLERANCE_DEG = 0.5
#: a gap larger than this many median spacings means slices are missing
MISSING_SLICE_FACTOR = 1.5
#: ... unless the stack is in two zones (a head CT thinner through the posterior fossa, 5 mm then 10 mm): each a run
#: of at least MIN_ZONE_STEPS steps equal within ZONE_STEP_TOLERANCE of their mean, the larger step at most
#: MAX_ZONE_RATIO times the smaller. A lone longer step stays a gap, as does a zone of only two steps.
MIN_ZONE_STEPS = 3
ZONE_STEP_TOLERANCE = 0.05
MAX_ZONE_RATIO = 3.0
#: two slices closer than this along the normal (mm, or this fraction of the median spacing) are duplicates
DUPLICATE_TOLERANCE_MM = 1e-3
DUPLICATE_TOLERANCE_FRACTION = 0.01

_FAR_MM = 1e7  # a coordinate beyond this is no position in a patient (and ± it apart would overflow the spacing)
LOSSY_KEY = "lossy_source"  # the JSON key of SliceGeometry.lossy_source (only written when true)


@dataclass(frozen=True)
class SliceGeometry:
    """What the assembler needs of one received instance."""

    ipp: tuple[float, ...] | None = None  # ImagePositionPatient
    iop: tuple[float, ...] | None = None  # ImageOrientationPatient
    frames: int | None = None  # NumberOfFrames
    images_in_acquisition: int | None = None
    acquisition: int | None = None  # AcquisitionNumber
    lossy_source: bool = False  # pixel data was lossy-compressed (now or earlier)

    @classmethod
    def from_dataset(cls, ds: Any, *, lossy: bool = False) -> "SliceGeometry":
        return cls(
            ipp=_floats(ds.get("ImagePositionPatient")),
            iop=_floats(ds.get("ImageOrientationPatient")),
            frames=_int(ds.get("NumberOfFrames")),
            images_in_acquisition=_int(ds.get("ImagesInAcquisition")),
            acquisition=_int(ds.get("AcquisitionNumber")),
            lossy_source=lossy,
        )

    @property
    def placed(self) -> bool:
        """Whether it has a position (3 finite numbers) and an orientation (6): the listener checks that they are
        present, not how many values they hold, and a stack check must name such a slice, not raise on it."""
        def ok(v: tuple[float, ...] | None, n: int) -> bool:
            return v is not None and len(v) == n and all(math.isfinite(x) and abs(x) < _FAR_MM for x in v)
        return ok(self.ipp, 3) and ok(self.iop, 6)

    def to_json(self) -> dict:
        out: dict = {
            "ipp": list(self.ipp) if self.ipp is not None else None,
            "iop": list(self.iop) if self.iop is not None else None,
            "frames": self.frames,
            "images_in_acquisition": self.images_in_acquisition,
            "acquisition": self.acquisition,
        }
        if self.lossy_source:
            out[LOSSY_KEY] = True
        return out

    @classmethod
    def from_json(cls, data: dict) -> "SliceGeometry":
        return cls(
            ipp=tuple(float(v) for v in data["ipp"]) if data.get("ipp") is not None else None,
            iop=tuple(float(v) for v in data["iop"]) if data.get("iop") is not None else None,
            frames=data.get("frames"),
            images_in_acquisition=data.get("images_in_acquisition"),
            acquisition=data.get("acquisition"),
            lossy_source=bool(data.get(LOSSY_KEY)),
        )


def _floats(value: Any) -> tuple[float, ...] | None:
    try:
        return tuple(float(v) for v in value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _int(value: Any) -> int | None:
    return int(value) if value not in (None, "") else None


# --------------------------------------------------------------------------- the stack check


def unit(v: np.ndarray) -> np.ndarray | None:
    """``v`` normalised, or None for a zero vector."""
    n = float(np.linalg.norm(v))
    return None if n < 1e-6 else v / n


def angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip(np.dot(a, b), -1.0, 1.0))))


def plane_axes(iop: Sequence[float]) -> tuple[np.ndarray, np.ndarray] | None:
    """Unit row and (row-orthogonalised) column directions of an orientation; None if degenerate."""
    o = np.asarray(iop, dtype=float)
    row, col = unit(o[:3]), unit(o[3:])
    if row is None or col is None:
        return None
    col = unit(col - np.dot(col, row) * row)
    return None if col is None else (row, col)


def orientation_apart_deg(row: np.ndarray, col: np.ndarray, iop: Sequence[float]) -> float:
    """How far (degrees) another plane's row or column direction is from ``row``/``col``; inf if degenerate."""
    o = np.asarray(iop, dtype=float)
    r, c = unit(o[:3]), unit(o[3:])
    if r is None or c is None:
        return float("inf")
    return max(angle_deg(r, row), angle_deg(c, col))


@dataclass(frozen=True)
class Spacing:
    """Slice positions along the normal (sorted), judged with the tolerances above."""

    diffs: np.ndarray
    median: float  # of the steps longer than DUPLICATE_TOLERANCE_MM; 0 when there is none
    duplicates: np.ndarray  # indices k where slices k and k+1 coincide
    gaps: np.ndarray  # indices k where slices are missing between k and k+1

    def expected_count(self) -> int:
        """How many slices an even stack over the same extent holds."""
        return int(round(float(self.diffs.sum()) / self.median)) + 1 if self.median > 0 else len(self.diffs) + 1


def spacing(d: np.ndarray, zones: bool = True) -> Spacing:
    """``d``: positions along the slice normal, sorted ascending. ``zones``: a stack in two even zones has no gap
    (a CT protocol; ``volume.load`` reads MR stacks without it, where the sampling assumes one step)."""
    diffs = np.diff(np.asarray(d, dtype=float))
    positive = diffs[diffs > DUPLICATE_TOLERANCE_MM]
    median = float(np.median(positive)) if positive.size else 0.0
    dup_tol = max(DUPLICATE_TOLERANCE_MM, DUPLICATE_TOLERANCE_FRACTION * median)
    gaps = np.nonzero(diffs > MISSING_SLICE_FACTOR * median)[0]
    if gaps.size and zones and two_zones(diffs):
        gaps = gaps[:0]
    return Spacing(diffs, median, np.nonzero(diffs <= dup_tol)[0], gaps)


def two_zones(diffs: np.ndarray) -> bool:
    """Whether the steps are two even zones, one after the other (``MIN_ZONE_STEPS`` and the tolerances above)."""
    def even(run: np.ndarray) -> bool:
        return run.size >= MIN_ZONE_STEPS and bool(np.all(np.abs(run - run.mean()) <= ZONE_STEP_TOLERANCE * run.mean()))

    for b in range(MIN_ZONE_STEPS, diffs.size - MIN_ZONE_STEPS + 1):
        first, second = diffs[:b], diffs[b:]
        if even(first) and even(second) and first.min() > 0:
            ratio = max(first.mean(), second.mean()) / min(first.mean(), second.mean())
            return bool(1.0 < ratio <= MAX_ZONE_RATIO)
    return False


def stack_problem(geoms: Sequence[SliceGeometry]) -> str | None:
    """None if single-frame header geometry forms a complete stack, else what is wrong (the checks of
    ``volume.load`` that need no pixel data: count, orientation, duplicates, gaps)."""
    if len(geoms) < MIN_SLICES:
        return f"only {len(geoms)} slice(s)"
    if not all(g.placed for g in geoms):
        return "slices without position or orientation"
    axes = plane_axes(geoms[0].iop)  # type: ignore[arg-type]
    if axes is None:
        return "degenerate orientation"
    row, col = axes
    if max(orientation_apart_deg(row, col, g.iop) for g in geoms[1:]) > ORIENTATION_TOLERANCE_DEG:  # type: ignore[arg-type]
        return "mixed orientations"
    s = stack_spacing(geoms)
    if s.median <= 0 or s.duplicates.size:
        return "duplicate slice positions"
    if s.gaps.size:
        return (f"uneven spacing along the normal (gaps up to {s.diffs.max():.2f} mm, "
                f"median {s.median:.2f} mm)")
    return None


def stack_spacing(geoms: Sequence[SliceGeometry]) -> Spacing:
    """The spacing of header geometry along the first slice's normal (all with position and orientation)."""
    axes = plane_axes(geoms[0].iop)  # type: ignore[arg-type]
    normal = np.cross(*axes) if axes is not None else np.zeros(3)
    return spacing(np.sort(np.array([g.ipp for g in geoms], dtype=float) @ normal))

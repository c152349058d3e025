"""Series → Volume: pixel data, rescale, geometry checks, gantry tilt, multi-frame.

The stack tolerances are svdmark.geometry's, shared with series completion.

``load`` keeps the source grid (see ``svdmark.domain.Volume``).
"""
from svdmark.geometry import (
    DUPLICATE_TOLERANCE_FRACTION,
    DUPLICATE_TOLERANCE_MM,
    MIN_SLICES,
    MISSING_SLICE_FACTOR,
    ORIENTATION_TOLERANCE_DEG,
)
from svdmark.volume.stack import (
    GANTRY_TILT_WARNING_DEG,
    IN_PLANE_DRIFT_TOLERANCE_PX,
    THICK_SLICE_WARNING_MM,
    UNEVEN_SPACING_WARNING,
    load,
)

__all__ = [
    "DUPLICATE_TOLERANCE_FRACTION",
    "DUPLICATE_TOLERANCE_MM",
    "GANTRY_TILT_WARNING_DEG",
    "IN_PLANE_DRIFT_TOLERANCE_PX",
    "MIN_SLICES",
    "MISSING_SLICE_FACTOR",
    "ORIENTATION_TOLERANCE_DEG",
    "THICK_SLICE_WARNING_MM",
    "UNEVEN_SPACING_WARNING",
    "load",
]

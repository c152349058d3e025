"""A phantom as the ``svdmark.domain.Volume`` that ``volume.load`` yields for its DICOM series, without the DICOM."""
from __future__ import annotations

import numpy as np

from svdmark.domain import FrameRef, Volume


def as_volume(ph, uid_prefix: str = "2.25.1") -> Volume:
    """A ``Volume`` on the phantom's own grid (``ph``: a ``Phantom``, or anything with its grid attributes)."""
    n = ph.image.shape[0]
    frames = tuple(FrameRef(f"{uid_prefix}.{k + 1}", "1.2.840.10008.5.1.4.1.1.2") for k in range(n))
    return Volume(
        array=np.asarray(ph.image, np.float32),
        row_direction=tuple(float(v) for v in ph.row_direction),
        column_direction=tuple(float(v) for v in ph.column_direction),
        pixel_spacing=(float(ph.pixel_spacing[0]), float(ph.pixel_spacing[1])),
        positions=np.asarray(ph.positions, float),
        frames=frames,
        frame_of_reference_uid=f"{uid_prefix}.0",
        slice_thickness=float(getattr(ph, "slice_thickness", 0) or 0) or None,
    )

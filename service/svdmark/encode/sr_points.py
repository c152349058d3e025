"""Image-referenced points for the SR: where on a source image each measurement is shown.

OHIF (extensions/cornerstone-dicom-sr) and the Cornerstone adapters place an SR measurement on an
image through a SCOORD whose IMAGE child names the source SOP instance (and frame): OHIF reads it
from the single child of each NUM of a measurement group without a top-level graphic, the adapters'
``generateToolState`` from the first NUM's child. A group without such a point makes OHIF throw or
drop the measurement. This module computes those points (DICOM pixel coordinates: column, row from
the top-left corner of the top-left pixel, so a pixel centre is ``index + 0.5``) and builds the
SCOORD → IMAGE content items.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from highdicom.sr import (
    CodedConcept,
    ContentSequence,
    CoordinatesForMeasurement,
    ImageContentItem,
    ImageRegion,
    RelationshipTypeValues,
    Scoord3DContentItem,
    ScoordContentItem,
    SourceImageForRegion,
)
from highdicom.sr.enum import GraphicTypeValues, GraphicTypeValues3D
from pydicom.sr.codedict import codes

from ..domain import Volume


@dataclass(frozen=True)
class ImagePoint:
    """A point on source slice ``k`` of a volume: continuous row ``i`` and column ``j`` (pixel centres at integers)."""

    k: int
    i: float
    j: float


def nearest_slice_point(volume: Volume, xyz) -> ImagePoint:
    """The point of the slice nearest to patient position ``xyz`` (mm) that lies straight above or below it.

    Exact on sheared (gantry-tilted) grids: each slice is taken with its own position.
    """
    xyz = np.asarray(xyz, float)
    off = xyz[None, :] - np.asarray(volume.positions, float)
    k = int(np.argmin(np.abs(off @ volume.normal)))
    d = off[k]
    i = float(d @ np.asarray(volume.column_direction)) / volume.pixel_spacing[0]
    j = float(d @ np.asarray(volume.row_direction)) / volume.pixel_spacing[1]
    return ImagePoint(k, i, j)


def anchor_point(volume: Volume, mask: np.ndarray | None) -> ImagePoint:
    """Where a whole-series measurement is shown: the centroid of the mask on its slice of largest area,
    or the centre of the middle slice when there is no mask (nothing found, or a withheld result)."""
    if mask is not None and np.asarray(mask).any():
        m = np.asarray(mask) > 0
        k = int(np.argmax(m.reshape(m.shape[0], -1).sum(axis=1)))
        ii, jj = np.nonzero(m[k])
        return ImagePoint(k, float(ii.mean()), float(jj.mean()))
    n, rows, cols = volume.shape
    return ImagePoint(n // 2, (rows - 1) / 2.0, (cols - 1) / 2.0)


def _graphic(point: ImagePoint) -> np.ndarray:
    return np.array([[point.j + 0.5, point.i + 0.5]])


def _frame_numbers(volume: Volume, point: ImagePoint) -> list[int] | None:
    f = volume.frames[point.k].frame_number
    return None if f is None else [int(f)]


def coordinates(volume: Volume, point: ImagePoint) -> CoordinatesForMeasurement:
    """TID 300's "INFERRED FROM" SCOORD POINT of a NUM, with its SELECTED FROM source image (and frame)."""
    frame = volume.frames[point.k]
    return CoordinatesForMeasurement(
        graphic_type=GraphicTypeValues.POINT,
        graphic_data=_graphic(point),
        source_image=SourceImageForRegion(frame.sop_class_uid, frame.sop_instance_uid,
                                          _frame_numbers(volume, point)),
    )


def _group_scoord(volume: Volume, k: int, graphic_type: GraphicTypeValues, graphic_data: np.ndarray,
                  name: CodedConcept) -> ScoordContentItem:
    """A group-level (CONTAINS) SCOORD on source slice ``k`` with its SELECTED FROM IMAGE child."""
    frame = volume.frames[k]
    item = ScoordContentItem(name=name, graphic_type=graphic_type, graphic_data=graphic_data,
                             relationship_type=RelationshipTypeValues.CONTAINS)
    item.ContentSequence = ContentSequence([ImageContentItem(
        name=codes.SCT.Source,
        referenced_sop_class_uid=frame.sop_class_uid,
        referenced_sop_instance_uid=frame.sop_instance_uid,
        referenced_frame_numbers=None if frame.frame_number is None else [int(frame.frame_number)],
        relationship_type=RelationshipTypeValues.SELECTED_FROM,
    )])
    return item


def image_region(volume: Volume, point: ImagePoint) -> ImageRegion:
    """TID 1410's "Image Region": a SCOORD POINT at ``point`` on its source image (and frame).

    A microbleed's region is on its image, not only in patient space: OHIF places a TID 1410 group by its
    first SCOORD/SCOORD3D, hydrates it into a Cornerstone tool only when that graphic is an "Image
    Region" POINT (the adapters' Probe type) and only against images that measurements were placed on
    in 2D; the patient-space centre follows as a SCOORD3D (:func:`centre_3d`).
    """
    frame = volume.frames[point.k]
    return ImageRegion(graphic_type=GraphicTypeValues.POINT, graphic_data=_graphic(point),
                       source_image=SourceImageForRegion(frame.sop_class_uid, frame.sop_instance_uid,
                                                         _frame_numbers(volume, point)))


def centre_3d(volume: Volume, xyz, name: CodedConcept) -> Scoord3DContentItem:
    """The centre in patient coordinates (SCOORD3D POINT on the source frame of reference), for viewers
    and readers that work in 3D. ``name`` is not "Image Region": the group has one region, on the image."""
    return Scoord3DContentItem(name=name, graphic_type=GraphicTypeValues3D.POINT,
                               graphic_data=np.asarray([xyz], dtype=float),
                               frame_of_reference_uid=volume.frame_of_reference_uid,
                               relationship_type=RelationshipTypeValues.CONTAINS)


def analysed_region(volume: Volume, name: CodedConcept) -> ScoordContentItem:
    """A group-level SCOORD CIRCLE inscribed in the middle source slice — the image analysed.

    For a group with no NUM (a withheld result): OHIF places the group by it instead of throwing on a
    group without coordinates. A circle, not a point or a rectangle, so that the Cornerstone adapters
    make no Probe or RectangleROI tool of a result that has no number; ``name`` is not "Image Region",
    so highdicom still reads the group as TID 1501 (not a planar ROI).
    """
    n, rows, cols = volume.shape
    centre = ImagePoint(n // 2, (rows - 1) / 2.0, (cols - 1) / 2.0)
    edge = ImagePoint(centre.k, centre.i, centre.j + 0.45 * min(rows, cols))
    return _group_scoord(volume, centre.k, GraphicTypeValues.CIRCLE,
                         np.concatenate([_graphic(centre), _graphic(edge)]), name)

"""Geometry helpers for findings on the source grid (sheared grids included): microbleed balls for the
SEG, and each microbleed's MARS location class.

``locate`` is hand-written (numpy/scipy.ndimage): the maintained brain-parcellation tools (FreeSurfer,
SynthSeg, FSL) need a T1 image, a GPU or an atlas download at run time, none of which the service has for an
SWI series; a coarse geometric rule on the head's own shape is what can run here, and its limits are stated.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import numpy as np

from ..domain import Volume
from ..infer.preprocess import index_affine
from ..masks import largest_object


def ball_mask(volume: Volume, centres_kij, diameters_mm) -> np.ndarray:
    """uint8 mask of the source grid with a ball of each diameter (mm) at each index-space centre.

    A voxel belongs to a ball when its centre lies within the radius in physical
    space; balls smaller than a voxel still mark the voxel containing their centre.
    A ball wholly outside the grid marks nothing.
    """
    mask = np.zeros(volume.shape, np.uint8)
    for ball in balls(volume, centres_kij, [0.5 * float(d) for d in diameters_mm]):
        if ball is not None:
            box, inside, near = ball
            mask[box][inside] = 1
            mask[near] = 1
    return mask


Ball = tuple[tuple[slice, ...], np.ndarray, tuple[int, ...]]


def balls(volume: Volume, centres_kij, radii_mm) -> Iterator[Ball | None]:
    """For each index-space centre and radius (mm): the box of the source grid around it, the ball within that box
    by physical distance (sheared grids included), and the grid voxel nearest the centre; None when the ball's box
    lies wholly outside the grid."""
    if len(centres_kij) == 0:
        return
    m = index_affine(volume)
    m_inv = np.linalg.inv(m)
    shape = np.asarray(volume.shape)
    for c, r in zip(centres_kij, radii_mm):
        c = np.asarray(c, float)
        ext = np.abs(m_inv) @ np.full(3, float(r)) + 1  # index-space half extents of the ball's bounding box
        lo = np.maximum(np.floor(c - ext).astype(int), 0)
        hi = np.minimum(np.ceil(c + ext).astype(int) + 1, shape)
        if np.any(hi <= lo):
            yield None
            continue
        kk, ii, jj = np.meshgrid(*(np.arange(a, b) for a, b in zip(lo, hi)), indexing="ij")
        off = np.stack([kk - c[0], ii - c[1], jj - c[2]], axis=-1) @ m.T
        inside = np.linalg.norm(off, axis=-1) <= float(r)
        near = tuple(int(v) for v in np.clip(np.round(c).astype(int), 0, shape - 1))
        yield tuple(slice(a, b) for a, b in zip(lo, hi)), inside, near


# MARS location classes (Gregoire et al., Neurology 2009): lobar = cortex and subcortical/juxtacortical white
# matter; deep = basal ganglia, thalamus, internal/external capsule, corpus callosum, deep and periventricular
# white matter; infratentorial = brainstem and cerebellum.
LOBAR, DEEP, INFRATENTORIAL, UNSPECIFIED = "lobar", "deep", "infratentorial", "unspecified"


@dataclass(frozen=True)
class HeadFrame:
    """What :func:`locate` measures on the head: its mask, its widest axial section (height ``z_ref`` and
    centre ``centre_xy`` in patient mm) and that section's largest depth below the surface."""

    mask: np.ndarray
    pixel_spacing: tuple[float, float]
    z_ref: float
    centre_xy: np.ndarray
    max_depth_mm: float

    def depth_mm(self, k: int) -> np.ndarray:
        """In-plane distance (mm) from each voxel of slice ``k`` to the edge of the head mask."""
        from scipy import ndimage as ndi

        return ndi.distance_transform_edt(self.mask[k], sampling=self.pixel_spacing)


def head_frame(volume: Volume, foreground: float = 0.35) -> HeadFrame | None:
    """The head's mask and geometry, or None when the volume has no head-sized object or is not axial.

    Mask: voxels above ``foreground`` × the head's median intensity (as the SWI quality scores), holes
    filled per slice (the dark skull and CSF inside the scalp), largest connected object. Depth: the
    in-plane distance (mm) to the mask's edge, per slice, so that the top and bottom of a partial slab
    are not taken for the brain surface.
    """
    from scipy import ndimage as ndi

    from ..infer.preprocess import foreground_reference

    if abs(float(volume.normal[2])) < 0.8:  # not an axial acquisition: "up" is not across the slices
        return None
    a = np.asarray(volume.array, np.float32)
    mask = a > foreground * foreground_reference(a)
    mask = largest_object(np.stack([ndi.binary_fill_holes(m) for m in mask]))
    if mask is None:
        return None
    area = mask.reshape(mask.shape[0], -1).sum(axis=1)
    k = int(np.argmax(area))
    ii, jj = np.nonzero(mask[k])
    centre = volume.index_to_patient(k, float(ii.mean()), float(jj.mean()))
    frame = HeadFrame(mask=mask, pixel_spacing=tuple(volume.pixel_spacing), z_ref=float(centre[2]),
                      centre_xy=np.asarray(centre[:2]), max_depth_mm=0.0)
    return replace(frame, max_depth_mm=float(frame.depth_mm(k).max()))


def locate(volume: Volume, centres_kij, *, deep_fraction: float = 0.5, incisura_mm: float = 15.0,
           tentorium_slope: float = 0.21, fossa_mm: float = 8.0, stem_mm: float = 12.0,
           deep_box_mm: tuple[float, float, float] = (22.0, -30.0, 45.0),
           head: Callable[[], HeadFrame | None] | None = None) -> list[str]:
    """MARS location class ("lobar", "deep", "infratentorial") per microbleed at index-space ``centres_kij``.
    ``head``: returns the volume's :func:`head_frame` when there is a bleed to place (one computed beside other
    work); without it the frame is computed here.

    How, on the head's own geometry (:func:`head_frame`; patient axes, LPS: +z up, +y posterior):

    * **infratentorial** — below the tentorium and in the posterior fossa. The tentorium is modelled as a
      tent whose apex (the incisura) lies ``incisura_mm`` below the head's widest axial section and that
      slopes down by ``tentorium_slope`` (tan 12°) per mm laterally and posteriorly; the posterior fossa is
      behind a line ``fossa_mm`` posterior to that section's centre (the petrous ridges), or within
      ``stem_mm`` of the midline and not more than ``stem_mm`` anterior to the centre (brainstem). Low
      temporal-lobe and orbitofrontal bleeds (anterior) stay supratentorial.
    * **deep** — supratentorial, at least ``deep_fraction`` of the widest section's largest depth below
      the head's surface in its slice (basal ganglia, thalami, internal capsule, periventricular white matter
      lie 45 mm and more inside an adult head whose half-width is 70–80 mm; cortex and juxtacortical white
      matter lie within ~30 mm: scalp, skull, CSF, cortex, subcortical white matter), and inside the box
      ``deep_box_mm`` = (anterior limit, lower, upper limit) around the widest section's centre: the deep
      grey nuclei and the ventricles do not reach the frontal base, the skull base or the high convexity,
      where a large in-plane depth means the face or the vertex, not deep brain.
    * **lobar** — the rest of the supratentorial brain.

    Limits (why "unspecified" exists and what to check): needs an axial acquisition (otherwise every bleed
    is "unspecified") and a head that is roughly upright; the widest section must be in the slab (a slab
    that stops above it moves the tentorium up). The depth is taken from the scalp, not from the brain
    surface, and the interhemispheric fissure is not seen: medial cortex near the midline (cingulate,
    precuneus) far from the scalp in its slice is called deep, insular cortex likewise. The tentorium is a
    model, not segmented; bleeds within a few mm of it, of the depth threshold or of the fossa line can
    fall on either side. Tested on phantoms whose anatomy places bleeds in each class
    (tests/unit/test_locate.py), not validated on patients.
    """
    centres = [np.asarray(c, float) for c in centres_kij]
    if not centres:
        return []
    frame = head() if head is not None else head_frame(volume)
    if frame is None:
        return [UNSPECIFIED] * len(centres)
    out = []
    depths: dict[int, np.ndarray] = {}
    nz, ny, nx = volume.shape
    for c in centres:
        k, i, j = (int(np.clip(np.rint(v), 0, n - 1)) for v, n in zip(c, (nz, ny, nx)))
        if not frame.mask[k, i, j]:
            out.append(UNSPECIFIED)
            continue
        if k not in depths:
            depths[k] = frame.depth_mm(k)
        x, y, z = volume.index_to_patient(*c)
        dx, dy = x - frame.centre_xy[0], y - frame.centre_xy[1]
        tentorium = frame.z_ref - incisura_mm - tentorium_slope * (abs(dx) + max(dy, 0.0))
        posterior_fossa = dy > fossa_mm or (abs(dx) < stem_mm and dy > -stem_mm)
        if z < tentorium and posterior_fossa:
            out.append(INFRATENTORIAL)
        elif (depths[k][i, j] >= deep_fraction * frame.max_depth_mm
              and dy >= -deep_box_mm[0] and deep_box_mm[1] <= z - frame.z_ref <= deep_box_mm[2]):
            out.append(DEEP)
        else:
            out.append(LOBAR)
    return out

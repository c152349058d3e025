"""A CT head's own tissue levels: its intracranial space, the white-matter and CSF HU read from the image, and the
image smoothed in-plane as a reader squints.

Moved here from ``training.gap_probe`` when the WML component filter (:mod:`.components`) came to need the levels in
the service; the training probes import them from here. Own code: a histogram mode and a quartile of eroded dark
regions; no imaging library names these levels.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

BONE_HU = 150.0
RIM_MM = 3.0  # intracranial voxels this close to bone are left out (partial volume with the skull)
CSF_BELOW_WM_HU = 8.0  # the CSF level is looked for this far below white matter and lower
ERODE_MM = 2.0  # interiors of the dark regions: partial volume at their edges left out


def intracranial(array: np.ndarray, spacing_mm) -> np.ndarray:
    """Voxels enclosed by each slice's skull ring, at least ``RIM_MM`` from bone (slices without a closed ring:
    none)."""
    out = np.zeros(array.shape, bool)
    it = max(1, int(round(RIM_MM / float(spacing_mm[0]))))
    for k, sl in enumerate(array):
        bone = sl > BONE_HU
        if bone.any():
            out[k] = ndimage.binary_fill_holes(bone) & ~ndimage.binary_dilation(bone, iterations=it)
    return out


def white_matter_level(hu: np.ndarray, lo: float = 15.0, hi: float = 42.0, min_voxels: int = 500) -> float | None:
    """The white-matter HU of brain voxels: the mode of their soft-tissue histogram (0.5 HU bins, smoothed over 1 HU).

    White matter is the largest brain tissue wherever there is brain; None with fewer than ``min_voxels`` voxels in
    ``lo``..``hi`` HU (skull base, vertex, outside the head)."""
    v = hu[(hu > lo) & (hu < hi)]
    if v.size < min_voxels:
        return None
    h, e = np.histogram(v, bins=np.arange(lo, hi + 0.5, 0.5))
    return float(e[int(np.argmax(ndimage.gaussian_filter1d(h.astype(np.float32), 2.0)))] + 0.25)


def in_plane(connectivity: int) -> np.ndarray:
    """A 3x3x3 structuring element that reaches the slice's own neighbours only (4- or 8-connected: 1 or 2)."""
    st = np.zeros((3, 3, 3), bool)
    st[1] = ndimage.generate_binary_structure(2, connectivity)
    return st


def tissue_levels(array: np.ndarray, spacing_mm, inside: np.ndarray | None = None) -> tuple[float, float] | None:
    """(white matter, CSF) HU of a head from its image. White matter: the mode of the in-plane smoothed (1 mm)
    intracranial histogram in 15-42 HU. CSF: the lower quartile of the interiors (eroded by ``ERODE_MM`` in-plane) of
    the regions more than ``CSF_BELOW_WM_HU`` darker than white matter, ventricles and sulci first (the histogram's
    own mode there sits on white matter's partial-volume tail, not on CSF). None without enough of either.
    ``inside``: the head's :func:`intracranial` mask where the caller has it already."""
    sig = 1.0 / float(spacing_mm[0])
    sm = ndimage.gaussian_filter(array.astype(np.float32), (0, sig, sig))
    inside = intracranial(array, spacing_mm) if inside is None else inside
    wm = white_matter_level(sm[inside], 15.0, 42.0, min_voxels=1000)
    if wm is None:
        return None
    dark = inside & (sm < wm - CSF_BELOW_WM_HU) & (sm > -20.0)
    core = ndimage.binary_erosion(dark, in_plane(1), iterations=max(1, int(round(ERODE_MM / float(spacing_mm[0])))))
    if core.sum() < 200:
        return None
    return wm, float(np.percentile(sm[core], 25))


@dataclasses.dataclass(frozen=True)
class SmoothedHead:
    """A head's image smoothed in-plane as a reader squints (``smooth_mm``), its intracranial mask and its levels."""

    smooth: np.ndarray
    inside: np.ndarray
    wm: float
    csf: float


def smoothed_head(volume, smooth_mm: float = 1.5) -> SmoothedHead | None:
    """The head's :class:`SmoothedHead` (its levels from :func:`tissue_levels`); None where they are not found."""
    hu = volume.array.astype(np.float32)
    py, px = (float(v) for v in volume.pixel_spacing)
    inside = intracranial(hu, (py, px))
    levels = tissue_levels(hu, (py, px), inside)
    if levels is None:
        return None
    return SmoothedHead(ndimage.gaussian_filter(hu, (0, smooth_mm / py, smooth_mm / px)), inside, *levels)

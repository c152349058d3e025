"""Geometry helpers for findings on the source grid (sheared grids included)."""
from __future__ import annotations

import numpy as np

from ..domain import Volume
from ..infer.preprocess import index_affine


def ball_mask(volume: Volume, centres_kij, diameters_mm) -> np.ndarray:
    """uint8 mask of the source grid with a ball of each diameter (mm) at each index-space centre.

    A voxel belongs to a ball when its centre lies within the radius in physical
    space; balls smaller than a voxel still mark the voxel containing their centre.
    """
    mask = np.zeros(volume.shape, np.uint8)
    if len(centres_kij) == 0:
        return mask
    m = index_affine(volume)
    m_inv = np.linalg.inv(m)
    for c, d in zip(centres_kij, diameters_mm):
        c = np.asarray(c, float)
        r = 0.5 * float(d)
        # index-space half extents of the ball's bounding box
        ext = np.abs(m_inv) @ np.full(3, r) + 1
        lo = np.maximum(np.floor(c - ext).astype(int), 0)
        hi = np.minimum(np.ceil(c + ext).astype(int) + 1, volume.shape)
        if np.any(hi <= lo):
            continue
        kk, ii, jj = np.meshgrid(*(np.arange(a, b) for a, b in zip(lo, hi)), indexing="ij")
        off = np.stack([kk - c[0], ii - c[1], jj - c[2]], axis=-1) @ m.T
        inside = np.linalg.norm(off, axis=-1) <= r
        sub = mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        sub[inside] = 1
        near = np.clip(np.round(c).astype(int), 0, np.asarray(volume.shape) - 1)
        mask[tuple(near)] = 1
    return mask


def locate(volume: Volume, centres_kij) -> list[str]:
    """Anatomical location per microbleed; "unspecified" where it cannot be told."""
    return ["unspecified"] * len(centres_kij)

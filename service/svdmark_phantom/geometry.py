"""Acquisition grids (possibly sheared by gantry tilt) and the sampling blocks used to render them.

Conventions: patient coordinates are DICOM LPS (x → patient left, y → posterior,
z → head). Arrays are (slice k, row i, column j). Pixel (k, i, j) has its centre at
``positions[k] + j * pixel_spacing[1] * row_direction + i * pixel_spacing[0] * column_direction``.

A voxel is integrated over the slice thickness *along the slice normal* (the
detector slab), whatever the table step is, so a tilted CT voxel is a box in
the tilted gantry frame and the stack is sheared.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def rotation_xyz(rx_deg: float, ry_deg: float, rz_deg: float) -> np.ndarray:
    """Rotation matrix R = Rz @ Ry @ Rx (degrees)."""
    ax, ay, az = np.radians([rx_deg, ry_deg, rz_deg])
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclass(frozen=True)
class Grid:
    shape: tuple[int, int, int]  # (slices, rows, columns)
    pixel_spacing: tuple[float, float]  # (between rows, between columns) mm
    row_direction: tuple[float, float, float]
    column_direction: tuple[float, float, float]
    positions: np.ndarray  # (slices, 3)
    slice_thickness: float
    spacing: float  # distance between slice planes along the normal

    @property
    def normal(self) -> np.ndarray:
        return np.cross(np.asarray(self.row_direction), np.asarray(self.column_direction))

    @property
    def step(self) -> np.ndarray:
        if len(self.positions) > 1:
            return (self.positions[-1] - self.positions[0]) / (len(self.positions) - 1)
        return self.normal * self.spacing

    def index_matrix(self) -> np.ndarray:
        """3x3 matrix M with patient = positions[0] + M @ (k, i, j)."""
        return np.stack(
            [
                self.step,
                np.asarray(self.column_direction) * self.pixel_spacing[0],
                np.asarray(self.row_direction) * self.pixel_spacing[1],
            ],
            axis=1,
        )

    def to_index(self, xyz) -> np.ndarray:
        """Patient mm (..., 3) → continuous (k, i, j)."""
        m = np.linalg.inv(self.index_matrix())
        return (np.asarray(xyz, float) - self.positions[0]) @ m.T

    def to_patient(self, kij) -> np.ndarray:
        return np.asarray(kij, float) @ self.index_matrix().T + self.positions[0]

    def with_rows_cols(self) -> tuple[int, int]:
        return self.shape[1], self.shape[2]


def make_grid(
    *,
    rows: int,
    cols: int,
    n_slices: int,
    pixel_mm: float,
    thickness: float,
    spacing: float | None = None,
    tilt_deg: float = 0.0,
    sheared: bool = True,
    center: tuple[float, float, float] = (0.0, 0.0, 0.0),
    descending: bool = False,
) -> Grid:
    """An axial grid centred on ``center`` (the rotation axis for CT).

    ``tilt_deg`` tilts the image plane about the patient x axis. With
    ``sheared=True`` (CT gantry tilt) the slice positions step along the table
    (patient z) so the grid is sheared; with ``sheared=False`` (MR oblique) they
    step along the normal.
    """
    spacing = float(spacing if spacing is not None else thickness)
    t = np.radians(tilt_deg)
    row = np.array([1.0, 0.0, 0.0])
    col = np.array([0.0, np.cos(t), -np.sin(t)])
    normal = np.cross(row, col)
    if sheared:
        step = np.array([0.0, 0.0, spacing / np.cos(t)])
    else:
        step = normal * spacing
    if descending:
        step = -step
    c = np.asarray(center, float)
    ks = np.arange(n_slices) - (n_slices - 1) / 2.0
    centres = c[None, :] + ks[:, None] * step[None, :]
    tl = centres - (cols - 1) / 2.0 * pixel_mm * row - (rows - 1) / 2.0 * pixel_mm * col
    # clean tiny float noise so headers look like a scanner's
    tl = np.round(tl, 4)
    row = np.round(row, 8)
    col = np.round(col, 8)
    return Grid(
        shape=(int(n_slices), int(rows), int(cols)),
        pixel_spacing=(float(pixel_mm), float(pixel_mm)),
        row_direction=tuple(float(v) for v in row),
        column_direction=tuple(float(v) for v in col),
        positions=tl,
        slice_thickness=float(thickness),
        spacing=spacing,
    )


class Block:
    """Sub-sample points of slices [k0, k1) of a grid, in a model frame.

    Points have shape (nk, ns, ni, nj): ``ns`` sub-planes spread over the slice
    thickness along the normal and (optionally) ``sub_ij`` sub-pixels in plane.
    Coordinates are given in the *model frame* v = R @ (patient - origin).
    The mapping (k, s, i, j) → v is affine, which lets each structure be
    evaluated only inside its bounding box (:meth:`box`).
    """

    def __init__(self, grid: Grid, k0: int, k1: int, ns: int, R: np.ndarray, origin: np.ndarray,
                 sub_ij: int = 1, i_range=None, j_range=None):
        self.grid = grid
        self.k0, self.k1, self.ns = k0, k1, ns
        self.R = np.asarray(R, float)
        self.origin = np.asarray(origin, float)
        nr, nc = grid.shape[1], grid.shape[2]
        i0, i1 = i_range if i_range is not None else (0, nr)
        j0, j1 = j_range if j_range is not None else (0, nc)
        self.sub = int(sub_ij)
        # sub-sample coordinates along each index
        so = ((np.arange(ns) + 0.5) / ns - 0.5) * grid.slice_thickness  # mm along normal
        sp = (np.arange(self.sub) + 0.5) / self.sub - 0.5  # fraction of a pixel
        ii = (np.arange(i0, i1)[:, None] + sp[None, :]).ravel()
        jj = (np.arange(j0, j1)[:, None] + sp[None, :]).ravel()
        kk = np.arange(k0, k1)
        M = grid.index_matrix()
        R = self.R
        p0 = grid.positions[0] - self.origin
        a_k = R @ M[:, 0]
        a_i = R @ M[:, 1]
        a_j = R @ M[:, 2]
        a_s = R @ grid.normal
        v0 = R @ p0
        self.shape = (len(kk), ns, len(ii), len(jj))
        self._coef = (v0, a_k, a_s, a_i, a_j)
        self._idx = (kk.astype(np.float64), so, ii, jj)
        comps = []
        for d in range(3):
            c = (
                v0[d]
                + a_k[d] * kk[:, None, None, None]
                + a_s[d] * so[None, :, None, None]
                + a_i[d] * ii[None, None, :, None]
                + a_j[d] * jj[None, None, None, :]
            )
            comps.append(c.astype(np.float32))
        self.v = comps  # model-frame coordinates, each (nk, ns, ni, nj)
        self.u = comps  # warped coordinates (set by the caller)
        # affine (axes k, i, j) for bounding boxes; the s axis is folded in as a margin
        self._M3 = np.stack([a_k, a_i, a_j], axis=1)
        self._Minv = np.linalg.inv(self._M3)
        self._v0 = v0
        self._as = a_s * (so.max() if ns > 1 else 0.0)

    def box(self, lo, hi, margin: float = 0.0):
        """Index slices (into the 4D arrays) covering the model-frame box [lo, hi] (+margin)."""
        lo = np.asarray(lo, float) - margin - np.abs(self._as)
        hi = np.asarray(hi, float) + margin + np.abs(self._as)
        corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
        kij = (corners - self._v0) @ self._Minv.T  # continuous (k, i, j) (sub-sample units for i, j)
        kk, _, ii, jj = self._idx
        out = []
        for axis, arr in ((0, kk), (1, ii), (2, jj)):
            a, b = kij[:, axis].min(), kij[:, axis].max()
            s0 = int(np.searchsorted(arr, a - 1.0, side="left"))
            s1 = int(np.searchsorted(arr, b + 1.0, side="right"))
            if s1 <= s0:
                return None
            out.append(slice(s0, s1))
        return (out[0], slice(None), out[1], out[2])

"""SimpleITK bridges and resampling between the source grid and an orthogonal one.

The one place in svdmark that imports SimpleITK.

Sheared (gantry-tilted) grids
-----------------------------
An ITK image has an origin, a spacing per axis and an orthonormal direction
matrix, so it cannot describe a sheared stack exactly. ``to_sitk`` then
returns the voxel array unchanged (slice k is still source slice k) with the
direction ``[row, column, normal]`` and the spacing *along the normal*: voxel
counts and volumes are exact, and a mask computed on it maps one-to-one
onto the source slices, but the physical position of slice k is off by the
shear (``positions[k] - positions[0]`` projected in-plane). Use
``Volume.index_to_patient`` for positions, or ``resample_to_orthogonal`` when
a model needs a true patient-aligned grid, and ``resample_mask_to_source`` to
bring its mask back onto the source slices.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from svdmark.domain import Volume

RESAMPLED_WARNING = "resampled from the source grid onto an orthogonal grid"


def _axes(volume: Volume) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    row = np.asarray(volume.row_direction, dtype=np.float64)
    col = np.asarray(volume.column_direction, dtype=np.float64)
    normal = np.cross(row, col)
    if float(np.dot(volume.slice_step, normal)) < 0:  # never for load(), which sorts along +normal
        normal = -normal
    return row, col, normal


def to_sitk(volume: Volume) -> sitk.Image:
    """The volume as a SimpleITK image (x = columns, y = rows, z = slices).

    Exact for an unsheared grid. For a sheared grid see the module docstring:
    same voxels, orthonormal direction [row, column, normal], spacing along the normal.
    """
    image = sitk.GetImageFromArray(np.ascontiguousarray(volume.array))
    row, col, normal = _axes(volume)
    spacing_z = volume.slice_spacing or float(volume.slice_thickness or 1.0)
    image.SetSpacing((float(volume.pixel_spacing[1]), float(volume.pixel_spacing[0]), float(spacing_z)))
    image.SetOrigin(tuple(float(x) for x in volume.positions[0]))
    direction = np.stack([row, col, normal], axis=1)  # columns are the axis directions
    image.SetDirection(tuple(float(x) for x in direction.ravel()))
    image.SetMetaData("svdmark:gantry_tilt_deg", f"{volume.gantry_tilt_degrees:.3f}")
    image.SetMetaData("svdmark:sheared", "1" if volume.gantry_tilt_degrees > 0.01 else "0")
    return image


def from_sitk(image: sitk.Image, like: Volume | None = None, *, frame_of_reference_uid: str = "") -> Volume:
    """A ``Volume`` from a SimpleITK image.

    With ``like`` (a volume the image was made from, same voxel grid), the result
    keeps ``like``'s exact geometry, frames and warnings and only takes the voxels:
    the way back for model outputs on ``to_sitk(like)``, sheared or not.
    Without it, the geometry is the image's own and ``frames`` is empty
    (the slices are no source images).
    """
    array = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)
    if array.ndim != 3:
        raise ValueError(f"expected a 3D image, got {array.ndim}D")
    if like is not None:
        if array.shape != like.array.shape:
            raise ValueError(f"image shape {array.shape} does not match the volume's {like.array.shape}")
        return dataclasses.replace(like, array=array)
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    sx, sy, sz = image.GetSpacing()
    origin = np.asarray(image.GetOrigin(), dtype=np.float64)
    zdir = direction[:, 2]
    positions = origin[None, :] + np.arange(array.shape[0])[:, None] * sz * zdir[None, :]
    return Volume(
        array=array,
        row_direction=tuple(float(x) for x in direction[:, 0]),  # type: ignore[arg-type]
        column_direction=tuple(float(x) for x in direction[:, 1]),  # type: ignore[arg-type]
        pixel_spacing=(float(sy), float(sx)),
        positions=positions,
        frames=(),
        frame_of_reference_uid=frame_of_reference_uid,
        slice_thickness=float(sz),
    )


def _sample_slice(plane: np.ndarray, i: np.ndarray, j: np.ndarray, order: int, fill: float) -> np.ndarray:
    return ndimage.map_coordinates(plane, [i, j], order=order, mode="constant", cval=fill, prefilter=False)


def resample_to_orthogonal(
    volume: Volume,
    spacing: Sequence[float] | None = None,
    *,
    order: int = 1,
    fill: float | None = None,
) -> Volume:
    """Sample a (possibly sheared) source volume onto a regular grid aligned with
    [row, column, normal], covering every source voxel.

    ``spacing`` is (along row direction, along column direction, along normal) in mm,
    by default the source pixel spacing and plane spacing. Each target plane is
    parallel to the source planes; between two source planes the value is the
    linear blend of the two, each sampled at the target point's own in-plane
    position (so the shear is undone exactly, for uneven spacing too).
    The result has ``frames == ()``; bring masks back with ``resample_mask_to_source``.
    """
    row, col, normal = _axes(volume)
    ps_r, ps_c = volume.pixel_spacing
    n, rows, cols = volume.array.shape
    sx, sy, sz = (float(s) for s in (spacing or (ps_c, ps_r, volume.slice_spacing)))
    if min(sx, sy, sz) <= 0:
        raise ValueError(f"spacing must be positive, got {(sx, sy, sz)}")
    fill = float(volume.array.min()) if fill is None else float(fill)

    pos = np.asarray(volume.positions, dtype=np.float64)
    d = pos @ normal
    # in-plane extent of every source slice
    corners = np.array([[0, 0], [0, cols - 1], [rows - 1, 0], [rows - 1, cols - 1]], dtype=np.float64)
    u = (pos @ row)[:, None] + corners[None, :, 1] * ps_c
    v = (pos @ col)[:, None] + corners[None, :, 0] * ps_r
    u0, u1, v0, v1 = u.min(), u.max(), v.min(), v.max()
    nx = int(np.floor((u1 - u0) / sx + 1e-6)) + 1
    ny = int(np.floor((v1 - v0) / sy + 1e-6)) + 1
    nz = int(np.floor((d[-1] - d[0]) / sz + 1e-6)) + 1

    out = np.full((nz, ny, nx), fill, dtype=np.float32)
    ug = u0 + np.arange(nx) * sx
    vg = v0 + np.arange(ny) * sy
    U, V = np.meshgrid(ug, vg)  # (ny, nx)
    src = volume.array.astype(np.float32, copy=False)
    ks = np.arange(n, dtype=np.float64)
    for kz in range(nz):
        w = d[0] + kz * sz
        kf = float(np.interp(w, d, ks))
        k0 = int(min(np.floor(kf), n - 2))
        f = kf - k0
        acc = np.zeros((ny, nx), dtype=np.float64)
        for k, weight in ((k0, 1.0 - f), (k0 + 1, f)):
            if weight <= 1e-9:
                continue
            j = (U - float(pos[k] @ row)) / ps_c
            i = (V - float(pos[k] @ col)) / ps_r
            acc += weight * _sample_slice(src[k], i, j, order, fill)
        out[kz] = acc
    origin = u0 * row + v0 * col + d[0] * normal
    positions = origin[None, :] + (np.arange(nz) * sz)[:, None] * normal[None, :]
    return dataclasses.replace(
        volume,
        array=out,
        pixel_spacing=(sy, sx),
        positions=positions,
        frames=(),
        warnings=tuple(volume.warnings) + (RESAMPLED_WARNING,),
    )


def resample_mask_to_source(mask: np.ndarray, grid: Volume | sitk.Image, source: Volume) -> np.ndarray:
    """Bring a label mask computed on another (regular) grid back onto ``source``'s slices.

    ``grid`` describes the mask's voxels: the ``Volume`` from ``resample_to_orthogonal``
    or ``from_sitk``, or a SimpleITK image. Each source voxel centre
    (``source.index_to_patient``) is looked up in the grid by linear interpolation of
    each label's indicator and takes the label with the largest weight (≥ 0.5 for a
    binary mask). Returns uint8 with ``source.shape``; 0 outside the grid.
    """
    if isinstance(grid, sitk.Image):
        grid = from_sitk(grid)
    mask = np.asarray(mask)
    if mask.shape != grid.array.shape:
        raise ValueError(f"mask shape {mask.shape} does not match its grid {grid.array.shape}")
    g_row = np.asarray(grid.row_direction, dtype=np.float64)
    g_col = np.asarray(grid.column_direction, dtype=np.float64)
    g_pos = np.asarray(grid.positions, dtype=np.float64)
    g_step = grid.slice_step if len(g_pos) > 1 else np.cross(g_row, g_col)
    M = np.stack([g_step, g_col * grid.pixel_spacing[0], g_row * grid.pixel_spacing[1]], axis=1)  # (k,i,j) -> mm
    Minv = np.linalg.inv(M)

    s_row = np.asarray(source.row_direction, dtype=np.float64)
    s_col = np.asarray(source.column_direction, dtype=np.float64)
    n, rows, cols = source.array.shape
    I, J = np.meshgrid(np.arange(rows, dtype=np.float64), np.arange(cols, dtype=np.float64), indexing="ij")
    labels = [int(x) for x in np.unique(mask) if x != 0]
    indicators = {lab: (mask == lab).astype(np.float32) for lab in labels}
    out = np.zeros((n, rows, cols), dtype=np.uint8)
    for k in range(n):
        p = (
            source.positions[k][None, None, :]
            + J[..., None] * source.pixel_spacing[1] * s_row
            + I[..., None] * source.pixel_spacing[0] * s_col
        )
        idx = (p - g_pos[0]) @ Minv.T  # (rows, cols, 3) as (k, i, j)
        coords = [idx[..., 0], idx[..., 1], idx[..., 2]]
        best = np.full((rows, cols), 0.5 - 1e-6)
        for lab in labels:
            w = ndimage.map_coordinates(indicators[lab], coords, order=1, mode="constant", cval=0.0)
            take = w > best
            out[k][take] = lab
            best = np.where(take, w, best)
    return out

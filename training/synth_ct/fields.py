"""Grid helpers and random smooth fields shared by the anatomy, lesion and scanner models.

The anatomy lives on a canonical grid in a template space (MNI-like millimetres, x right, y anterior,
z superior). Everything random that must be smooth (elastic displacement, tissue texture, thickness maps,
lesion margins) is white noise drawn on a coarse grid, Gaussian-smoothed and linearly interpolated up: cheap
at 1 mm over a whole head, and the correlation length is an explicit parameter.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

# template box holding a whole head (scalp, skull base and an upper neck) after elastic deformation
BOX_LO = (-102.0, -138.0, -76.0)
BOX_HI = (102.0, 116.0, 108.0)


@dataclass(frozen=True)
class Grid:
    """Canonical voxel grid: index (i, j, k) sits at lo + h * (i, j, k) mm in template space."""

    h: float
    lo: tuple[float, float, float] = BOX_LO
    hi: tuple[float, float, float] = BOX_HI

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(np.floor((b - a) / self.h)) + 1 for a, b in zip(self.lo, self.hi))  # type: ignore

    def axis(self, a: int) -> np.ndarray:
        return (self.lo[a] + self.h * np.arange(self.shape[a])).astype(np.float32)

    def roi(self, lo_mm, hi_mm, margin: float = 0.0) -> tuple[slice, slice, slice]:
        """Index slices of the box [lo_mm - margin, hi_mm + margin] (template mm), clipped to the grid."""
        out = []
        for a in range(3):
            i0 = int(np.floor((lo_mm[a] - margin - self.lo[a]) / self.h))
            i1 = int(np.ceil((hi_mm[a] + margin - self.lo[a]) / self.h)) + 1
            out.append(slice(max(i0, 0), max(min(i1, self.shape[a]), 0)))
        return tuple(out)  # type: ignore[return-value]


def interp_axis(a: np.ndarray, coords: np.ndarray, axis: int) -> np.ndarray:
    """Linear interpolation of ``a`` along one axis at fractional indices ``coords`` (clamped at the ends)."""
    m = a.shape[axis]
    x = np.clip(np.asarray(coords, np.float64), 0, m - 1)
    if m == 1:
        return np.take(a, np.zeros(len(x), int), axis=axis)
    i0 = np.minimum(np.floor(x).astype(np.intp), m - 2)
    w = (x - i0).astype(a.dtype if a.dtype.kind == "f" else np.float32)
    shape = [1] * a.ndim
    shape[axis] = len(x)
    out = np.take(a, i0, axis=axis)
    step = np.take(np.diff(a, axis=axis), i0, axis=axis)  # the difference is taken on the smaller input
    step *= w.reshape(shape)
    out += step
    return out


def resize(a: np.ndarray, shape) -> np.ndarray:
    """Separable linear resize of an array spanning the same box (corners aligned)."""
    out = a.astype(np.float32, copy=False)
    order = np.argsort([n / max(m, 1) for m, n in zip(a.shape, shape)])  # cheapest expansions first
    for ax in order:
        n, m = shape[ax], out.shape[ax]
        if n != m:
            out = interp_axis(out, np.linspace(0, m - 1, n), ax)
    return out


def block_mean(a: np.ndarray, f: int) -> np.ndarray:
    """Mean over f x f x f blocks (the array is cropped to a multiple of f)."""
    if f == 1:
        return a.astype(np.float32)
    s = [n // f for n in a.shape]
    b = a[: s[0] * f, : s[1] * f, : s[2] * f].astype(np.float32)
    return b.reshape(s[0], f, s[1], f, s[2], f).mean(axis=(1, 3, 5))


def unblock(a: np.ndarray, f: int, shape) -> np.ndarray:
    """Linear upsampling of a block-reduced array back to ``shape`` (block centres aligned)."""
    out = a.astype(np.float32, copy=False)
    for ax in range(3):
        if f > 1 or out.shape[ax] != shape[ax]:
            out = interp_axis(out, (np.arange(shape[ax]) - (f - 1) / 2.0) / f, ax)
    return out


def distance(mask: np.ndarray, h: float, f: int = 1, any_: bool = False) -> np.ndarray:
    """Euclidean distance (mm) from every voxel outside ``mask`` to the mask (0 inside), on an f-times coarser grid.

    ``any_``: a coarse block counts as mask if any of its voxels is (keeps thin structures such as sulci)."""
    if f == 1:
        return ndi.distance_transform_edt(~mask, sampling=h).astype(np.float32)
    coarse = block_mean(mask, f) > (0.0 if any_ else 0.5)
    d = ndi.distance_transform_edt(~coarse, sampling=h * f).astype(np.float32)
    # a coarse block centre is about f*h/2 from the fine boundary; correct for half of that bias
    d = np.maximum(d + (0.25 if any_ else -0.25) * f * h, 0.0)
    out = unblock(d, f, mask.shape)
    out[mask] = 0.0
    return out


def smooth_noise(rng: np.random.Generator, shape, h: float, scale_mm: float) -> np.ndarray:
    """Zero-mean, unit-SD random field on a grid of spacing h with correlation length about ``scale_mm``."""
    step = max(scale_mm / 3.0, h)
    cshape = [int(np.ceil(n * h / step)) + 4 for n in shape]
    w = rng.standard_normal(cshape).astype(np.float32)
    w = ndi.gaussian_filter(w, 1.2, mode="wrap")
    w -= w.mean()
    w /= max(float(w.std()), 1e-6)
    # place the fine grid inside the coarse one (two coarse cells of margin on each side)
    out = w
    for ax in range(3):
        coords = 2.0 + np.arange(shape[ax]) * h / step
        out = interp_axis(out, coords, ax)
    return out


def ellipsoid(X, Y, Z, centre, semi) -> np.ndarray:
    """Normalised radius sqrt(sum(((c - centre) / semi)^2)): < 1 inside the ellipsoid."""
    return np.sqrt(((X - centre[0]) / semi[0]) ** 2 + ((Y - centre[1]) / semi[1]) ** 2
                   + ((Z - centre[2]) / semi[2]) ** 2)


def segment_distance(X, Y, Z, p0, p1, scale=(1.0, 1.0, 1.0)):
    """Distance (mm, after per-axis scaling) from points to the segment p0-p1, and the position t in [0, 1] on it."""
    s = np.asarray(scale, np.float32)
    a = np.asarray(p0, np.float32) * s
    b = np.asarray(p1, np.float32) * s
    d = b - a
    L2 = float(d @ d) + 1e-9
    px, py, pz = X * s[0] - a[0], Y * s[1] - a[1], Z * s[2] - a[2]
    t = np.clip((px * d[0] + py * d[1] + pz * d[2]) / L2, 0.0, 1.0)
    dist = np.sqrt((px - t * d[0]) ** 2 + (py - t * d[1]) ** 2 + (pz - t * d[2]) ** 2)
    return dist, t


def bbox(mask: np.ndarray, pad: int) -> tuple[slice, ...] | None:
    """The box about a mask's True voxels (found on every 2nd voxel), ``pad`` voxels below and ``pad + 2`` above
    (the stride's reach), clipped to the array; None if the mask is empty."""
    idx = np.argwhere(mask[::2, ::2, ::2]) * 2
    if not len(idx):
        return None
    return tuple(slice(max(int(a) - pad, 0), min(int(b) + pad + 2, n))
                 for a, b, n in zip(idx.min(0), idx.max(0), mask.shape))

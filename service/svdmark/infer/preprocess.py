"""Image operations shared by the runtime, the measurements and the classical baselines (training/baselines.py).

numpy + scipy only. Grids are handled in the *source* index space (k, i, j) =
(slice, row, column) of a ``Volume``; physical directions come from its
``row_direction``, ``column_direction`` and ``slice_step`` (so sheared,
tilted grids are exact).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from ..domain import Volume
from ..masks import largest_object


# --------------------------------------------------------------------------- geometry


def index_affine(volume: Volume) -> np.ndarray:
    """3x3 matrix M with patient offset = M @ (dk, di, dj) (mm)."""
    dy, dx = volume.pixel_spacing
    return np.stack(
        [np.asarray(volume.slice_step, float), np.asarray(volume.column_direction, float) * dy,
         np.asarray(volume.row_direction, float) * dx],
        axis=1,
    )


def patient_to_index(volume: Volume, xyz: np.ndarray) -> np.ndarray:
    """Patient mm (..., 3) to continuous (k, i, j) index (..., 3). Inverse of ``index_to_patient``."""
    m = index_affine(volume)
    rel = np.asarray(xyz, float) - np.asarray(volume.positions[0], float)
    return np.linalg.solve(m, rel.reshape(-1, 3).T).T.reshape(np.shape(xyz))


# --------------------------------------------------------------------------- normalisation


def normalise(array: np.ndarray, spec: dict, ref: float | None = None) -> np.ndarray:
    """Intensity normalisation described by a manifest's ``input.normalisation``."""
    kind = spec["type"]
    if kind == "hu_window":
        out = (array - float(spec["center"])) / float(spec["scale"])
    elif kind == "foreground_median":
        if ref is None:
            ref = foreground_reference(array, spec)
        out = array / ref
    else:  # pragma: no cover - manifests are validated by tests
        raise ValueError(f"unknown normalisation {kind!r}")
    lo, hi = spec.get("clip", (-np.inf, np.inf))
    return np.clip(out, lo, hi).astype(np.float32)


def foreground_reference(array: np.ndarray, spec: dict | None = None) -> float:
    """Median intensity of the head foreground (voxels above a fraction of the 99th percentile)."""
    frac = float((spec or {}).get("foreground_fraction", 0.2))
    sample = array[:: max(1, array.shape[0] // 32), ::2, ::2]
    p99 = float(np.percentile(sample, 99))
    fg = sample[sample > frac * p99]
    ref = float(np.median(fg)) if fg.size else p99
    return ref if ref > 0 else 1.0


# --------------------------------------------------------------------------- in-plane resampling


@dataclass(frozen=True)
class PlaneGrid:
    """Mapping between a source image plane (ny, nx) and a model plane (my, mx) covering the same FOV."""

    src_shape: tuple[int, int]
    model_shape: tuple[int, int]
    scale: tuple[float, float]  # source pixels per model pixel, per axis

    @classmethod
    def make(cls, src_shape: tuple[int, int], pixel_spacing: tuple[float, float], spacing_mm: float) -> "PlaneGrid":
        ny, nx = src_shape
        my = max(1, int(round(ny * pixel_spacing[0] / spacing_mm)))
        mx = max(1, int(round(nx * pixel_spacing[1] / spacing_mm)))
        return cls((ny, nx), (my, mx), (ny / my, nx / mx))

    def to_model(self, plane: np.ndarray, order: int = 1) -> np.ndarray:
        """Resample a source plane (or a (n, ny, nx) stack of planes) onto the model grid."""
        stack = plane[None] if plane.ndim == 2 else plane
        sy, sx = self.scale
        sig = (0.0, max(0.0, 0.5 * (sy - 1.0)), max(0.0, 0.5 * (sx - 1.0)))  # anti-alias when shrinking
        if sig[1] > 0 or sig[2] > 0:
            stack = ndi.gaussian_filter(stack, sig, mode="nearest")
        yy = (np.arange(self.model_shape[0]) + 0.5) * sy - 0.5
        xx = (np.arange(self.model_shape[1]) + 0.5) * sx - 0.5
        out = np.empty((stack.shape[0],) + self.model_shape, np.float32)
        for n in range(stack.shape[0]):
            out[n] = _resample_plane(stack[n], yy, xx, order)
        return out[0] if plane.ndim == 2 else out

    def to_source(self, plane: np.ndarray, order: int = 1) -> np.ndarray:
        """Resample a model plane (or stack) back onto the source grid."""
        stack = plane[None] if plane.ndim == 2 else plane
        sy, sx = self.scale
        yy = (np.arange(self.src_shape[0]) + 0.5) / sy - 0.5
        xx = (np.arange(self.src_shape[1]) + 0.5) / sx - 0.5
        out = np.empty((stack.shape[0],) + self.src_shape, np.float32)
        for n in range(stack.shape[0]):
            out[n] = _resample_plane(stack[n], yy, xx, order)
        return out[0] if plane.ndim == 2 else out


def _resample_plane(plane: np.ndarray, yy: np.ndarray, xx: np.ndarray, order: int) -> np.ndarray:
    # separable linear interpolation: two 1-D passes (fast and exact for order 1)
    if order == 0:
        iy = np.clip(np.round(yy).astype(int), 0, plane.shape[0] - 1)
        ix = np.clip(np.round(xx).astype(int), 0, plane.shape[1] - 1)
        return plane[np.ix_(iy, ix)].astype(np.float32)
    tmp = _interp_axis(plane.astype(np.float32), yy, axis=0)
    return _interp_axis(tmp, xx, axis=1)


def _interp_axis(a: np.ndarray, coords: np.ndarray, axis: int) -> np.ndarray:
    n = a.shape[axis]
    c = np.clip(coords, 0, n - 1)
    i0 = np.clip(np.floor(c).astype(int), 0, max(n - 2, 0))
    w = (c - i0).astype(np.float32)
    i1 = np.minimum(i0 + 1, n - 1)
    a0 = np.take(a, i0, axis=axis)
    a1 = np.take(a, i1, axis=axis)
    shape = [1] * a.ndim
    shape[axis] = len(coords)
    w = w.reshape(shape)
    return (a0 * (1 - w) + a1 * w).astype(np.float32)


def threaded_map(fn, items, threads: int) -> list:
    """``[fn(x) for x in items]`` on up to ``threads`` threads (for scipy work, which releases the GIL), in the order of
    ``items`` whatever order the threads finish in; inline on one thread."""
    items = list(items)
    workers = max(1, min(threads, len(items)))
    if workers == 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fn, items))


# --------------------------------------------------------------------------- 3-D patches


def sample_patches(
    array: np.ndarray, volume: Volume, centres_kij: np.ndarray, size: int, spacing_mm: float, fill: float = 0.0
) -> np.ndarray:
    """Isotropic cubic patches (n, size, size, size) around index-space centres.

    Patch axes are the slice normal, the column direction and the row direction
    (so axis order matches the source array), sampled every ``spacing_mm`` by
    trilinear interpolation; works on sheared grids.
    """
    m_inv = np.linalg.inv(index_affine(volume))
    normal = volume.normal / np.linalg.norm(volume.normal)
    axes = np.stack([normal, np.asarray(volume.column_direction, float), np.asarray(volume.row_direction, float)])
    # index offsets per mm step along each patch axis
    steps = (m_inv @ axes.T).T * spacing_mm  # (3 patch axes, 3 index comps)
    r = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    gk, gi, gj = np.meshgrid(r, r, r, indexing="ij")
    offs = gk[..., None] * steps[0] + gi[..., None] * steps[1] + gj[..., None] * steps[2]  # (s,s,s,3)
    out = np.empty((len(centres_kij), size, size, size), np.float32)
    for n, c in enumerate(np.asarray(centres_kij, float)):
        coords = (offs + c).reshape(-1, 3).T
        out[n] = ndi.map_coordinates(array, coords, order=1, mode="constant", cval=fill).reshape(size, size, size)
    return out


# --------------------------------------------------------------------------- SWI candidates


def head_mask(array: np.ndarray, ref: float, fraction: float = 0.35, erode_mm: float = 0.0,
              spacing: tuple[float, float, float] = (1.0, 1.0, 1.0), threads: int = 1) -> np.ndarray:
    """Foreground head/brain mask of an SWI magnitude: threshold, largest component, hole fill per slice (on up to
    ``threads`` threads), erosion."""
    fg = ndi.binary_opening(array > fraction * ref, iterations=1)
    largest = largest_object(fg)
    if largest is not None:
        fg = largest
    filled = np.stack(threaded_map(ndi.binary_fill_holes, fg, threads)) if len(fg) else fg
    if erode_mm > 0:
        it = [max(0, int(round(erode_mm / s))) for s in spacing]
        # anisotropic erosion: separable 1-D erosions
        out = filled
        for ax, n_it in enumerate(it):
            if n_it:
                shape = [1, 1, 1]
                shape[ax] = 3
                out = ndi.binary_erosion(out, structure=np.ones(shape, bool), iterations=n_it)
        return out
    return filled


def log_candidates(
    norm: np.ndarray,
    spacing: tuple[float, float, float],
    sigmas_mm: tuple[float, ...],
    threshold: float,
    mask: np.ndarray | None = None,
    max_candidates: int | None = 400,
    min_distance_mm: float = 3.0,
    threads: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Multi-scale scale-normalised LoG detector of *dark* blobs.

    Returns (centres (n,3) float index (k,i,j), response (n,), best sigma in mm (n,)),
    strongest first, at most ``max_candidates`` (None: all). ``spacing`` is (slice spacing, row spacing, column
    spacing) in mm. The scales are filtered on up to ``threads`` threads (scipy's filters release the GIL) and
    combined in scale order, so the result does not depend on ``threads``.

    With a ``mask``, only the mask's bounding box grown by the filters' reach is filtered: every value the
    candidates inside the mask depend on lies within it, so the candidates are the same as on the whole array (a
    wide field of view is mostly air: about half the time on a 512² SWI).
    """
    fp = tuple(max(1, int(round(min_distance_mm / sp))) * 2 + 1 for sp in spacing)
    if mask is None:
        return _log_candidates(norm, spacing, sigmas_mm, threshold, None, max_candidates, fp, threads=threads)
    box = _reach_box(mask, spacing, max(sigmas_mm), fp)
    if box is None:
        return np.zeros((0, 3)), np.zeros(0, np.float32), np.zeros(0, np.float32)
    return _log_candidates(norm[box], spacing, sigmas_mm, threshold, mask[box], max_candidates, fp,
                           origin=np.array([b.start for b in box]), threads=threads)


LOG_TRUNCATE = 4.0  # scipy's Gaussian kernels reach int(LOG_TRUNCATE * sigma + 0.5) voxels


def _reach_box(mask: np.ndarray, spacing: tuple[float, float, float], sigma_max_mm: float,
               fp: tuple[int, ...]) -> tuple[slice, ...] | None:
    """The mask's bounding box grown by the reach of the LoG kernel, of the peak footprint ``fp`` and of the
    sub-voxel fit (with a voxel to spare); None for an empty mask."""
    if not mask.any():
        return None
    box = []
    for ax, sp in enumerate(spacing):
        other = tuple(a for a in range(mask.ndim) if a != ax)
        hit = np.flatnonzero(mask.any(axis=other))
        reach = int(LOG_TRUNCATE * sigma_max_mm / sp + 0.5) + fp[ax] // 2 + 2
        box.append(slice(max(int(hit[0]) - reach, 0), min(int(hit[-1]) + 1 + reach, mask.shape[ax])))
    return tuple(box)


def _log_candidates(norm: np.ndarray, spacing: tuple[float, float, float], sigmas_mm: tuple[float, ...],
                    threshold: float, mask: np.ndarray | None, max_candidates: int | None, fp: tuple[int, ...],
                    origin: np.ndarray | None = None, threads: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``log_candidates`` on the array as given, with the peak footprint ``fp`` (voxels per axis); centres are
    returned in the index space of the array that ``norm`` was cut from at ``origin``."""
    def response(s: float) -> np.ndarray:
        sig_vox = tuple(s / sp for sp in spacing)
        return ndi.gaussian_laplace(norm, sig_vox, mode="nearest", truncate=LOG_TRUNCATE) * (s * s)

    workers = max(1, min(threads, len(sigmas_mm)))
    best = None
    best_sig = None
    for first in range(0, len(sigmas_mm), workers):  # ``workers`` scales at a time: no more responses held than that
        chunk = sigmas_mm[first:first + workers]
        for s, r in zip(chunk, threaded_map(response, chunk, workers)):
            if best is None:
                best = r
                best_sig = np.full(r.shape, s, np.float32)
            else:
                upd = r > best
                best = np.where(upd, r, best)
                best_sig = np.where(upd, np.float32(s), best_sig)
    assert best is not None and best_sig is not None
    peaks = (best == ndi.maximum_filter(best, size=fp, mode="nearest")) & (best > threshold)
    if mask is not None:
        peaks &= mask
    idx = np.argwhere(peaks)
    resp = best[peaks]
    order = np.argsort(-resp, kind="stable")[:max_candidates]
    idx, resp = idx[order], resp[order]
    sig = best_sig[tuple(idx.T)] if len(idx) else np.zeros(0, np.float32)
    # sub-voxel refinement: parabolic fit along each axis (on the whole array's index, so a box gives the same sums)
    cent = (idx if origin is None else idx + origin).astype(np.float64)
    for ax in range(3):
        lo = idx.copy()
        hi = idx.copy()
        lo[:, ax] = np.maximum(lo[:, ax] - 1, 0)
        hi[:, ax] = np.minimum(hi[:, ax] + 1, best.shape[ax] - 1)
        f0, fl, fh = best[tuple(idx.T)], best[tuple(lo.T)], best[tuple(hi.T)]
        den = fl - 2 * f0 + fh
        with np.errstate(divide="ignore", invalid="ignore"):
            d = np.where(np.abs(den) > 1e-12, 0.5 * (fl - fh) / den, 0.0)
        cent[:, ax] += np.clip(d, -0.5, 0.5)
    return cent, resp.astype(np.float32), np.asarray(sig, np.float32)


def hessian_blobness(
    norm: np.ndarray, centres_kij: np.ndarray, sigmas_mm: np.ndarray, spacing: tuple[float, float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Per candidate: (blobness = λmin/λmax of the Hessian at its scale, tubularity (Frangi-like, 0..1)).

    For a dark blob all three eigenvalues are large and positive (blobness → 1);
    for a dark vessel one eigenvalue is ~0 (blobness → 0, tubularity → 1).
    """
    n = len(centres_kij)
    blob = np.zeros(n, np.float32)
    tube = np.zeros(n, np.float32)
    if n == 0:
        return blob, tube
    for s in np.unique(sigmas_mm):
        sel = np.where(sigmas_mm == s)[0]
        sig_vox = tuple(float(s) / sp for sp in spacing)
        # local box around the candidates only, to keep it cheap
        H = np.zeros((len(sel), 3, 3))
        pts = np.round(centres_kij[sel]).astype(int)
        half = [int(np.ceil(4 * sv)) + 2 for sv in sig_vox]
        for q, p in enumerate(pts):
            sl = tuple(slice(max(0, p[a] - half[a]), min(norm.shape[a], p[a] + half[a] + 1)) for a in range(3))
            box = norm[sl]
            g = ndi.gaussian_filter(box, sig_vox, mode="nearest")
            c = tuple(p[a] - sl[a].start for a in range(3))
            grads = np.gradient(g, *spacing)
            for a in range(3):
                ga = np.gradient(grads[a], *spacing)
                for b in range(3):
                    H[q, a, b] = ga[b][c]
        H = 0.5 * (H + np.transpose(H, (0, 2, 1))) * float(s) ** 2
        ev = np.linalg.eigvalsh(H)  # ascending
        lam_min, lam_mid, lam_max = ev[:, 0], ev[:, 1], ev[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            b = np.where(lam_max > 0, np.clip(lam_min, 0, None) / lam_max, 0.0)
            ra = np.where(lam_max > 0, np.abs(lam_min) / np.sqrt(np.abs(lam_mid * lam_max) + 1e-12), 1.0)
            t = np.where((lam_mid > 0) & (lam_max > 0), 1.0 - np.exp(-((1 - np.clip(ra, 0, 1)) ** 2) / 0.5), 0.0)
        blob[sel] = b
        tube[sel] = t
    return blob, tube


def slab_group(slice_spacing_mm: float, min_slice_mm: float) -> int:
    """How many consecutive source slices make one model slice: 1 unless the stack is thinner than the model's
    ``min_slice_mm`` (by more than 10 %), else the fewest whose summed spacing reaches it to within 5 % of a slice
    (0.625 mm → 4 for 2.5 mm, 1 mm → 3, 1.25 mm → 2, 2 mm → 2)."""
    if min_slice_mm <= 0 or slice_spacing_mm <= 0 or slice_spacing_mm >= 0.9 * min_slice_mm:
        return 1
    return int(np.ceil(min_slice_mm / slice_spacing_mm - 0.05))


def slab_starts(n: int, group: int) -> np.ndarray:
    """First slice of each slab of ``group`` slices; a shorter remainder joins the last full slab (so no slab is
    thinner than ``group`` slices unless the whole stack is, and none is thicker than 2 × ``group`` − 1)."""
    starts = np.arange(0, n, max(group, 1))
    if len(starts) > 1 and n % group:
        starts = starts[:-1]
    return starts


def average_slabs(array: np.ndarray, group: int) -> np.ndarray:
    """Mean of the slices of each slab (``slab_starts``): a thicker slice profile, as a scanner reconstructs a
    2.5–5 mm series from thin detector rows."""
    if group <= 1:
        return array
    starts = slab_starts(array.shape[0], group)
    sums = np.add.reduceat(array, starts, axis=0, dtype=np.float32)
    counts = np.diff(np.append(starts, array.shape[0]))
    return sums / counts.reshape((-1,) + (1,) * (array.ndim - 1)).astype(np.float32)


def expand_slabs(slabs: np.ndarray, group: int, n: int) -> np.ndarray:
    """Back to ``n`` source slices: each takes its slab's value. A fraction (occupancy of the slab) keeps its
    volume, since the slab's voxel volume is the sum of its slices'."""
    if group <= 1:
        return slabs
    return np.repeat(slabs, np.diff(np.append(slab_starts(n, group), n)), axis=0)


def volume_spacing(volume: Volume) -> tuple[float, float, float]:
    """(slice spacing along the normal, row spacing, column spacing) in mm."""
    return (max(volume.slice_spacing, 1e-3), float(volume.pixel_spacing[0]), float(volume.pixel_spacing[1]))


def cmb_candidates(volume: Volume, cspec: dict, norm_spec: dict, threads: int = 1):
    """The candidate stage of the CMB model (parameters from ``manifest["candidates"]``), its filters on up to
    ``threads`` threads.

    Returns (normalised array, centres (n,3) index, LoG response, scale mm, reference intensity, candidates found):
    the strongest ``max_candidates`` of all it found, and how many that was (the quality gate's density score).
    """
    ref = foreground_reference(volume.array, norm_spec)
    norm = normalise(volume.array, norm_spec, ref=ref)
    spacing = volume_spacing(volume)
    mask = head_mask(volume.array, ref, float(cspec.get("mask_fraction", 0.35)),
                     erode_mm=float(cspec.get("erode_mm", 0.0)), spacing=spacing, threads=threads)
    cents, resp, sig = log_candidates(
        norm, spacing, tuple(cspec["sigmas_mm"]), float(cspec["threshold"]), mask,
        None, float(cspec.get("min_distance_mm", 3.0)), threads=threads,
    )
    keep = int(cspec.get("max_candidates", 400))  # strongest first
    return norm, cents[:keep], resp[:keep], sig[:keep], ref, len(cents)


def cmb_patches(norm: np.ndarray, volume: Volume, cents: np.ndarray, spec: dict, threads: int = 1) -> np.ndarray:
    """(n, channels, s, s, s) patches: one channel per entry of ``spec["channel_spacing_mm"]`` (the channels on up to
    ``threads`` threads)."""
    size = int(spec["patch"][0])
    chans = threaded_map(lambda sp: sample_patches(norm, volume, cents, size, float(sp), fill=0.0),
                         spec["channel_spacing_mm"], threads)
    return np.stack(chans, axis=1)

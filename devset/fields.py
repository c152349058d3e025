"""Random smooth fields, linear upsampling and signed-distance helpers shared by the anatomy and lesion models.

Fields are drawn on a coarse lattice (FFT-filtered white noise) and upsampled separably onto the
template grid, which keeps a full-size head to a second or two of numpy work.
"""
from __future__ import annotations

import numpy as np


def _gauss_filter_1d(n: int, sigma_vox: float, real: bool = False) -> np.ndarray:
    k = np.fft.rfftfreq(n) if real else np.fft.fftfreq(n)
    return np.exp(-2.0 * (np.pi * sigma_vox * k) ** 2)


def gaussian_field(rng: np.random.Generator, shape: tuple[int, ...], sigma_vox: float,
                   sigma2_vox: float | None = None) -> np.ndarray:
    """Zero-mean unit-SD random field: white noise smoothed by a Gaussian of ``sigma_vox`` voxels.

    With ``sigma2_vox`` (> sigma_vox) the spectrum is the difference of the two Gaussians: a band-pass
    field whose zero set folds with a preferred wavelength (used for gyri and cerebellar folia).
    """
    white = rng.standard_normal(shape).astype(np.float32)
    spec = np.fft.rfftn(white)

    def sep(sig: float) -> np.ndarray:
        g = [_gauss_filter_1d(n, sig) for n in shape[:-1]] + [_gauss_filter_1d(shape[-1], sig, real=True)]
        out = g[0].reshape((-1,) + (1,) * (len(shape) - 1))
        for i, gi in enumerate(g[1:], start=1):
            out = out * gi.reshape((1,) * i + (-1,) + (1,) * (len(shape) - 1 - i))
        return out

    filt = sep(sigma_vox)
    if sigma2_vox is not None:
        filt = filt - sep(sigma2_vox)
    field = np.fft.irfftn(spec * filt, s=shape, axes=tuple(range(len(shape)))).astype(np.float32)
    field -= field.mean()
    sd = float(field.std())
    return field / sd if sd > 0 else field


def upsample_linear(c: np.ndarray, factor: float, shape: tuple[int, ...]) -> np.ndarray:
    """Separable linear interpolation of a coarse lattice (spacing ``factor`` fine voxels, same origin)."""
    out = c
    for axis, n in enumerate(shape):
        pos = np.arange(n, dtype=np.float32) / factor
        i0 = np.clip(np.floor(pos).astype(np.int64), 0, out.shape[axis] - 2)
        w = (pos - i0).astype(np.float32)
        bshape = [1] * out.ndim
        bshape[axis] = n
        w = w.reshape(bshape)
        out = out.take(i0, axis=axis) * (1 - w) + out.take(i0 + 1, axis=axis) * w
    return out.astype(np.float32)


def coarse_shape(shape: tuple[int, ...], factor: int) -> tuple[int, ...]:
    return tuple(int(np.ceil((n - 1) / factor)) + 2 for n in shape)


def smooth_field(rng: np.random.Generator, shape: tuple[int, ...], h: float, corr_mm: float,
                 band_mm: float | None = None) -> np.ndarray:
    """Unit-SD random field on a grid of spacing ``h`` mm with correlation length ``corr_mm``, drawn coarse."""
    factor = max(1, int(corr_mm / (1.5 * h)))
    cs = coarse_shape(shape, factor)
    hc = h * factor
    f = gaussian_field(rng, cs, corr_mm / hc, None if band_mm is None else band_mm / hc)
    return f if factor == 1 and cs == shape else upsample_linear(f, factor, shape)


def zero_set_distance(rng: np.random.Generator, shape: tuple[int, ...], h: float, corr_mm: float,
                      band_mm: float) -> np.ndarray:
    """Signed distance (mm, approximately g / |grad g|) to the folded zero set of a band-pass field."""
    factor = max(1, int(corr_mm / (1.5 * h)))
    cs = coarse_shape(shape, factor)
    hc = h * factor
    g = gaussian_field(rng, cs, corr_mm / hc, band_mm / hc)
    grads = np.gradient(g, hc)
    mag = np.sqrt(sum(gr * gr for gr in grads))
    sd = np.clip(g / np.maximum(mag, 1e-3), -30, 30).astype(np.float32)
    return sd if factor == 1 and cs == shape else upsample_linear(sd, factor, shape)


def sigmoid(x: np.ndarray | float) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float32)))


def smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Smooth minimum (union of two signed-distance fields) with blend radius k mm."""
    hh = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b * (1 - hh) + a * hh - k * hh * (1 - hh)


def smax(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    return -smin(-a, -b, k)


def ellipsoid_sd(X, Y, Z, c, r, pert=None) -> np.ndarray:
    """Radial signed distance (mm, negative inside) to an ellipsoid, optionally with a direction-dependent
    relative radius perturbation ``pert(dx, dy, dz)`` (unit direction components)."""
    c = [float(v) for v in c]
    r = [float(v) for v in r]
    dx, dy, dz = X - np.float32(c[0]), Y - np.float32(c[1]), Z - np.float32(c[2])
    rad = np.sqrt(dx * dx + dy * dy + dz * dz) + np.float32(1e-6)
    q = (dx / np.float32(r[0])) ** 2 + (dy / np.float32(r[1])) ** 2 + (dz / np.float32(r[2])) ** 2
    if pert is None:
        # R = rad / sqrt(q): distance along the ray
        return (rad * (1 - 1 / np.sqrt(q + np.float32(1e-12)))).astype(np.float32)
    R = rad / np.sqrt(q + np.float32(1e-12))
    R = R * (1.0 + pert(dx / rad, dy / rad, dz / rad))
    return (rad - R).astype(np.float32)


def polyline_sd(X, Y, Z, pts, radii) -> np.ndarray:
    """Signed distance to a tube along a polyline whose radius varies linearly along each segment."""
    out = np.full(np.shape(X), 1e4, dtype=np.float32)
    for (a, b, ra, rb) in zip(pts[:-1], pts[1:], radii[:-1], radii[1:]):
        a = [float(v) for v in a]
        ab = [float(v) - u for v, u in zip(b, a)]
        L2 = ab[0] ** 2 + ab[1] ** 2 + ab[2] ** 2
        ra, rb = float(ra), float(rb)
        t = ((X - a[0]) * ab[0] + (Y - a[1]) * ab[1] + (Z - a[2]) * ab[2]) / L2
        t = np.clip(t, 0.0, 1.0)
        d = np.sqrt((X - a[0] - t * ab[0]) ** 2 + (Y - a[1] - t * ab[1]) ** 2 + (Z - a[2] - t * ab[2]) ** 2)
        np.minimum(out, d - (ra + (rb - ra) * t), out=out)
    return out


def angular_perturbation(rng: np.random.Generator, n: int, amp: float):
    """A random smooth function on the unit sphere: a few low-order cosine waves of the direction."""
    w = rng.normal(size=(n, 3))
    w *= rng.uniform(1.5, 4.0, size=(n, 1)) / np.linalg.norm(w, axis=1, keepdims=True)
    ph = rng.uniform(0, 2 * np.pi, n)
    a = rng.normal(0, amp, n)

    w, ph, a = w.tolist(), ph.tolist(), a.tolist()

    def f(ux, uy, uz):
        out = 0.0
        for k in range(n):
            out = out + a[k] * np.cos(w[k][0] * ux + w[k][1] * uy + w[k][2] * uz + ph[k])
        return out

    return f


def rotation(yaw_deg: float, roll_deg: float, pitch_deg: float) -> np.ndarray:
    """Rotation matrix: pitch about x (nodding), roll about y, then yaw about z (degrees)."""
    a, b, c = np.radians([yaw_deg, roll_deg, pitch_deg])
    Rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    Ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    Rx = np.array([[1, 0, 0], [0, np.cos(c), -np.sin(c)], [0, np.sin(c), np.cos(c)]])
    return Rz @ Ry @ Rx


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])

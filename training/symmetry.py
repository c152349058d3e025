"""Mirror partners across the head's mid-sagittal plane: is a dark focus with a twin on the other side a mimic?

A study, not a service criterion: on the development set's choice half it cost more true microbleeds than false
findings (``training/preregistered/2026-12-05-cmb-mirror.md``, outcome), so no model uses it and it lives here,
where ``training.cmb_darkness --mirror`` tables it.

The consensus criteria for a cerebral microbleed (Greenberg et al., Lancet Neurol 2009) list symmetric hypointensity
in the basal ganglia among its mimics: physiological calcification of both pallida and of both choroid plexus
glomera, and iron in the pallida, dentate nuclei, red nuclei and substantiae nigrae. On magnitude SWI these are as
round and black as haemosiderin, and the darkness criteria (``svdmark.measure.darkness``) keep them. The hypothesis
was that they come in mirror-image pairs while microbleeds are scattered. On the development set the bleeds were not
scattered enough: deep (hypertensive) bleeds crowd into the same small nuclei on both sides, so many have a twin too.

* :func:`midsagittal_plane` estimates the plane of symmetry from the image itself: the plane whose reflection of the
  head best correlates with the head (the approach of Liu, Collins and Teverovskiy, IEEE TMI 2001, and Ruppert et
  al., 2011), over the whole head (holes filled per slice), on a smoothed 2 mm resampling in patient coordinates: a
  coarse search over the plane's two angles, then Powell's method over both angles and its offset.
* :func:`mirror_partnered` flags each centre whose reflection has a partner (another centre, more than twice the
  radius away from it, so a focus on the midline is never its own twin) within ``radius_mm``.

:func:`without_mirror_twins` applies it to a candidate list, as a manifest criterion would (after the darkness
criteria, before merging). Hand-written with ``scipy.ndimage`` and ``scipy.optimize``: a registration
toolkit (SimpleITK, ANTs) would find the plane too, but as a heavyweight dependency for three parameters.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, optimize

from svdmark.domain import Volume
from svdmark.infer.preprocess import foreground_reference, index_affine

GRID_MM = 2.0  # the resampling the plane is fitted on
SMOOTH_MM = 2.0  # Gaussian smoothing (sigma) before resampling, so the fit's cost is smooth
MAX_POINTS = 40_000  # at most about this many lattice points in the correlation
COARSE_DEG = (-16.0, -8.0, 0.0, 8.0, 16.0)  # the coarse search over yaw and roll
FOREGROUND = 0.35  # x the head's median: the head (holes filled per slice), which the correlation is taken over


@dataclass(frozen=True)
class Plane:
    """A plane in patient coordinates: the points x with normal . x == offset (normal of unit length)."""

    normal: tuple[float, float, float]
    offset: float
    correlation: float  # of the head with its reflection across the plane

    def reflect(self, xyz) -> np.ndarray:
        """Patient points (..., 3) reflected across the plane."""
        x = np.asarray(xyz, float)
        n = np.asarray(self.normal, float)
        return x - 2.0 * (x @ n - self.offset)[..., None] * n


def _normal(yaw_deg: float, roll_deg: float) -> np.ndarray:
    """The unit normal turned ``yaw_deg`` from patient left-right within the axial plane and ``roll_deg`` out of it."""
    y, r = np.radians(yaw_deg), np.radians(roll_deg)
    return np.array([np.cos(y) * np.cos(r), np.sin(y) * np.cos(r), np.sin(r)])


def _resampled(volume: Volume) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The smoothed head on a ``GRID_MM`` lattice aligned with the patient axes: (image, lattice origin in mm, the
    head mask on the lattice)."""
    a = np.asarray(volume.array, np.float32)
    m = index_affine(volume)
    steps = np.linalg.norm(m, axis=0)
    smooth = ndimage.gaussian_filter(a, SMOOTH_MM / steps, mode="nearest")
    ref = foreground_reference(a)
    corners = np.array([[k, i, j] for k in (0, a.shape[0] - 1) for i in (0, a.shape[1] - 1)
                        for j in (0, a.shape[2] - 1)], float)
    xyz = corners @ m.T + np.asarray(volume.positions[0], float)
    lo, hi = xyz.min(axis=0), xyz.max(axis=0)
    axes = [np.arange(lo[d], hi[d] + GRID_MM, GRID_MM) for d in range(3)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    kij = np.linalg.solve(m, (grid.reshape(-1, 3) - np.asarray(volume.positions[0], float)).T)
    img = ndimage.map_coordinates(smooth, kij, order=1, cval=0.0).reshape(grid.shape[:3])
    head = np.stack([ndimage.binary_fill_holes(z) for z in (img > FOREGROUND * ref).transpose(2, 0, 1)])
    return img, lo, head.transpose(1, 2, 0)


def midsagittal_plane(volume: Volume) -> Plane | None:
    """The head's plane of symmetry, or None when the volume holds no head-sized foreground."""
    img, origin, mask = _resampled(volume)
    if mask.sum() * GRID_MM ** 3 < 50_000:  # under 50 mL: not a head
        return None
    pts = np.argwhere(mask) * GRID_MM + origin
    centre = pts.mean(axis=0)
    pts = pts[::max(1, len(pts) // MAX_POINTS)]  # an even subsample: the cost's shape, at a fraction of its time
    vals = ndimage.map_coordinates(img, ((pts - origin) / GRID_MM).T, order=1)

    def corr(p) -> float:
        n = _normal(p[0], p[1])
        d = float(n @ centre) + p[2]
        mirrored = pts - 2.0 * ((pts @ n) - d)[:, None] * n
        other = ndimage.map_coordinates(img, ((mirrored - origin) / GRID_MM).T, order=1, cval=0.0)
        return float(np.corrcoef(vals, other)[0, 1])

    start = max(((y, r, 0.0) for y in COARSE_DEG for r in COARSE_DEG), key=corr)
    res = optimize.minimize(lambda p: -corr(p), np.asarray(start), method="Powell",
                            options=dict(xtol=0.2, ftol=1e-4, maxfev=200))
    n = _normal(res.x[0], res.x[1])
    return Plane(tuple(float(v) for v in n), float(n @ centre) + float(res.x[2]), -float(res.fun))


def mirror_partnered(plane: Plane, centres_mm, partners_mm, radius_mm: float) -> np.ndarray:
    """For each centre (patient mm), whether a partner lies within ``radius_mm`` of its reflection and more than
    twice ``radius_mm`` from the centre itself."""
    c = np.asarray(centres_mm, float).reshape(-1, 3)
    p = np.asarray(partners_mm, float).reshape(-1, 3)
    if not len(c) or not len(p):
        return np.zeros(len(c), bool)
    to_mirror = np.linalg.norm(plane.reflect(c)[:, None, :] - p[None, :, :], axis=-1)
    to_self = np.linalg.norm(c[:, None, :] - p[None, :, :], axis=-1)
    return ((to_mirror <= radius_mm) & (to_self > 2.0 * radius_mm)).any(axis=1)


def without_mirror_twins(volume: Volume, candidates: list, radius_mm: float, partner_probability: float,
                         plane: Plane | None = None) -> list:
    """The ``(index, probability, diameter_mm)`` candidates that have no twin: no candidate of the list at or above
    ``partner_probability`` within ``radius_mm`` of their mirror image (:func:`mirror_partnered`). The plane is
    estimated when not given, and only when some candidate could be a twin; without a plane (no head found) every
    candidate stays."""
    partners = [c[0] for c in candidates if c[1] >= partner_probability]
    if not partners:
        return candidates
    plane = plane or midsagittal_plane(volume)
    if plane is None:
        return candidates
    mm = np.asarray([volume.index_to_patient(*c[0]) for c in candidates])
    twinned = mirror_partnered(plane, mm, np.asarray([volume.index_to_patient(*k) for k in partners]), radius_mm)
    return [c for c, t in zip(candidates, twinned) if not t]

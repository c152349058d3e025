"""An anatomical frame for a head series: an affine fit of its intracranial cavity to the ICBM 2009a cavity, and
where the calcified mimic sites lie in it (pineal gland, choroid plexus glomera).

A reader rules out a dark round focus in the pineal or in the atrium's glomus by where it lies: those are
calcifications, not microbleeds. The classifier sees a 20 mm patch and cannot; this frame lets the measurement
apply the same rule (``output.mimic_sites`` in a CMB manifest: :func:`outside_mimic_sites`).

How:

* **Cavity.** Block-average the series to about 2 mm in-plane; voxels above 0.35 x the foreground median (dark
  skull separates brain and CSF from scalp on SWI and T1/T2-like contrasts alike); erode by a box of about 3 mm
  (in-plane half-width rounded, through-plane floored: none for slices over 3 mm apart), keep the largest object,
  dilate back within the threshold mask, fill holes per slice.
* **Fit.** 9 parameters (translation, three rotations, three log-scales) map patient mm to the template, by least
  squares between the series' smoothed cavity and the template's, at points 4 mm apart within 12 mm of the
  cavity's edge (the interior says nothing about the fit) and only where the series has slices, so a partial
  slab is fitted on what it covers. A coarse translation search first (three starts in z, a smoother template)
  keeps Powell's search out of the local minima a raw start falls into.
* **Check.** A slab whose cavity spans less than 90 mm along the slice normal is not fitted, nor a grid too coarse
  to give 100 points inside the cavity. A fit whose scales leave
  [0.75, 1.5] or whose rotations exceed 30 degrees is refused (``None``): the measurement then excludes nothing.

The template (``data/anatomy/icbm2009a_cavity_3mm.npz``) is the ICBM 2009a symmetric T1's skull-stripped mask,
smoothed and resampled to 3 mm (``training/anatomy_template.py`` rebuilds it from nilearn's copy); its notice is
``data/anatomy/ICBM2009a_NOTICE.txt``. The site centres (:data:`SITES`) were read by eye off that T1 (about +-3 mm).

Why hand-written: the fit is of two binary masks with 9 parameters, which scipy's optimiser does in about a
second; ITK or ANTs registration would add a large native dependency, and their intensity metrics would have to
bridge the template's T1 contrast to SWI, which the cavity avoids. Limits: an affine fit of the cavity places
deep structures to a few mm (``training/README.md`` gives the measured error); it does not follow ventricles that
atrophy has widened, so the glomera, which sit in the atria, are placed less well than the midline pineal.
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from importlib import resources

import numpy as np
from scipy import ndimage, optimize
from scipy.spatial.transform import Rotation

from ..domain import Volume
from ..infer.preprocess import foreground_reference, index_affine
from ..masks import largest_object

log = logging.getLogger(__name__)

TEMPLATE = "icbm2009a_cavity_3mm.npz"
RAS_LPS = np.array([-1.0, -1.0, 1.0])  # MNI is RAS; DICOM patient coordinates are LPS
CAVITY_CENTRE_LPS = np.array([0.0, 18.0, 15.0])  # about the template cavity's centre: where the fit starts
# mimic sites in the template (MNI RAS mm), read off the ICBM 2009a T1: the pineal under the splenium, above the
# tectum; the choroid plexus glomus in each atrium at the splenium's level
SITES: dict[str, tuple[tuple[float, float, float], ...]] = {
    "pineal": ((0.0, -35.0, 2.0),),
    "choroid plexus glomus": ((-25.0, -45.0, 14.0), (25.0, -45.0, 14.0)),
}
SCALE_RANGE = (0.75, 1.5)  # the template cavity is 1.89 L, an adult's 1.0-1.9 L; a few heads are small
MAX_ROTATION_DEG = 30.0
MIN_COVERAGE_MM = 90.0  # a thinner slab does not hold the fit in z (a whole-brain SWI covers 120 mm or more)


@dataclass(frozen=True)
class Template:
    """The template cavity (smoothed, 0-1) on its grid, and that grid's RAS mm -> index affine."""

    cavity: np.ndarray
    ras_to_index: np.ndarray

    def sample(self, field: np.ndarray, lps: np.ndarray) -> np.ndarray:
        return self.sample_mapped(field, np.eye(3), np.zeros(3), np.asarray(lps, float).T)

    def sample_mapped(self, field: np.ndarray, matrix: np.ndarray, offset: np.ndarray, points_t: np.ndarray):
        """``field`` at the template LPS positions ``matrix @ points_t + offset`` (``points_t``: 3 x N), composed
        into one affine to the grid's index (the fit calls this hundreds of times)."""
        to_index = self.ras_to_index[:3, :3] * RAS_LPS
        idx = (to_index @ matrix) @ points_t + (to_index @ offset + self.ras_to_index[:3, 3])[:, None]
        return ndimage.map_coordinates(field, idx, order=1, cval=0.0)


@functools.lru_cache(maxsize=1)
def template() -> Template:
    with resources.files("svdmark").joinpath("data", "anatomy", TEMPLATE).open("rb") as fh, np.load(fh) as z:
        cavity = z["cavity"].astype(np.float32) / 255.0
        return Template(cavity, np.linalg.inv(z["affine"]))


@dataclass(frozen=True)
class Frame:
    """Patient (LPS mm) -> template (MNI RAS mm): ``ras = (matrix @ xyz + offset) * RAS_LPS``; ``cost``: the fit's
    mean squared cavity difference."""

    matrix: np.ndarray
    offset: np.ndarray
    cost: float

    def to_template(self, xyz) -> np.ndarray:
        return (np.asarray(xyz, float).reshape(-1, 3) @ self.matrix.T + self.offset) * RAS_LPS


def _spacing(volume: Volume, f: int) -> tuple[float, float, float]:
    ps = volume.pixel_spacing
    return float(np.linalg.norm(volume.slice_step)), float(ps[0]) * f, float(ps[1]) * f


def cavity_mask(volume: Volume) -> tuple[np.ndarray, int] | None:
    """The intracranial cavity on the series' grid block-averaged by ``f`` in-plane: (mask, f); None if no head."""
    a = np.asarray(volume.array, np.float32)
    f = max(1, int(round(2.0 / float(volume.pixel_spacing[0]))))
    n0, n1 = a.shape[1] // f * f, a.shape[2] // f * f
    if n0 == 0 or n1 == 0:  # a grid smaller than one 2 mm block: no head to fit
        return None
    a = a[:, :n0, :n1].reshape(a.shape[0], n0 // f, f, n1 // f, f).mean((2, 4))
    inside = a > 0.35 * foreground_reference(a)
    sz, sy, sx = _spacing(volume, f)
    ball = np.ones((2 * int(3.0 // sz) + 1, 2 * int(round(3.0 / sy)) + 1, 2 * int(round(3.0 / sx)) + 1), bool)
    core = largest_object(ndimage.binary_erosion(inside, structure=ball))
    if core is None:
        return None
    mask = ndimage.binary_dilation(core, structure=ball) & inside
    return np.stack([ndimage.binary_fill_holes(s) for s in mask]), f


def _edge_points(volume: Volume, mask: np.ndarray, f: int, step_mm: float = 4.0, band_mm: float = 12.0):
    """Patient positions (N, 3) 4 mm apart within ``band_mm`` of the cavity's edge, and the smoothed cavity there."""
    sp = _spacing(volume, f)
    smooth = ndimage.gaussian_filter(mask.astype(np.float32), [1.5 / s for s in sp])
    steps = [max(1, int(round(step_mm / s))) for s in sp]
    k, i, j = (g.ravel() for g in np.mgrid[tuple(slice(0, n, s) for n, s in zip(mask.shape, steps))])
    near = ((ndimage.distance_transform_edt(mask, sampling=sp)[k, i, j] < band_mm)
            & (ndimage.distance_transform_edt(~mask, sampling=sp)[k, i, j] < band_mm))
    kij = np.stack([k, i * f + (f - 1) / 2, j * f + (f - 1) / 2], 1).astype(float)[near]
    return kij @ index_affine(volume).T + np.asarray(volume.positions[0], float), smooth[k, i, j][near]


def _matrix(p: np.ndarray) -> np.ndarray:
    return np.diag(np.exp(p[6:9])) @ Rotation.from_euler("xyz", p[3:6], degrees=True).as_matrix()


def fit_frame(volume: Volume) -> Frame | None:
    """The series' anatomical frame, or None when it has no head or the fit is implausible (module docstring)."""
    cav = cavity_mask(volume)
    if cav is None:
        return None
    if np.ptp(np.nonzero(cav[0].any(axis=(1, 2)))[0]) * volume.slice_spacing < MIN_COVERAGE_MM:
        return None
    xyz, val = _edge_points(volume, *cav)
    if int((val > 0.5).sum()) < 100:  # too few cavity points to fit (a coarse or nearly empty grid)
        return None
    tpl = template()
    centre = xyz[val > 0.5].mean(0)
    rel_t = np.ascontiguousarray((xyz - centre).T)

    def cost(p: np.ndarray, field: np.ndarray) -> float:
        return float(np.mean((tpl.sample_mapped(field, _matrix(p), CAVITY_CENTRE_LPS + p[:3], rel_t) - val) ** 2))

    coarse = ndimage.gaussian_filter(tpl.cavity, 2.0)
    starts = [optimize.minimize(lambda t: cost(np.r_[t, np.zeros(6)], coarse), np.array([0.0, 0.0, dz]),
                                method="Powell", options=dict(xtol=0.1, ftol=1e-4, maxfev=300))
              for dz in (-10.0, 0.0, 10.0)]
    p0 = np.r_[min(starts, key=lambda r: r.fun).x, np.zeros(6)]
    res = optimize.minimize(cost, p0, args=(tpl.cavity,), method="Powell",
                            options=dict(xtol=1e-2, ftol=1e-5, maxfev=3000))
    p = res.x
    if not np.all(np.isfinite(p)):
        return None
    scales = np.exp(p[6:9])
    if np.any(scales < SCALE_RANGE[0]) or np.any(scales > SCALE_RANGE[1]) or np.any(np.abs(p[3:6]) > MAX_ROTATION_DEG):
        return None
    m = _matrix(p)
    return Frame(m, CAVITY_CENTRE_LPS + p[:3] - m @ centre, float(res.fun))


def in_ellipsoids(ras: np.ndarray, centres, semi_mm) -> np.ndarray:
    """Whether each template position (N, 3; MNI RAS mm, :meth:`Frame.to_template`) lies in the ellipsoid ``semi_mm``
    (template axes, mm) about any of the template ``centres``."""
    semi = np.asarray(semi_mm, float)
    return np.any([np.sum(((ras - np.asarray(c, float)) / semi) ** 2, axis=1) <= 1.0 for c in centres], axis=0)


def in_sites(frame: Frame, xyz, semi_axes_mm: dict[str, tuple[float, float, float]]) -> np.ndarray:
    """Whether each patient position lies in the ellipsoid (template axes, semi-axes in mm) about any centre of the
    named :data:`SITES`."""
    ras = frame.to_template(xyz)
    hit = np.zeros(len(ras), bool)
    for site, semi in semi_axes_mm.items():
        hit |= in_ellipsoids(ras, SITES[site], semi)
    return hit


def split_at_mimic_sites(volume: Volume, candidates: list, semi_axes_mm: dict) -> tuple[list, list]:
    """The ``(index, probability, diameter_mm)`` candidates (outside, inside) the mimic sites' ellipsoids; all outside
    when no frame can be fitted (or no site is named, or there is no candidate: then no fit is tried)."""
    if not candidates or not semi_axes_mm:
        return candidates, []
    try:
        frame = fit_frame(volume)
    except (ValueError, IndexError, FloatingPointError, np.linalg.LinAlgError) as exc:  # a frame is an extra
        log.warning("anatomical frame not fitted (%s: %s); no candidate excluded at the mimic sites",
                    type(exc).__name__, exc)
        frame = None
    if frame is None:
        return candidates, []
    xyz = np.asarray([volume.index_to_patient(*c[0]) for c in candidates], float)
    hit = in_sites(frame, xyz, semi_axes_mm)
    return [c for c, h in zip(candidates, hit) if not h], [c for c, h in zip(candidates, hit) if h]


def outside_mimic_sites(volume: Volume, candidates: list, semi_axes_mm: dict) -> list:
    """The candidates outside the mimic sites' ellipsoids (:func:`split_at_mimic_sites`)."""
    return split_at_mimic_sites(volume, candidates, semi_axes_mm)[0]

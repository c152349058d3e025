"""Scattered patches and periventricular halos drawn into WML training crops (``train_wml --insert-patterns``).

Why: white matter hyperintensities of small-vessel disease are seldom the compact blobs our generator and
``training.lesion_insertion`` draw. The Fazekas scale grades them as periventricular caps, pencil-thin lining,
smooth halos and irregular bands along the ventricle wall, and as punctate, then beginning-confluent, then confluent
deep foci. The development set (built by other code) draws its large loads in that way: many small irregular
patches through the white matter and a thin halo along the whole ventricle wall, and wml-ncct 1.12.0 reads a
tenth of some of them (session 25 closing note). This module draws both kinds into a crop, with no use of the
generator's lesion model:

- **scatter**: a smooth random field (Gaussian-filtered white noise, plus a slow envelope so that the foci
  cluster) thresholded to cover a random share of the field; occupancy rises over a soft edge. It is drawn on a grid of
  a third of the slice spacing across the channels, so a thin focus in a thick slice reads partly, as it would.
- **halo**: white matter within a random thickness of the crop's CSF (found from the crop itself: below white
  matter's own level in a smoothed image, outside white matter), the thickness varied along the wall by a smooth
  field so that caps, bands and a lining all occur.

Each crop gets scatter, halo or both, at one contrast (``lesion_insertion.pick_contrast_hu``) modulated by a
smooth depth field. The ranges are a ``PatternStyle``: ``loose`` (wml-ncct 1.21.0), ``visible`` (foci and halos
no fainter, thinner or smaller than a reader could see in CT noise) or ``deep`` (visible, halos along ventricles
only, foci inside white matter only). Darkening and label follow the generator's
white-matter weighting (``svdmark_phantom.lesions``), so a label never marks anything but white matter, and
labelled lesion already there is not darkened again.

Works on normalised crops (units of ``augment.HU_SCALE`` HU), before ``augment.randomise_ct`` re-renders the scanner.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from svdmark_phantom.lesions import wm_drop_weight, wm_label_weight

from .augment import HU_SCALE
from .lesion_insertion import CONTRAST_HU, log_uniform, pick_contrast_hu

MODES = ("scatter", "halo", "both")
MODE_P = (0.4, 0.3, 0.3)
CSF_BELOW_WM_HU = 3.0  # a smoothed pixel at least this far below white matter's median, outside white matter, is CSF
SUB = 3  # scatter grid planes per slice spacing


@dataclass(frozen=True)
class PatternStyle:
    """The ranges a pattern is drawn from."""

    scatter_sigma_mm: tuple[float, float]  # uniform: smoothness of the foci field
    scatter_cover: tuple[float, float]  # log-uniform: share of the field above threshold
    halo_mm: tuple[float, float]  # log-uniform: thickness from the CSF border
    min_hu: float  # no pattern fainter than this (before the depth field)
    depth: tuple[float, float]  # clip of the smooth depth field (1 +/- 0.25 sd)
    ventricles_only: bool = False  # halos only along CSF lined by white matter (not sulci lined by cortex)
    scatter_core_wm: float = 0.0  # foci only where every in-plane neighbour has at least this white-matter fraction


STYLES = {
    # wml-ncct 1.21.0/1.21.1: foci from 1.2 mm, halos from 1 mm, as faint as 0.6 x 5.5 HU
    "loose": PatternStyle((1.2, 3.5), (0.01, 0.35), (1.0, 10.0), CONTRAST_HU[0], (0.6, 1.3)),
    # after 1.21.0 marked tens of mL in lesion-free heads: only what a reader could see (Rose: contrast-to-noise
    # times the square root of the focus's pixels of at least 5 for 3-5 HU CT noise at 1 mm: foci from 2 mm, at
    # least 8 HU deep everywhere), halos from 2 mm (a 1 mm band is the wall's own partial volume)
    "visible": PatternStyle((2.0, 4.0), (0.02, 0.25), (2.0, 10.0), 8.0, (1.0, 1.3)),
    # after 1.21.0's false millilitres lay mostly on sulcal CSF and cortex of development heads (training.false_ml):
    # halos only along ventricles, foci only inside white matter (not on its partial-volume border with cortex)
    "deep": PatternStyle((2.0, 4.0), (0.02, 0.25), (2.0, 10.0), 8.0, (1.0, 1.3), True, 0.5),
}
WALL_MM = 2.0  # the ring around a CSF component whose white matter decides whether it is a ventricle
VENTRICLE_MIN_PX = 20


def _unit_field(rng: np.random.Generator, shape: tuple[int, ...], sigma) -> np.ndarray:
    """Gaussian-filtered white noise scaled to zero mean, unit standard deviation."""
    f = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap")
    return (f - f.mean()) / (f.std() + 1e-6)


def scatter_occupancy(shape: tuple[int, int, int], slice_mm: float, rng: np.random.Generator,
                      style: PatternStyle = STYLES["loose"]) -> np.ndarray:
    """(C, h, w) occupancy in [0, 1] of scattered foci, averaged over ``SUB`` planes across each channel's slice."""
    C, h, w = shape
    dz = slice_mm / SUB
    sigma = rng.uniform(*style.scatter_sigma_mm)
    nz = C * SUB
    field = _unit_field(rng, (nz, h, w), (sigma / dz, sigma, sigma))
    slow = _unit_field(rng, (nz, h, w), (4 * sigma / dz, 4 * sigma, 4 * sigma))
    field = field + rng.uniform(0.0, 1.0) * slow
    field = (field - field.mean()) / (field.std() + 1e-6)
    thr = np.quantile(field, 1 - log_uniform(rng, style.scatter_cover))
    occ = np.clip((field - thr) / rng.uniform(0.1, 0.4) + 0.5, 0, 1)
    return occ.reshape(C, SUB, h, w).mean(1)


def csf_mask(a2: np.ndarray, wm2: np.ndarray) -> np.ndarray | None:
    """CSF of one normalised slice: outside white matter and below white matter's median level by
    ``CSF_BELOW_WM_HU`` after light smoothing; None where the slice has too little white matter to set the level."""
    core = wm2 >= 0.8
    if core.sum() < 50:
        return None
    sm = ndimage.gaussian_filter(a2, 1.5)
    level = np.median(sm[core])
    return (wm2 < 0.2) & (sm < level - CSF_BELOW_WM_HU / HU_SCALE) & (sm > -1.9)  # -2 is padding/air


def ventricles(csf: np.ndarray, wm2: np.ndarray) -> np.ndarray:
    """The CSF components of one slice that are at least ``VENTRICLE_MIN_PX`` and lined mostly by white matter
    (mean fraction >= 0.5 within ``WALL_MM`` outside them): ventricles, not sulci, which cortex lines."""
    lab, n = ndimage.label(csf)
    if n == 0:
        return csf
    dist, (iy, ix) = ndimage.distance_transform_edt(~csf, return_indices=True)
    ring = (dist > 0) & (dist <= WALL_MM)
    owner = lab[iy[ring], ix[ring]]
    wall = np.bincount(owner, wm2[ring], n + 1) / np.maximum(np.bincount(owner, minlength=n + 1), 1)
    keep = (wall >= 0.5) & (np.bincount(lab.ravel(), minlength=n + 1) >= VENTRICLE_MIN_PX)
    keep[0] = False
    return keep[lab]


def halo_occupancy(a: np.ndarray, wm: np.ndarray, rng: np.random.Generator,
                   style: PatternStyle = STYLES["loose"]) -> np.ndarray:
    """(C, h, w) occupancy of a band of white matter along the CSF border, its thickness varied along the wall."""
    C, h, w = a.shape
    t0 = log_uniform(rng, style.halo_mm)
    vary = 1 + rng.uniform(0.0, 0.8) * _unit_field(rng, (h, w), rng.uniform(4, 12))
    thick = np.clip(t0 * vary, 0, None)
    occ = np.zeros(a.shape, np.float32)
    for c in range(C):
        csf = csf_mask(a[c], wm[c])
        if csf is not None and style.ventricles_only:
            csf = ventricles(csf, wm[c])
        if csf is None or not csf.any():
            continue
        dist = ndimage.distance_transform_edt(~csf)
        occ[c] = np.clip(thick - dist + 0.5, 0, 1) * (dist > 0)
    return occ


def insert_patterns(a: np.ndarray, les: np.ndarray, wm: np.ndarray, slice_mm: float, rng: np.random.Generator,
                    own_contrast_hu: float | None = None, style: str = "loose") -> tuple[np.ndarray, np.ndarray]:
    """``a`` (C, h, w) normalised crop on a 1 mm grid, ``les`` its lesion fractions, ``wm`` its white-matter
    fractions, ``slice_mm`` the spacing between the 2.5-D channels. Returns new (crop, lesion fractions); unchanged
    where the crop has no white matter. ``own_contrast_hu``: as ``lesion_insertion.insert_lesions``; ``style``: a
    key of ``STYLES``."""
    if not (wm >= 0.7).any():
        return a, les
    st = STYLES[style]
    mode = MODES[rng.choice(len(MODES), p=MODE_P)]
    occ = np.zeros(a.shape, np.float32)
    if mode in ("scatter", "both"):
        foci = scatter_occupancy(a.shape, slice_mm, rng, st)
        if st.scatter_core_wm:
            foci *= ndimage.minimum_filter(wm, size=(1, 3, 3)) >= st.scatter_core_wm
        occ = np.maximum(occ, foci)
    if mode in ("halo", "both"):
        occ = np.maximum(occ, halo_occupancy(a, wm, rng, st))
    hu = max(pick_contrast_hu(rng, own_contrast_hu), st.min_hu)
    depth = np.clip(1 + 0.25 * _unit_field(rng, a.shape[1:], rng.uniform(3, 10)), *st.depth)
    dark = np.float32(hu / HU_SCALE) * occ * depth * wm_drop_weight(wm)
    new = np.maximum(les, occ * wm_label_weight(wm)).astype(np.float32)
    return (a - dark * (1 - les)).astype(np.float32), new

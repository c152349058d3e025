"""Lesions pasted into WML training crops anywhere in white matter (``train_wml --insert-lesions``).

Why: a model trained only on one generator's lesions learns where and in what shape that generator puts them.
Spheres of known size and contrast inserted into five lesion-free development heads (built by other code; a one-off
probe before ``training.insertion_probe``) showed it: wml-ncct 1.12.0 read 0.21 of the volume of 10 mm, 5 HU
periventricular spheres and 0.29 of 30 mm, 5 HU deep ones, and less than a tenth at 9 of 20 and 4 of 9 of those
sites, while the same darkening at other sites was read in full
(``training/preregistered/2026-12-04-wml-insertion.md``). The SynthSeg line of work (Billot et al. 2023;
WMH-SynthSeg, Laso et al. 2024) draws lesions independently of the anatomy's own priors. Here each chosen crop gets
1-4 soft, irregular ellipsoids centred on white matter (the generator's own white-matter map,
``Phantom.aux["wm_fraction"]``), 3-40 mm across, each with its own contrast (5.5-12 HU: ``augment.randomise_ct`` may
take 1.5 HU off every labelled lesion, and the active recipe's floor is 4 HU), drawn like the generator's lesions:
the darkening follows a soft edge and the white-matter fraction (overlapping lesions darken as their union, and
labelled lesion already there is not darkened again), the label is the partial-volume occupancy of lesion within
white matter, averaged over each channel's slice thickness (thin lesions in thick slices read partly), so a label
never marks anything but white matter.

Works on normalised crops (units of ``augment.HU_SCALE`` HU), before ``augment.randomise_ct`` re-renders the scanner.
"""
from __future__ import annotations

import numpy as np

from svdmark_phantom.lesions import wm_drop_weight, wm_label_weight

from .augment import HU_SCALE

DIAMETER_MM = (3.0, 40.0)  # log-uniform
CONTRAST_HU = (5.5, 12.0)  # per lesion: at least the recipe's 4 HU floor after randomise_ct's -1.5 HU
SUB_PLANES = (-1 / 3, 0.0, 1 / 3)  # across each channel's slice, in slice spacings


def log_uniform(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    """One draw, uniform in log between ``lo_hi``."""
    return float(np.exp(rng.uniform(np.log(lo_hi[0]), np.log(lo_hi[1]))))


def pick_contrast_hu(rng: np.random.Generator, own_contrast_hu: float | None) -> float:
    """A pasted lesion's contrast: U(``CONTRAST_HU``), or the head's own times U(0.6, 1.0), at least
    ``CONTRAST_HU[0]``."""
    if own_contrast_hu is None:
        return float(rng.uniform(*CONTRAST_HU))
    return max(own_contrast_hu * rng.uniform(0.6, 1.0), CONTRAST_HU[0])


def insert_lesions(a: np.ndarray, les: np.ndarray, wm: np.ndarray, slice_mm: float, rng: np.random.Generator,
                   n_max: int = 4, own_contrast_hu: float | None = None,
                   max_diameter_mm: float = DIAMETER_MM[1]) -> tuple[np.ndarray, np.ndarray]:
    """``a`` (C, h, w) normalised crop on a 1 mm grid, ``les`` its lesion fractions, ``wm`` its white-matter
    fractions, ``slice_mm`` the spacing between the 2.5-D channels. Returns new (crop, lesion fractions); both
    unchanged where the centre channel has no white matter.

    ``own_contrast_hu``: the head's own lesion contrast; each pasted lesion then gets that times U(0.6, 1.0), at least
    ``CONTRAST_HU[0]`` (the wml-ncct 1.16.1 recipe: pasted lesions no darker than the head's own). Diameters are
    log-uniform from ``DIAMETER_MM[0]`` to ``max_diameter_mm``."""
    C, h, w = a.shape
    ctx = C // 2
    seeds = np.argwhere(wm[ctx] >= 0.7)
    if len(seeds) == 0:
        return a, les
    les0, les = les, les.copy()
    dark = np.zeros(a.shape, np.float32)  # the union's darkening: overlapping lesions darken as one (as the generator)
    label_wm, drop_wm = wm_label_weight(wm), wm_drop_weight(wm)  # as the generator's label and darkening
    for _ in range(int(rng.integers(1, n_max + 1))):
        cy, cx = seeds[rng.integers(len(seeds))]
        cz = rng.uniform(-0.5, 0.5) * slice_mm
        r = log_uniform(rng, (DIAMETER_MM[0], max_diameter_mm)) / 2 * np.array(
            [1.0, rng.uniform(0.5, 1.0), rng.uniform(0.5, 1.2)])
        th = rng.uniform(0, np.pi)
        soft = rng.uniform(0.8, 2.0)
        k = rng.normal(size=3)
        k *= (2 * np.pi / rng.uniform(5, 10)) / np.linalg.norm(k)
        wobble, phase = rng.uniform(0.0, 0.25) * r.min(), rng.uniform(0, 2 * np.pi)
        drop = np.float32(pick_contrast_hu(rng, own_contrast_hu) / HU_SCALE)
        ext = int(np.ceil(r[:2].max() + 2 * soft + wobble + 2))
        y0, y1, x0, x1 = max(cy - ext, 0), min(cy + ext + 1, h), max(cx - ext, 0), min(cx + ext + 1, w)
        Y, X = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        dy, dx = Y - cy, X - cx
        u, v = dx * np.cos(th) + dy * np.sin(th), -dx * np.sin(th) + dy * np.cos(th)
        for c in range(C):
            occ = np.zeros(Y.shape, np.float32)
            ramp = np.zeros(Y.shape, np.float32)
            for s in SUB_PLANES:
                dz = (c - ctx + s) * slice_mm - cz
                if abs(dz) > r[2] + 2 * soft + wobble:
                    continue
                rho = np.sqrt((u / r[0]) ** 2 + (v / r[1]) ** 2 + (dz / r[2]) ** 2)
                sd = (rho - 1.0) * r.min() + wobble * np.sin(k[0] * dx + k[1] * dy + k[2] * dz + phase)
                occ += np.clip(0.5 - sd, 0, 1) / len(SUB_PLANES)
                ramp += np.clip(0.5 - sd / (2 * soft), 0, 1) / len(SUB_PLANES)
            box = (c, slice(y0, y1), slice(x0, x1))
            dark[box] = np.maximum(dark[box], drop * ramp * drop_wm[box])
            les[box] = np.maximum(les[box], occ * label_wm[box])
    return a - dark * (1 - les0), les

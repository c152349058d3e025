"""White matter lesion (WML) shape and density model.

A lesion load is a severity field s(x) = max_i A_i * phi_i(x) over drawn patterns, each phi in [0, 1] and smooth:

* ``caps``: Gaussian caps around the frontal-horn and occipital-horn tips of each lateral ventricle;
* ``halo``: a thin lining along the ventricle walls, exp(-(d/w)^2) with a wall-varying width w of 1-6 mm;
* ``band``: a band parallel to the ventricle wall at 4-12 mm, broken into patches;
* ``confluent``: exp(-d/L) from the walls with an irregular reach that grows towards the centrum semiovale;
* ``punctate``: 1-8 mm foci in deep and subcortical white matter;
* ``patchy``: clusters of merged foci, the early-confluent look.

Margins are made irregular by multiplicative smooth noise. The occupancy is a soft threshold of s, clipped to the
white-matter label (lesions are never drawn outside white matter), and the threshold is found by bisection so the
occupancy integral equals the drawn load exactly on the canonical grid. The density deficit is uneven: in some
heads the core is darker than the rim; its occupancy-weighted mean is the drawn contrast. Once the tissue densities
are drawn, ``cap_density`` keeps every lesion voxel at least ``ABOVE_CSF_HU`` above the CSF: white matter lesions on
CT are hypodense, not CSF-dense, and a cap as dark as the ventricle it borders merges with it into one dark region of
which only the rim is labelled (session 38: 15 % of the training heads came within 5 HU of it).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .fields import bbox, smooth_noise
from .labels import WM, Anatomy

PATTERNS = ("caps", "halo", "band", "confluent", "punctate", "patchy")
ABOVE_CSF_HU = 5.0  # a lesion voxel's density stays at least this far above the CSF and ventricles


def draw_load_ml(rng: np.random.Generator) -> float:
    """About a quarter lesion-free; many 0.05-1 mL; then 1-10 and 10-50 mL (log-uniform within each)."""
    r = rng.random()
    if r < 0.25:
        return 0.0
    lo, hi = (0.05, 1.0) if r < 0.60 else (1.0, 10.0) if r < 0.85 else (10.0, 50.0)
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def draw_contrast_hu(rng: np.random.Generator) -> float:
    return float(np.exp(rng.uniform(np.log(2.0), np.log(20.0))))


def _choose(rng, load_ml: float) -> list[str]:
    if load_ml < 1.0:
        p = {"punctate": 0.55, "caps": 0.4, "patchy": 0.15, "halo": 0.25 if load_ml > 0.4 else 0.0}
    elif load_ml < 10.0:
        p = {"caps": 0.8, "halo": 0.6, "punctate": 0.6, "patchy": 0.45, "band": 0.2,
             "confluent": 0.3 if load_ml > 5 else 0.0}
    else:
        p = {"confluent": 0.9, "caps": 0.9, "halo": 0.5, "patchy": 0.6, "punctate": 0.5, "band": 0.3}
    chosen = [k for k, v in p.items() if rng.random() < v]
    if not chosen:
        keys = [k for k, v in p.items() if v > 0]
        chosen = [keys[int(np.argmax([p[k] for k in keys]))]]
    return chosen


def _gauss_blobs(shape, h, centres, sigmas, amps, out):
    """out = max(out, A * exp(-|x - c|^2 / 2 sigma^2)) for blobs given in crop voxel indices."""
    for c, s, A in zip(centres, sigmas, amps):
        r = 3.0 * s / h
        sl = tuple(slice(max(int(np.floor(ci - r)), 0), min(int(np.ceil(ci + r)) + 1, n)) for ci, n in zip(c, shape))
        if any(q.stop <= q.start for q in sl):
            continue
        ii = [(np.arange(q.start, q.stop, dtype=np.float32) - ci) * h for q, ci in zip(sl, c)]
        d2 = ii[0][:, None, None] ** 2 + ii[1][None, :, None] ** 2 + ii[2][None, None, :] ** 2
        np.maximum(out[sl], A * np.exp(-d2 / (2 * s * s)), out=out[sl])


def build(rng: np.random.Generator, anat: Anatomy, target_mm3: float, contrast_hu: float, load_ml: float):
    """(crop slices, occupancy, deficit HU * occupancy, info) on the canonical grid; None when lesion-free."""
    info = {"patterns": []}
    if target_mm3 <= 0:
        return None, None, None, info
    crop = bbox(anat.label == WM, 2)
    if crop is None:
        return None, None, None, info
    h = anat.grid.h
    u = rng.uniform
    wm = anat.label[crop] == WM
    shape = wm.shape
    dv = anat.d_v[crop]
    dctx = anat.d_ctx[crop]
    X, Y, Z = (a[crop] for a in anat.src)
    lv = anat.lv[crop]
    patterns = _choose(rng, load_ml)
    s = np.zeros(shape, np.float32)
    body = 1.0 / (1.0 + np.exp(-(Z - 0.0) / 3.0))  # the lateral-ventricle bodies, not the temporal horns
    details: dict = {}
    if "caps" in patterns:
        cents, sigs, amps = [], [], []
        pts = np.argwhere(lv & (Z > -2))
        src = np.stack([X[tuple(pts.T)], Y[tuple(pts.T)]], 1) if len(pts) else None
        for side in (-1, 1):
            if src is None:
                break
            sel = np.sign(src[:, 0]) == side
            if not sel.any():
                continue
            for which, p_on in (("frontal", 0.9), ("occipital", 0.75)):
                if rng.random() > p_on:
                    continue
                k = np.argmax(src[sel, 1]) if which == "frontal" else np.argmin(src[sel, 1])
                cents.append(pts[sel][k].astype(float))
                sigs.append(u(2.5, 8.0))
                amps.append(u(0.7, 1.0))
        if cents:
            cap = np.zeros(shape, np.float32)
            _gauss_blobs(shape, h, cents, sigs, amps, cap)
            cap *= np.exp(-dv / (2.0 * max(np.mean(sigs), 1.0)))  # hug the ventricle
            np.maximum(s, cap, out=s)
            details["caps"] = [round(x, 1) for x in sigs]
    if "halo" in patterns:
        w0 = u(1.0, 6.0)
        w = np.maximum(w0 * (1 + 0.4 * smooth_noise(rng, shape, h, 15.0)), 0.5)
        np.maximum(s, u(0.5, 0.9) * np.exp(-(dv / w) ** 2) * body, out=s)
        details["halo_mm"] = round(w0, 2)
    if "band" in patterns:
        d0, wb = u(4.0, 12.0), u(1.5, 4.0)
        patch = 1.0 / (1.0 + np.exp(-3.0 * (smooth_noise(rng, shape, h, 15.0) + u(-0.5, 1.0))))
        np.maximum(s, u(0.4, 0.8) * np.exp(-((dv - d0) / wb) ** 2) * patch * body, out=s)
        details["band_mm"] = [round(d0, 1), round(wb, 1)]
    if "confluent" in patterns:
        L0 = u(4.0, 10.0)
        up = 1.0 + u(0.2, 0.9) * np.clip((Z - 12.0) / 30.0, 0, 1)
        L = np.maximum(L0 * up * (1 + 0.45 * smooth_noise(rng, shape, h, 12.0)), 1.0)
        np.maximum(s, u(0.6, 1.0) * np.exp(-dv / L) * body, out=s)
        details["confluent_reach_mm"] = round(L0, 1)
    deep_ok = wm & (dv > 4.0) & (dctx > 2.0)
    cand = np.argwhere(deep_ok[::2, ::2, ::2]) * 2
    if "punctate" in patterns and len(cand):
        n = int(rng.integers(2, 40))
        pick = cand[rng.integers(len(cand), size=n)].astype(float) + rng.uniform(0, 2, (n, 3))
        sig = rng.uniform(0.5, 4.0, n) / 2.0  # diameter 1-8 mm ~ 2 x sigma at the half-height threshold
        _gauss_blobs(shape, h, pick, np.maximum(sig, 0.3), rng.uniform(0.5, 1.0, n), s)
        details["punctate_n"] = n
    if "patchy" in patterns and len(cand):
        k = int(rng.integers(1, 7))
        cents, sigs, amps = [], [], []
        for c in cand[rng.integers(len(cand), size=k)]:
            m = int(rng.integers(2, 7))
            cents += list(c + rng.normal(0, 4.0 / h, (m, 3)))
            sigs += list(rng.uniform(1.5, 3.5, m))
            amps += list(rng.uniform(0.5, 1.0, m))
        _gauss_blobs(shape, h, cents, sigs, amps, s)
        details["patchy_clusters"] = k
    s *= np.maximum(1.0 + u(0.1, 0.35) * smooth_noise(rng, shape, h, u(4.0, 8.0)), 0.0)
    s[~wm] = 0.0
    if float(s.max()) <= 0:
        return None, None, None, info

    def occ_of(v, tau):  # soft threshold: 0 below 7/8 tau, 1 above 9/8 tau
        return np.clip(4.0 * v / tau - 3.5, 0.0, 1.0)

    vox = h ** 3
    sv = s[s > 0]
    lo, hi = 1e-4, float(sv.max()) * 1.1427  # at hi, nothing survives
    for _ in range(40):
        mid = np.sqrt(lo * hi)
        if float(occ_of(sv, mid).sum()) * vox > target_mm3:
            lo = mid
        else:
            hi = mid
    occ = occ_of(s, lo).astype(np.float32)
    occ *= wm
    tot = float(occ.sum()) * vox
    if tot > 0:
        occ *= np.float32(min(target_mm3 / tot, 1.0 / max(float(occ.max()), 1e-6)))
    # density deficit: core darker than rim in some heads, mild texture in all; weighted mean = contrast
    gamma = u(0.0, 0.6) if rng.random() < 0.6 else u(-0.2, 0.1)
    core = ndi.gaussian_filter(occ, 1.5 / h)
    d = (1.0 - gamma) + 2.0 * gamma * core
    d *= 1.0 + u(0.05, 0.2) * smooth_noise(rng, shape, h, 4.0)
    d = np.maximum(d, 0.15)
    w_sum = float((occ * d).sum())
    d *= np.float32(float(occ.sum()) / max(w_sum, 1e-9) * contrast_hu)
    deficit = (d * occ).astype(np.float32)
    info["patterns"] = patterns
    info["pattern_details"] = details
    info["core_darkening"] = round(gamma, 3)
    return crop, occ, deficit, info


def cap_density(deficit: np.ndarray, occ: np.ndarray, wm_hu: float, csf_hu: float) -> tuple[np.ndarray, float]:
    """(the deficit with each voxel's density held at least ``ABOVE_CSF_HU`` above ``csf_hu``, a cap never under
    1 HU below white matter; its occupancy-weighted mean: the lesion's contrast as drawn into the image)."""
    limit = np.float32(max(wm_hu - csf_hu - ABOVE_CSF_HU, 1.0))
    capped = np.minimum(deficit, limit * occ)
    return capped, float(capped.sum(dtype=np.float64) / max(float(occ.sum(dtype=np.float64)), 1e-9))

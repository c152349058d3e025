"""White-matter lesions as a level set of a propensity field built from three ingredients:

* a periventricular halo ``exp(-d_vent / lambda)`` with caps at the frontal and occipital horns, made
  irregular by a multiplicative log-normal random field (smooth rims to ragged halos);
* "medullary walks": persistent random walks that start in deep/subcortical white matter and follow
  the radial direction of the medullary veins (the gradient of the ventricle distance), depositing
  mass along the way; blurred, they give patchy, elongated, sometimes confluent aggregates;
* punctate seeds: isolated sub-3 mm deposits.

The phenotype sets the mix. The lesion load is met by one parameter, the level ``tau`` (bisection):
``fraction = smoothstep((P - tau) / (softness * tau))`` inside white matter, a partial-volume fraction
with soft edges. Lesion attenuation falls by a per-case contrast, denser in lesion cores and mottled.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from devset import anatomy as A
from devset.fields import smooth_field

PHENOTYPES = ("none", "periventricular", "deep", "mixed", "punctate", "confluent")


def draw_burden(rng: np.random.Generator) -> tuple[str, float]:
    """(phenotype, target lesion volume in mL) for an elderly stroke population."""
    u = rng.random()
    if u < 0.20:
        return "none", 0.0
    if u < 0.40:
        ml = float(np.exp(rng.uniform(np.log(0.05), np.log(1.0))))
    elif u < 0.55:
        ml = rng.uniform(1.0, 3.0)
    elif u < 0.75:
        ml = rng.uniform(3.0, 10.0)
    elif u < 0.90:
        ml = rng.uniform(10.0, 25.0)
    else:
        ml = rng.uniform(25.0, 50.0)
    if ml < 1:
        names, p = ("punctate", "deep", "periventricular"), (0.45, 0.3, 0.25)
    elif ml < 3:
        names, p = ("periventricular", "deep", "mixed", "punctate"), (0.35, 0.3, 0.2, 0.15)
    elif ml < 10:
        names, p = ("periventricular", "mixed", "deep", "confluent"), (0.3, 0.4, 0.2, 0.1)
    elif ml < 25:
        names, p = ("mixed", "confluent", "periventricular"), (0.35, 0.45, 0.2)
    else:
        names, p = ("confluent", "mixed"), (0.7, 0.3)
    return str(rng.choice(names, p=p)), float(ml)


def _bbox(mask: np.ndarray, pad: int) -> tuple[slice, ...]:
    idx = [np.flatnonzero(mask.any(axis=tuple(j for j in range(3) if j != k))) for k in range(3)]
    return tuple(slice(max(int(i[0]) - pad, 0), min(int(i[-1]) + pad + 1, n)) for i, n in zip(idx, mask.shape))


def _deposit(shape, pts: np.ndarray, w: np.ndarray, sigma_vox: float) -> np.ndarray:
    """Blur point masses; normalised so that an isolated unit point peaks at 1."""
    grid = np.zeros(shape, np.float32)
    ii = np.round(pts).astype(int)
    ok = np.all((ii >= 0) & (ii < np.asarray(shape)), axis=1)
    np.add.at(grid, tuple(ii[ok].T), w[ok])
    if sigma_vox < 0.35:
        return grid
    out = ndimage.gaussian_filter(grid, sigma_vox, truncate=3.0)
    unit = np.zeros((9, 9, 9), np.float32)
    unit[4, 4, 4] = 1
    peak = float(ndimage.gaussian_filter(unit, sigma_vox, truncate=3.0).max())
    return out / peak


def _walks(rng, wm, dv, dw, h, n, mean_steps, step_mm):
    """Persistent random walks along the medullary (radial) direction; returns points and weights."""
    seeds_ok = wm & (dw > 1.5) & (dv > 4.0) & (dv < 45.0)
    cand = np.flatnonzero(seeds_ok)
    if cand.size == 0 or n == 0:
        return np.zeros((0, 3)), np.zeros(0, np.float32)
    gz, gy, gx = np.gradient(dv)
    pts, wts = [], []
    shape = np.asarray(wm.shape)
    for s in rng.choice(cand, size=n):
        p = np.array(np.unravel_index(s, wm.shape), float)
        sign = 1.0 if rng.random() < 0.6 else -1.0
        d = rng.normal(size=3)
        d /= np.linalg.norm(d)
        a = float(rng.lognormal(0.0, 0.6))
        steps = int(min(40, 1 + rng.geometric(1.0 / mean_steps)))
        for _ in range(steps):
            i = tuple(np.clip(np.round(p).astype(int), 0, shape - 1))
            if not wm[i]:
                break
            pts.append(p.copy())
            wts.append(a * rng.uniform(0.6, 1.0))
            r = np.array([gz[i], gy[i], gx[i]])
            nr = np.linalg.norm(r)
            r = r / nr if nr > 1e-6 else d
            d = 0.55 * d + 0.6 * sign * r + 0.35 * rng.normal(size=3)
            d /= np.linalg.norm(d)
            p = p + d * step_mm / h
    if not pts:
        return np.zeros((0, 3)), np.zeros(0, np.float32)
    return np.asarray(pts), np.asarray(wts, np.float32)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def make(rng: np.random.Generator, ph: A.Phantom, phenotype: str, target_ml: float,
         dv: np.ndarray, dw: np.ndarray) -> tuple[np.ndarray, dict]:
    """Lesion partial-volume fraction on the template grid (float32) and a description. Also lowers
    ``ph.hu`` inside lesions."""
    h = ph.grid.h
    frac = np.zeros(ph.grid.shape, np.float32)
    info: dict = dict(phenotype=phenotype, target_ml=float(target_ml), template_ml=0.0)
    if phenotype == "none" or target_ml <= 0:
        return frac, info
    wm_full = A.wm_mask(ph)
    bb = _bbox(wm_full, 2)
    wm = wm_full[bb]
    dvb, dwb = dv[bb], dw[bb]
    shape = wm.shape
    mix = {"periventricular": (1.0, 0.15, 0.0), "deep": (0.12, 1.0, 0.25), "mixed": (1.0, 1.0, 0.2),
           "punctate": (0.0, 0.15, 1.0), "confluent": (1.0, 1.0, 0.0)}[phenotype]
    lam = rng.uniform(1.5, 5.0) if phenotype != "confluent" else rng.uniform(5.0, 11.0)
    irr = rng.uniform(0.05, 0.9)
    P = np.zeros(shape, np.float32)
    if mix[0] > 0:
        pv = np.exp(-dvb / lam)
        caps = np.zeros(shape, np.float32)
        cap_gain = rng.uniform(0.0, 1.5)
        X, Y, Z = (c[bb] for c in ph.coords)
        for key, val in ph.landmarks.items():
            if key.startswith(("frontal_tip", "occipital_tip", "atrium")):
                sig = rng.uniform(5.0, 10.0)
                caps += rng.uniform(0.5, 1.0) * np.exp(
                    -((X - val[0]) ** 2 + (Y - val[1]) ** 2 + (Z - val[2]) ** 2) / (2 * sig * sig))
        del X, Y, Z
        fld = smooth_field(rng, shape, h, rng.uniform(2.5, 6.0))
        P += mix[0] * pv * (1.0 + cap_gain * caps) * np.exp(irr * fld)
        info.update(halo_mm=float(lam), cap_gain=float(cap_gain))
    if mix[1] > 0:
        n_walk = int(rng.integers(12, 90) * (2 if phenotype == "confluent" else 1))
        pts, w = _walks(rng, wm, dvb, dwb, h, n_walk, rng.uniform(3.0, 10.0), rng.uniform(0.8, 1.6))
        sig_mm = rng.uniform(1.0, 2.4)
        dep = _deposit(shape, pts, w, sig_mm / h)
        fld = smooth_field(rng, shape, h, rng.uniform(2.0, 5.0))
        P += mix[1] * 0.8 * dep * np.exp(irr * 0.7 * fld)
        info.update(n_walks=n_walk, walk_points=int(len(w)), walk_sigma_mm=float(sig_mm))
    if mix[2] > 0:
        cand = np.flatnonzero(wm & (dwb > 1.0))
        n_p = int(rng.integers(8, 120))
        if cand.size:
            pick = rng.choice(cand, size=n_p)
            pts = np.stack(np.unravel_index(pick, shape), axis=1).astype(float)
            pts += rng.uniform(-0.5, 0.5, pts.shape)
            w = rng.lognormal(0.0, 0.5, n_p).astype(np.float32)
            P += mix[2] * 0.9 * _deposit(shape, pts, w, rng.uniform(0.7, 1.2) / h)
        info.update(n_punctate=n_p)
    if phenotype == "confluent":
        P = ndimage.gaussian_filter(P, 1.5 / h)
    P *= wm
    vals = P[P > 0]
    soft = rng.uniform(0.15, 0.6)
    vox_ml = h ** 3 / 1000.0

    def volume(tau: float) -> float:
        return float(_smoothstep((vals - tau) / (soft * tau)).sum()) * vox_ml

    if vals.size == 0:
        return frac, info
    hi = float(vals.max())
    lo = hi * 1e-5
    if volume(lo) < target_ml:
        tau = lo
    else:
        for _ in range(60):
            mid = np.sqrt(lo * hi)
            if volume(mid) > target_ml:
                lo = mid
            else:
                hi = mid
        tau = np.sqrt(lo * hi)
    Lb = _smoothstep((P - tau) / (soft * tau)) * wm
    frac[bb] = Lb
    # attenuation: per-case contrast, denser cores, mottled
    contrast = rng.uniform(3.0, 12.0)
    core = np.clip((P / tau - 1.0 - soft) / 2.0, 0.0, 1.0)
    het = rng.uniform(0.1, 0.35)
    mot = smooth_field(rng, shape, h, rng.uniform(1.5, 4.0))
    delta = -contrast * Lb * (0.75 + 0.5 * core) * (1.0 + het * mot)
    ph.hu[bb] += delta.astype(np.float32)
    info.update(template_ml=float(Lb.sum() * vox_ml), level=float(tau), softness=float(soft),
                irregularity=float(irr), contrast_hu=float(contrast), heterogeneity=float(het))
    return frac, info

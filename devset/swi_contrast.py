"""Anatomy-to-SWI contrast: per-case proton density, T1 saturation and R2* per tissue, scaled by field
strength and echo time(s); iron-rich nuclei, calcifications, vessels and air-tissue susceptibility effects.

Signal of a tissue = PD × T1-saturation × mean_over_echoes(exp(−TE·R2*)), R2* ∝ (0.45 + 0.55·B0/3 T).
Processing by technique (crude emulations, deliberately different):
* ``swi-pm`` (Siemens SWI) and ``swip`` / ``venbold`` (Philips): magnitude × negative-phase mask^n, which
  darkens paramagnetic structures (veins, iron, bleeds) but not diamagnetic calcifications, and adds
  phase-wrap bands next to air;
* ``swan`` (GE): magnitude averaged over 4–8 echoes (milder T2* contrast, no phase mask);
* ``fsbb`` (Canon): single-echo magnitude with flow dephasing: arteries become dark flow voids.
The result is one template field ``T`` (float32) sampled by the scanner model; bleeds are added later.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from devset import anatomy as A
from devset.fields import ellipsoid_sd, smooth_field, upsample_linear

VEIN, ARTERY, IRON, BLEED, BLOOM = 42, 43, 44, 40, 41
EXTRA_LABELS = {
    BLEED: "microbleed (haemosiderin deposit)",
    BLOOM: "microbleed blooming halo",
    VEIN: "vein (>=50% voxel)",
    ARTERY: "artery / flow void (>=50% voxel)",
    IRON: "iron-rich nucleus (dentate, red nucleus, substantia nigra)",
}

# label -> (PD, T1 saturation range, R2* at 3 T range [1/s])
_TISSUE = {
    A.WM: (0.68, (1.0, 1.0), (18.0, 24.0)),
    A.GM: (0.82, (0.9, 1.0), (13.0, 18.0)),
    A.CSF: (1.0, (0.45, 0.9), (1.0, 3.0)),
    A.VENT: (1.0, (0.45, 0.9), (1.0, 3.0)),
    A.CAUD: (0.8, (0.92, 1.0), (19.0, 28.0)),
    A.PUT: (0.8, (0.92, 1.0), (21.0, 42.0)),
    A.PALL: (0.76, (0.92, 1.0), (32.0, 75.0)),
    A.THAL: (0.76, (0.95, 1.0), (17.0, 25.0)),
    A.CBL: (0.8, (0.9, 1.0), (14.0, 20.0)),
    A.BSTEM: (0.7, (0.95, 1.0), (19.0, 26.0)),
    A.CHOROID: (0.7, (0.6, 0.9), (25.0, 45.0)),
    A.FALX: (0.3, (0.8, 1.0), (30.0, 60.0)),
    A.VSINUS: (0.8, (0.8, 1.0), (40.0, 70.0)),
    A.BONE: (0.06, (0.5, 1.0), (100.0, 300.0)),
    A.SOFT: (0.7, (0.7, 1.0), (25.0, 40.0)),
    A.FAT: (0.9, (0.9, 1.3), (20.0, 35.0)),
    A.AIR: (0.0, (1.0, 1.0), (0.0, 0.0)),
    A.GLOBE: (0.95, (0.35, 0.7), (2.0, 5.0)),
    A.CALC: (0.3, (0.8, 1.0), (90.0, 250.0)),
    IRON: (0.78, (0.95, 1.0), (30.0, 60.0)),
    A.LACUNE: (0.95, (0.5, 0.9), (2.0, 5.0)),
    A.INFARCT: (0.9, (0.5, 0.9), (4.0, 8.0)),
    A.EPVS: (0.95, (0.5, 0.9), (3.0, 6.0)),
}
_IRONISH = (A.CAUD, A.PUT, A.PALL, IRON)


def draw_tissue(rng: np.random.Generator) -> dict:
    """Per-case PD, saturation and 3 T R2* of each tissue (the nuclei's iron varies most)."""
    out = {}
    for lab, (pd, (s0, s1), (r0, r1)) in _TISSUE.items():
        out[int(lab)] = dict(pd=pd * rng.uniform(0.95, 1.05), sat=rng.uniform(s0, s1), r2s=rng.uniform(r0, r1))
    return out


def echo_times(acq) -> np.ndarray:
    if acq.technique == "swan":
        return np.linspace(acq.te_first_ms, acq.te_ms, acq.n_echoes)
    return np.array([acq.te_ms])


def signal(t: dict, acq) -> float:
    r2 = t["r2s"] * (0.45 + 0.55 * acq.field_t / 3.0)
    return float(t["pd"] * t["sat"] * np.mean(np.exp(-echo_times(acq) / 1000.0 * r2)))


def _calcs(rng, ph: A.Phantom, small: bool) -> list[dict]:
    """Calcification sites (centre in template mm, radius); painted as label CALC."""
    sc = ph.scale
    out = []
    if rng.random() < 0.7:
        out.append(dict(site="pineal", c=np.array([0.0, 24.0, 3.0]) * sc, r=rng.uniform(1.5, 3.5)))
    if rng.random() < 0.55:
        for s in (-1, 1):
            a = np.asarray(ph.landmarks[f"atrium_{s}"]) * sc + np.array([0, 2, -1])
            out.append(dict(site="choroid plexus", c=a + rng.normal(0, 1.0, 3), r=rng.uniform(1.2, 3.0)))
    if rng.random() < 0.22:
        for s in (-1, 1):
            if rng.random() < 0.85:
                c = np.array([s * 17.5, 2.0, -1.0]) * sc + rng.normal(0, 1.5, 3)
                out.append(dict(site="pallidum", c=c, r=rng.uniform(1.0, 2.5)))
    if rng.random() < 0.06:
        for s in (-1, 1):
            out.append(dict(site="dentate", c=np.array([s * 14.0, 52.0, -32.0]) * sc, r=rng.uniform(1.0, 2.0)))
    return out


def _iron_nuclei(rng, ph) -> list[dict]:
    sc = ph.scale
    out = []
    for s in (-1, 1):
        out.append(dict(site="dentate nucleus", c=np.array([s * 14.0, 50.0, -31.0]) * sc, r=(5.0, 7.0, 4.0)))
        out.append(dict(site="red nucleus", c=np.array([s * 4.5, 14.0, -9.0]) * sc, r=(2.6, 2.8, 3.0)))
        out.append(dict(site="substantia nigra", c=np.array([s * 9.0, 12.0, -13.0]) * sc, r=(2.0, 5.0, 2.5)))
    return out


def _paint(ph: A.Phantom, c, r, lab, allowed) -> None:
    g = ph.grid
    r = np.broadcast_to(np.asarray(r, float), (3,))
    sl = g.index_box(np.asarray(c) - r - 1.5 * g.h, np.asarray(c) + r + 1.5 * g.h)
    zz, yy, xx = np.meshgrid(*(g.origin[k] + g.h * np.arange(sl[2 - k].start, sl[2 - k].stop) for k in (2, 1, 0)),
                             indexing="ij")
    m = ellipsoid_sd(xx, yy, zz, c, r) < 0
    sub = ph.labels[sl]
    m &= np.isin(sub, allowed)
    sub[m] = lab


def paint_structures(rng, ph: A.Phantom, small: bool) -> tuple[list[dict], list[dict]]:
    """Paint iron-rich nuclei and calcifications into ``ph.labels``; returns (iron, calcs) descriptions."""
    iron = _iron_nuclei(rng, ph)
    for d in iron:
        _paint(ph, d["c"], d["r"], IRON, (A.CBL, A.BSTEM, A.WM))
    calcs = _calcs(rng, ph, small)
    for d in calcs:
        _paint(ph, d["c"], d["r"], A.CALC, (A.WM, A.GM, A.CSF, A.VENT, A.CHOROID, A.PALL, A.PUT, A.CBL, IRON,
                                            A.THAL))
    return iron, calcs


def template(rng, ph: A.Phantom, acq, tissue: dict, vfrac: np.ndarray, afrac: np.ndarray, dair: np.ndarray) -> tuple[
        np.ndarray, dict]:
    """The case's noiseless SWI signal on the template grid (before bleeds, bias, k-space and noise)."""
    lut = np.zeros(256, np.float32)
    pm = acq.technique in ("swi-pm", "swip", "venbold")
    for lab, t in tissue.items():
        s = signal(t, acq)
        if pm and lab in _IRONISH:
            excess = max(0.0, t["r2s"] - 20.0) / 40.0
            s *= (1.0 - acq.pm_strength * 0.25 * excess) ** acq.pm_power
        lut[lab] = s
    lut[VEIN] = lut[A.WM]
    lut[ARTERY] = lut[A.WM]
    T = lut[ph.labels]
    h = ph.grid.h
    wm = np.isin(ph.labels, (A.WM, A.BSTEM))
    T[wm] *= 1.0 + acq.tex_wm * smooth_field(rng, ph.grid.shape, h, rng.uniform(3.0, 9.0))[wm]
    gm = np.isin(ph.labels, (A.GM, A.CBL, A.THAL, A.PUT, A.CAUD, A.PALL))
    T[gm] *= 1.0 + acq.tex_gm * smooth_field(rng, ph.grid.shape, h, 2.5)[gm]
    # veins: deoxyhaemoglobin (magnitude) and, for phase-mask techniques, the mask^n
    cv = 1.0 - (1.0 - acq.vein_mag) * (1.0 - (acq.vein_pm if pm else 0.0)) ** (acq.pm_power if pm else 1)
    T *= 1.0 - np.float32(cv) * vfrac
    T *= 1.0 - np.float32(acq.artery_dark) * afrac
    # air-tissue susceptibility: signal dropout next to sinuses / mastoids, bands with a phase mask
    near = np.exp(-dair / acq.dropout_len).astype(np.float32)
    inside = ph.labels != A.AIR
    drop = 1.0 - acq.dropout * near
    if pm:
        bands = 0.5 + 0.5 * np.cos(2 * np.pi * dair / acq.band_period)
        drop *= 1.0 - 0.45 * acq.dropout * bands * np.exp(-dair / (2.0 * acq.dropout_len))
    T[inside] *= np.clip(drop[inside], 0.02, 1.0)
    info = dict(vein_contrast=round(float(cv), 3), lut={A.LABELS.get(k, (EXTRA_LABELS.get(k, str(k)),))[0]:
                                                           round(float(lut[k]), 4) for k in tissue})
    return T.astype(np.float32), info


def air_distance(L, grid: A.Grid, c: int) -> np.ndarray:
    """Distance (mm) to internal air on the template grid (from the coarse lattice)."""
    return L.dair if c == 1 else upsample_linear(L.dair, c, grid.shape)


def distort(ph: A.Phantom, T: np.ndarray, dair: np.ndarray, e_t: np.ndarray, amp: float, lam: float) -> None:
    """Geometric distortion next to air, in place: T(u) <- T(u - s(u) e), s = amp·exp(-d_air/lam).
    Labels move with the image. A feature at u appears at u + s(u) e (see ``shift``)."""
    if abs(amp) < 1e-3:
        return
    reach = lam * np.log(abs(amp) / 0.05)
    if reach <= 0:
        return
    m = (dair < reach) & (ph.labels != A.AIR)
    if not m.any():
        return
    idx = np.argwhere(m)
    lo, hi = idx.min(0), idx.max(0) + 1
    sl = tuple(slice(a, b) for a, b in zip(lo, hi))
    zz, yy, xx = np.meshgrid(*(np.arange(a, b, dtype=np.float32) for a, b in zip(lo, hi)), indexing="ij")
    s = (amp * np.exp(-dair[sl] / lam)).astype(np.float32) / ph.grid.h
    coords = np.stack([zz - s * e_t[2], yy - s * e_t[1], xx - s * e_t[0]])
    T[sl] = ndimage.map_coordinates(T, coords, order=1, mode="nearest")
    ph.labels[sl] = ndimage.map_coordinates(ph.labels, coords, order=0, mode="nearest")


def shift(L, u: np.ndarray, e_t: np.ndarray, amp: float, lam: float) -> np.ndarray:
    """Apparent template position of features at ``u`` (n, 3) under ``distort``."""
    s = amp * np.exp(-L.at(L.dair, u) / lam)
    return u + s[:, None] * e_t[None, :]

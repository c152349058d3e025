"""Lesions, mimics and microbleeds on the world grid of ``stress.anatomy``.

WML are the positive region of one continuous field L (mm-like units, world
grid, trilinear between voxels), so their physical extent is known exactly at
any sampling: periventricular caps and bands are thresholds of a noisy
distance-to-ventricle map; deep/subcortical patches are noise-displaced
anisotropic blobs that merge into confluent areas at high load; punctate foci
are small blobs. Everything is clipped to white matter. The load is reached by
bisection on one scale parameter.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from . import anatomy as A


@dataclass
class WmlField:
    L: np.ndarray | None  # float32 world grid; lesion where L > 0 (None: lesion-free)
    world_ml: float
    phenotype: str
    components: dict = field(default_factory=dict)


def sample_wml_load(rng: np.random.Generator) -> float:
    """0 to ~50 mL: a quarter lesion-free, many small, a tail of large loads."""
    u = rng.uniform()
    if u < 0.2:
        return 0.0
    if u < 0.38:
        return float(rng.uniform(0.1, 1.0))
    if u < 0.55:
        return float(rng.uniform(1.0, 3.0))
    if u < 0.72:
        return float(rng.uniform(3.0, 10.0))
    if u < 0.87:
        return float(rng.uniform(10.0, 25.0))
    return float(rng.uniform(25.0, 52.0))


def _wm_signed_distance(head: A.Head) -> np.ndarray:
    wm = head.labels == A.WM
    h = head.grid.h
    inside = ndi.distance_transform_edt(wm, sampling=h)
    outside = ndi.distance_transform_edt(~wm, sampling=h)
    return (inside - outside).astype(np.float32)


def build_wml(head: A.Head, rng: np.random.Generator, target_ml: float) -> WmlField:
    if target_ml <= 0:
        return WmlField(None, 0.0, "none")
    g = head.grid
    lab = head.labels
    h3 = g.h ** 3 / 1000.0
    wm_sd = _wm_signed_distance(head)
    vent = lab == A.VENT
    dv = ndi.distance_transform_edt(~vent, sampling=g.h).astype(np.float32)
    # candidates live in a padded WM region
    region = wm_sd > -1.5
    idx = np.nonzero(region)
    pts = np.stack(idx, 1).astype(np.float32) * g.h + g.origin.astype(np.float32)
    wsd = wm_sd[idx]
    dvi = dv[idx]
    n1 = A.coarse_field(rng, g, 2.0, 1.6, 3.0, 30.0)[idx]
    n2 = A.coarse_field(rng, g, 2.0, 1.0, 2.5, 14.0)[idx]
    phen = rng.choice(["periventricular", "mixed", "deep", "punctate"], p=[0.35, 0.35, 0.15, 0.15])
    if target_ml < 1.0:
        phen = "punctate"
    lm = head.landmarks
    # --- periventricular: caps at horn tips + band along the bodies
    caps = np.zeros(len(pts), np.float32)
    for key in ("frontal_horn_L", "frontal_horn_R", "occipital_horn_L", "occipital_horn_R", "atrium_L", "atrium_R"):
        c = lm[key]
        r = rng.uniform(9, 16)
        caps += rng.uniform(2.0, 5.0) * np.exp(-np.sum((pts - c) ** 2, 1) / (2 * r * r))
    pv_base = caps + 1.2 + 1.6 * n1
    pv_on = phen in ("periventricular", "mixed")
    # --- deep / subcortical patches
    deep_ok = (wsd > 2.0) & (dvi > 6.0)
    n_patch = {"periventricular": 0, "mixed": int(rng.integers(3, 10)), "deep": int(rng.integers(5, 16)),
               "punctate": 0}[phen]
    n_punct = int(rng.integers(2, 14)) if phen != "deep" else int(rng.integers(0, 5))
    cand = np.nonzero(deep_ok)[0]
    patches = []
    for _ in range(n_patch):
        c = pts[rng.choice(cand)]
        patches.append((c, rng.uniform(0.6, 1.6, 3), rng.uniform(2.5, 6.0)))
    puncts = []
    for _ in range(max(n_punct, 1 if phen == "punctate" else 0)):
        c = pts[rng.choice(cand)]
        puncts.append((c, rng.uniform(0.8, 1.3, 3), rng.uniform(0.8, 1.6)))

    # local evaluation radius for blobs
    def blob_field(c, aniso, r, s):
        d = np.sqrt(np.sum(((pts - c) / aniso) ** 2, 1))
        return r * s - d + 1.2 * n2

    def field_at(s: float) -> np.ndarray:
        f = np.full(len(pts), -50.0, np.float32)
        if pv_on:
            f = np.maximum(f, s * pv_base - dvi)
        for c, an, r in patches:
            f = np.maximum(f, blob_field(c, an, r, s))
        for c, an, r in puncts:
            f = np.maximum(f, r * np.sqrt(s) - np.sqrt(np.sum(((pts - c) / an) ** 2, 1)) + 0.3 * n2)
        return np.minimum(f, wsd + 0.5)

    def vol(s: float) -> float:
        return float((field_at(s) > 0).sum() * h3)

    def solve(goal: float) -> float:
        lo, hi = 0.02, 1.0
        while vol(hi) < goal and hi < 64:
            hi *= 2
        for _ in range(20):
            mid = 0.5 * (lo + hi)
            if vol(mid) < goal:
                lo = mid
            else:
                hi = mid
        return 0.5 * (lo + hi)

    L = np.full(g.shape, -50.0, np.float32)
    s = solve(target_ml)  # voxel-count target; the truth is measured afterwards on the written grid
    L[idx] = field_at(s)
    world_ml = float((L > 0).sum() * h3)
    return WmlField(L, world_ml, str(phen), {"n_patches": len(patches), "n_punctate": len(puncts), "scale": s})


def fine_volume_ml(L: np.ndarray, grid: A.WorldGrid, sub: int = 3) -> float:
    """Physical volume of {L > 0} with the field trilinear between voxels, sub^3 samples per voxel."""
    nz = np.nonzero(ndi.binary_dilation(L > -2.0, iterations=1))
    if nz[0].size == 0:
        return 0.0
    base = np.stack(nz, 1).astype(np.float32)
    offs = (np.arange(sub, dtype=np.float32) + 0.5) / sub - 0.5
    tot = 0
    for a in offs:
        for b in offs:
            for c in offs:
                q = (base + np.array([a, b, c], np.float32)).T
                tot += int((ndi.map_coordinates(L, q, order=1, mode="nearest") > 0).sum())
    return tot * grid.h ** 3 / sub ** 3 / 1000.0


# --------------------------------------------------------------------------- mimics


def add_mimics(head: A.Head, rng: np.random.Generator, kind: str) -> list[dict]:
    """Lacunes, an old cortical infarct, calcifications (pallidum, choroid plexus, pineal). Modifies labels."""
    g = head.grid
    lab = head.labels
    out = []

    def ball(center, radii, value, where=None):
        b = A.box(g, center, radii, margin=2.0)
        ax = [g.origin[d] + g.h * np.arange(b[d].start, b[d].stop) for d in range(3)]
        X, Y, Z = np.meshgrid(*ax, indexing="ij")
        m = ((X - center[0]) / radii[0]) ** 2 + ((Y - center[1]) / radii[1]) ** 2 + ((Z - center[2]) / radii[2]) ** 2 <= 1
        sub = lab[b]
        if where is not None:
            m &= np.isin(sub, where)
        sub[m] = value
        return int(m.sum())

    # lacunes in deep grey / internal capsule / centrum
    n_lac = int(rng.choice([0, 0, 1, 2, 3, 5]))
    deep = np.argwhere(np.isin(lab, (A.PUTAMEN, A.THALAMUS, A.CAUDATE, A.PALLIDUM)))
    for _ in range(n_lac):
        c = head.voxel_mm(deep[rng.integers(len(deep))])
        r = rng.uniform(1.5, 6.0)
        n = ball(c, (r, r * rng.uniform(0.8, 1.5), r * rng.uniform(0.8, 1.4)), A.LACUNE,
                 where=(A.PUTAMEN, A.THALAMUS, A.CAUDATE, A.PALLIDUM, A.WM))
        out.append({"kind": "lacune", "center_mm": [round(float(v), 2) for v in c], "ml": n * g.h ** 3 / 1000})
    # old cortical infarct: cone from the surface inwards
    if rng.uniform() < 0.3:
        gm = np.argwhere(lab == A.GM)
        for _ in range(50):
            p = head.voxel_mm(gm[rng.integers(len(gm))])
            if p[2] > -10 and abs(p[0]) > 20:
                break
        inward = -p / np.linalg.norm(p)
        depth = rng.uniform(15, 35)
        half = np.radians(rng.uniform(18, 32))
        b = A.box(g, p + inward * depth / 2, (depth, depth, depth), margin=2.0)
        ax = [g.origin[d] + g.h * np.arange(b[d].start, b[d].stop) for d in range(3)]
        X, Y, Z = np.meshgrid(*ax, indexing="ij")
        V = np.stack([X - p[0], Y - p[1], Z - p[2]], -1) + 3 * (-inward)
        along = V @ inward
        perp = np.linalg.norm(V - along[..., None] * inward, axis=-1)
        m = (along > 0) & (along < depth) & (perp < np.tan(half) * (depth - along + 3))
        sub = lab[b]
        m &= np.isin(sub, (A.GM, A.WM))
        sub[m] = A.INFARCT
        out.append({"kind": "old cortical infarct", "center_mm": [round(float(v), 2) for v in p + inward * depth / 3],
                    "ml": float(m.sum() * g.h ** 3 / 1000)})
    lm = head.landmarks
    # calcifications
    if rng.uniform() < 0.3:
        for side in "LR":
            c = lm[f"pallidum_{side}"] + rng.normal(0, 1.0, 3)
            r = rng.uniform(1.5, 3.5)
            n = ball(c, (r, r * 1.6, r), A.CALC, where=(A.PALLIDUM, A.PUTAMEN))
            out.append({"kind": "calcification (pallidum)", "center_mm": [round(float(v), 2) for v in c], "ml": n / 1000})
    if rng.uniform() < 0.6:
        for side in "LR":
            c = lm[f"atrium_{side}"]
            r = rng.uniform(1.5, 3.0)
            n = ball(c, (r, r * 1.3, r), A.CALC)
            out.append({"kind": "calcification (choroid plexus)", "center_mm": [round(float(v), 2) for v in c], "ml": n / 1000})
    if rng.uniform() < 0.5:
        c = lm["pineal"]
        r = rng.uniform(1.5, 3.5)
        n = ball(c, (r, r, r), A.CALC)
        out.append({"kind": "calcification (pineal)", "center_mm": [round(float(v), 2) for v in c], "ml": n / 1000})
    return out


# --------------------------------------------------------------------------- microbleeds


def sample_cmb_count(rng: np.random.Generator) -> int:
    u = rng.uniform()
    if u < 0.22:
        return 0
    if u < 0.5:
        return int(rng.integers(1, 10))
    if u < 0.76:
        return int(rng.integers(10, 31))
    return int(rng.integers(31, 61))


@dataclass
class Bleed:
    center: np.ndarray  # head frame mm
    diameter: float
    location: str
    tags: tuple = ()


def vein_points(head: A.Head, rng: np.random.Generator) -> list[tuple[np.ndarray, float]]:
    """Centrelines (dense points, head mm) and radii of veins: medullary, cortical, deep, dural sinuses."""
    g = head.grid
    lab = head.labels
    veins = []
    vent = lab == A.VENT
    dv, ind = ndi.distance_transform_edt(~vent, sampling=g.h, return_indices=True)
    wm = np.argwhere((lab == A.WM) & (dv > 2) & (dv < 5))
    # medullary veins: straight-ish lines radiating away from the ventricle
    for _ in range(int(rng.integers(40, 90))):
        v0 = wm[rng.integers(len(wm))]
        near = np.array([ind[d][tuple(v0)] for d in range(3)])
        direc = v0 - near
        direc = direc / (np.linalg.norm(direc) + 1e-6)
        length = rng.uniform(12, 28)
        p0 = head.voxel_mm(v0)
        ts = np.arange(0, length, 0.4)
        bend = rng.normal(0, 0.03, 3)
        P = p0 + ts[:, None] * direc + (ts[:, None] ** 2) * bend
        veins.append((P, float(rng.uniform(0.35, 0.6))))
    del dv, ind
    # cortical veins on the surface (random walks over SAS next to cortex)
    sas = np.argwhere((lab == A.SAS) & (head.sd_cavity < -0.5) & (head.sd_cavity > -4))
    for _ in range(int(rng.integers(12, 24))):
        p = head.voxel_mm(sas[rng.integers(len(sas))])
        d = rng.normal(0, 1, 3)
        d /= np.linalg.norm(d)
        P = [p]
        for _ in range(int(rng.uniform(60, 160))):
            d = d + rng.normal(0, 0.15, 3)
            n = P[-1] / (np.linalg.norm(P[-1]) + 1e-6)
            d -= 0.8 * (d @ n) * n  # stay tangential to the surface
            d /= np.linalg.norm(d)
            P.append(P[-1] + 0.5 * d)
        veins.append((np.array(P), float(rng.uniform(0.7, 1.5))))
    lm = head.landmarks
    # internal cerebral veins and thalamostriate veins
    for side in (-1, 1):
        a = np.array([side * 2.0, -5.0, 12.0])
        b = np.array([side * 1.5, 22.0, 8.0])
        ts = np.linspace(0, 1, 80)[:, None]
        veins.append((a + ts * (b - a), 1.2))
        c = lm["atrium_L" if side > 0 else "atrium_R"] * np.array([0.55, 0.2, 1.2])
        veins.append((a + ts * (c - a), 0.7))
    # superior sagittal sinus along the inner table in the midline, straight sinus
    sss = []
    for th in np.linspace(-1.2, 1.3, 260):
        y, z = -80 * np.cos(th) * 0 + 85 * np.sin(th) * 1.0, 62 * np.cos(th)
        sss.append((0.0, y, z + 10))
    P = np.array(sss, float)
    # pull each point to the inner table: the cavity sdf at that point tells how far
    q = g.to_index(P).T
    sd = ndi.map_coordinates(head.sd_cavity, q, order=1, mode="nearest")
    cen = np.array([0.0, 4.0, 12.0])
    dirs = (P - cen) / np.linalg.norm(P - cen, axis=1, keepdims=True)
    P = P - dirs * (sd + 3.0)[:, None]
    veins.append((P, 3.2))
    ts = np.linspace(0, 1, 120)[:, None]
    veins.append((np.array([0, 22.0, 8.0]) + ts * (np.array([0, 60.0, -22.0])), 2.0))
    return veins


def render_veins(head: A.Head, veins) -> np.ndarray:
    """Vessel occupancy 0..1 on the world grid (max over all centreline points, smooth 1-voxel edge)."""
    g = head.grid
    occ = np.zeros(g.shape, np.float32)
    for P, r in veins:
        reach = int(np.ceil(r / g.h)) + 2
        offs = np.arange(-reach, reach + 1)
        O = np.stack(np.meshgrid(offs, offs, offs, indexing="ij"), -1).reshape(-1, 3)
        for p in P[::1]:
            ci = np.round(g.to_index(p)).astype(int)
            vox = ci + O
            ok = np.all((vox >= 0) & (vox < np.array(g.shape)), 1)
            vox = vox[ok]
            d = np.linalg.norm(g.origin + vox * g.h - p, axis=1)
            val = np.clip(r - d + 0.5 * g.h, 0, g.h) / g.h
            flat = np.ravel_multi_index(vox.T, g.shape)
            np.maximum.at(occ.reshape(-1), flat, val.astype(np.float32))
    return occ


def place_bleeds(head: A.Head, rng: np.random.Generator, n: int, veins) -> list[Bleed]:
    g = head.grid
    lab = head.labels
    if n == 0:
        return []
    # lobar: GM/WM junction (WM within 3 mm of cortex, or deep cortex)
    gm = lab == A.GM
    near_gm = ndi.binary_dilation(gm, iterations=3)
    lobar = np.argwhere((near_gm & (lab == A.WM)) | (gm & ~ndi.binary_dilation(lab == A.SAS, iterations=1)))
    deep = np.argwhere(np.isin(lab, (A.PUTAMEN, A.THALAMUS, A.CAUDATE, A.PALLIDUM))
                       | ((lab == A.WM) & ndi.binary_dilation(np.isin(lab, (A.PUTAMEN, A.THALAMUS)), iterations=3)))
    infra = np.argwhere(np.isin(lab, (A.CBL_GM, A.CBL_WM, A.STEM)) & ~ndi.binary_dilation(lab == A.SAS, iterations=1))
    air = ndi.binary_dilation(lab == A.SINUS_AIR, iterations=14)
    near_air = np.argwhere(air & np.isin(lab, (A.GM, A.WM, A.CBL_GM)))
    vein_pts = np.concatenate([P for P, r in veins if r < 2.0])
    pattern = rng.choice(["lobar", "deep", "mixed"], p=[0.4, 0.3, 0.3])
    p_loc = {"lobar": [0.8, 0.1, 0.1], "deep": [0.2, 0.55, 0.25], "mixed": [0.5, 0.3, 0.2]}[pattern]
    bleeds: list[Bleed] = []

    def diam():
        return float(np.clip(rng.lognormal(np.log(3.6), 0.4), 2.0, 10.0))

    def free(c, d):
        for b in bleeds:
            if np.linalg.norm(b.center - c) < 0.5 * (b.diameter + d) + 0.8:
                return False
        return True

    def inside_brain(c):
        ijk = np.round(g.to_index(c)).astype(int)
        if np.any(ijk < 0) or np.any(ijk >= np.array(g.shape)):
            return False
        return lab[tuple(ijk)] in A.BRAIN

    # dense clusters
    n_clusters = int(rng.integers(1, 3)) if n >= 12 and rng.uniform() < 0.6 else 0
    for _ in range(n_clusters):
        seed = head.voxel_mm(lobar[rng.integers(len(lobar))])
        k = int(rng.integers(3, 8))
        tries = 0
        while k > 0 and tries < 200 and len(bleeds) < n:
            tries += 1
            d = float(rng.uniform(2.0, 4.5))
            c = seed + rng.normal(0, 4.0, 3)
            if inside_brain(c) and free(c, d):
                bleeds.append(Bleed(c, d, "lobar", ("cluster",)))
                k -= 1
    tries = 0
    while len(bleeds) < n and tries < 5000:
        tries += 1
        u = rng.uniform()
        tags = ()
        if u < 0.12:  # next to a vein
            p = vein_pts[rng.integers(len(vein_pts))]
            d = diam()
            dirn = rng.normal(0, 1, 3)
            dirn /= np.linalg.norm(dirn)
            c = p + dirn * (0.5 * d + rng.uniform(0.8, 2.5))
            loc, tags = "lobar", ("vein-adjacent",)
        elif u < 0.2 and len(near_air):
            c = head.voxel_mm(near_air[rng.integers(len(near_air))]) + rng.uniform(-0.5, 0.5, 3)
            d, loc, tags = diam(), "lobar", ("near-air",)
        else:
            loc = rng.choice(["lobar", "deep", "infratentorial"], p=p_loc)
            pool = {"lobar": lobar, "deep": deep, "infratentorial": infra}[loc]
            if len(pool) == 0:
                loc, pool = "lobar", lobar
            c = head.voxel_mm(pool[rng.integers(len(pool))]) + rng.uniform(-0.5, 0.5, 3)
            d = diam()
            if loc == "infratentorial":
                d = min(d, 6.0)
        if inside_brain(c) and free(c, d):
            bleeds.append(Bleed(np.asarray(c, float), d, str(loc), tags))
    return bleeds

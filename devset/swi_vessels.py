"""Vessels for the SWI set: cortical, medullary and deep veins, dural sinuses and a few large arteries.

Each vessel is a polyline with a radius per point in template-grid mm (x = patient left, y = posterior,
z = superior). Cortical veins are random walks held on the brain hull that climb to the superior sagittal
sinus (or run back to the transverse sinus); medullary veins are random walks down the gradient of the
distance to the ventricles; deep veins, sinuses and arteries are jittered fixed centre lines.
``rasterize`` turns them into a partial-volume fraction on the template grid (thin vessels keep their
cross-section area, so a 0.4 mm vein is a faint trace on a 1 mm grid).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from devset import anatomy as A

PAREN = (A.WM, A.GM, A.CAUD, A.PUT, A.PALL, A.THAL, A.CBL, A.BSTEM)


@dataclass
class Vessel:
    kind: str  # cortical / medullary / deep / sinus / artery
    name: str
    pts: np.ndarray  # (n, 3) template mm
    radius: np.ndarray  # (n,) mm


class Lattice:
    """Coarse distance fields (mm) for walking and placement: signed distance to the brain hull (> 0 outside),
    distance to the ventricles, to internal air, and depth inside parenchyma."""

    def __init__(self, ph: A.Phantom, c: int):
        g = ph.grid
        self.h, self.origin = g.h * c, g.origin
        lab = ph.labels[::c, ::c, ::c]
        brain = np.isin(lab, PAREN + (A.VENT, A.CHOROID, A.CSF))
        brain = ndimage.binary_fill_holes(np.isin(lab, PAREN + (A.VENT, A.CHOROID))) | (
            brain & ndimage.binary_erosion(brain, iterations=2))
        edt = ndimage.distance_transform_edt
        self.sd = (edt(~brain, sampling=self.h) - edt(brain, sampling=self.h)).astype(np.float32)
        self.dv = edt(~np.isin(lab, (A.VENT, A.CHOROID)), sampling=self.h).astype(np.float32)
        self.dair = edt(lab != A.AIR, sampling=self.h).astype(np.float32)
        self.depth = edt(np.isin(lab, PAREN), sampling=self.h).astype(np.float32)
        self.gsd = [a.astype(np.float32) for a in np.gradient(self.sd, self.h)]
        self.gdv = [a.astype(np.float32) for a in np.gradient(self.dv, self.h)]

    def at(self, arr: np.ndarray, pts: np.ndarray) -> np.ndarray:
        idx = ((np.asarray(pts, float) - self.origin) / self.h)[:, ::-1].T
        return ndimage.map_coordinates(arr, idx, order=1, mode="nearest")

    def grad(self, gs, pts) -> np.ndarray:
        g = np.stack([self.at(gs[2], pts), self.at(gs[1], pts), self.at(gs[0], pts)], axis=1)  # (x, y, z)
        return g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-6)


def _unit(v):
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)


def label_at(ph: A.Phantom, pts: np.ndarray) -> np.ndarray:
    g = ph.grid
    idx = np.rint((np.asarray(pts) - g.origin) / g.h).astype(int)[:, ::-1]
    idx = np.clip(idx, 0, np.array(g.shape) - 1)
    return ph.labels[idx[:, 0], idx[:, 1], idx[:, 2]]


def _walks(rng, start, step_fn, n_steps, alive_fn):
    """Run walkers in lock-step; returns a list of (m, 3) point arrays."""
    p = start.copy()
    paths = [p.copy()]
    alive = np.ones(len(p), bool)
    life = np.full(len(p), n_steps)
    d = None
    for s in range(n_steps):
        q, d = step_fn(p, d)
        ok = alive_fn(q, s) & alive
        life[alive & ~ok] = s + 1
        alive &= ok
        p = np.where(alive[:, None], q, p)
        paths.append(p.copy())
        if not alive.any():
            break
    P = np.stack(paths, 1)
    return [P[i, :life[i] + 1] for i in range(len(p))]


def _cortical(rng, ph, L: Lattice, n: int) -> list[Vessel]:
    gm = np.argwhere(ph.labels[:, :, :] == A.GM)
    if len(gm) == 0:
        return []
    cand = gm[rng.integers(0, len(gm), n * 8)][:, ::-1] * ph.grid.h + ph.grid.origin
    cand = cand[(L.at(L.sd, cand) > -2.5) & (cand[:, 2] > -30)][:n]
    if len(cand) == 0:
        return []
    ztop = float(np.max(np.argwhere(np.isin(ph.labels[::2, ::2, ::2], PAREN))[:, 0]) * 2 * ph.grid.h
                 + ph.grid.origin[2])
    low = (cand[:, 2] < -2) & (np.abs(cand[:, 0]) > 28)
    tgt = np.stack([np.zeros(len(cand)), cand[:, 1] * 0.9, np.full(len(cand), ztop + 6.0)], 1)
    tgt[low] = np.stack([np.sign(cand[low, 0]) * 48.0, np.full(low.sum(), 60.0), np.full(low.sum(), -20.0)], 1)
    off = rng.uniform(0.6, 1.6, len(cand))[:, None]
    lmax = rng.uniform(35.0, 120.0, len(cand))

    def step(p, d):
        to = _unit(tgt - p)
        d = to if d is None else d
        nd = _unit(0.45 * to + 0.9 * d + 0.45 * rng.standard_normal(p.shape))
        q = p + 1.2 * nd
        s = L.at(L.sd, q)[:, None]
        q = q - (s - off) * L.grad(L.gsd, q)
        return q, _unit(q - p)

    def alive(q, s):
        return (np.linalg.norm(tgt - q, axis=1) > 7.0) & (s * 1.2 < lmax) & (np.abs(L.at(L.sd, q)) < 6.0)

    out = []
    for i, path in enumerate(_walks(rng, cand, step, 100, alive)):
        if len(path) < 8:
            continue
        t = np.linspace(0, 1, len(path))
        r = rng.uniform(0.3, 0.55) + rng.uniform(0.4, 1.1) * t
        out.append(Vessel("cortical", f"cortical vein {i}", path, r))
    return out


def _medullary(rng, ph, L: Lattice, n: int) -> list[Vessel]:
    idx = np.argwhere(ph.labels == A.WM)
    if len(idx) == 0:
        return []
    start = idx[rng.integers(0, len(idx), 6 * n)][:, ::-1] * ph.grid.h + ph.grid.origin
    start = start + rng.uniform(-0.5, 0.5, start.shape) * ph.grid.h
    dv, dp = L.at(L.dv, start), L.at(L.depth, start)
    start = start[(dv > 10.0) & (dv < 40.0) & (dp > 4.0) & (dp < 9.0) & (start[:, 2] > -20)][:n]

    def step(p, d):
        to = -L.grad(L.gdv, p)
        d = to if d is None else d
        nd = _unit(to + 0.5 * d + 0.35 * rng.standard_normal(p.shape))
        return p + 1.0 * nd, nd

    lmax = rng.uniform(15.0, 50.0, len(start))

    def alive(q, s):
        lab = label_at(ph, q)
        ok = np.isin(lab, (A.WM, A.GM, A.CAUD, A.THAL, A.PUT, A.PALL))
        return (L.at(L.dv, q) > 2.0) & (s < lmax) & ok

    out = []
    for i, path in enumerate(_walks(rng, start, step, 50, alive)):
        if len(path) < 6:
            continue
        r = np.full(len(path), rng.uniform(0.18, 0.42)) * np.linspace(1.0, rng.uniform(1.0, 1.6), len(path))
        out.append(Vessel("medullary", f"medullary vein {i}", path, r))
    return out


# anatomical centre lines (mm, before the case's scale); radii drawn per case
_FIXED = [
    ("deep", "internal cerebral vein", [(2, -2, 14), (1.6, 10, 13), (1.2, 22, 10), (0.3, 31, 7)], (0.8, 1.4)),
    ("deep", "thalamostriate vein", [(16, -4, 18), (10, -2, 16), (3, -2, 14)], (0.5, 0.9)),
    ("deep", "basal vein of Rosenthal", [(18, -2, -12), (16, 12, -10), (10, 24, -4), (3, 30, 4)], (0.7, 1.3)),
    ("deep", "vein of Galen", [(0, 31, 7), (0, 36, 8)], (1.6, 2.4)),
    ("sinus", "straight sinus", [(0, 36, 8), (0, 55, -6), (0, 78, -22)], (1.8, 3.0)),
    ("sinus", "sigmoid sinus", [(50, 58, -24), (47, 40, -40), (38, 30, -62)], (2.8, 4.2)),
    ("sinus", "inferior sagittal sinus", [(0, -40, 36), (0, -10, 42), (0, 20, 34), (0, 34, 12)], (0.6, 1.2)),
    ("artery", "basilar artery", [(0, 6, -58), (0, 4, -36), (0, 5, -18)], (1.2, 1.8)),
    ("artery", "middle cerebral artery", [(14, -6, -14), (26, -2, -10), (36, 2, -6), (40, 12, 0)], (0.9, 1.5)),
    ("artery", "anterior cerebral artery", [(3, -8, -10), (3, -26, 2), (3, -36, 18), (3, -20, 34)], (0.7, 1.1)),
    ("artery", "posterior cerebral artery", [(5, 6, -18), (16, 16, -12), (22, 34, -6), (18, 56, 0)], (0.8, 1.2)),
]


def _fixed(rng, ph) -> list[Vessel]:
    out = []
    for kind, name, pts, (r0, r1) in _FIXED:
        P = np.asarray(pts, float)
        sides = (1.0, -1.0) if np.any(np.abs(P[:, 0]) > 5) else (1.0,)
        for s in sides:
            Q = P * np.array([s, 1, 1]) * ph.scale + rng.normal(0, 1.0, P.shape)
            r = np.full(len(Q), rng.uniform(r0, r1))
            out.append(Vessel(kind, name + ("" if len(sides) == 1 else (" left" if s > 0 else " right")), Q, r))
    return out


def draw(rng: np.random.Generator, ph: A.Phantom, L: Lattice, small: bool) -> list[Vessel]:
    scale_n = 0.35 if small else 1.0
    nc = int(rng.integers(30, 75) * scale_n) + 4
    nm = int(rng.integers(120, 420) * scale_n) + 10
    return _fixed(rng, ph) + _cortical(rng, ph, L, nc) + _medullary(rng, ph, L, nm)


def densify(vessels: list[Vessel], step: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(points, radii, vessel index) sampled every ``step`` mm along every vessel."""
    P, R, I = [], [], []
    for i, v in enumerate(vessels):
        seg = np.linalg.norm(np.diff(v.pts, axis=0), axis=1)
        s = np.concatenate([[0.0], np.cumsum(seg)])
        q = np.arange(0.0, s[-1] + 1e-6, step) if s[-1] > 0 else np.zeros(1)
        P.append(np.stack([np.interp(q, s, v.pts[:, k]) for k in range(3)], 1))
        R.append(np.interp(q, s, v.radius))
        I.append(np.full(len(q), i))
    if not P:
        return np.zeros((0, 3)), np.zeros(0), np.zeros(0, int)
    return np.concatenate(P), np.concatenate(R), np.concatenate(I)


def rasterize(vessels: list[Vessel], grid: A.Grid, widen: float) -> np.ndarray:
    """Partial-volume fraction (float32, template grid) of the vessels' apparent lumen (radius × ``widen``)."""
    F = np.zeros(int(np.prod(grid.shape)), np.float32)
    h = grid.h
    P, R, _ = densify(vessels, 0.5 * h)
    if len(P) == 0:
        return F.reshape(grid.shape)
    R = R * widen
    reff = np.maximum(R, 0.6 * h)
    shape = np.array(grid.shape)
    base = np.rint((P - grid.origin) / h).astype(int)[:, ::-1]  # z, y, x
    reach = np.ceil(reff / h + 1.0).astype(int)
    for k in np.unique(reach):
        sel = np.nonzero(reach == k)[0]
        o = np.arange(-k, k + 1)
        offs = np.stack(np.meshgrid(o, o, o, indexing="ij"), -1).reshape(-1, 3)
        chunk = max(1, 3_000_000 // len(offs))
        for a in range(0, len(sel), chunk):
            s = sel[a:a + chunk]
            vox = base[s, None, :] + offs[None]
            mm = vox[..., ::-1] * h + grid.origin
            d = np.linalg.norm(mm - P[s, None, :], axis=-1)
            f = np.clip((reff[s, None] - d) / h + 0.5, 0, 1) * np.minimum(1.0, (R[s] / reff[s]) ** 2)[:, None]
            ok = (f > 0) & np.all((vox >= 0) & (vox < shape), axis=-1)
            flat = np.ravel_multi_index(tuple(vox[ok].T), grid.shape)
            np.maximum.at(F, flat, f[ok].astype(np.float32))
    return F.reshape(grid.shape)


def tree(vessels: list[Vessel], kinds=None) -> tuple[cKDTree | None, np.ndarray, np.ndarray]:
    """KD-tree over densified points of the vessels (of ``kinds``), with their radii and vessel indices."""
    vs = [v for v in vessels if kinds is None or v.kind in kinds]
    P, R, I = densify(vs, 0.4)
    if len(P) == 0:
        return None, R, I
    return cKDTree(P), R, I

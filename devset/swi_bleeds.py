"""Microbleeds for the SWI set: count and pattern draw, placement on the template anatomy, and rendering
on the written grid.

* Count: 15 % none, 35 % 1–9 (more often few), 30 % 10–30, 20 % 31–80. Pattern per case: "CAA-like"
  (lobar-predominant), "hypertensive" (deep + infratentorial) or "mixed".
* Special placements: dense clusters (3–6 small bleeds within a 6.5 mm ball), adjacent pairs (gap 1–2.5 mm
  between bloom edges), bleeds touching a vein, bleeds next to sinus / mastoid air. Every pair of bleeds keeps
  centre distance ≥ bloom radii + 1 mm, so they stay separable.
* Size: true diameter 1.5–8 mm (1.5 + 6.5·Beta(1.2, 5)), slightly ovoid (axes ×0.85–1.2, random
  orientation); bloom diameter = true × the case's bloom factor (field strength and TE).
* Signal (multiplies the tissue): inside the deposit ``core_signal``; outside exp(−ln2·(Rb/r)³·g(θ)) with a
  dipole-shaped g (θ from B0 = patient z), so the signal is 0.5 at the bloom radius; averaged over 3×3 in-plane
  and several through-slice sub-samples of each voxel (rectangular slice profile): partial volume.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from devset import anatomy as A
from devset import swi_vessels as V

PATTERNS = {"CAA-like": (0.85, 0.03, 0.12), "hypertensive": (0.25, 0.5, 0.25), "mixed": (0.5, 0.3, 0.2)}
LOCS = ("lobar", "deep", "infratentorial")
ALLOWED = {"lobar": (A.WM, A.GM), "deep": (A.PUT, A.PALL, A.THAL, A.CAUD, A.WM),
           "infratentorial": (A.CBL, A.BSTEM)}


def draw_count(rng: np.random.Generator) -> int:
    u = rng.random()
    if u < 0.15:
        return 0
    if u < 0.50:
        k = np.arange(1, 10)
        p = k ** -0.6
        return int(rng.choice(k, p=p / p.sum()))
    if u < 0.80:
        return int(rng.integers(10, 31))
    return int(rng.integers(31, 81))


def grade(count: int) -> int:
    return 0 if count == 0 else 1 if count <= 9 else 2 if count <= 30 else 3


def draw_plan(rng: np.random.Generator) -> dict:
    """Count, pattern and the list of placement specs (cheap; no volumes)."""
    count = draw_count(rng)
    pattern = str(rng.choice(list(PATTERNS), p=[0.4, 0.35, 0.25]))
    pl = PATTERNS[pattern]
    specs: list[dict] = []
    if count >= 4 and rng.random() < 0.5:
        for c in range(int(rng.integers(1, 1 + min(3, count // 4)))):
            loc = str(rng.choice(LOCS, p=[0.8, 0.15, 0.05] if pattern == "CAA-like" else pl))
            for _ in range(int(rng.integers(3, 7))):
                specs.append(dict(kind="cluster", group=c, loc=loc, d=float(rng.uniform(1.5, 3.0))))
    if count >= 2 and rng.random() < 0.5:
        for c in range(int(rng.integers(1, 3))):
            loc = str(rng.choice(LOCS, p=pl))
            for _ in range(2):
                specs.append(dict(kind="pair", group=c, loc=loc, d=float(rng.uniform(1.5, 4.0))))
    if count >= 1:
        for _ in range(int(rng.binomial(count, 0.08)) + int(rng.random() < 0.5)):
            specs.append(dict(kind="vein", loc=str(rng.choice(["lobar", "deep"], p=[0.8, 0.2])),
                              d=float(1.5 + 4.0 * rng.beta(1.2, 4.0))))
        if rng.random() < 0.35:
            for _ in range(int(rng.integers(1, 3))):
                specs.append(dict(kind="air", loc="lobar", d=float(1.5 + 6.5 * rng.beta(1.2, 5.0))))
    specs = specs[:count]
    while len(specs) < count:
        specs.append(dict(kind="single", loc=str(rng.choice(LOCS, p=pl)), d=float(1.5 + 6.5 * rng.beta(1.2, 5.0))))
    for s in specs:
        s["axes"] = [float(x) for x in rng.uniform(0.85, 1.2, 3)]
        s["rot"] = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    return dict(count=count, grade=grade(count), pattern=pattern, specs=specs)


@dataclass
class Bleed:
    c: np.ndarray  # template mm (true position)
    r: float  # true radius
    rb: float  # bloom radius
    loc: str
    kind: str
    group: int = -1
    axes: np.ndarray = field(default_factory=lambda: np.ones(3))
    rot: np.ndarray = field(default_factory=lambda: np.eye(3))
    tags: list = field(default_factory=list)
    c_app: np.ndarray | None = None  # template mm after distortion
    p: np.ndarray | None = None  # patient mm (apparent)


class Placer:
    def __init__(self, rng, ph: A.Phantom, L: V.Lattice, vessels, calcs, inside_fn, widen: float):
        self.rng, self.ph, self.L, self.inside = rng, ph, L, inside_fn
        lab = ph.labels
        wm, gm = lab == A.WM, lab == A.GM
        junc = (wm & ndimage.binary_dilation(gm, iterations=2)) | (gm & ndimage.binary_dilation(wm, iterations=1))
        g = ph.grid
        zz = g.axis(2)[:, None, None]
        yy = g.axis(1)[None, :, None]
        xx = g.axis(0)[None, None, :]
        sc = ph.scale
        capsule = wm & (np.abs(xx) < 28 * sc[0]) & (yy > -15 * sc[1]) & (yy < 25 * sc[1]) & (zz > -8 * sc[2]) \
            & (zz < 18 * sc[2])
        deep = np.isin(lab, (A.PUT, A.PALL, A.THAL, A.CAUD)) | capsule
        self.pools = {"lobar": self._pts(junc & ~capsule), "deep": self._pts(deep),
                      "infratentorial": self._pts(np.isin(lab, (A.CBL, A.BSTEM)))}
        lob = self.pools["lobar"]
        near = lob[(L.at(L.dair, lob) < 14.0) & (lob[:, 2] < 5.0)] if len(lob) else lob
        self.pools["air"] = near
        self.vtree, self.vr, self.vi = V.tree(vessels)
        self.vr = self.vr * widen
        self.vessels_adj = [v for v in vessels if v.kind in ("cortical", "medullary", "deep")]
        self.adj_pts, self.adj_r, _ = V.densify(self.vessels_adj, 0.5)
        self.adj_r = self.adj_r * widen
        self.calcs = calcs
        self.placed: list[Bleed] = []

    def _pts(self, m):
        idx = np.argwhere(m)
        return (idx[:, ::-1] * self.ph.grid.h + self.ph.grid.origin).astype(np.float32)

    def _draw(self, pool, k):
        if len(pool) == 0:
            return np.zeros((0, 3))
        h = self.ph.grid.h
        return pool[self.rng.integers(0, len(pool), k)] + self.rng.uniform(-0.5, 0.5, (k, 3)) * h

    def ok(self, c, r, rb, loc, vein_gap=True):
        """Vectorised validity of candidate centres ``c`` (k, 3)."""
        if len(c) == 0:
            return np.zeros(0, bool)
        good = np.isin(V.label_at(self.ph, c), ALLOWED[loc])
        good &= self.L.at(self.L.depth, c) >= max(1.0, 0.6 * r)
        good &= self.inside(c)
        if vein_gap and self.vtree is not None:
            d, i = self.vtree.query(c, k=4)
            gap = (d - self.vr[i]).min(axis=1)
            good &= gap >= rb + 0.5
        for b in self.placed:
            good &= np.linalg.norm(c - b.c, axis=1) >= rb + b.rb + 1.0
        for cl in self.calcs:
            good &= np.linalg.norm(c - cl["c"], axis=1) >= rb + cl["r"] + 1.0
        return good

    def first(self, c, r, rb, loc, vein_gap=True):
        g = self.ok(c, r, rb, loc, vein_gap)
        j = np.nonzero(g)[0]
        return None if len(j) == 0 else c[j[0]]

    def place(self, spec: dict, bloom: float, cluster_centres: dict) -> Bleed | None:
        rng = self.rng
        r = spec["d"] / 2.0
        rb = r * bloom
        loc, kind = spec["loc"], spec["kind"]
        c = None
        if kind == "cluster":
            key = ("cluster", spec["group"])
            for _ in range(2):
                if key not in cluster_centres:
                    cand = self._draw(self.pools[loc], 64)
                    cen = self.first(cand, 3.0, 3.0, loc)
                    if cen is None:
                        break
                    cluster_centres[key] = cen
                cen = cluster_centres[key]
                v = rng.normal(size=(120, 3))
                v *= (rng.uniform(0, 1, (120, 1)) ** (1 / 3) * 6.5) / np.linalg.norm(v, axis=1, keepdims=True)
                c = self.first(cen + v, r, rb, loc)
                if c is not None:
                    break
                cluster_centres.pop(key)
        elif kind == "pair" and ("pair", spec["group"]) in cluster_centres:
            other: Bleed = cluster_centres[("pair", spec["group"])]
            v = rng.normal(size=(80, 3))
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            cand = other.c + v * (rb + other.rb + rng.uniform(1.05, 2.5, (80, 1)))
            c = self.first(cand, r, rb, loc)
        elif kind == "vein" and len(self.adj_pts):
            for _ in range(6):
                j = rng.integers(1, len(self.adj_pts) - 1, 64)
                t = self.adj_pts[j + 1] - self.adj_pts[j - 1]
                t /= np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-6)
                v = rng.normal(size=(64, 3))
                v -= (v * t).sum(1, keepdims=True) * t
                v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-6)
                cand = self.adj_pts[j] + v * (self.adj_r[j] + r + rng.uniform(0.0, 0.4, 64))[:, None]
                c = self.first(cand, r, rb, loc, vein_gap=False)
                if c is not None:
                    break
        elif kind == "air":
            c = self.first(self._draw(self.pools["air"], 200), r, rb, "lobar")
        if c is None:  # singles, and any special placement that failed
            for _ in range(8):
                c = self.first(self._draw(self.pools[loc], 128), r, rb, loc)
                if c is not None:
                    break
        if c is None:
            return None
        b = Bleed(c=np.asarray(c, float), r=r, rb=rb, loc=loc, kind=kind, group=spec.get("group", -1),
                  axes=np.asarray(spec["axes"]) / np.prod(spec["axes"]) ** (1 / 3), rot=spec["rot"])
        self.placed.append(b)
        if kind == "pair":
            cluster_centres[("pair", spec["group"])] = b
        return b

    def tag(self, b: Bleed) -> list[str]:
        tags = []
        if b.kind == "cluster":
            tags.append("cluster")
        others = [o for o in self.placed if o is not b]
        if others:
            gaps = [np.linalg.norm(b.c - o.c) - b.rb - o.rb for o in others]
            j = int(np.argmin(gaps))
            if b.kind == "pair" or (gaps[j] <= 2.5 and b.kind != "cluster"):
                tags.append("adjacent-pair")
        if len(self.adj_pts) and self.vtree is not None:
            d, i = self.vtree.query(b.c[None], k=8)
            if ((d - self.vr[i]).min() - b.r) <= 1.0:
                tags.append("vein-adjacent")
        if float(self.L.at(self.L.dair, b.c[None])[0]) <= 15.0:
            tags.append("near-air")
        if any(np.linalg.norm(b.c - cl["c"]) <= 10.0 + cl["r"] for cl in self.calcs):
            tags.append("near-calcification")
        return tags


def render(img: np.ndarray, labels: np.ndarray, geo, acq, bleeds: list[Bleed], bleed_code: int,
           bloom_code: int) -> None:
    """Multiply each bleed's voxel-averaged signal factor into ``img``; write bleed/bloom labels (in place)."""
    n, N = img.shape[0], img.shape[1]
    ps, th, sp = geo.ps, acq.thickness, geo.step
    so = (np.array([-1.0, 0.0, 1.0]) / 3.0) * ps
    nz = max(3, int(np.ceil(th / 0.4)))
    zo = ((np.arange(nz) + 0.5) / nz - 0.5) * th
    ln2 = np.log(2.0)
    for b in bleeds:
        M = geo.R @ b.rot  # ellipsoid axes in patient coordinates
        kf, rf, cf = geo.to_voxel(b.p[None])[0]
        reach = 2.2 * b.rb + ps
        k0, k1 = max(0, int(np.floor(kf - (reach + th / 2) / sp))), min(n - 1, int(np.ceil(kf + (reach + th / 2) / sp)))
        r0, r1 = max(0, int(np.floor(rf - reach / ps))), min(N - 1, int(np.ceil(rf + reach / ps)))
        c0, c1 = max(0, int(np.floor(cf - reach / ps))), min(N - 1, int(np.ceil(cf + reach / ps)))
        if k0 > k1 or r0 > r1 or c0 > c1:
            continue
        ks, rs, cs = np.arange(k0, k1 + 1), np.arange(r0, r1 + 1), np.arange(c0, c1 + 1)
        # voxel centres (k, r, c, 3)
        V0 = (geo.ipp[ks][:, None, None, :] + rs[None, :, None, None] * ps * geo.col
              + cs[None, None, :, None] * ps * geo.row) - b.p
        sub = (zo[:, None, None, None] * geo.normal + so[None, :, None, None] * geo.col
               + so[None, None, :, None] * geo.row).reshape(-1, 3)
        D = V0[..., None, :] + sub  # (k, r, c, s, 3)
        E = (D @ M) / b.axes  # ellipsoid frame, unit = 1 mm at the mean radius
        rr = np.linalg.norm(E, axis=-1)
        cos = D[..., 2] / np.maximum(np.linalg.norm(D, axis=-1), 1e-6)
        g = (1.0 - acq.dipole) + acq.dipole * np.abs(3 * cos * cos - 1) / 0.77
        f = np.where(rr < b.r, acq.core_signal, np.exp(-ln2 * (b.rb / np.maximum(rr, 1e-3)) ** 3 * g))
        fac = f.mean(axis=-1).astype(np.float32)
        img[k0:k1 + 1, r0:r1 + 1, c0:c1 + 1] *= fac
        rc = np.linalg.norm((V0 @ M) / b.axes, axis=-1)
        lab = labels[k0:k1 + 1, r0:r1 + 1, c0:c1 + 1]
        lab[(rc < b.rb) & (lab != bleed_code)] = bloom_code
        lab[rc < b.r] = bleed_code
        ki, ri, ci = int(round(kf)), int(round(rf)), int(round(cf))
        if 0 <= ki < n and 0 <= ri < N and 0 <= ci < N:
            labels[ki, ri, ci] = bleed_code

"""Lesion models with physical ground truth: WML (NCCT), mimics (NCCT), microbleeds (SWI).

WML are a signed-distance field ``sd(u)`` (negative inside) restricted to white
matter. The *physical* volume integrates the occupancy of ``{sd < 0} ∩ WM`` on a
fine adaptive grid (smeared-Heaviside quadrature), independent of any image
grid; the source-grid mask is the set of voxels whose sub-sampled occupancy is
≥ 50 %.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .anatomy import F32, HeadModel, Points, _soft, ellipsoid_sd
from .geometry import Grid, rotation_xyz

VESSEL_KEYS = ("sinus", "vein", "medullary", "artery")


# --------------------------------------------------------------------------- WML


@dataclass
class WmlModel:
    head: HeadModel
    caps: list = field(default_factory=list)  # (tip u, spread mm, thickness mm)
    bands: list = field(default_factory=list)  # (side, thickness, phase)
    blobs: list = field(default_factory=list)  # (centre u, radii, rotation, noise amp, noise k, noise phase)
    rims: list = field(default_factory=list)  # (centre u on the ventricle wall, spread mm, thickness mm, k, phase, amp)
    scale: float = 1.0
    contrast: float = 6.0
    soft_mm: float = 1.5
    texture: tuple = (np.zeros(3), 0.0)
    grade: tuple | None = None  # (edge share, core depth mm, tail mm): a graded core (``draw_grade``); None: soft edge
    grid_fraction: np.ndarray | None = None  # set by the renderer: occupancy on the source grid

    @property
    def empty(self) -> bool:
        return not (self.caps or self.bands or self.blobs or self.rims)

    def bbox(self):
        pts, rad = [], []
        if self.caps or self.bands or self.rims:
            pts += list(self.head.sites()["periventricular_box"])
            rad += [2, 2]
        for c, r, *_ in self.blobs:
            pts.append(c)
            rad.append(max(r) * self.scale * 1.3 + 2)
        pts = np.asarray(pts, float)
        rad = np.asarray(rad)[:, None]
        return (pts - rad).min(0), (pts + rad).max(0)

    def sd(self, x, y, z, box=None):
        """Signed distance to the lesion set, before the white-matter restriction."""
        out = np.full(x.shape, F32(50.0), dtype=F32)
        lam = self.scale
        if self.caps or self.bands or self.rims:
            dv = self.head.ventricle_sd(x, y, z)
            t = np.zeros(x.shape, F32)
            for tip, spread, thick in self.caps:
                r2 = (x - F32(tip[0])) ** 2 + (y - F32(tip[1])) ** 2 + ((z - F32(tip[2])) * F32(0.8)) ** 2
                t = np.maximum(t, F32(thick * lam ** 0.5) * np.exp(-r2 / F32(2 * (spread * lam ** 0.75) ** 2)))
            for side, thick, ph in self.bands:
                w = np.exp(-((y - F32(2)) / F32(30)) ** 2 - ((z - F32(16)) / F32(14)) ** 2) * (x * F32(side) > 0)
                mod = F32(0.75) + F32(0.25) * np.sin(y * F32(0.21) + z * F32(0.17) + F32(ph))
                t = np.maximum(t, F32(thick * lam ** 0.5) * w * mod)
            for c, spread, thick, k, ph, amp in self.rims:
                r2 = (x - F32(c[0])) ** 2 + (y - F32(c[1])) ** 2 + (z - F32(c[2])) ** 2
                mod = F32(1.0) + F32(amp) * np.sin(x * F32(k[0]) + y * F32(k[1]) + z * F32(k[2]) + F32(ph))
                t = np.maximum(t, F32(thick * lam ** 0.5) * np.exp(-r2 / F32(2 * (spread * lam ** 0.5) ** 2)) * mod)
            out = np.minimum(out, np.where(t > 0.05, np.maximum(dv - t, -dv), F32(50.0)))
        for c, r, R, namp, nk, nph in self.blobs:
            rr = tuple(v * lam for v in r)
            d = ellipsoid_sd(x, y, z, c, rr, R)
            d = d + F32(namp * min(rr)) * np.sin(x * F32(nk[0]) + y * F32(nk[1]) + z * F32(nk[2]) + F32(nph))
            out = np.minimum(out, d)
        return out

    @property
    def reach_mm(self) -> float:
        """How far outside the label (mm) the lesion still darkens the image."""
        return self.soft_mm * 2 if self.grade is None else 3.0 * self.grade[2]

    def drop(self, sd, wm):
        """HU decrease (positive) for the image: soft-edged about the label edge, or graded (``grade``)."""
        if self.grade is None:
            ramp = np.clip(0.5 - sd / F32(self.soft_mm * 2), 0, 1)
        else:
            edge, depth, tail = (F32(v) for v in self.grade)
            t = np.clip(-sd / depth, 0, 1)
            inside = edge + (F32(1) - edge) * t * t * (F32(3) - F32(2) * t)
            ramp = np.where(sd < 0, inside, np.where(sd < F32(3) * tail, edge * np.exp(-sd / tail), F32(0)))
        return F32(self.contrast) * ramp * wm_drop_weight(wm)


def draw_grade(rng: np.random.Generator) -> tuple[float, float, float]:
    """A graded lesion profile: the darkening at the label edge as a share of the core's (0.15-0.6), the depth
    (mm) at which the core's full contrast is reached (1.5-6), and the e-folding (mm) of the unlabelled tail
    outside the label (1-4; cut at three e-foldings).

    Why: white-matter hyperintensities are the visible end of a continuum. The white matter around them (the
    "penumbra", Maillard et al., Stroke 2011) is already abnormal, increasingly so towards the lesion, and the
    label a reference reader draws on FLAIR ends where FLAIR's signal crosses a threshold, not where the tissue
    becomes normal. CT attenuation falls with the tissue's water content, roughly in proportion, so on CT the
    darkening at a FLAIR label's edge is a fraction of the core's and fades on into the surrounding white matter.
    A label whose edge sits at half the contrast (the soft edge) is the other limit: what the CT shows."""
    return float(rng.uniform(0.15, 0.6)), float(rng.uniform(1.5, 6.0)), float(rng.uniform(1.0, 4.0))


def wm_drop_weight(wm):
    """How much of a lesion's darkening a voxel of white-matter fraction ``wm`` shows (0 below 1/6, 1 from 5/6)."""
    return np.clip(wm * 1.5 - 0.25, 0, 1)


def wm_label_weight(wm):
    """How much of a voxel of white-matter fraction ``wm`` a lesion may occupy: the ``{wm ≥ 0.5}`` cut, smeared."""
    return np.clip((wm - 0.5) * 2.0 + 0.5, 0, 1)


def wm_fraction(head: HeadModel, pts) -> np.ndarray:
    """White-matter fraction at ``pts`` (vessels ignored): where a WML may lie."""
    return head.paint(pts, {"wm": 1.0, "air": 0.0}, default=0.0, skip=VESSEL_KEYS)


def _occupancy(sd, wm, h):
    """Smeared-Heaviside occupancy of {sd<0} ∩ {wm ≥ 0.5} at resolution h (mm)."""
    return np.clip(0.5 - sd / F32(h), 0, 1) * wm_label_weight(wm)


def wml_volume_mm3(m: WmlModel, *, with_wm=True, h0=2.0, n_sub=3) -> float:
    """Physical lesion volume by adaptive quadrature in the unwarped model frame v."""
    if m.empty:
        return 0.0
    head = m.head
    lo, hi = m.bbox()
    lo = lo - head.warp_max - 2
    hi = hi + head.warp_max + 2
    axes = [np.arange(a + h0 / 2, b, h0) for a, b in zip(lo, hi)]
    V = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3).astype(F32)
    U = head.warp([V[:, 0], V[:, 1], V[:, 2]])
    sd = m.sd(*U)
    cand = V[sd < F32(h0 * 1.0)]
    if len(cand) == 0:
        return 0.0
    h = h0 / n_sub
    off = (np.arange(n_sub) + 0.5) * h - h0 / 2
    offs = np.stack(np.meshgrid(off, off, off, indexing="ij"), -1).reshape(-1, 3).astype(F32)
    fine = (cand[:, None, :] + offs[None, :, :]).reshape(-1, 3)
    total = 0.0
    for s in range(0, len(fine), 400_000):
        f = fine[s:s + 400_000]
        U = head.warp([f[:, 0], f[:, 1], f[:, 2]])
        sdf = m.sd(*U)
        keep = sdf < F32(h)
        if not keep.any():
            continue
        Uk = [c[keep] for c in U]
        if with_wm:
            wm = wm_fraction(head, _BoxedPoints(Uk))
        else:
            wm = np.ones(len(Uk[0]), F32)
        total += float(_occupancy(sdf[keep], wm, h).sum())
    return total * h ** 3


class _BoxedPoints(Points):
    """Point cloud whose ``box`` selects the points inside a box (fancy index)."""

    def __init__(self, u):
        super().__init__(u)
        self._lo = np.array([c.min() for c in self.u])
        self._hi = np.array([c.max() for c in self.u])

    def box(self, lo, hi, margin=0.0):
        lo = np.asarray(lo, float) - margin
        hi = np.asarray(hi, float) + margin
        if np.all(lo <= self._lo) and np.all(hi >= self._hi):
            return (Ellipsis,)
        if np.any(hi < self._lo) or np.any(lo > self._hi):
            return None
        x, y, z = self.u
        sel = (x >= lo[0]) & (x <= hi[0]) & (y >= lo[1]) & (y <= hi[1]) & (z >= lo[2]) & (z <= hi[2])
        idx = np.nonzero(sel)[0]
        return (idx,) if len(idx) else None


def sample_wml_ml(rng: np.random.Generator) -> float:
    """Target WML volume: mass at 0, many small (median ≈ 0.6 mL), tail to 50 mL."""
    r = rng.random()
    if r < 0.12:
        return 0.0
    if r < 0.72:
        return float(np.clip(np.exp(rng.normal(np.log(0.45), 1.0)), 0.03, 50))
    return float(np.exp(rng.uniform(np.log(1.5), np.log(50))))


# model-frame boxes (x: |lateral|, y: front (-) to back (+), z: up) from which deep / subcortical blob centres are
# drawn (rejected unless they land in white matter): the centrum semiovale and corona radiata, or with ``spread``
# all of the cerebral white matter, frontal and occipital poles, temporal stems and the level of the basal ganglia
DEEP_BOX = ((14, 34), (-35, 40), (8, 42))
DEEP_BOX_SPREAD = ((6, 60), (-75, 70), (-15, 60))


def build_wml(head: HeadModel, target_ml: float, rng: np.random.Generator, spread: bool = False,
              rims: np.random.Generator | None = None) -> WmlModel:
    """A WML model of about ``target_ml``; ``spread``: deep blobs anywhere in the cerebral white matter; ``rims``
    (a random stream of their own, so the other draws stay the seed's): periventricular rims (``add_rims``)."""
    m = WmlModel(head=head)
    m.contrast = float(rng.uniform(3.0, 10.0))
    m.soft_mm = float(rng.uniform(0.8, 2.0))
    if target_ml <= 0:
        return m
    sites = head.sites()
    frac_pv = rng.uniform(0.3, 0.85) if target_ml > 1.0 else rng.uniform(0.0, 0.6)
    # periventricular caps and bands (small cases: few, compact caps)
    p_cap = 0.85 if target_ml > 1.5 else 0.35
    if frac_pv > 0.15:
        for sx in (-1, 1):
            if rng.random() < p_cap:
                m.caps.append((sites["frontal_tip"][sx], rng.uniform(5, 10), rng.uniform(2, 6) * (0.6 + frac_pv)))
            if rng.random() < p_cap * 0.85:
                m.caps.append((sites["occipital_tip"][sx], rng.uniform(5, 10), rng.uniform(2, 6) * (0.6 + frac_pv)))
            if target_ml > 3 and rng.random() < 0.9:
                m.bands.append((sx, rng.uniform(1.5, 4.0), rng.uniform(0, 6.28)))
    # deep / subcortical patchy hypodensities in DEEP_BOX (centrum semiovale, corona radiata) or DEEP_BOX_SPREAD
    n_blob = int(np.clip(rng.poisson(1.0 + 3.0 * np.log1p(target_ml)), 1 if not m.caps else 0, 40))
    tries = 0
    (x0, x1), (y0, y1), (z0, z1) = DEEP_BOX_SPREAD if spread else DEEP_BOX
    while len(m.blobs) < n_blob and tries < (1500 if spread else 400):
        tries += 1
        sx = rng.choice([-1, 1])
        c = np.array([sx * rng.uniform(x0, x1), rng.uniform(y0, y1), rng.uniform(z0, z1)])
        if head.label(head.warp_point(c)[None])[0] != "wm":
            continue
        if any(np.linalg.norm(c - b[0]) < 6 for b in m.blobs):
            continue
        r0 = float(np.exp(rng.normal(np.log(3.5), 0.4)))
        radii = (r0, r0 * rng.uniform(0.5, 1.0), r0 * rng.uniform(0.6, 1.2))
        R = rotation_xyz(*rng.uniform(-40, 40, 3))
        k = rng.normal(size=3)
        k *= (2 * np.pi / rng.uniform(5, 10)) / np.linalg.norm(k)
        m.blobs.append((c, radii, R, rng.uniform(0.0, 0.25), k, rng.uniform(0, 6.28)))
    if rims is not None:
        add_rims(m, rims, target_ml)
    # scale all sizes to hit the target (volume ~ monotone in scale)
    target = target_ml * 1000.0
    _fit_scale(m, target)
    # correct for the part of the model that falls outside white matter (it changes with the scale)
    for _ in range(head.WML_FIT_ROUNDS):
        v_wm = wml_volume_mm3(m, with_wm=True, h0=2.0, n_sub=2)
        v_all = wml_volume_mm3(m, with_wm=False, h0=2.0, n_sub=2)
        if not (v_wm > 0 and v_all > 0) or abs(v_wm - target) < 0.1 * target:
            break
        _fit_scale(m, target * v_all / v_wm)
    return m


def add_rims(m: WmlModel, rng: np.random.Generator, target_ml: float) -> None:
    """Periventricular rims: a lining of the ventricle wall whose thickness (1-5 mm) swells and thins along it, from a
    pencil-thin lining in short segments to a halo round most of both ventricles, as the periventricular grades of
    Fazekas et al. (AJR 1987) describe (caps, pencil-thin lining, smooth halo, irregular extension); the caps and
    bands above line only the horn tips and the bodies. Segment centres are drawn on the ventricle wall of this
    head (either anatomy), each with its own spread (6-22 mm along the wall) and an uneven edge (a plane wave of
    4-12 mm that modulates the thickness by up to ±60 %)."""
    lo, hi = (np.asarray(b, float) for b in m.head.sites()["periventricular_box"])
    pts = rng.uniform(lo, hi, size=(4000, 3)).astype(F32)
    wall = pts[np.abs(m.head.ventricle_sd(pts[:, 0], pts[:, 1], pts[:, 2])) < 1.5]
    if len(wall) == 0:
        return
    n = int(np.clip(rng.poisson(1.5 + 1.5 * np.log1p(target_ml)), 1, 10))
    for c in wall[rng.choice(len(wall), size=min(n, len(wall)), replace=False)]:
        k = rng.normal(size=3)
        k *= (2 * np.pi / rng.uniform(4, 12)) / np.linalg.norm(k)
        m.rims.append((tuple(float(v) for v in c), float(rng.uniform(6, 22)), float(rng.uniform(1.0, 5.0)),
                       tuple(float(v) for v in k), float(rng.uniform(0, 6.28)), float(rng.uniform(0.0, 0.6))))


def _fit_scale(m: WmlModel, target: float):
    lo, hi = 0.05, 8.0
    m.scale = 1.0
    for _ in range(16):
        v = wml_volume_mm3(m, with_wm=False, h0=2.0, n_sub=1)
        if abs(v - target) < 0.03 * target:
            return
        if v > target:
            hi = m.scale
        else:
            lo = m.scale
        m.scale = float(np.sqrt(lo * hi))


# --------------------------------------------------------------------------- NCCT mimics


@dataclass
class Mimic:
    kind: str  # 'lacune' | 'calcification' | 'ischaemia'
    center_v: np.ndarray
    size_mm: float
    extra: dict = field(default_factory=dict)


def build_mimics(head: HeadModel, rng: np.random.Generator, enabled=True) -> list[Mimic]:
    if not enabled:
        return []
    out: list[Mimic] = []
    sites = head.sites()
    # calcifications: pineal, choroid plexus, globus pallidus
    if rng.random() < 0.7:
        out.append(Mimic("calcification", np.array(sites["pineal"]), rng.uniform(2, 5), {"hu": rng.uniform(120, 400)}))
    for sx in (-1, 1):
        if rng.random() < 0.6:
            out.append(Mimic("calcification", np.array(sites["glomus"][sx]), rng.uniform(2, 5),
                             {"hu": rng.uniform(120, 500)}))
        if rng.random() < 0.2:
            out.append(Mimic("calcification", np.array(sites["pallidum"][sx]), rng.uniform(2, 4),
                             {"hu": rng.uniform(90, 250)}))
    # lacunes: small CSF-density holes in deep GM / WM
    n_lac = int(rng.choice([0, 0, 1, 1, 2, 3, 4]))
    tries = 0
    while sum(m.kind == "lacune" for m in out) < n_lac and tries < 200:
        tries += 1
        sx = rng.choice([-1, 1])
        c = np.array([sx * rng.uniform(8, 32), rng.uniform(-22, 22), rng.uniform(-6, 30)])
        lab = head.label(head.warp_point(c)[None])[0]
        if lab not in ("wm", "dgm", "putamen", "gp", "thal"):
            continue
        out.append(Mimic("lacune", c, float(rng.uniform(3, 15)), {"aspect": rng.uniform(0.6, 1.0)}))
    # early ischaemic hypodensity: a cortico-subcortical wedge in an MCA territory
    if rng.random() < 0.3:
        sx = rng.choice([-1, 1])
        ang = np.radians(rng.uniform(-40, 40))
        d = np.array([sx * np.cos(ang), np.sin(ang), rng.uniform(-0.1, 0.4)])
        d /= np.linalg.norm(d)
        out.append(Mimic("ischaemia", np.array([sx * 20.0, 0.0, 2.0]), rng.uniform(18, 35),
                         {"dir": d, "halfangle": np.radians(rng.uniform(12, 25)), "drop": rng.uniform(3, 7),
                          "zlim": (rng.uniform(-25, -5), rng.uniform(15, 45))}))
    return out


def mimic_effect(head: HeadModel, mimics, pts, base, ct_values):
    """Apply mimics in place to the HU array ``base`` sampled at block ``pts``."""
    for mm in mimics:
        c = mm.center_v
        if mm.kind == "ischaemia":
            lo, hi = c - 80, c + 80
            sl = pts.box(lo, hi, head.warp_max)
            if sl is None:
                continue
            x, y, z = (pts.v[i][sl] for i in range(3))
            dx, dy, dz = x - F32(c[0]), y - F32(c[1]), z - F32(c[2])
            d = mm.extra["dir"]
            along = dx * F32(d[0]) + dy * F32(d[1]) + dz * F32(d[2])
            r = np.sqrt(dx * dx + dy * dy + dz * dz) + F32(1e-3)
            cosang = along / r
            inside = np.clip((cosang - F32(np.cos(mm.extra["halfangle"]))) * F32(25), 0, 1) * (along > 8)
            zl = mm.extra["zlim"]
            inside = inside * np.clip((z - F32(zl[0])) / 4, 0, 1) * np.clip((F32(zl[1]) - z) / 4, 0, 1)
            b = base[sl]
            tissue = np.clip((b - F32(15)) / F32(8), 0, 1) * np.clip((F32(70) - b) / F32(10), 0, 1)
            # loss of grey-white differentiation + oedema
            target = F32(ct_values["wm"] - mm.extra["drop"])
            b -= inside * tissue * np.maximum(b - target, F32(mm.extra["drop"] * 0.5))
            base[sl] = b
            continue
        rad = mm.size_mm / 2
        sl = pts.box(c - rad - 2, c + rad + 2, 0)
        if sl is None:
            continue
        x, y, z = (pts.v[i][sl] for i in range(3))
        if mm.kind == "lacune":
            a = mm.extra.get("aspect", 1.0)
            s = _soft(ellipsoid_sd(x, y, z, c, (rad * a, rad, rad * (2 - a))), 0.8)
            V = F32(ct_values["csf"] + 2)
        else:
            s = _soft(ellipsoid_sd(x, y, z, c, (rad, rad, rad)), 0.6)
            V = F32(mm.extra["hu"])
        b = base[sl]
        b += (V - b) * s
        base[sl] = b


# --------------------------------------------------------------------------- microbleeds


@dataclass(frozen=True)
class CmbSpec:
    center_v: tuple
    diameter_mm: float
    location: str
    depth: float


def sample_cmb_count(rng: np.random.Generator) -> int:
    g = rng.choice(4, p=[0.25, 0.35, 0.22, 0.18])
    if g == 0:
        return 0
    if g == 1:
        return int(rng.integers(1, 10))
    if g == 2:
        return int(rng.integers(10, 31))
    return int(rng.integers(31, 61))


def place_cmbs(head: HeadModel, grid: Grid, n: int, rng: np.random.Generator) -> list[CmbSpec]:
    if n <= 0:
        return []
    nz, nr, nc = grid.shape
    m = 6000
    kij = np.stack([rng.uniform(1.0, nz - 2.0, m), rng.uniform(8, nr - 9, m), rng.uniform(8, nc - 9, m)], 1)
    P = grid.to_patient(kij)
    V = head.patient_to_v(P)
    U = head.warp_point(V)
    lab = head.label(U)
    depth = -(head.cavity_sd(*[U[:, i].astype(F32) for i in range(3)]) + F32(head.p["sa"]))
    lobar = np.isin(lab, ["gm", "wm"]) & (depth > 1.5) & (depth < 9) & (U[:, 2] > -30)
    deep = np.isin(lab, ["dgm", "putamen", "gp", "thal"]) | (
        (lab == "wm") & (np.abs(U[:, 0]) < 28) & (np.abs(U[:, 1]) < 22) & (U[:, 2] > -10) & (U[:, 2] < 14))
    infra = np.isin(lab, ["stem", "cbl"]) & (depth > 2)
    pools = {"lobar": np.nonzero(lobar)[0], "deep": np.nonzero(deep)[0], "infratentorial": np.nonzero(infra)[0]}
    w = rng.dirichlet([2.0, 1.2, 0.5])
    if rng.random() < 0.4:  # CAA-like: strictly lobar
        w = np.array([0.92, 0.05, 0.03])
    out: list[CmbSpec] = []
    used = set()
    attempts = 0
    # dense clusters (CAA, hypertensive arteriopathy): a share of the bleeds sits next to an earlier one,
    # as close as 1 mm edge to edge, so that adjacent bleeds must stay separate detections
    clustered = float(rng.choice([0.0, rng.uniform(0.3, 0.7)], p=[0.6, 0.4]))
    gap = 1.0 if clustered else 3.0
    while len(out) < n and attempts < 50 * n + 200:
        attempts += 1
        loc = rng.choice(["lobar", "deep", "infratentorial"], p=w / w.sum())
        pool = pools[loc]
        if len(pool) == 0:
            continue
        idx = int(pool[rng.integers(len(pool))])
        if idx in used:
            continue
        d = float(2.0 + 8.0 * rng.beta(1.3, 3.2))
        c = V[idx]
        if out and rng.random() < clustered:  # next to an earlier bleed, inside the same tissue label
            o = out[int(rng.integers(len(out)))]
            u = rng.normal(size=3)
            c = np.asarray(o.center_v) + u / np.linalg.norm(u) * ((d + o.diameter_mm) / 2 + rng.uniform(1.0, 4.0))
            kij = grid.to_index(head.v_to_patient(c[None]))[0]
            if not (1.0 <= kij[0] <= nz - 2.0 and 8 <= kij[1] <= nr - 9 and 8 <= kij[2] <= nc - 9):
                continue
            if head.label(head.warp_point(c[None]))[0] not in ("gm", "wm", "dgm", "putamen", "gp", "thal", "stem",
                                                                "cbl"):
                continue
        if any(np.linalg.norm(c - np.asarray(o.center_v)) < (d + o.diameter_mm) / 2 + gap for o in out):
            continue
        used.add(idx)
        out.append(CmbSpec(tuple(float(v) for v in c), round(d, 2), str(loc), float(rng.uniform(0.7, 0.95))))
    return out

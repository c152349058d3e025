"""An analytic, randomly warped head: a stack of soft-edged structures painted in order.

Every structure is a function of the *warped model-frame* coordinate ``u``
(mm, x → left, y → posterior, z → up, origin near the centre of the brain).
``u = v + D(v)`` where ``v`` is a rigid transform of patient coordinates and
``D`` a smooth random displacement field, so the anatomy can be evaluated at any
patient point: that is what keeps tilted, sheared or oblique grids physically
consistent with the truth.

A structure yields a soft indicator ``s`` in [0, 1] (linear ramp over ``edge``
mm across its surface) and the painter composites ``value += (V[key] - value) * s``
in order, so later structures override earlier ones. Modalities differ only by
the table of values ``V``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

F32 = np.float32

# --------------------------------------------------------------------------- primitives


def _soft(sd, edge: float):
    return np.clip(0.5 - sd * (1.0 / edge), 0.0, 1.0)


def ellipsoid_sd(x, y, z, c, a, rot: np.ndarray | None = None):
    """Approximate signed distance (mm) to an ellipsoid (negative inside)."""
    dx, dy, dz = x - F32(c[0]), y - F32(c[1]), z - F32(c[2])
    if rot is not None:
        r = rot.astype(F32)
        dx, dy, dz = (r[0, 0] * dx + r[0, 1] * dy + r[0, 2] * dz,
                      r[1, 0] * dx + r[1, 1] * dy + r[1, 2] * dz,
                      r[2, 0] * dx + r[2, 1] * dy + r[2, 2] * dz)
    ax, ay, az = (F32(v) for v in a)
    qx, qy, qz = dx / ax, dy / ay, dz / az
    r2 = qx * qx + qy * qy + qz * qz
    g2 = (qx / ax) ** 2 + (qy / ay) ** 2 + (qz / az) ** 2
    r = np.sqrt(r2)
    grad = np.sqrt(g2) / np.maximum(r, F32(1e-6))
    return (r - 1.0) / np.maximum(grad, F32(1.0 / max(a)))


def capsule_sd(x, y, z, a, b, r):
    a = np.asarray(a, float)
    b = np.asarray(b, float)
    ab = b - a
    L2 = float(ab @ ab) or 1e-9
    px, py, pz = x - F32(a[0]), y - F32(a[1]), z - F32(a[2])
    t = np.clip((px * F32(ab[0]) + py * F32(ab[1]) + pz * F32(ab[2])) * F32(1.0 / L2), 0.0, 1.0)
    dx, dy, dz = px - t * F32(ab[0]), py - t * F32(ab[1]), pz - t * F32(ab[2])
    return np.sqrt(dx * dx + dy * dy + dz * dz) - F32(r)


def _sig(t):
    return 0.5 * (1.0 + np.tanh(t))


class Points:
    """Plain point arrays (any shape) with the same interface as geometry.Block."""

    def __init__(self, v):
        self.v = [np.asarray(c, F32) for c in v]
        self.u = self.v

    def box(self, lo, hi, margin=0.0):
        return (Ellipsis,)


@dataclass
class Layer:
    key: str
    lo: tuple
    hi: tuple
    fn: Callable  # (x, y, z) -> signed distance (mm)
    edge: float | None = None


@dataclass
class Vessel:
    kind: str  # 'sinus' | 'vein' | 'medullary' | 'artery'
    points: np.ndarray  # (n, 3) model frame u
    radius: float


# --------------------------------------------------------------------------- the head


@dataclass
class HeadModel:
    seed: int
    rng: np.random.Generator = field(repr=False)
    # rigid placement: v = R @ (patient - origin)
    origin: np.ndarray = None
    R: np.ndarray = None
    # warp
    warp_k: np.ndarray = None
    warp_phi: np.ndarray = None
    warp_amp: np.ndarray = None
    p: dict = field(default_factory=dict)
    vessels: list = field(default_factory=list)
    # rounds of the WML volume fit's white-matter correction (lesions.build_wml); not a dataclass field
    WML_FIT_ROUNDS = 2

    # ----------------------------------------------------------------- construction
    @classmethod
    def random(cls, seed: int, *, origin=(0.0, 0.0, 0.0), rotate=True, warp_mm=4.0) -> "HeadModel":
        rng = np.random.default_rng([int(seed), 0x5EAD])
        m = cls(seed=int(seed), rng=rng)
        m._draw_placement(origin, rotate, warp_mm)
        s = rng.uniform(0.92, 1.07, 3) * rng.uniform(0.95, 1.05)
        vs = float(np.exp(rng.normal(np.log(1.05), 0.22)))  # ventricle scale (atrophy)
        vs = float(np.clip(vs, 0.7, 1.9))
        atrophy = float(np.clip((vs - 0.8) / 1.0, 0, 1))
        p = m.p
        p["scale"] = s
        p["vs"] = vs
        p["in_c"] = np.array([0.0, 4.0, 6.0])
        p["in_a"] = np.array([68.0, 86.0, 70.0]) * s
        p["skull"] = rng.uniform(5.0, 8.0)
        p["scalp"] = rng.uniform(4.0, 7.0)
        p["sa"] = 1.2 + 2.5 * atrophy + rng.uniform(0, 0.8)  # subarachnoid width
        p["gm"] = rng.uniform(2.5, 3.5)
        p["fold"] = rng.uniform(5.0, 9.0)
        p["sulc_w"] = 0.8 + 1.6 * atrophy + rng.uniform(0, 0.5)
        p["sulc_depth"] = rng.uniform(10.0, 16.0)
        p["fiss_w"] = 1.5 + 2.5 * atrophy
        nk = 7
        ks = rng.normal(size=(nk, 3))
        ks /= np.linalg.norm(ks, axis=1, keepdims=True)
        p["sulc_k"] = ks * (2 * np.pi / rng.uniform(28, 44, nk))[:, None]
        p["sulc_phi"] = rng.uniform(0, 2 * np.pi, nk)
        p["midline"] = rng.normal(0, 1.0)
        p["tent_z"] = rng.uniform(-12, -6)
        m._build_vessels()
        return m

    def _draw_placement(self, origin, rotate: bool, warp_mm: float) -> None:
        """Draw the rigid placement (``origin``, ``R``) and the smooth warp from ``self.rng``."""
        rng = self.rng
        self.origin = np.asarray(origin, float)
        if rotate:
            self.R = _rot(rng.normal(0, 4.0), rng.normal(0, 2.5), rng.normal(0, 3.0))
        else:
            self.R = np.eye(3)
        nw = 4
        dirs = rng.normal(size=(nw, 3))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        wl = rng.uniform(70, 160, nw)
        self.warp_k = dirs * (2 * np.pi / wl)[:, None]
        self.warp_phi = rng.uniform(0, 2 * np.pi, nw)
        amp = rng.normal(size=(nw, 3))
        amp *= (warp_mm / np.sqrt(nw)) / np.maximum(np.linalg.norm(amp, axis=1, keepdims=True), 1e-6)
        self.warp_amp = amp

    # ----------------------------------------------------------------- frames
    def patient_to_v(self, xyz) -> np.ndarray:
        return (np.asarray(xyz, float) - self.origin) @ self.R.T

    def v_to_patient(self, v) -> np.ndarray:
        return np.asarray(v, float) @ self.R + self.origin

    @property
    def warp_max(self) -> float:
        return float(np.linalg.norm(self.warp_amp, axis=1).sum())

    def warp(self, v):
        x, y, z = v
        ux, uy, uz = x.copy(), y.copy(), z.copy()
        for k, ph, a in zip(self.warp_k, self.warp_phi, self.warp_amp):
            w = np.sin(x * F32(k[0]) + y * F32(k[1]) + z * F32(k[2]) + F32(ph))
            ux += F32(a[0]) * w
            uy += F32(a[1]) * w
            uz += F32(a[2]) * w
        return [ux, uy, uz]

    def warp_point(self, v) -> np.ndarray:
        v = np.asarray(v, float)
        out = v.copy()
        for k, ph, a in zip(self.warp_k, self.warp_phi, self.warp_amp):
            out = out + a * np.sin(v @ k + ph)[..., None] if v.ndim > 1 else out + a * np.sin(v @ k + ph)
        return out

    def unwarp_point(self, u) -> np.ndarray:
        """v with warp(v) ≈ u (fixed-point iteration; the warp is small and smooth)."""
        u = np.asarray(u, float)
        v = u.copy()
        for _ in range(30):
            v = v - (self.warp_point(v) - u)
        return v

    # ----------------------------------------------------------------- pieces
    def base_z(self, x, y):
        """Skull-base floor height (anterior, middle and posterior fossae)."""
        ax = np.abs(x)
        mid = _sig((y + 20.0) / 9.0) * _sig((ax - 16.0) / 8.0)
        post = _sig((y - 16.0) / 9.0)
        b = -24.0 - 24.0 * mid
        return (b * (1.0 - post) - 62.0 * post).astype(F32)

    def tent_z(self, x, y):
        return (F32(self.p["tent_z"]) - F32(0.30) * np.abs(x) - F32(0.28) * (y - F32(20.0))).astype(F32)

    def _memo(self, name, fn, x, y, z):
        key = getattr(self, "_key", None)
        if key is None:
            return fn(x, y, z)
        cache = self.__dict__.setdefault("_cache", {})
        k = (key, name)
        if k not in cache:
            cache[k] = fn(x, y, z)
        return cache[k]

    def cavity_sd(self, x, y, z):
        return self._memo("cavity", self._cavity_sd, x, y, z)

    def _cavity_sd(self, x, y, z):
        p = self.p
        sd = ellipsoid_sd(x, y, z, p["in_c"], p["in_a"])
        return np.maximum(sd, self.base_z(x, y) - z)

    def sulc_field(self, x, y, z):
        """≈ distance (mm) to the nearest sulcal sheet: zero set of a random wave field."""
        p = self.p
        s = np.zeros(x.shape, F32)
        for k, ph in zip(p["sulc_k"], p["sulc_phi"]):
            s += np.cos(x * F32(k[0]) + y * F32(k[1]) + z * F32(k[2]) + F32(ph))
        g = float(np.linalg.norm(p["sulc_k"], axis=1).mean()) * np.sqrt(len(p["sulc_k"]) / 2.0)
        return np.abs(s) * F32(1.0 / g)

    def _near_surface(self, x, y, z, sd_b, depth, fn, far):
        """Evaluate ``fn`` only where the brain depth is below ``depth`` (elsewhere ``far``)."""
        sel = sd_b > F32(-depth)
        out = np.full(x.shape, F32(far), dtype=F32)
        if sel.all():
            return fn(x, y, z)
        if sel.any():
            out[sel] = fn(x[sel], y[sel], z[sel])
        return out

    # ----------------------------------------------------------------- layers
    def layers(self, ct_like: bool = True) -> Iterator[Layer]:
        p = self.p
        c, a = p["in_c"], p["in_a"]
        sk, sc = p["skull"], p["scalp"]
        big = (-200, -200, -260), (200, 200, 200)
        vs = p["vs"]

        def head_outer(x, y, z):
            lower = ellipsoid_sd(x, y, z, c + [0, -8, 0], a + sk + sc + [0, 8, 50])
            upper = ellipsoid_sd(x, y, z, c, a + sk + sc)
            return np.where(z > F32(c[2]), upper, np.minimum(upper, lower))

        def fat_sd(x, y, z):
            h = self._memo("head_outer", head_outer, x, y, z)
            return np.maximum(h + F32(1.2), -h - F32(1.2 + 0.35 * sc))

        yield Layer("scalp", *big, lambda x, y, z: self._memo("head_outer", head_outer, x, y, z))
        yield Layer("fat", *big, fat_sd)
        # skull vault and skull base block
        def skull_outer(x, y, z):
            upper = ellipsoid_sd(x, y, z, c, a + sk)
            base = ellipsoid_sd(x, y, z, c + [0, 6, -10], a + [sk - 6, sk - 2, sk + 30])
            return np.where(z > F32(c[2]), upper, np.minimum(upper, base))

        yield Layer("bone", *big, lambda x, y, z: self._memo("skull_outer", skull_outer, x, y, z))
        # below the skull base: soft tissue of face/neck/muscles
        def soft_sd(x, y, z):
            inside = self._memo("skull_outer", skull_outer, x, y, z) + F32(3.0)
            below = z - (self.base_z(x, y) - F32(5.0)) + F32(0.35) * np.abs(y + 40) * (y < -40)
            far = F32(sk + 3.0) - self.cavity_sd(x, y, z)
            return np.maximum(inside, np.minimum(below, far))

        yield Layer("soft", *big, soft_sd)
        # diploe (inner spongy bone) in the vault
        yield Layer("diploe", *big, lambda x, y, z: np.maximum(
            np.abs(ellipsoid_sd(x, y, z, c, a + sk / 2)) - F32(sk * 0.22), self.base_z(x, y) - z - F32(2.0)))
        # air: frontal sinus, sphenoid sinus, mastoids, orbits (fat + globe)
        fy = c[1] - a[1] - sk * 0.5 + 1.5
        yield Layer("bone", (-30, -120, -45), (30, -50, 10),
                    lambda x, y, z: ellipsoid_sd(x, y, z, (0, fy, -20), (20, sk * 0.5 + 3, 15)))
        yield Layer("air", (-25, -120, -40), (25, -50, 10),
                    lambda x, y, z: ellipsoid_sd(x, y, z, (0, fy, -20), (14, sk * 0.5 + 1, 10)))
        yield Layer("air", (-20, -40, -75), (20, 10, -20),
                    lambda x, y, z: ellipsoid_sd(x, y, z, (0, -15, -47), (12, 11, 9)))
        yield Layer("air", (-20, -120, -100), (20, -40, -20),
                    lambda x, y, z: ellipsoid_sd(x, y, z, (0, -78, -62), (9, 24, 16)))  # nasal cavity
        for sx in (-1, 1):
            yield Layer("air", (sx * 22 - 20, -90, -95), (sx * 22 + 20, -40, -40),
                        lambda x, y, z, sx=sx: ellipsoid_sd(x, y, z, (sx * 23, -64, -68), (12, 14, 14)))  # maxillary
            yield Layer("air", (sx * 60 - 25, -10, -80), (sx * 60 + 25, 50, -20),
                        lambda x, y, z, sx=sx: ellipsoid_sd(x, y, z, (sx * 52, 22, -52), (9, 10, 10)))
            yield Layer("orbitfat", (sx * 32 - 25, -120, -70), (sx * 32 + 25, -40, -10),
                        lambda x, y, z, sx=sx: ellipsoid_sd(x, y, z, (sx * 32, -70, -38), (17, 22, 16)))
            yield Layer("globe", (sx * 32 - 20, -120, -60), (sx * 32 + 20, -60, -20),
                        lambda x, y, z, sx=sx: ellipsoid_sd(x, y, z, (sx * 33, -82, -38), (12, 12, 12)))
        # cranial cavity (CSF), then brain
        yield Layer("csf", *big, self.cavity_sd)
        sa = p["sa"]

        def brain_sd(x, y, z):
            return self._memo("brain", lambda x, y, z: self.cavity_sd(x, y, z) + F32(sa), x, y, z)

        yield Layer("gm", *big, brain_sd)

        gmax = p["gm"] + p["fold"] + 2.0

        def wm_sd(x, y, z):
            sd_b = brain_sd(x, y, z)
            sf = self._memo("sulc", lambda x, y, z: self._near_surface(x, y, z, sd_b, p["sulc_depth"] + 2, self.sulc_field,
                                                                        50.0), x, y, z)
            depth = F32(p["gm"]) + F32(p["fold"]) * (F32(0.35) + F32(0.65) * np.exp(-(sf * F32(1 / 5.0)) ** 2))
            return sd_b + depth

        yield Layer("wm", *big, wm_sd)

        # sulci
        def sulc_sd(x, y, z):
            sd_b = brain_sd(x, y, z)
            sf = self._memo("sulc", lambda x, y, z: self._near_surface(x, y, z, sd_b, p["sulc_depth"] + 2, self.sulc_field,
                                                                        50.0), x, y, z)
            return np.maximum.reduce([sf - F32(p["sulc_w"] / 2), -sd_b - F32(p["sulc_depth"]), sd_b - F32(0.5)])

        yield Layer("csf", *big, sulc_sd)
        # Sylvian fissures
        for sx in (-1, 1):
            yield Layer("csf", (sx * 55 - 30, -30, -30), (sx * 55 + 30, 40, 20),
                        lambda x, y, z, sx=sx: np.maximum.reduce([
                            np.abs(z - (F32(-6.0) + F32(0.7) * (y - F32(5.0)) + F32(3.0) * np.sin(x * F32(0.15))))
                            * F32(0.82) - F32(0.8 + p["sulc_w"] / 2),
                            F32(34.0) - x * F32(sx),
                            ellipsoid_sd(x, y, z, (sx * 50, 5, -6), (30, 24, 18)), brain_sd(x, y, z) - 1]))
        # interhemispheric fissure and falx (excluding the callosal / diencephalic block)
        ml = F32(p["midline"])

        def fiss_sd(x, y, z, w):
            return np.maximum.reduce([np.abs(x - ml) - F32(w / 2),
                                      -ellipsoid_sd(x, y, z, (0, 0, -4), (26, 38, 25)),
                                      self.cavity_sd(x, y, z)])

        yield Layer("csf", (-10, -120, -80), (10, 120, 100), lambda x, y, z: fiss_sd(x, y, z, p["fiss_w"]))
        yield Layer("falx", (-10, -120, -80), (10, 120, 100), lambda x, y, z: fiss_sd(x, y, z, 0.7), 0.6)
        # posterior fossa: tentorium gap, cerebellum, brainstem, 4th ventricle
        yield Layer("csf", (-80, 0, -90), (80, 110, 30), lambda x, y, z: np.maximum.reduce([
            np.abs(z - self.tent_z(x, y)) - F32(0.4 + sa / 4), F32(4.0) - y, self.cavity_sd(x, y, z)]))

        def cbl_sd(x, y, z):
            return np.maximum.reduce([z - self.tent_z(x, y) + F32(0.4 + sa / 4), F32(4.0) - y,
                                      brain_sd(x, y, z), np.abs(x) - F32(58) + F32(0.0)])

        yield Layer("cbl", (-80, 0, -90), (80, 110, 30), cbl_sd)
        yield Layer("csf", (-6, 20, -90), (6, 110, -10), lambda x, y, z: np.maximum(cbl_sd(x, y, z) - 30,
                                                                                   np.abs(x) - F32(0.6 + sa / 2)))
        for sx in (-1, 1):
            yield Layer("wm", (sx * 18 - 20, 15, -70), (sx * 18 + 20, 70, -20),
                        lambda x, y, z, sx=sx: np.maximum(ellipsoid_sd(x, y, z, (sx * 17, 40, -44), (11, 9, 7)), cbl_sd(x, y, z)))
            yield Layer("dentate", (sx * 14 - 10, 25, -60), (sx * 14 + 10, 55, -30),
                        lambda x, y, z, sx=sx: ellipsoid_sd(x, y, z, (sx * 14, 40, -44), (4.0, 5.5, 4.0)))
        yield Layer("stem", (-20, -10, -100), (20, 40, 0),
                    lambda x, y, z: np.minimum(capsule_sd(x, y, z, (0, 16, -8), (0, 24, -95), 11.0),
                                               ellipsoid_sd(x, y, z, (0, 12, -40), (15, 12, 12))))
        yield Layer("csf", (-12, 20, -60), (12, 50, -25),
                    lambda x, y, z: ellipsoid_sd(x, y, z, (0, 33, -42), (6.5, 4.0, 7.0)))
        for sx in (-1, 1):
            yield Layer("rednuc", (sx * 4 - 6, 0, -20), (sx * 4 + 6, 16, -4),
                        lambda x, y, z, sx=sx: ellipsoid_sd(x, y, z, (sx * 4.0, 8.0, -12.0), (2.8, 3.2, 3.2)))
            yield Layer("nigra", (sx * 9 - 6, -6, -22), (sx * 9 + 6, 14, -6),
                        lambda x, y, z, sx=sx: ellipsoid_sd(x, y, z, (sx * 8.5, 4.0, -14.0), (2.0, 5.0, 2.2),
                                                            _rot(0, 0, sx * 25)))
        # deep grey matter
        for sx in (-1, 1):
            yield Layer("dgm", (sx * 14 - 12, -35, -10), (sx * 14 + 12, 0, 25),
                        lambda x, y, z, sx=sx: ellipsoid_sd(x, y, z, (sx * (1.2 + 7 * vs + 4), -17, 8), (5, 9, 8)))
            yield Layer("dgm", (sx * 12 - 10, -15, 10), (sx * 12 + 10, 30, 30),
                        lambda x, y, z, sx=sx: ellipsoid_sd(x, y, z, (sx * (1.2 + 8 * vs + 2), 4, 19), (2.4, 16, 3)))
            yield Layer("putamen", (sx * 27 - 12, -25, -15), (sx * 27 + 12, 20, 15),
                        lambda x, y, z, sx=sx: ellipsoid_sd(x, y, z, (sx * 27, -2, 1), (4.5, 13, 9), _rot(0, 0, sx * 10)))
            yield Layer("gp", (sx * 21 - 8, -12, -12), (sx * 21 + 8, 12, 10),
                        lambda x, y, z, sx=sx: ellipsoid_sd(x, y, z, (sx * 21.5, 0, -1), (3.0, 8.0, 6.0)))
            yield Layer("thal", (sx * 9 - 12, -2, -10), (sx * 9 + 12, 30, 18),
                        lambda x, y, z, sx=sx: ellipsoid_sd(x, y, z, (sx * 8.7, 15, 4), (6.5, 12, 9)))
        # ventricles
        for sx in (-1, 1):
            for cc, aa in self._lateral_ventricle(sx):
                lo = np.asarray(cc) - np.max(aa) - 2
                hi = np.asarray(cc) + np.max(aa) + 2
                yield Layer("csf", lo, hi, lambda x, y, z, cc=cc, aa=aa: ellipsoid_sd(x, y, z, cc, aa))
            # choroid plexus glomus in the atrium
            yield Layer("chp", (sx * 18 - 8, 18, 0), (sx * 18 + 8, 36, 16),
                        lambda x, y, z, sx=sx: ellipsoid_sd(x, y, z, (sx * (1.2 + 4 * vs + 8), 27, 8), (2.5, 4, 2.5)))
        yield Layer("csf", (-8, -15, -15), (8, 25, 15),
                    lambda x, y, z: ellipsoid_sd(x, y, z, (0, 4, 0), (1.2 + 0.9 * vs, 13, 10)))
        # vessels last (they run over everything)
        yield from self.vessel_layers()
        self.__dict__.pop("_cache", None)

    def vessel_layers(self) -> Iterator[Layer]:
        """One capsule layer per vessel segment (keys: the vessel kinds)."""
        for vsl in self.vessels:
            pts = vsl.points
            key = vsl.kind
            for a0, b0 in zip(pts[:-1], pts[1:]):
                lo = np.minimum(a0, b0) - vsl.radius - 1
                hi = np.maximum(a0, b0) + vsl.radius + 1
                yield Layer(key, lo, hi, lambda x, y, z, a0=a0, b0=b0, r=vsl.radius: capsule_sd(x, y, z, a0, b0, r), 0.6)

    def _lateral_ventricle(self, sx):
        vs = self.p["vs"]
        e = vs ** 0.6
        return [
            ((sx * (1.2 + 4 * vs), 0, 16), (4 * vs, 24, 5.5 * e)),  # body
            ((sx * (1.2 + 3.5 * vs), -22, 10), (3.5 * vs, 11, 8 * e)),  # frontal horn
            ((sx * (1.2 + 4 * vs + 7), 26, 8), (6 * vs, 12, 7 * e)),  # atrium
            ((sx * (1.2 + 4 * vs + 6), 40, 8), (3 * vs, 10, 3.5 * e)),  # occipital horn
            ((sx * 27, 16, -6), (3.5 * e, 7, 10)),  # trigone → temporal
            ((sx * 30, 2, -20), (3.0 * e, 14, 3.5 * e)),  # temporal horn
        ]

    def sites(self) -> dict:
        """Model-frame (u) anchors of the lesion and mimic models; lateral ones keyed by side ``sx`` (±1).

        ``frontal_tip`` / ``occipital_tip``: periventricular cap centres at the frontal horn and the
        atrium; ``glomus``: choroid plexus; ``pineal``; ``pallidum``; ``periventricular_box``: (lo, hi)
        bounding the periventricular caps and bands.
        """
        vs = self.p["vs"]
        return {
            "frontal_tip": {sx: (sx * (1.2 + 3.5 * vs), -33.0, 10.0) for sx in (-1, 1)},
            "occipital_tip": {sx: (sx * (1.2 + 4 * vs + 7), 38.0, 8.0) for sx in (-1, 1)},
            "glomus": {sx: (sx * (1.2 + 4 * vs + 8), 27, 8.0) for sx in (-1, 1)},
            "pineal": (0, 27, 4.0),
            "pallidum": {sx: (sx * 21.5, 0, -1.0) for sx in (-1, 1)},
            "periventricular_box": ((-8 - 12 * vs - 16, -45, -8), (8 + 12 * vs + 16, 58, 36)),
        }

    def ventricle_sd(self, x, y, z):
        sd = None
        for sx in (-1, 1):
            for cc, aa in self._lateral_ventricle(sx)[:4]:
                d = ellipsoid_sd(x, y, z, cc, aa)
                sd = d if sd is None else np.minimum(sd, d)
        return sd

    # ----------------------------------------------------------------- vessels
    def _build_vessels(self):
        rng = self.rng
        p = self.p
        c, a = p["in_c"], p["in_a"]
        V = []
        # superior sagittal sinus along the inner table in the midline
        phis = np.radians(np.linspace(25, 212, 24))
        pts = np.stack([np.zeros_like(phis), c[1] - (a[1] - 4) * np.cos(phis), c[2] + (a[2] - 4) * np.sin(phis)], 1)
        V.append(Vessel("sinus", pts, rng.uniform(2.8, 3.8)))
        torc = pts[-1]
        # transverse + sigmoid sinuses
        for sx in (-1, 1):
            th = np.radians(np.linspace(0, 70, 8))
            tp = np.stack([sx * (a[0] - 5) * np.sin(th), c[1] + (a[1] - 5) * np.cos(th) * 0.93, np.full_like(th, torc[2])], 1)
            tp = np.vstack([tp, tp[-1] + [sx * 2, -10, -12], tp[-1] + [sx * 2, -14, -28]])
            V.append(Vessel("sinus", tp, rng.uniform(2.5, 3.5)))
        # straight sinus, vein of Galen, internal cerebral veins
        galen = np.array([0.0, 24.0, 8.0])
        V.append(Vessel("sinus", np.stack([galen, torc]), rng.uniform(2.0, 2.8)))
        for sx in (-1, 1):
            V.append(Vessel("vein", np.array([[sx * 2.2, -6, 12], [sx * 2.2, 10, 11], [sx * 1.0, 20, 9], galen]), 1.3))
            # basal vein of Rosenthal
            V.append(Vessel("vein", np.array([[sx * 22, -6, -14], [sx * 16, 10, -10], [sx * 8, 20, 0], galen]), 1.1))
        # cortical veins running up the convexity towards the SSS
        sa = p["sa"]
        for _ in range(int(rng.integers(8, 15))):
            alpha = rng.uniform(0, 2 * np.pi)
            e0 = rng.uniform(-0.1, 0.5)
            es = np.linspace(e0, 1.35, 10)
            rr = 1 - (sa * 0.5 + 0.5) / a.mean()
            pts = np.stack([(a[0]) * rr * np.cos(es) * np.sin(alpha),
                            c[1] - (a[1]) * rr * np.cos(es) * np.cos(alpha),
                            c[2] + (a[2]) * rr * np.sin(es)], 1)
            pts[:, 0] *= np.where(np.abs(pts[:, 0]) < 4, 0, 1)
            pts += rng.normal(0, 1.5, pts.shape) * [1, 1, 0.5]
            pts = pts[np.abs(pts[:, 0]) > 3]
            if len(pts) > 2:
                V.append(Vessel("vein", pts, rng.uniform(0.7, 1.4)))
        # medullary veins radiating from the lateral ventricles through white matter
        vs = p["vs"]
        for _ in range(int(rng.integers(60, 120))):
            sx = rng.choice([-1, 1])
            y0 = rng.uniform(-28, 30)
            z0 = rng.uniform(8, 24)
            start = np.array([sx * (1.2 + 8 * vs + 0.5), y0, z0])
            d = np.array([sx * 1.0, rng.normal(0, 0.35) + 0.25 * np.sign(y0) * abs(y0) / 30, rng.uniform(0.1, 0.9)])
            d /= np.linalg.norm(d)
            L = rng.uniform(18, 40)
            mid = start + d * L * 0.5 + rng.normal(0, 1.2, 3)
            V.append(Vessel("medullary", np.stack([start, mid, start + d * L]), rng.uniform(0.4, 0.7)))
        # arteries (visible on contrast CT): ICA, MCA, ACA, basilar, PCA
        for sx in (-1, 1):
            V.append(Vessel("artery", np.array([[sx * 15, -8, -60], [sx * 13, -10, -38], [sx * 6, -8, -24]]), 2.0))
            V.append(Vessel("artery", np.array([[sx * 6, -8, -24], [sx * 24, -5, -20], [sx * 38, 2, -12], [sx * 44, 8, 2],
                                                [sx * 50, 14, 20]]), 1.6))
            V.append(Vessel("artery", np.array([[sx * 6, -8, -24], [sx * 2, -22, -18], [sx * 2, -36, 0], [sx * 2, -28, 24],
                                                [sx * 2, 0, 30], [sx * 2, 25, 26]]), 1.2))
            V.append(Vessel("artery", np.array([[0, 6, -26], [sx * 12, 10, -24], [sx * 22, 24, -16], [sx * 24, 50, -6]]), 1.3))
        V.append(Vessel("artery", np.array([[0, 14, -90], [0, 8, -60], [0, 6, -26]]), 1.8))
        self.vessels = V

    # ----------------------------------------------------------------- painting
    def paint(self, pts, values: dict, default: float | None = None, *, edge: float = 0.8,
              skip: tuple = (), only_box=None):
        """Composite all layers into a float32 array (shape of the point arrays)."""
        u = pts.u
        self.__dict__.pop("_cache", None)
        out = np.full(u[0].shape, F32(values.get("air", default or 0.0)), dtype=F32)
        margin = self.warp_max + 0.5
        for L in self.layers():
            if L.key in skip:
                continue
            V = values.get(L.key, default)
            if V is None:
                continue
            sl = pts.box(L.lo, L.hi, margin)
            if sl is None:
                continue
            x, y, z = u[0][sl], u[1][sl], u[2][sl]
            if x.size == 0:
                continue
            self._key = (id(pts), repr(sl))
            s = _soft(L.fn(x, y, z), L.edge or edge)
            self._key = None
            if not s.any():
                continue
            o = out[sl]
            o += (F32(V) - o) * s
            out[sl] = o
        return out

    def label(self, u_points: np.ndarray) -> np.ndarray:
        """Hard tissue label (layer key) at model-frame *warped* points (n, 3)."""
        u_points = np.atleast_2d(np.asarray(u_points, float))
        pts = Points([u_points[:, 0], u_points[:, 1], u_points[:, 2]])
        lab = np.full(len(u_points), "air", dtype=object)
        for L in self.layers():
            s = _soft(L.fn(*pts.u), L.edge or 0.8)
            lab[s >= 0.5] = L.key
        return lab

    def fraction(self, pts, keys: tuple[str, ...], edge: float = 0.8) -> np.ndarray:
        vals = {k: 1.0 for k in keys}
        vals["air"] = 0.0
        return self.paint(pts, vals, default=0.0, edge=edge)


def _rot(rx, ry, rz):
    from .geometry import rotation_xyz

    return rotation_xyz(rx, ry, rz)

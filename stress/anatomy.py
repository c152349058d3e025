"""Independent head anatomy on a 1 mm world grid (head frame, LPS-oriented, mm).

Built from signed-distance fields of deformed superquadrics and capsules, with
fractal (power-law spectrum) displacement of the cortex, sulci carved along the
zero sheets of a band-passed random field, ventricles swept along curved
centrelines, and a B-spline random displacement field applied to every
coordinate. ``atrophy`` (0..1) widens sulci, the subarachnoid space, the
interhemispheric and Sylvian fissures and the ventricles, and thins the cortex.

Nothing here imports ``svdmark_phantom`` or ``training``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

# labels (uint8)
AIR, SOFT, FAT, BONE, DIPLOE, SAS, VENT, GM, WM = 0, 1, 2, 3, 4, 5, 6, 7, 8
CAUDATE, PUTAMEN, PALLIDUM, THALAMUS, CBL_GM, CBL_WM, STEM = 9, 10, 11, 12, 13, 14, 15
SINUS_AIR, ORBIT_FAT, GLOBE, DURA, CHOROID = 16, 17, 18, 19, 20
LACUNE, INFARCT, CALC, WML, VEIN, CMB = 21, 22, 23, 24, 25, 26

LABEL_NAMES = {
    AIR: "air", SOFT: "soft tissue", FAT: "fat", BONE: "bone", DIPLOE: "diploe", SAS: "subarachnoid CSF",
    VENT: "ventricle", GM: "cortex", WM: "white matter", CAUDATE: "caudate", PUTAMEN: "putamen",
    PALLIDUM: "pallidum", THALAMUS: "thalamus", CBL_GM: "cerebellar cortex", CBL_WM: "cerebellar WM",
    STEM: "brainstem", SINUS_AIR: "sinus/mastoid air", ORBIT_FAT: "orbital fat", GLOBE: "globe",
    DURA: "falx/tentorium", CHOROID: "choroid plexus", LACUNE: "lacune", INFARCT: "old infarct",
    CALC: "calcification", WML: "WML", VEIN: "vein", CMB: "microbleed",
}
DEEP_GREY = (CAUDATE, PUTAMEN, PALLIDUM, THALAMUS)
BRAIN = (GM, WM, CAUDATE, PUTAMEN, PALLIDUM, THALAMUS, CBL_GM, CBL_WM, STEM, LACUNE, INFARCT, WML)


@dataclass
class WorldGrid:
    """Axis-aligned grid in the head frame; array index order (x, y, z)."""

    origin: np.ndarray  # mm of voxel (0,0,0)
    h: float
    shape: tuple[int, int, int]

    @classmethod
    def default(cls, h: float = 1.0) -> "WorldGrid":
        lo = np.array([-92.0, -116.0, -86.0])
        hi = np.array([92.0, 112.0, 94.0])
        shape = tuple(int(round(v)) + 1 for v in (hi - lo) / h)
        return cls(lo, h, shape)  # type: ignore[arg-type]

    def axes(self):
        return [self.origin[d] + self.h * np.arange(self.shape[d], dtype=np.float32) for d in range(3)]

    def to_index(self, xyz: np.ndarray) -> np.ndarray:
        return (np.asarray(xyz, float) - self.origin) / self.h


# --------------------------------------------------------------------------- random fields


def spectral_field(rng: np.random.Generator, shape, h: float, beta: float, lo_mm: float, hi_mm: float) -> np.ndarray:
    """Zero-mean unit-SD field with power spectrum ~ f^-beta between wavelengths hi_mm and lo_mm."""
    white = rng.standard_normal(shape).astype(np.float32)
    F = np.fft.rfftn(white)
    freqs = [np.fft.fftfreq(n, d=h) for n in shape[:-1]] + [np.fft.rfftfreq(shape[-1], d=h)]
    f2 = np.zeros(F.shape, np.float32)
    for d, fr in enumerate(freqs):
        sh = [1] * len(shape)
        sh[d] = -1
        f2 = f2 + (fr.astype(np.float32) ** 2).reshape(sh)
    f = np.sqrt(f2)
    f[f == 0] = 1e-6
    band = 1.0 / (1.0 + np.exp(-(f - 1.0 / hi_mm) * hi_mm * 8)) * 1.0 / (1.0 + np.exp((f - 1.0 / lo_mm) * lo_mm * 8))
    F *= (f ** (-beta / 2.0)) * band
    out = np.fft.irfftn(F, s=shape, axes=tuple(range(len(shape)))).astype(np.float32)
    out -= out.mean()
    sd = out.std()
    return out / (sd if sd > 0 else 1.0)


def coarse_field(rng, grid: WorldGrid, step_mm: float, beta: float, lo_mm: float, hi_mm: float) -> np.ndarray:
    """A spectral field made on a coarser grid and trilinearly enlarged to ``grid``."""
    f = max(1, int(round(step_mm / grid.h)))
    cshape = tuple(int(np.ceil(n / f)) + 1 for n in grid.shape)
    small = spectral_field(rng, cshape, grid.h * f, beta, lo_mm, hi_mm)
    idx = [np.arange(n, dtype=np.float32) / f for n in grid.shape]
    return _trilinear_separable(small, idx)


def _trilinear_separable(small: np.ndarray, idx) -> np.ndarray:
    """Separable linear interpolation of ``small`` at index vectors ``idx`` (one per axis)."""
    out = small
    for d, q in enumerate(idx):
        i0 = np.clip(np.floor(q).astype(int), 0, out.shape[d] - 2)
        w = (q - i0).astype(np.float32)
        a = np.take(out, i0, axis=d)
        b = np.take(out, i0 + 1, axis=d)
        sh = [1] * 3
        sh[d] = -1
        w = w.reshape(sh)
        out = a * (1 - w) + b * w
    return out.astype(np.float32)


def bspline_displacement(rng, grid: WorldGrid, spacing_mm: float, sd_mm: float) -> list[np.ndarray]:
    """Cubic B-spline interpolated random displacement (three components, mm)."""
    ctrl = tuple(int(np.ceil(n * grid.h / spacing_mm)) + 4 for n in grid.shape)
    mid_h = 4.0  # cubic B-spline onto a 4 mm grid, then linear to the world grid
    mid = tuple(int(np.ceil(n * grid.h / mid_h)) + 2 for n in grid.shape)
    comps = []
    for _ in range(3):
        c = rng.normal(0.0, sd_mm, ctrl).astype(np.float32)
        coords = np.meshgrid(*[np.arange(m, dtype=np.float32) * mid_h / spacing_mm + 1.5 for m in mid], indexing="ij")
        up = ndi.map_coordinates(c, coords, order=3, mode="nearest").astype(np.float32)
        idx = [np.arange(n, dtype=np.float32) * grid.h / mid_h for n in grid.shape]
        comps.append(_trilinear_separable(up, idx))
    return comps


# --------------------------------------------------------------------------- SDF primitives


def sd_superquadric(x, y, z, c, axes, p):
    qx = np.abs(x - c[0]) / axes[0]
    qy = np.abs(y - c[1]) / axes[1]
    qz = np.abs(z - c[2]) / axes[2]
    g = (qx ** p + qy ** p + qz ** p) ** (1.0 / p)
    r = np.sqrt((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2)
    return (r * (1.0 - 1.0 / np.maximum(g, 1e-3))).astype(np.float32)


def sd_ellipsoid(x, y, z, c, axes):
    return sd_superquadric(x, y, z, c, axes, 2.0)


def sd_capsule(x, y, z, a, b, r):
    a = np.asarray(a, np.float32)
    b = np.asarray(b, np.float32)
    ab = b - a
    px, py, pz = x - a[0], y - a[1], z - a[2]
    t = np.clip((px * ab[0] + py * ab[1] + pz * ab[2]) / float(ab @ ab), 0.0, 1.0)
    dx, dy, dz = px - t * ab[0], py - t * ab[1], pz - t * ab[2]
    return (np.sqrt(dx * dx + dy * dy + dz * dz) - r).astype(np.float32)


def smin(a, b, k):
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b * (1 - h) + a * h - k * h * (1 - h)


def swept_tube(x, y, z, pts, radii, squash=(1.0, 1.0, 1.0)):
    """SDF (approx.) of spheres of varying radius densely swept along a polyline."""
    pts = np.asarray(pts, float)
    radii = np.asarray(radii, float)
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    s = np.concatenate([[0], np.cumsum(seg)])
    ss = np.linspace(0, s[-1], max(8, int(s[-1] / 1.0)))
    P = np.stack([np.interp(ss, s, pts[:, d]) for d in range(3)], 1)
    R = np.interp(ss, s, radii)
    out = np.full(x.shape, 1e3, np.float32)
    sx, sy, sz = squash
    for p, r in zip(P, R):
        d = np.sqrt(((x - p[0]) / sx) ** 2 + ((y - p[1]) / sy) ** 2 + ((z - p[2]) / sz) ** 2) - r
        np.minimum(out, d, out=out)
    return out


def box(grid: "WorldGrid", center, extent, margin: float = 15.0):
    """Index slices of the world grid covering center +- (extent + margin) mm."""
    c = np.asarray(center, float)
    e = np.asarray(extent, float) + margin
    out = []
    for d in range(3):
        lo = int(np.floor((c[d] - e[d] - grid.origin[d]) / grid.h))
        hi = int(np.ceil((c[d] + e[d] - grid.origin[d]) / grid.h)) + 1
        out.append(slice(max(lo, 0), min(max(hi, 0), grid.shape[d])))
    return tuple(out)


# --------------------------------------------------------------------------- head


@dataclass
class Head:
    grid: WorldGrid
    labels: np.ndarray  # uint8 (x, y, z)
    sd_cavity: np.ndarray  # signed distance to inner table, mm (negative inside)
    atrophy: float
    params: dict = field(default_factory=dict)
    landmarks: dict = field(default_factory=dict)  # named points (head frame mm)

    def mask(self, *labels) -> np.ndarray:
        return np.isin(self.labels, labels)

    def voxel_mm(self, ijk) -> np.ndarray:
        return self.grid.origin + self.grid.h * np.asarray(ijk, float)


def build_head(rng: np.random.Generator, atrophy: float, grid: WorldGrid | None = None) -> Head:
    grid = grid or WorldGrid.default()
    ax, ay, az = grid.axes()
    X, Y, Z = np.meshgrid(ax, ay, az, indexing="ij")
    # global random displacement (B-spline control points every 28-40 mm)
    u = bspline_displacement(rng, grid, rng.uniform(28, 40), rng.uniform(2.0, 4.5))
    Xw, Yw, Zw = X + u[0], Y + u[1], Z + u[2]
    del u
    s = rng.uniform(0.92, 1.07, 3)
    p_exp = rng.uniform(2.25, 2.9)

    # ---------------- cranial cavity
    cer = sd_superquadric(Xw, Yw, Zw, (0, 4, 12), (67 * s[0], 85 * s[1], 60 * s[2]), p_exp)
    pf = sd_ellipsoid(Xw, Yw, Zw, (0, 36 * s[1], -36 * s[2]), (50 * s[0], 31 * s[1], 25 * s[2]))
    cav = smin(cer, pf, 9.0)
    for side in (-1, 1):
        tl = sd_ellipsoid(Xw, Yw, Zw, (side * 41 * s[0], -8, -22 * s[2]), (21 * s[0], 33 * s[1], 19 * s[2]))
        cav = smin(cav, tl, 7.0)
    z_floor = -20.0 * s[2] - 48.0 / (1.0 + np.exp(-(Yw + 38.0) / 6.0))
    cav = np.maximum(cav, (z_floor - Zw).astype(np.float32))
    inner_rough = coarse_field(rng, grid, 2.0, 2.6, 3.0, 60.0)
    cav = (cav + 0.7 * inner_rough).astype(np.float32)
    del cer, pf, inner_rough

    labels = np.zeros(grid.shape, np.uint8)
    # face / neck soft tissue block below the cavity
    neck = sd_ellipsoid(Xw, Yw, Zw, (0, -8, -72), (60 * s[0], 86 * s[1], 48))
    labels[neck < 0] = SOFT
    # skull and scalp shells
    t_skull = (5.5 + 1.5 * coarse_field(rng, grid, 4.0, 2.0, 10.0, 80.0)
               + 6.0 / (1.0 + np.exp((Zw + 18.0) / 5.0))).astype(np.float32)
    t_skull = np.clip(t_skull, 3.0, 16.0)
    t_scalp = 5.0 + rng.uniform(-1, 2)
    labels[(cav >= 0) & (cav < t_skull + t_scalp)] = SOFT
    bone = (cav >= 0) & (cav < t_skull)
    labels[bone] = BONE
    labels[bone & (cav > 0.3 * t_skull) & (cav < 0.72 * t_skull) & (t_skull > 4.5)] = DIPLOE
    # skull base: petrous ridges, clivus
    base_bone = np.zeros(grid.shape, bool)
    b = box(grid, (0, 6, -48), (8, 10, 20))
    base_bone[b] = sd_capsule(Xw[b], Yw[b], Zw[b], (0, -2, -30 * s[2]), (0, 14, -66), 7.0) < 0  # clivus
    cells = coarse_field(rng, grid, 2.0, 1.0, 2.0, 8.0)

    def paint(center, axes, value, p=2.0, field=None, cond=None):
        b = box(grid, center, axes)
        m = sd_superquadric(Xw[b], Yw[b], Zw[b], center, axes, p) < 0
        if field is not None:
            m &= cond(field[b])
        labels[b][m] = value

    for side in (-1, 1):
        a, e = (side * 16, 10 * s[1], -36 * s[2]), (side * 50 * s[0], 28 * s[1], -33 * s[2])
        b = box(grid, (np.add(a, e)) / 2, np.abs(np.subtract(e, a)) / 2 + 8)
        base_bone[b] |= sd_capsule(Xw[b], Yw[b], Zw[b], a, e, rng.uniform(5.5, 7.5)) < 0  # petrous ridge
        mc = (side * 50 * s[0], 30 * s[1], -46 * s[2])
        paint(mc, (9, 10, 10), SINUS_AIR, field=cells, cond=lambda f, sd=side: sd * f > 0.2)
        paint(mc, (9, 10, 10), BONE, field=cells, cond=lambda f, sd=side: sd * f <= 0.2)
    del cells
    # paranasal sinuses and orbits
    paint((0, -18, -40 * s[2]), (13, 12, 9), SINUS_AIR)
    paint((0, -82 * s[1] - 4, 4), (15, 5, 11), SINUS_AIR)
    for side in (-1, 1):
        paint((side * 31, -68 * s[1], -34 * s[2]), (17, 19, 16), ORBIT_FAT)
        paint((side * 31, -76 * s[1], -34 * s[2]), (11.5, 11.5, 11.5), GLOBE)
        paint((side * 24, -56 * s[1], -68), (13, 15, 16), SINUS_AIR)
    del neck

    # ---------------- brain surface and CSF spaces
    inside = cav < 0
    labels[inside] = SAS
    t_sas = (1.0 + 3.8 * atrophy + (0.6 + 1.0 * atrophy) * coarse_field(rng, grid, 2.0, 2.2, 4.0, 50.0)).astype(np.float32)
    t_sas += 1.5 * atrophy / (1.0 + np.exp((Yw + 30) / 10))  # frontal-predominant atrophy
    brain_sd = cav + np.maximum(t_sas, 0.4)
    depth = -brain_sd
    brain = brain_sd < 0
    # tentorium (roof of the posterior fossa)
    z_tent = (-16.0 * s[2] - 0.32 * (Yw - 18.0)).astype(np.float32)
    infra = (Zw < z_tent) & (Yw > 4)
    # sulci: zero sheets of a band-passed field, tapering with depth
    S = coarse_field(rng, grid, 1.0, 0.5, 8.0, 26.0)
    dmax = (13.0 + 4.0 * coarse_field(rng, grid, 4.0, 2.0, 12.0, 60.0) + 4.0 * atrophy).astype(np.float32)
    w_s = 0.22 + 0.32 * atrophy
    sulcus = (np.abs(S) < w_s * np.clip(1.2 - depth / np.maximum(dmax, 4.0), 0.0, 1.0) + 0.04) & (depth < dmax) & ~infra
    del S, dmax
    # cerebellar folia: finer, shallower
    F = coarse_field(rng, grid, 1.0, 0.3, 2.5, 7.0)
    folia = (np.abs(F) < 0.08 + 0.15 * atrophy) & (depth < 7.0) & infra
    del F
    # interhemispheric fissure (above the callosum in the body, full depth front and back)
    xm = (1.5 * np.sin(Yw / 38.0 + rng.uniform(0, 6.28)) + 0.8 * np.sin(Zw / 23.0 + rng.uniform(0, 6.28))).astype(np.float32)
    w_ih = 0.9 + 2.6 * atrophy
    z_cc = 26.0 * s[2] - 95.0 / (1.0 + np.exp(-(np.abs(Yw - 4) - 38.0 * s[1]) / 4.0))
    ihf = (np.abs(Xw - xm) < w_ih) & (Zw > z_cc) & ~infra
    falx = (np.abs(Xw - xm) < 0.55) & (Zw > z_cc + 3) & inside & ~infra
    # Sylvian fissures
    syl = np.zeros(grid.shape, bool)
    for side in (-1, 1):
        zs = -6.0 + 0.22 * (Yw + 10) + 2.0 * np.sin(Yw / 17.0 + side)
        syl |= (np.abs(Zw - zs) < 1.0 + 3.2 * atrophy) & (side * Xw > 26) & (Yw > -32) & (Yw < 30) & (depth < 24)
    brain &= ~(sulcus | folia | ihf | syl)
    del sulcus, folia, ihf, syl, xm, z_cc
    tent = inside & (np.abs(Zw - z_tent) < 0.6) & (np.abs(Xw) > 4) & (Yw > 10)
    brain &= ~(np.abs(Zw - z_tent) < 0.9 + 1.2 * atrophy) | ~(Yw > 6)

    labels[brain] = WM
    # cortex: within cortical thickness of any CSF
    dist_csf = ndi.distance_transform_edt(brain, sampling=grid.h).astype(np.float32)
    ct = 2.9 - 0.6 * atrophy + 0.4 * rng.standard_normal()
    labels[brain & (dist_csf <= max(1.8, ct))] = GM
    cbl = brain & infra
    labels[cbl] = CBL_GM
    labels[cbl & (dist_csf > 4.5 + 2 * atrophy)] = CBL_WM
    del dist_csf, cbl
    b = box(grid, (0, 18, -44), (14, 18, 42))
    stem = smin(sd_capsule(Xw[b], Yw[b], Zw[b], (0, 12, -4), (0, 24 * s[1], -34 * s[2]), 11.0),
                sd_capsule(Xw[b], Yw[b], Zw[b], (0, 24 * s[1], -34 * s[2]), (0, 28 * s[1], -84), 8.5 - 1.2 * atrophy), 4.0)
    labels[b][(stem < 0) & inside[b]] = STEM
    del stem
    labels[falx | tent] = DURA
    del falx, tent
    labels[base_bone] = BONE
    del base_bone

    # ---------------- deep grey and ventricles (in a box around the centre)
    sl = tuple(slice(int((lo - grid.origin[d]) / grid.h), int((hi - grid.origin[d]) / grid.h) + 1)
               for d, (lo, hi) in enumerate(((-52, 52), (-52, 70), (-40, 42))))
    x, y, z = Xw[sl], Yw[sl], Zw[sl]
    sub = labels[sl]
    grow = 1.0 + 1.15 * atrophy + 0.12 * rng.standard_normal()
    asym = 1.0 + 0.12 * rng.standard_normal()
    lm: dict = {}
    for side in (-1, 1):
        g = grow * (asym if side > 0 else 1.0)
        fh_x = side * (6.5 + 2.8 * g)
        caud = sd_ellipsoid(x, y, z, (side * (11.0 + 2.4 * g), -16 * s[1], 13 * s[2]), (4.5, 11, 8.5))
        caud = smin(caud, sd_capsule(x, y, z, (side * (12 + 2 * g), -4, 19 * s[2]), (side * (17 + 2 * g), 24 * s[1], 16 * s[2]), 2.2), 3.0)
        put = sd_superquadric(x, y, z, (side * 24 * s[0], -4 * s[1], 1 * s[2]), (5.5, 14.5 * s[1], 10 * s[2]), 2.4)
        gp = sd_ellipsoid(x, y, z, (side * 17.5 * s[0], -2 * s[1], -1 * s[2]), (3.3, 9.5, 6.0))
        thal = sd_superquadric(x, y, z, (side * 9.5, 9 * s[1], 4 * s[2]), (8.5, 15 * s[1], 9 * s[2]), 2.3)
        inb = np.isin(sub, (WM, GM))
        sub[inb & (put < 0)] = PUTAMEN
        sub[inb & (gp < 0)] = PALLIDUM
        sub[inb & (thal < 0)] = THALAMUS
        sub[inb & (caud < 0)] = CAUDATE
        # lateral ventricle centreline: frontal horn -> body -> atrium -> occipital horn; temporal horn branch
        pts = np.array([[fh_x, -30 * s[1], 12], [fh_x * 1.05, -14 * s[1], 17], [side * (7 + 3.5 * g), 4, 19.5],
                        [side * (11 + 3 * g), 18 * s[1], 17], [side * (21 + 2 * g), 30 * s[1], 9],
                        [side * (18 + g), 48 * s[1], 4]]) * np.array([1, 1, s[2]])
        rad = np.array([3.0, 4.2, 3.6, 3.6, 5.5, 1.8]) * g
        lv = swept_tube(x, y, z, pts, rad, squash=(1.25, 1.0, 0.75))
        th = np.array([[side * (21 + 2 * g), 30 * s[1], 9], [side * (30 * s[0]), 19 * s[1], -8],
                       [side * (31 * s[0]), 0, -17], [side * (29 * s[0]), -14 * s[1], -20]]) * np.array([1, 1, s[2]])
        lv = smin(lv, swept_tube(x, y, z, th, np.array([4.0, 2.0, 1.6, 1.2]) * g ** 1.3, (1.0, 1.0, 0.8)), 2.0)
        sub[(lv < 0) & (sub != SAS) & (sub != DURA)] = VENT
        chp = sd_ellipsoid(x, y, z, pts[4] + np.array([side * 0.5, 1.0, -1.5]), (2.8, 4.5, 2.4))
        sub[(chp < 0) & (sub == VENT)] = CHOROID
        lm[f"atrium_{'L' if side > 0 else 'R'}"] = pts[4] + np.array([side * 0.5, 1.0, -1.5])
        lm[f"frontal_horn_{'L' if side > 0 else 'R'}"] = pts[0]
        lm[f"occipital_horn_{'L' if side > 0 else 'R'}"] = pts[5]
        lm[f"pallidum_{'L' if side > 0 else 'R'}"] = np.array([side * 17.5 * s[0], -2 * s[1], -1 * s[2]])
    v3 = sd_superquadric(x, y, z, (0, 4, -3 * s[2]), (0.9 + 1.3 * grow, 15, 11), 3.0)
    sub[(v3 < 0) & (sub != SAS)] = VENT
    lm["pineal"] = np.array([0.0, 21 * s[1], 3 * s[2]])
    labels[sl] = sub
    del x, y, z, sub
    b = box(grid, (0, 33 * s[1], -38 * s[2]), (8, 6, 8))
    v4 = sd_superquadric(Xw[b], Yw[b], Zw[b], (0, 33 * s[1], -38 * s[2]), (5 + 2 * atrophy, 4, 6), 2.2)
    labels[b][(v4 < 0) & inside[b]] = VENT
    del v4, Xw, Yw, Zw, X, Y, Z

    return Head(grid=grid, labels=labels, sd_cavity=cav.astype(np.float32), atrophy=float(atrophy),
                params={"scale": [float(v) for v in s], "superquadric_p": float(p_exp), "ventricle_growth": float(grow),
                        "cortex_mm": float(ct)},
                landmarks=lm)

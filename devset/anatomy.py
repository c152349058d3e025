"""An elderly head built from implicit surfaces on a template grid (mm; x = patient left, y = posterior,
z = superior, origin near the foramen of Monro).

Every structure is a signed-distance-like function evaluated in *warped* coordinates (a smooth random
displacement plus per-axis scaling), so one construction yields a different head per seed:

* intracranial cavity: a perturbed ellipsoid cut by a fossa floor (anterior, middle, tentorium) united
  with a posterior-fossa ellipsoid and the brainstem tube, indented by petrous ridges and clivus;
* skull of random thickness with diploe, scalp with a fat layer, face/neck block, air sinuses, orbits;
* brain = cavity shrunk by an atrophy-dependent subarachnoid gap; gyri from the zero set of a band-pass
  random field (sulci = thin CSF clefts lined by cortex), interhemispheric and Sylvian fissures;
* lateral ventricles as tubes along centre lines (frontal horn, body, atrium, occipital and temporal
  horns) whose calibre grows with atrophy, third and fourth ventricles, choroid plexus;
* caudate, putamen, pallidum, thalamus; cerebellum with folia and a white core; brainstem;
  falx, tentorium and dural venous sinuses.

Labels are small integers (``LABELS``); ``hu`` holds the noiseless attenuation of each template voxel.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from devset.fields import (angular_perturbation, ellipsoid_sd, polyline_sd, sigmoid, smax, smin,
                           smooth_field, upsample_linear, zero_set_distance)

# code -> (short name, coarse region) ; the region names are the scorer's vocabulary
LABELS: dict[int, tuple[str, str]] = {
    0: ("air", "background (air)"),
    1: ("white matter", "white matter"),
    2: ("cortex", "cortex"),
    3: ("sulcal/cisternal CSF", "CSF (sulci/cisterns)"),
    4: ("ventricle", "ventricle wall/CSF"),
    5: ("caudate", "deep grey"),
    6: ("putamen", "deep grey"),
    7: ("pallidum", "deep grey"),
    8: ("thalamus", "deep grey"),
    9: ("cerebellum", "posterior fossa"),
    10: ("brainstem", "posterior fossa"),
    11: ("choroid plexus", "ventricle wall/CSF"),
    12: ("falx/tentorium", "falx/tentorium"),
    13: ("dural venous sinus", "falx/tentorium"),
    14: ("bone", "skull/extracranial"),
    15: ("soft tissue", "skull/extracranial"),
    16: ("fat", "skull/extracranial"),
    17: ("sinus/airway air", "skull/extracranial"),
    18: ("globe", "skull/extracranial"),
    20: ("lacune", "lacune (mimic)"),
    21: ("old infarct", "old infarct (mimic)"),
    22: ("calcification", "calcification (mimic)"),
    23: ("perivascular space", "perivascular space (mimic)"),
    30: ("WML (>=50% voxel)", "WML (>=50% voxel)"),
    31: ("WML rim", "WML rim (<50% voxel)"),
}
WM, GM, CSF, VENT, CAUD, PUT, PALL, THAL, CBL, BSTEM, CHOROID, FALX, VSINUS = range(1, 14)
BONE, SOFT, FAT, AIR, GLOBE = 14, 15, 16, 17, 18
LACUNE, INFARCT, CALC, EPVS, WML, WML_RIM = 20, 21, 22, 23, 30, 31
BRAIN_LABELS = (WM, GM, CSF, VENT, CAUD, PUT, PALL, THAL, CBL, BSTEM, CHOROID, FALX, VSINUS,
                LACUNE, INFARCT, CALC, EPVS)


@dataclass
class Grid:
    """Template grid: array index [iz, iy, ix]; voxel centre = origin + h * index (x, y, z)."""

    h: float
    origin: np.ndarray  # (x0, y0, z0) mm
    shape: tuple[int, int, int]  # (nz, ny, nx)

    def axis(self, k: int) -> np.ndarray:  # k: 0 = x, 1 = y, 2 = z
        n = self.shape[2 - k]
        return (self.origin[k] + self.h * np.arange(n)).astype(np.float32)

    def index_box(self, lo, hi) -> tuple[slice, slice, slice]:
        """Slices (z, y, x) of the voxels whose centres lie in the template box [lo, hi] (mm)."""
        out = []
        for k in (2, 1, 0):
            n = self.shape[2 - k]
            a = int(np.floor((lo[k] - self.origin[k]) / self.h))
            b = int(np.ceil((hi[k] - self.origin[k]) / self.h)) + 1
            out.append(slice(max(a, 0), min(max(b, 0), n)))
        return tuple(out)


@dataclass
class Phantom:
    grid: Grid
    labels: np.ndarray  # uint8 (nz, ny, nx)
    hu: np.ndarray  # float32
    tissue: dict  # drawn HU values
    coords: tuple  # warped anatomical coordinates X, Y, Z (float32 full arrays)
    scale: np.ndarray  # per-axis anatomical scale
    landmarks: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    def box(self, c, r, margin: float = 8.0):
        """Grid slices covering an anatomical box centre ``c`` half-size ``r`` (warp margin added)."""
        c = np.asarray(c, float) * self.scale
        r = np.abs(np.asarray(r, float) * self.scale) + margin
        return self.grid.index_box(c - r, c + r)


FULL_BOX = (np.array([-86.0, -118.0, -96.0]), np.array([86.0, 108.0, 92.0]))


def make_grid(h: float) -> Grid:
    lo, hi = FULL_BOX
    n = np.floor((hi - lo) / h).astype(int) + 1
    return Grid(h=h, origin=lo.copy(), shape=(int(n[2]), int(n[1]), int(n[0])))


def draw_tissue(rng: np.random.Generator) -> dict:
    """Per-case attenuation (HU) of each tissue; grey-white contrast from poor to good."""
    wm = rng.uniform(22.0, 32.0)
    gw = rng.uniform(3.5, 13.0)
    gm = min(wm + gw, 45.0)
    csf = rng.uniform(1.0, 11.0)
    return dict(
        wm=wm, gm=gm, csf=csf, vent=csf + rng.uniform(-1.0, 1.5),
        caud=gm - rng.uniform(0.0, 2.5), put=gm - rng.uniform(0.0, 2.5),
        pall=0.5 * (gm + wm) + rng.uniform(0.0, 2.5), thal=0.5 * (gm + wm) + rng.uniform(0.0, 2.0),
        cbl_gm=gm + rng.uniform(-1.5, 2.0), cbl_wm=wm + rng.uniform(1.0, 4.0), bstem=wm + rng.uniform(2.0, 6.0),
        choroid=rng.uniform(28.0, 40.0), falx=rng.uniform(40.0, 62.0), vsinus=rng.uniform(38.0, 55.0),
        table=rng.uniform(1100.0, 1700.0), diploe=rng.uniform(350.0, 750.0), petrous=rng.uniform(1500.0, 2100.0),
        soft=rng.uniform(30.0, 50.0), fat=rng.uniform(-110.0, -75.0), air=rng.uniform(-1000.0, -960.0),
        globe=rng.uniform(4.0, 15.0),
        wm_tex=rng.uniform(0.5, 1.8), gm_tex=rng.uniform(0.5, 2.0), wm_tex_mm=rng.uniform(4.0, 12.0),
    )


def _floor(X, Y, wt_depth, ant):
    """z of the supratentorial cavity floor: anterior fossa, deep middle fossae, tentorium behind."""
    wt = np.exp(-((Y + 4.0) / 17.0) ** 2) * sigmoid((np.abs(X) - 19.0) / 5.0)
    front = ant - wt_depth * wt
    return front, sigmoid((Y - 15.0) / 4.0)


def _tent(X, Y, z0, slope):
    return z0 - slope * (Y - 15.0) - 0.0035 * X * X


def _ventricle_paths(rng, atrophy: float):
    """Centre points (x, y, z) and half-axes (rx, ry, rz) of both lateral ventricles."""
    pts, rad = [], []
    vf0 = (0.75 + 1.7 * atrophy) * rng.uniform(0.85, 1.18)
    tf = (0.55 + 2.4 * atrophy) * rng.uniform(0.8, 1.25)
    land = {}
    for s in (-1.0, 1.0):
        vf = vf0 * rng.uniform(0.9, 1.1)
        t = np.linspace(0.0, 1.0, 75)
        taper = np.clip(t / 0.08, 0.35, 1.0)
        rx = vf * (3.2 - 0.8 * np.sin(np.pi * t) + 2.8 * t ** 3) * taper
        rz = np.sqrt(vf) * (5.5 - 0.5 * np.sin(np.pi * t) + 1.5 * t ** 2) * taper
        y = -30.0 + 58.0 * t
        z = 10.0 + 9.0 * np.sin(np.pi * t) - 2.0 * t
        x = s * (1.0 + rx + 14.0 * t ** 3.5 * (1 + 0.3 * atrophy))
        ry = np.maximum(rx, rz)
        for i in range(t.size):
            pts.append((x[i], y[i], z[i]))
            rad.append((rx[i], ry[i], rz[i]))
        xa, ya, za, ra = x[-1], y[-1], z[-1], rx[-1]
        land[f"frontal_tip_{int(s)}"] = (x[0], y[0] - 2, z[0])
        land[f"atrium_{int(s)}"] = (xa, ya, za)
        land[f"rx_frontal_{int(s)}"] = float(rx[10])
        land[f"x_frontal_{int(s)}"] = float(x[10])
        # occipital horn
        L = rng.uniform(10.0, 26.0)
        for u in np.linspace(0.0, 1.0, 30):
            r = ra * (1 - u) + 0.9 * u
            pts.append((xa - s * 4 * u, ya + L * u, za - 3 * u))
            rad.append((r, r, max(r, 1.0) * 1.1))
        land[f"occipital_tip_{int(s)}"] = (xa - s * 4, ya + L, za - 3)
        # temporal horn
        tp = np.array([(xa + s * 3, ya - 2, za - 4), (s * (abs(xa) + 8), 14.0, -8.0), (s * 31.0, 0.0, -17.0),
                       (s * 29.0, -14.0, -21.0)])
        for k in range(3):
            for u in np.linspace(0.0, 1.0, 14, endpoint=False):
                p = tp[k] * (1 - u) + tp[k + 1] * u
                r = tf * (2.4 - 0.35 * (k + u)) + 0.2
                pts.append(tuple(p))
                rad.append((r * 0.8, r, r))
    return np.asarray(pts), np.asarray(rad), land


def build(rng: np.random.Generator, h: float, atrophy: float) -> Phantom:
    grid = make_grid(h)
    nz, ny, nx = grid.shape
    shape = grid.shape
    x, y, z = grid.axis(0), grid.axis(1), grid.axis(2)
    tissue = draw_tissue(rng)

    # ---- warp: smooth random displacement + per-axis scaling -> anatomical coordinates
    scale = rng.uniform(0.93, 1.05) * (1.0 + rng.normal(0.0, 0.025, 3))
    amp = rng.uniform(1.0, 3.0)
    disp = [np.clip(amp * smooth_field(rng, shape, h, 30.0), -6, 6) for _ in range(3)]
    X = (x[None, None, :] + disp[0]) / scale[0]
    Y = (y[None, :, None] + disp[1]) / scale[1]
    Z = (z[:, None, None] + disp[2]) / scale[2]
    del disp
    ax = np.abs(X)

    def loc(lo, hi):
        """Grid slices and warped coordinates of an anatomical box (warp margin included)."""
        lo_, hi_ = np.asarray(lo, float) * scale, np.asarray(hi, float) * scale
        sl = grid.index_box(np.minimum(lo_, hi_) - 8.0, np.maximum(lo_, hi_) + 8.0)
        return sl, X[sl], Y[sl], Z[sl]

    # ---- smooth surfaces (cavity, skull thickness, skin) on a coarse lattice, upsampled linearly
    cf = 2 if h < 1.5 else 1
    Xc, Yc, Zc = X[::cf, ::cf, ::cf], Y[::cf, ::cf, ::cf], Z[::cf, ::cf, ::cf]
    cshape = Xc.shape

    def up(a):
        return a if cf == 1 else upsample_linear(a, cf, shape)

    pert = angular_perturbation(rng, 6, 0.018)
    r_cc = np.array([67.0, 85.0, 64.0]) * (1 + rng.normal(0, 0.02, 3))
    d_ell = ellipsoid_sd(Xc, Yc, Zc, (0.0, 4.0, 8.0), r_cc, pert)
    ux = np.clip(-(Yc - 4.0) / 85.0, 0, 1)  # frontal narrowing
    d_ell += (5.0 * ux * ux * np.clip(np.abs(Xc) / 67.0, 0, 1)).astype(np.float32)
    front, wpost = _floor(Xc, Yc, rng.uniform(20.0, 27.0), rng.uniform(-16.0, -11.0))
    tent0, tslope = rng.uniform(-8.0, -4.0), rng.uniform(0.26, 0.36)
    tent_c = _tent(Xc, Yc, tent0, tslope)
    floor = front * (1 - wpost) + (tent_c + 1.2) * wpost
    d_cc_c = smax(d_ell, floor - Zc, 4.0)
    d_pf_c = smax(ellipsoid_sd(Xc, Yc, Zc, (0.0, 40.0, -37.0), (50.0, 40.0, 27.0)), Zc - (tent_c - 1.2), 3.0)
    bs_pts = [(0, 9, -4), (0, 11, -12), (0, 15, -28), (0, 23, -48), (0, 28, -70), (0, 30, -100)]
    bs_r = [8.0, 10.0, 13.5, 9.0, 6.5, 6.0]
    d_bs_c = polyline_sd(Xc, Yc, Zc, bs_pts, bs_r)
    g_bs = 2.0 + 3.0 * atrophy
    d_ic_c = smin(smin(d_cc_c, d_pf_c, 4.0), d_bs_c - g_bs, 3.0)
    carve_c = np.minimum(polyline_sd(Xc, Yc, Zc, [(-56, 30, -37), (-19, 1, -29)], [7.5, 4.5]),
                         polyline_sd(Xc, Yc, Zc, [(56, 30, -37), (19, 1, -29)], [7.5, 4.5]))
    carve_c = np.minimum(carve_c, polyline_sd(Xc, Yc, Zc, [(0, -15, -22), (0, 0, -62)], [6.0, 5.0]))
    d_ic_c = smax(d_ic_c, -carve_c, 1.5)
    th_c = 6.2 + 1.3 * smooth_field(rng, cshape, h * cf, 25.0) + rng.uniform(-0.8, 0.8)
    th_c += 9.0 * sigmoid((-Zc - 16.0) / 5.0)
    th_c -= 2.8 * np.exp(-((Zc + 5.0) / 16.0) ** 2) * sigmoid((np.abs(Xc) - 45.0) / 5.0) * np.exp(-(Yc / 30.0) ** 2)
    fs_present = rng.random() < 0.75
    th_c += (11.0 if fs_present else 4.0) * np.exp(-(Xc / 24.0) ** 2 - ((Zc + 6.0) / 11.0) ** 2) \
        * sigmoid((-Yc - 55) / 5)
    th_c = np.maximum(th_c, 2.5).astype(np.float32)
    scalp = rng.uniform(4.0, 7.0)
    zl = np.clip((-Zc - 15.0) / 80.0, 0, 1)
    a_l, b_l, yc = 64.0 - 10.0 * zl, 92.0 - 22.0 * zl, -8.0 + 14.0 * zl
    d_low = smax((np.sqrt((Xc / a_l) ** 2 + ((Yc - yc) / b_l) ** 2) - 1.0) * a_l, Zc + 12.0, 6.0)
    d_skin_c = smin(d_ic_c - th_c - scalp, d_low, 8.0)
    d_skin_c = smin(d_skin_c, ellipsoid_sd(Xc, Yc, Zc, (0.0, -97.0, -50.0), (11.0, 15.0, 19.0)), 4.0)
    del d_ell, ux, front, wpost, floor, zl, a_l, b_l, yc, d_low
    d_cc, d_pf, d_bs, d_ic, carve = up(d_cc_c), up(d_pf_c), up(d_bs_c), up(d_ic_c), up(carve_c)
    tent, th, d_skin = up(tent_c), up(th_c), up(d_skin_c)
    del d_cc_c, d_pf_c, d_bs_c, d_ic_c, carve_c, tent_c, th_c, d_skin_c

    labels = np.zeros(shape, np.uint8)
    hu = np.full(shape, tissue["air"], np.float32)

    # ---- skull, scalp, face and neck
    head = d_skin < 0
    labels[head] = SOFT
    hu[head] = tissue["soft"]
    fat_band = head & (d_skin > -scalp * 0.75) & (d_skin < -1.6)
    labels[fat_band] = FAT
    hu[fat_band] = tissue["fat"]
    del d_skin, fat_band

    bone = (d_ic > 0) & (d_ic < th) & head
    bone |= (carve < 0) & head
    frac = np.clip(d_ic / th, 0, 1)
    dip_w = np.exp(-((frac - 0.5) / 0.2) ** 2) * sigmoid((th - 4.0) / 0.7)
    btex = smooth_field(rng, shape, h, 3.0)
    bone_hu = tissue["table"] - (tissue["table"] - tissue["diploe"]) * dip_w + 90.0 * btex * dip_w
    labels[bone] = BONE
    hu[bone] = bone_hu[bone]
    dense = (carve < 0) & head
    hu[dense] = tissue["petrous"] + 60.0 * btex[dense]
    del frac, dip_w, bone_hu, bone, dense, btex, carve, th

    def paint_air(c, r, extra=None, value=None):
        sl, Xs, Ys, Zs = loc(np.asarray(c) - np.asarray(r), np.asarray(c) + np.asarray(r))
        m = (ellipsoid_sd(Xs, Ys, Zs, c, r) < 0) & (d_ic[sl] > 0.8)
        if extra is not None:
            m &= extra(Xs, Ys, Zs)
        labels[sl][m] = AIR
        hu[sl][m] = tissue["air"] if value is None else value

    def cells(thr):
        return lambda Xs, Ys, Zs: smooth_field(rng, Xs.shape, h, 2.0) > thr

    # orbits: fat cone, globe, thin bony wall; sinuses, mastoid cells, airway, upper cervical spine
    for s in (-1.0, 1.0):
        sl, Xs, Ys, Zs = loc((s * 30 - 20, -100, -56), (s * 30 + 20, -34, -16))
        lab, hs, out = labels[sl], hu[sl], d_ic[sl] > 0
        cone = ellipsoid_sd(Xs, Ys, Zs, (s * 30, -62, -36), (16, 24, 14))
        wall = (cone > 0) & (cone < 2.2) & out & (lab == SOFT)
        lab[wall] = BONE
        hs[wall] = tissue["table"] * 0.7
        m = (cone < 0) & out
        lab[m] = FAT
        hs[m] = tissue["fat"]
        m = (ellipsoid_sd(Xs, Ys, Zs, (s * 32, -73, -36), (11.5, 11.5, 11.5)) < 0) & out
        lab[m] = GLOBE
        hs[m] = tissue["globe"]
        hs[(ellipsoid_sd(Xs, Ys, Zs, (s * 32, -83, -36), (4.0, 1.8, 4.0)) < 0) & out] = 95.0
        paint_air((s * 27, -60, -64), (13, 17, 15))  # maxillary sinus
        paint_air((s * 51, 30, -45), (9, 11, 11), cells(0.2), -800.0)  # mastoid air cells
    if fs_present:
        paint_air((0, -85, -6), (rng.uniform(10, 20), 5.5, 10))
    paint_air((0, -18, -38), (13, 11, 9))  # sphenoid
    paint_air((0, -56, -38), (9, 18, 10), cells(-0.3))  # ethmoid cells
    sl, Xs, Ys, Zs = loc((-12, -97, -97), (12, -39, -43))
    m = (np.abs(Xs) > 1.2) & (np.abs(Xs) < 11.0) & (d_ic[sl] > 0.8)
    labels[sl][m] = AIR
    hu[sl][m] = tissue["air"]
    paint_air((0, -22, -80), (11, 8, 20))  # nasopharynx
    sl, Xs, Ys, Zs = loc((-9, -5, -101), (9, 17, -58))
    m = (polyline_sd(Xs, Ys, Zs, [(0, 4, -66), (0, 8, -100)], [7.5, 7.5]) < 0) & (d_ic[sl] > 0) & (labels[sl] != AIR)
    labels[sl][m] = BONE
    hu[sl][m] = tissue["diploe"] + 200

    # ---- intracranial contents
    ic = d_ic < 0
    labels[ic] = CSF
    hu[ic] = tissue["csf"]
    g_sas = np.maximum(0.4, 0.6 + 3.0 * atrophy + 0.7 * smooth_field(rng, shape, h, 20.0))
    # ventricle centre lines (needed for the callosal level and the caudate)
    vpts, vrad, land = _ventricle_paths(rng, atrophy)

    def zcc_of(Yv):
        t = np.clip((Yv + 30.0) / 58.0, 0, 1)
        roof = 10.0 + 9.0 * np.sin(np.pi * t) - 2.0 * t + np.sqrt(0.75 + 1.7 * atrophy) * 6.0
        inside = (Yv > -38.0) & (Yv < 42.0)
        return np.where(inside, roof + 7.0, -200.0).astype(np.float32)

    w_ih = 0.7 + 2.6 * atrophy
    xm = (1.2 * np.sin(Y / 35.0 + rng.uniform(0, 6))).astype(np.float32)
    zcc = zcc_of(Y)
    f_ih = w_ih - np.abs(X - xm) - 200.0 * (Z < zcc)
    D = -smax(d_cc + g_sas, f_ih, 1.0)  # depth below the pial surface (mm)
    del g_sas
    sd = zero_set_distance(rng, shape, h, rng.uniform(3.2, 4.2), rng.uniform(6.5, 8.0))
    S = np.abs(sd)
    w_s = 0.3 + 1.5 * atrophy
    depth_s = 14.0 + 4.0 * smooth_field(rng, shape, h, 25.0)
    sulc = np.maximum(S - w_s, D - depth_s)
    del S, sd, depth_s
    w_syl = 1.2 + 3.5 * atrophy
    x_ins = rng.uniform(34.0, 38.0) - 2.0 * atrophy
    d_syl = np.maximum(np.maximum(np.abs(Z - (-3.0 + 0.28 * (Y + 10.0))) - w_syl, x_ins - ax), np.abs(Y + 3) - 24.0)
    c = np.minimum(np.minimum(D, sulc), d_syl)
    del sulc, d_syl
    t_gm = rng.uniform(2.0, 3.2) - 0.6 * atrophy
    cereb = (d_cc < 0) & ic
    cort = cereb & (c >= 0) & (c < t_gm)
    wmm = cereb & (c >= t_gm)
    labels[cort] = GM
    labels[wmm] = WM
    del c, D

    # posterior fossa: cerebellum with folia and a white core, brainstem, 4th ventricle
    pf = (d_pf < 0) & ic & ~cereb
    Dp = -(d_pf + 1.0 + 2.8 * atrophy)
    fol = np.ones(shape, np.float32)
    if h <= 1.25:
        sl, Xs, Ys, Zs = loc((-56, -6, -70), (56, 86, 0))
        fol[sl] = smooth_field(rng, Xs.shape, h, 1.2, band_mm=2.6)
    cbl = pf & (Dp > 0) & (np.abs(fol) > 0.25 + 0.6 * atrophy) & ~((ax < 2.5 + 3 * atrophy) & (Y > 52))
    labels[cbl] = CBL
    core = cbl & (Dp > 7.0 + 2.5 * smooth_field(rng, shape, h, 6.0))
    bsm = (d_bs < 0) & ic
    labels[bsm] = BSTEM
    del Dp, fol
    sl, Xs, Ys, Zs = loc((-12, 22, -48), (12, 40, -24))
    v4 = ellipsoid_sd(Xs, Ys, Zs, (0.0, 31.0, -36.0), (6 + 2 * atrophy, 3.5 + atrophy, 7.0)) < 0
    labels[sl][v4 & ic[sl]] = VENT

    # lateral ventricles (tubes via nearest centre points), third ventricle
    vs = grid.index_box(np.array([-60, -55, -40]) * scale, np.array([60, 75, 45]) * scale)
    Xv, Yv, Zv = X[vs], Y[vs], Z[vs]
    q = np.stack([Xv.ravel(), Yv.ravel(), Zv.ravel()], axis=1)
    tree = cKDTree(vpts)
    dd, ii = tree.query(q, k=6, distance_upper_bound=float(vrad.max()) * 1.6 + 2)
    vsd = np.full(q.shape[0], 50.0, np.float32)
    for j in range(ii.shape[1]):
        ok = np.isfinite(dd[:, j])
        idx = ii[ok, j]
        rel = (q[ok] - vpts[idx]) / vrad[idx]
        rho = np.sqrt((rel * rel).sum(axis=1))
        vsd[ok] = np.minimum(vsd[ok], (rho - 1.0) * vrad[idx].min(axis=1))
    vsd = vsd.reshape(Xv.shape)
    v3 = ellipsoid_sd(Xv, Yv, Zv, (0.0, 6.0, 1.0), (1.0 + 3.5 * atrophy, 14.0, 8.0))
    vent_local = ((vsd < 0) | (v3 < 0)) & ic[vs]

    # deep grey nuclei
    sub = labels[vs]
    hsub = hu[vs]
    inner = np.isin(sub, (WM, GM))
    for s in (-1.0, 1.0):
        key = int(s)
        xf = land[f"x_frontal_{key}"] + s * land[f"rx_frontal_{key}"] + s * 2.0
        for (lab, c0, r0) in (
            (CAUD, (xf, -15.0, 12.0), (5.0, 10.0, 8.0)),
            (CAUD, (xf - s * 1.0, 2.0, 19.0), (3.0, 10.0, 4.0)),
            (PUT, (s * 24.5, 0.0, 1.0), (5.5, 15.0, 10.0)),
            (PALL, (s * 17.5, 2.0, -1.0), (3.5, 8.0, 6.0)),
            (THAL, (s * (10.5 + 2.0 * atrophy), 15.0, 4.0), (8.5, 15.0, 9.0)),
        ):
            m = (ellipsoid_sd(Xv, Yv, Zv, c0, np.asarray(r0) * rng.uniform(0.9, 1.1, 3)) < 0) & inner
            sub[m] = lab
    sub[vent_local & ~np.isin(sub, (CAUD,))] = VENT
    # choroid plexus glomus in each atrium
    for s in (-1, 1):
        a = land[f"atrium_{s}"]
        m = (ellipsoid_sd(Xv, Yv, Zv, (a[0], a[1] + 2, a[2] - 1), (2.5, 4.0, 2.5)) < 0) & (sub == VENT)
        sub[m] = CHOROID
    labels[vs] = sub
    del Xv, Yv, Zv, q, dd, ii, vsd, v3, sub, hsub

    # falx, tentorium, venous sinuses
    fh = max(0.7, 0.55 * h)
    falx = cereb & (np.abs(X - xm) < fh) & (Z > zcc + 5.0)
    labels[falx & np.isin(labels, (CSF, GM))] = FALX
    tentm = ic & (np.abs(Z - tent) < fh) & (Y > 14.0) & ~bsm & (ax > 6)
    labels[tentm] = FALX
    sss = ic & (np.abs(X) < 4.0) & (d_cc > -4.5) & (Z > 25.0)
    trans = ic & (d_ic > -5.0) & (np.abs(Z - tent) < 4.0) & (Y > 52.0)
    labels[sss | trans] = VSINUS
    del falx, tentm, sss, trans

    # ---- attenuation of the brain
    tx = {WM: "wm", GM: "gm", CSF: "csf", VENT: "vent", CAUD: "caud", PUT: "put", PALL: "pall", THAL: "thal",
          CBL: "cbl_gm", BSTEM: "bstem", CHOROID: "choroid", FALX: "falx", VSINUS: "vsinus"}
    for lab, key in tx.items():
        hu[labels == lab] = tissue[key]
    hu[core & (labels == CBL)] = tissue["cbl_wm"]
    tex = smooth_field(rng, shape, h, tissue["wm_tex_mm"])
    m = np.isin(labels, (WM, BSTEM))
    hu[m] += tissue["wm_tex"] * tex[m]
    tex = smooth_field(rng, shape, h, 3.0)
    m = np.isin(labels, (GM, CBL, CAUD, PUT, THAL))
    hu[m] += tissue["gm_tex"] * tex[m]
    # a gentle anterior-posterior density drift of white matter (common on real scanners)
    drift = rng.uniform(-1.5, 1.5) * np.clip(Y / 80.0, -1, 1)
    m = labels == WM
    hu[m] += drift[m] if np.ndim(drift) else drift

    land.update({k: v for k, v in dict(pineal=(0.0, 24.0, 3.0)).items()})
    ph = Phantom(grid=grid, labels=labels, hu=hu, tissue=tissue, coords=(X, Y, Z), scale=scale, landmarks=land)
    ph.info = dict(atrophy=float(atrophy), icv_ml=float(ic.sum() * h ** 3 / 1000.0),
                   scale=[float(v) for v in scale], sulcal_halfwidth_mm=float(w_s), sylvian_halfwidth_mm=float(w_syl),
                   cortex_mm=float(t_gm))
    return ph


def wm_mask(ph: Phantom) -> np.ndarray:
    """Cerebral white matter where lesions may live (after mimics were painted)."""
    return ph.labels == WM


def distances(ph: Phantom, coarse: int) -> tuple[np.ndarray, np.ndarray]:
    """(distance to the lateral/third ventricles, depth inside white matter) in mm, computed on a
    ``coarse`` lattice and upsampled (exact distances do not matter for a propensity field)."""
    sl = (slice(None, None, coarse),) * 3
    hc = ph.grid.h * coarse
    vent = np.isin(ph.labels[sl], (VENT, CHOROID))
    dv = ndimage.distance_transform_edt(~vent, sampling=hc).astype(np.float32)
    wm = ph.labels[sl] == WM
    dw = ndimage.distance_transform_edt(wm, sampling=hc).astype(np.float32)
    if coarse > 1:
        dv = upsample_linear(dv, coarse, ph.grid.shape)
        dw = upsample_linear(dw, coarse, ph.grid.shape)
    return dv, dw

"""Anatomy label map of one head: tissue classes, atrophy, ventricles, dura, calcifications, old infarcts,
lacunes, skull, scalp and skull base, on a canonical template grid.

A source (``sources.atlas`` or ``sources.procedural``) gives soft grey/white maps through a random elastic warp;
the rules here turn them into labels with thresholds drawn per head, so the grey-white boundary, the sulcal width
and the ventricle size are never the same twice. Atrophy is the norm (an elderly population): the brain is
shrunk away from the skull, eroded along its sulci and the lateral ventricles grow into the surrounding white
matter, each by its own drawn amount. The skull is a shell of drawn, spatially varying thickness around the
intracranial space (cortical tables and diploe, a frontal sinus), and the skull base, face and upper neck are
primitives placed in template space (petrous ridges, clivus, sphenoid, mastoids, orbits, sinuses, ears).
Small structures that differ per head (each calcification, infarct, lacune) get their own label code so the
renderer can give each its own density.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi
from scipy.special import ndtr

from . import deform, sources
from .sources import posterior_fossa, z_tent
from .fields import Grid, bbox, distance, ellipsoid, segment_distance, smooth_noise

# label codes (uint8); CUSTOM0 and up: one code per individual calcification / infarct / lacune
AIR, SCALP, FAT, MUSCLE, BONE, DIPLOE, PETROUS, SINUS = range(8)
CSF, VENT, GM, WM, DEEP, STEM, CB_GM, CB_WM, DURA, VENOUS, PLEXUS, EYE, LENS = range(8, 21)
CUSTOM0 = 32
NAMES = {AIR: "air", SCALP: "scalp", FAT: "fat", MUSCLE: "muscle", BONE: "cortical_bone", DIPLOE: "diploe",
         PETROUS: "petrous_bone", SINUS: "sinus_air", CSF: "csf", VENT: "ventricle", GM: "grey_matter",
         WM: "white_matter", DEEP: "deep_grey", STEM: "brainstem", CB_GM: "cerebellar_grey",
         CB_WM: "cerebellar_white", DURA: "dura", VENOUS: "venous_sinus", PLEXUS: "choroid_plexus", EYE: "globe",
         LENS: "lens"}
BRAIN = (GM, WM, DEEP, STEM, CB_GM, CB_WM)
HEAD = (SCALP, FAT, MUSCLE, BONE, DIPLOE, PETROUS, SINUS)  # extracranial, not air
WHITE = (WM, CB_WM)  # what aux["wm_fraction"] counts (lesions are only ever drawn in WM, the cerebral part)


@dataclass
class Anatomy:
    grid: Grid
    label: np.ndarray  # uint8 codes
    custom: dict  # code -> {"kind": ..., "hu": absolute HU} or {"kind": ..., "csf_plus": HU above CSF}
    lv: np.ndarray  # bool: lateral ventricles
    d_v: np.ndarray  # mm to the lateral ventricles
    d_ctx: np.ndarray  # mm to the cortex
    src: tuple  # (X, Y, Z) template coordinates of every voxel (the warp)
    info: dict = field(default_factory=dict)

    @property
    def brain_centre_mm(self) -> np.ndarray:
        """Centre of the intracranial space in canonical (unwarped) template mm."""
        return np.asarray(self.info["icv_centre_mm"], float)


def _locate(grid: Grid, X, Y, Z, target, umax: float):
    """Canonical index of the voxel whose template coordinate is nearest ``target``."""
    sl = grid.roi(target, target, umax + 3 * grid.h)
    d2 = (X[sl] - target[0]) ** 2 + (Y[sl] - target[1]) ** 2 + (Z[sl] - target[2]) ** 2
    i = np.unravel_index(int(np.argmin(d2)), d2.shape)
    return tuple(int(s.start + k) for s, k in zip(sl, i))


def _ball(grid: Grid, centre_idx, semi_mm):
    """(slices, bool mask) of an axis-aligned ellipsoid around a canonical voxel index."""
    h = grid.h
    r = [max(s / h, 0.5) for s in semi_mm]
    sl = tuple(slice(max(int(np.floor(c - ri)) - 1, 0), min(int(np.ceil(c + ri)) + 2, n))
               for c, ri, n in zip(centre_idx, r, grid.shape))
    ii = [np.arange(s.start, s.stop, dtype=np.float32) for s in sl]
    m = ((ii[0][:, None, None] - centre_idx[0]) / r[0]) ** 2 + ((ii[1][None, :, None] - centre_idx[1]) / r[1]) ** 2 \
        + ((ii[2][None, None, :] - centre_idx[2]) / r[2]) ** 2 <= 1.0
    return sl, m


def build(rng: np.random.Generator, grid: Grid, use_atlas: bool | None = None) -> Anatomy:
    h = grid.h
    shape = grid.shape
    f = 2 if h < 1.5 else 1  # distance maps on a coarser grid where the detail is not needed
    u = rng.uniform
    X, Y, Z, umax, dinfo = deform.source_coords(rng, grid)
    if use_atlas is None:  # always drawn, so a seed's later draws never depend on what is installed
        use_atlas = rng.random() < 0.6
    if use_atlas and not sources.atlas_available():
        raise ImportError("synth_ct: this seed draws the MNI152 head, whose maps come with nilearn and nibabel "
                          "(the 'phantom' extra, part of 'train'); install it rather than get other heads")
    S = sources.atlas(rng, grid, X, Y, Z) if use_atlas else sources.procedural(rng, grid, X, Y, Z, umax)
    icv = S["icv"]
    info = dict(S["info"])
    info.update(dinfo)
    # the brain work happens inside the bounding box of the intracranial space
    ib = bbox(icv, int(np.ceil(4.0 / h)))
    gm, wm, lvh = S["gm"][ib], S["wm"][ib], S["lv"][ib]
    del S
    Xb, Yb, Zb, icvb = X[ib], Y[ib], Z[ib], icv[ib]
    bshape = icvb.shape

    # ---------------------------------------------------------------- atrophy and tissue classes
    a = float(rng.beta(2.0, 2.2))
    a_v = float(np.clip(a + rng.normal(0, 0.15), 0, 1))
    a_s = float(np.clip(a + rng.normal(0, 0.15), 0, 1))
    e_v = a_v * u(1.5, 8.0)
    e_s = a_s * u(0.3, 2.0)
    gap = a_s * u(0.5, 4.0)
    frontal = u(-0.3, 1.0)  # > 0: frontal-predominant atrophy
    theta_b = u(0.38, 0.52) + 0.12 * a_s
    kappa = float(np.exp(u(-0.25, 0.25)))
    front_w = 1.0 + frontal * 0.5 * np.clip(Yb / 60.0, -1, 1)

    brain = gm + wm
    brain = (brain > theta_b) & icvb
    d_in = distance(~icvb, h, f)
    if gap > 0.05:
        brain &= d_in > gap * front_w * (1 + 0.5 * smooth_noise(rng, bshape, h, 30.0))
    if e_s > 0.05:
        sig = 1.5
        sm = ndi.gaussian_filter(brain.astype(np.float32), sig / h)
        e_loc = np.maximum(e_s * front_w * (1 + 0.4 * smooth_noise(rng, bshape, h, 25.0)), 0.0)
        brain &= sm > ndtr(e_loc / sig)
        del sm, e_loc
    del front_w
    white = wm > kappa * gm
    del gm, wm
    label = np.zeros(shape, np.uint8)
    lb = label[ib]  # a view: writing lb writes label
    lb[icvb] = CSF
    lb[brain & white] = WM
    lb[brain & ~white] = GM
    del white
    for side in (-1, 1):
        for c, s in (((side * 17, 5, 3), (13, 22, 14)), ((side * 11, -18, 6), (10, 13, 10))):
            sl = grid.roi(np.subtract(c, s), np.add(c, s), umax + 1)
            sub = label[sl]
            sub[(sub == GM) & (ellipsoid(X[sl], Y[sl], Z[sl], c, s) < 1.0)] = DEEP
    zt = z_tent(Xb, Yb)
    cereb = posterior_fossa(Xb, Yb, Zb)
    sl = grid.roi((-40, -70, -80), (40, 5, 5), umax + 1)
    d_stem, _ = segment_distance(X[sl], Y[sl], Z[sl], (0, -18, -2), (0, -42, -80))
    sub = label[sl]
    sub[(d_stem < 15) & (Z[sl] < 0) & ~posterior_fossa(X[sl], Y[sl], Z[sl]) & np.isin(sub, BRAIN)] = STEM
    del d_stem
    lb[cereb & (lb == WM)] = CB_WM
    lb[cereb & ((lb == GM) | (lb == DEEP))] = CB_GM
    del cereb, brain

    # ---------------------------------------------------------------- ventricles (with atrophic enlargement)
    csf = lb == CSF
    lvb = csf & lvh & ~((np.abs(Xb) < 2.5) & (Zb > 18))
    del lvh
    if not lvb.any():  # never expected; keeps the lesion model defined
        lvb[tuple(slice(n // 2 - 2, n // 2 + 2) for n in bshape)] = True
    crop = bbox(lvb, int(np.ceil(14.0 / h)) + 2)
    d_v = distance(lvb, h, f)
    fine = ndi.distance_transform_edt(~lvb[crop], sampling=h).astype(np.float32)
    d_v[crop] = np.where(fine < 12.0, fine, d_v[crop])
    del fine
    if e_v > 0.1:
        e_loc = np.maximum(e_v * (1 + 0.35 * smooth_noise(rng, bshape, h, 25.0)), 0.0)
        grow = (d_v < e_loc) & ((lb == WM) | (lb == DEEP) | (lb == GM)) & (np.abs(Xb) > 1.2) & (Zb > -25)
        lvb |= grow
        d_v = np.maximum(d_v - e_loc, 0.0)
        d_v[lvb] = 0.0
        del grow, e_loc
    lb[lvb] = VENT
    lb[csf & (np.abs(Xb) < 6) & (Yb > -30) & (Yb < 4) & (Zb > -12) & (Zb < 16)] = VENT
    sl = grid.roi((-10, -56, -44), (10, -36, -20), umax + 1)
    sub = label[sl]
    sub[(sub == CSF) & (ellipsoid(X[sl], Y[sl], Z[sl], (0, -46, -32), (10, 10, 12)) < 1.0)] = VENT
    del csf
    vent_ml = float(lvb.sum()) * h ** 3 / 1000.0

    # ---------------------------------------------------------------- dura, venous sinuses, choroid plexus
    csf = lb == CSF
    w_f = u(0.8, 1.8)
    falx_low = np.where(np.abs(Yb + 4) < 36, 24.0, np.where(Yb > 0, -6.0, zt + 2))
    lb[csf & (np.abs(Xb) < w_f / 2) & (Zb > falx_low)] = DURA
    notch = (np.abs(Xb) < u(12, 16)) & (Yb > -60)  # the tentorial incisura around the midbrain
    lb[csf & (np.abs(Zb - zt) < 0.4 + w_f / 4) & (Yb < -38 + 0.15 * np.abs(Xb)) & (np.abs(Xb) < 60) & ~notch] = DURA
    del notch
    del falx_low
    near_skull = icvb & (d_in < u(3.0, 5.0)) & ((lb == CSF) | (lb == GM) | (lb == DURA))
    lb[near_skull & (np.abs(Xb) < u(3.5, 5.5)) & (Zb > -10)] = VENOUS
    lb[near_skull & (np.abs(Zb - zt) < 4) & (Yb < -75) & (np.abs(Xb) > 4)] = VENOUS
    del near_skull, zt, csf
    # back to full-grid maps
    lv = np.zeros(shape, bool)
    lv[ib] = lvb
    del lvb
    d_in_full = np.zeros(shape, np.float32)
    d_in_full[ib] = d_in
    d_in = d_in_full
    d_v_full = np.full(shape, 1e3, np.float32)
    d_v_full[ib] = d_v
    d_v = d_v_full
    del d_in_full, d_v_full
    custom: dict = {}
    code = [CUSTOM0]

    def add(kind: str, sl, m, allowed, **kw):
        if code[0] > 255:
            return
        sub = label[sl]
        m = m & np.isin(sub, allowed)
        if m.any():
            sub[m] = code[0]
            custom[code[0]] = {"kind": kind, **{k: round(float(v), 2) for k, v in kw.items()}}
            code[0] += 1

    lv_pts = np.argwhere(lv[::2, ::2, ::2]) * 2
    src_lv = np.stack([X[tuple(lv_pts.T)], Y[tuple(lv_pts.T)], Z[tuple(lv_pts.T)]], 1) if len(lv_pts) else None
    calcs = []
    choroid_calc = rng.random() < 0.7
    for side in (-1, 1):
        if src_lv is None:
            break
        sel = (np.sign(src_lv[:, 0]) == side) & (src_lv[:, 1] > -50) & (src_lv[:, 1] < -20) & (src_lv[:, 2] > -4)
        if not sel.any():
            continue
        target = np.array([side * 26.0, -36.0, 12.0])
        k = np.argmin(((src_lv[sel] - target) ** 2).sum(1))
        c = tuple(lv_pts[sel][k])
        r = u(2.5, 5.0)
        s2, m = _ball(grid, c, (r, r * 1.4, r))
        label[s2][m & (label[s2] == VENT)] = PLEXUS
        if choroid_calc and rng.random() < 0.9:
            rc = u(1.2, 3.5)
            s2, m = _ball(grid, c, (rc, rc * u(1, 1.6), rc))
            add("choroid_calcification", s2, m, (PLEXUS, VENT), hu=u(60, 400))
            calcs.append("choroid")
    if rng.random() < 0.6:
        c = _locate(grid, X, Y, Z, (u(-1, 1), u(-34, -28), u(0, 6)), umax)
        r = u(1.2, 3.5)
        s2, m = _ball(grid, c, (r, r, r * u(0.8, 1.2)))
        add("pineal_calcification", s2, m, (CSF, VENT, DEEP, STEM, GM, WM, DURA), hu=u(60, 400))
        calcs.append("pineal")
    if rng.random() < 0.15:
        for _ in range(int(rng.integers(2, 7))):
            side = rng.choice((-1, 1))
            c = _locate(grid, X, Y, Z, (side * u(14, 22), u(-6, 4), u(-4, 4)), umax)
            r = u(0.8, 2.8)
            s2, m = _ball(grid, c, (r, r, r))
            add("basal_ganglia_calcification", s2, m, (DEEP, WM), hu=u(60, 300))
        calcs.append("basal_ganglia")
    if rng.random() < 0.2:
        for _ in range(int(rng.integers(1, 4))):
            c = _locate(grid, X, Y, Z, (0.0, u(-60, 40), u(30, 60)), umax)
            r = u(1.5, 4.0)
            s2, m = _ball(grid, c, (r * 0.5, r * 1.5, r))
            add("falx_calcification", s2, m, (DURA, CSF), hu=u(150, 700))
        calcs.append("falx")
    if rng.random() < 0.4:
        for side in (-1, 1):
            c = _locate(grid, X, Y, Z, (side * u(13, 18), u(-6, 2), u(-36, -28)), umax)
            r = u(1.0, 2.5)
            s2, m = _ball(grid, c, (r, r * 1.5, r))
            add("carotid_calcification", s2, m, (CSF, STEM, GM, VENT), hu=u(150, 600))
        calcs.append("carotid")

    # ---------------------------------------------------------------- old infarcts and lacunes (CSF-like)
    X0 = grid.axis(0)[:, None, None]
    Y0 = grid.axis(1)[None, :, None]
    Z0 = grid.axis(2)[None, None, :]
    icv_idx = np.argwhere(icv[::4, ::4, ::4]) * 4
    centre = icv_idx.mean(0)
    info["icv_centre_mm"] = [float(grid.lo[a] + h * centre[a]) for a in range(3)]
    infarcts = []
    if rng.random() < 0.15:
        for _ in range(int(rng.integers(1, 3))):
            cand = np.argwhere((label[::3, ::3, ::3] == GM) & (d_in[::3, ::3, ::3] < 10) & (Z[::3, ::3, ::3] > -5))
            if not len(cand):
                break
            s_idx = cand[rng.integers(len(cand))] * 3
            sp = np.array([grid.lo[a] + h * s_idx[a] for a in range(3)])
            cp = np.array(info["icv_centre_mm"])
            axis = (cp - sp) / max(np.linalg.norm(cp - sp), 1e-6)
            depth = u(12, 40)
            ang = np.deg2rad(u(12, 32))
            sl = grid.roi(sp - depth, sp + depth)
            dx, dy, dz = X0[sl[0]] - sp[0], Y0[:, sl[1]] - sp[1], Z0[:, :, sl[2]] - sp[2]
            dist = np.sqrt(dx ** 2 + dy ** 2 + dz ** 2) + 1e-6
            cosang = (dx * axis[0] + dy * axis[1] + dz * axis[2]) / dist
            rough = 1 + 0.25 * smooth_noise(rng, dist.shape, h, 8.0)
            m = (cosang > np.cos(ang * rough)) & (dist < depth * rough)
            add("old_infarct", sl, m, (GM, WM, DEEP, CSF), csf_plus=u(1, 10))
            infarcts.append(round(depth, 1))
    lacunes = 0
    if rng.random() < 0.35:
        for _ in range(int(rng.integers(1, 6))):
            where = (label[::3, ::3, ::3] == DEEP) if rng.random() < 0.5 else \
                ((label[::3, ::3, ::3] == WM) & (d_v[::3, ::3, ::3] > 3))
            cand = np.argwhere(where)
            if not len(cand):
                continue
            c = tuple(cand[rng.integers(len(cand))] * 3)
            s2, m = _ball(grid, c, (u(1.5, 6), u(1.5, 6), u(1.5, 5)))
            add("lacune", s2, m, (WM, DEEP), csf_plus=u(0, 7))
            lacunes += 1
    n_pvs = int(rng.integers(0, 16)) if rng.random() < 0.5 else 0
    for _ in range(n_pvs):
        side = rng.choice((-1, 1))
        c = _locate(grid, X, Y, Z, (side * u(8, 26), u(-10, 12), u(-8, 4)), umax)
        r = u(0.6, 1.5)
        s2, m = _ball(grid, c, (r, r, r * u(1, 2.5)))
        add("perivascular_space", s2, m, (DEEP, WM), csf_plus=u(0, 5))
    del icv_idx

    # ---------------------------------------------------------------- skull, scalp, skull base, face
    d_out = distance(icv, h, f)
    T = u(4.5, 7.5) + u(0.6, 1.6) * smooth_noise(rng, shape, h, 35.0)
    T *= 1.0 - u(0.25, 0.5) * ndtr((np.abs(X) - 52) / 4.0) * np.exp(-((Z + 5) / 22.0) ** 2)
    T += u(1, 5) * np.exp(-(X ** 2 + (Y + 112) ** 2 + (Z + 22) ** 2) / (2 * 14.0 ** 2))  # occipital protuberance
    T = np.maximum(T, 2.5)
    has_fs = rng.random() < 0.8
    if has_fs:
        fs_c = (u(-4, 4), u(64, 72), u(-12, 4))
        fs_s = (u(10, 24), u(14, 20), u(8, 18))
        fs = ellipsoid(X, Y, Z, fs_c, fs_s)
        T += u(4, 12) * np.sqrt(np.clip(1 - fs, 0, 1)) * (Y > 40)
    tau_i, tau_o = u(1.0, 2.2), u(1.2, 2.6)
    out = ~icv
    skull = out & (d_out <= T)
    label[skull] = DIPLOE
    label[skull & ((d_out < tau_i) | (d_out > T - tau_o))] = BONE
    if has_fs:
        label[skull & (fs < 1) & (d_out > tau_i + 0.7) & (d_out < T - tau_o - 0.7) & (Y > 40)] = SINUS
        del fs
    Sc = np.maximum(u(3.0, 7.0) + u(0.5, 1.5) * smooth_noise(rng, shape, h, 30.0), 2.0)
    Mt = u(3, 12) * ndtr((np.abs(X) - 46) / 4.0) * np.exp(-((Z + 2) / 24.0) ** 2) * ndtr((Y + 40) / 6) \
        * ndtr((45 - Y) / 6)
    soft = out & (d_out > T) & (d_out <= T + Mt + Sc)
    label[soft] = SCALP
    label[soft & (d_out <= T + Mt) & (Mt > 0.7)] = MUSCLE
    fatn = smooth_noise(rng, shape, h, 40.0)
    label[soft & (d_out > T + Mt + 0.3 * Sc) & (d_out < T + Mt + Sc - 1.2) & (fatn > u(-2.0, 0.3))] = FAT
    del T, Mt, Sc, fatn, soft, skull
    _skull_base(rng, grid, label, icv, X, Y, Z, umax)
    del d_out, out

    wmask = label == WM
    d_ctx = np.full(shape, 1e3, np.float32)
    d_ctx[ib] = distance(label[ib] == GM, h, f)
    info.update({
        "atrophy": {"global": round(a, 3), "ventricular_mm": round(e_v, 2), "sulcal_mm": round(e_s, 2),
                    "subarachnoid_mm": round(gap, 2), "frontal_predominance": round(frontal, 2),
                    "brain_threshold": round(theta_b, 3), "grey_white_bias": round(kappa, 3),
                    "lateral_ventricles_ml": round(vent_ml * 1.0, 1)},
        "calcifications": calcs, "old_infarcts": infarcts, "lacunes": lacunes, "perivascular_spaces": n_pvs,
        "frontal_sinus": bool(has_fs), "wm_ml_template": round(float(wmask.sum()) * h ** 3 / 1000.0, 1),
    })
    return Anatomy(grid, label, custom, lv, d_v, d_ctx, (X, Y, Z), info)


def _skull_base(rng, grid: Grid, label, icv, X, Y, Z, umax):
    """Petrous ridges, clivus, sphenoid and its sinus, mastoids, orbits, ethmoid/nasal/maxillary air, zygomas,
    the upper neck and face soft tissue, nose and ears: primitives in template space, never inside the ICV."""
    u = rng.uniform

    def put(lo, hi, fn, code, allowed=None):
        sl = grid.roi(lo, hi, umax + 1)
        if any(s.stop <= s.start for s in sl):
            return
        m = fn(X[sl], Y[sl], Z[sl]) & ~icv[sl]
        sub = label[sl]
        if allowed is not None:
            m &= np.isin(sub, allowed)
        sub[m] = code

    z_fm = u(-60, -53)
    # below the foramen magnum the bony shell around the canal is neck muscle
    put((-60, -90, -80), (60, 0, z_fm), lambda x, y, z: (z < z_fm) & (y < -14), MUSCLE, (BONE, DIPLOE, SCALP, FAT))
    # face and neck soft tissue
    put((-62, -10, -80), (62, 104, -15),
        lambda x, y, z: (ellipsoid(x, y, z, (0, 48, -52), (u(52, 60), u(50, 56), 40)) < 1) & (z < -16), MUSCLE,
        (AIR,))
    put((-65, -95, -80), (65, 40, -40),
        lambda x, y, z: ((x / 58.0) ** 2 + ((y + 26) / 62.0) ** 2 < 1) & (z < -44), MUSCLE, (AIR,))
    put((-14, 68, -80), (14, 106, -30), lambda x, y, z: ellipsoid(x, y, z, (0, 86, -54), (11, 17, 22)) < 1, SCALP,
        (AIR,))
    for side in (-1, 1):
        sx = side * u(74, 80)
        put((sx - 6, -45, -65), (sx + 6, 0, 0),
            lambda x, y, z: ellipsoid(x, y, z, (sx, -22, -32), (3.5, 15, 26)) < 1, SCALP, (AIR,))
    # sphenoid body with its sinus, clivus, dens
    put((-20, -15, -55), (20, 30, -22), lambda x, y, z: ellipsoid(x, y, z, (0, 8, -38), (17, 20, 14)) < 1, BONE)
    if rng.random() < 0.9:
        sc = (0, u(8, 14), u(-40, -35))
        ss = (u(9, 14), u(9, 14), u(7, 11))
        put((-16, -5, -52), (16, 30, -24), lambda x, y, z: ellipsoid(x, y, z, sc, ss) < 1, SINUS)
    put((-10, -40, -70), (10, 0, -22),
        lambda x, y, z: segment_distance(x, y, z, (0, -8, -30), (0, -31, -62))[0] < 7, BONE)
    put((-9, -32, -82), (9, -12, -56), lambda x, y, z: ellipsoid(x, y, z, (0, -23, -70), (7, 7, 12)) < 1, BONE)
    for side in (-1, 1):
        rp = u(5.5, 8.0)
        p0, p1 = (side * 54, u(-36, -28), u(-40, -35)), (side * 14, u(-16, -8), u(-36, -31))
        put((-70, -50, -55), (70, 5, -20),
            lambda x, y, z: segment_distance(x, y, z, p0, p1, (1, 1, 1.3))[0] < rp, PETROUS, HEAD)
        mc, ms = (side * u(52, 58), u(-42, -34), u(-45, -38)), (u(10, 13), u(13, 17), u(12, 15))
        sl = grid.roi(np.subtract(mc, ms), np.add(mc, ms), umax + 1)
        mast = (ellipsoid(X[sl], Y[sl], Z[sl], mc, ms) < 1) & ~icv[sl] & np.isin(label[sl], HEAD)
        cells = smooth_noise(rng, mast.shape, grid.h, 3.0) > u(-0.3, 0.6)
        label[sl][mast & cells] = SINUS
        label[sl][mast & ~cells] = BONE
        # ear canal (air) through the soft tissue
        put((side * 50 - 35, -35, -50), (side * 50 + 35, -10, -28),
            lambda x, y, z: segment_distance(x, y, z, (side * 82, -22, -38), (side * 56, -26, -39))[0] < 3.5,
            SINUS, (SCALP, MUSCLE, FAT, BONE, DIPLOE))
        # orbit: bony wall, fat, globe, lens
        oc, os_ = (side * u(29, 33), u(49, 55), u(-42, -34)), (u(16, 19), u(22, 26), u(14, 17))
        sl = grid.roi(np.subtract(oc, os_), np.add(oc, os_), umax + 1)
        e = ellipsoid(X[sl], Y[sl], Z[sl], oc, os_)
        free = ~icv[sl]
        sub = label[sl]
        sub[(e < 1.0) & (e >= 0.88) & (Y[sl] < oc[1] + 10) & free] = BONE
        sub[(e < 0.88) & free] = FAT
        gc = (oc[0], oc[1] + u(4, 8), oc[2])
        gr = u(11.0, 12.5)
        g = ellipsoid(X[sl], Y[sl], Z[sl], gc, (gr, gr, gr))
        sub[(g < 1) & free] = EYE
        lc = (gc[0], gc[1] + gr - 3.0, gc[2])
        sub[(ellipsoid(X[sl], Y[sl], Z[sl], lc, (4.5, 2.0, 4.5)) < 1) & free] = LENS
        # maxillary sinus with a thin wall
        mxc, mxs = (side * u(25, 30), u(40, 48), u(-66, -58)), (u(12, 16), u(16, 20), u(13, 17))
        sl = grid.roi(np.subtract(mxc, mxs), np.add(mxc, mxs), umax + 1)
        e = ellipsoid(X[sl], Y[sl], Z[sl], mxc, mxs)
        free = ~icv[sl] & ~np.isin(label[sl], (EYE, LENS, FAT))
        label[sl][(e < 1.0) & (e >= 0.88) & free] = BONE
        label[sl][(e < 0.88) & free] = SINUS
        # zygomatic arch
        zr = u(3.5, 5.0)
        za, zb = (side * 44, 46, -46), (side * 64, 2, -46)
        put((-70, -5, -55), (70, 55, -35), lambda x, y, z: segment_distance(x, y, z, za, zb)[0] < zr, BONE, HEAD)
    # ethmoid honeycomb between the orbits, nasal cavity below it
    sl = grid.roi((-13, 25, -52), (13, 72, -28), umax + 1)
    box = (np.abs(X[sl]) < 12) & (Y[sl] > 25) & (Y[sl] < 72) & (Z[sl] > -52) & (Z[sl] < -28) & ~icv[sl]
    box &= ~np.isin(label[sl], (EYE, LENS, FAT))
    cells = smooth_noise(rng, box.shape, grid.h, 4.0) > u(-0.5, 0.3)
    label[sl][box & cells] = SINUS
    label[sl][box & ~cells] = BONE
    sl = grid.roi((-15, 28, -80), (15, 88, -52), umax + 1)
    box = (np.abs(X[sl]) < 14) & (Y[sl] > 28) & (Y[sl] < 86) & (Z[sl] < -52) & ~icv[sl]
    turb = smooth_noise(rng, box.shape, grid.h, 6.0) > u(0.2, 0.8)
    sub = label[sl]
    sub[box] = SINUS
    sub[box & turb] = SCALP
    sub[box & (np.abs(X[sl]) < 1.2)] = BONE

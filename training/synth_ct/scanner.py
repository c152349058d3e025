"""The scanner frame: head placement, DICOM geometry, thick-slice sampling with a slice profile, and acquisition.

The head (template space) is scaled per axis, rotated and shifted into patient coordinates (LPS, as DICOM). The
stack is axial; a gantry tilt rotates the image plane about the patient's left-right axis while the table still
steps along z, so ImagePositionPatient shears (step . normal = spacing between slices). The field of view is sized
so the whole head fits. Each slice samples the canonical volumes at several planes along its normal (a box,
triangle or Gaussian profile of FWHM = the slice thickness) and averages them with the profile weights: partial
volume along z is real, and the truth occupancies are computed the same way as the image. In-plane, anatomy is
sampled on a render grid of about 1 mm and interpolated to the output matrix before the kernel blur and noise.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from . import render
from .fields import Grid, interp_axis
from .labels import AIR, Anatomy

FLIP = np.diag([-1.0, -1.0, 1.0])  # template RAS -> patient LPS


def _rot(axis: int, deg: float) -> np.ndarray:
    c, s = np.cos(np.deg2rad(deg)), np.sin(np.deg2rad(deg))
    i, j = [a for a in range(3) if a != axis]
    R = np.eye(3)
    R[i, i], R[i, j], R[j, i], R[j, j] = c, -s, s, c
    return R


@dataclass
class Placement:
    R: np.ndarray
    scale: np.ndarray
    t: np.ndarray  # patient position of the head centre
    c_head: np.ndarray  # template position of the head centre

    def to_patient(self, c: np.ndarray) -> np.ndarray:
        return ((c - self.c_head) * self.scale) @ FLIP @ self.R.T + self.t

    def index_map(self, grid: Grid):
        """(Mq, q0) with canonical index q = Mq @ p + q0 for a patient point p."""
        Mq = np.diag(1.0 / self.scale) @ FLIP @ self.R.T / grid.h
        q0 = (self.c_head - np.asarray(grid.lo)) / grid.h - Mq @ self.t
        return Mq, q0


def place(rng: np.random.Generator, anat: Anatomy) -> tuple[Placement, dict]:
    scale = 0.93 * rng.uniform(0.85, 1.15, 3)  # MNI space is ~7% larger than an average adult head
    yaw, pitch, roll = rng.uniform(-10, 10), rng.uniform(-15, 12), rng.uniform(-6, 6)
    R = _rot(2, yaw) @ _rot(0, pitch) @ _rot(1, roll)
    t = np.array([rng.uniform(-8, 8), rng.uniform(-8, 8), rng.uniform(-60, 60)])
    info = {"head_scale": [round(float(s / 0.93), 3) for s in scale],
            "rotation_deg": {"yaw": round(yaw, 2), "pitch": round(pitch, 2), "roll": round(roll, 2)}}
    return Placement(R, scale, t, anat.brain_centre_mm), info


@dataclass
class Geometry:
    matrix: int
    pixel: float
    f: int  # render grid = output grid / f
    n: int
    spacing: float
    thickness: float
    tilt: float
    row: np.ndarray
    col: np.ndarray
    normal: np.ndarray
    P0: np.ndarray
    step: np.ndarray
    head_xy: np.ndarray
    r_post: float

    @property
    def positions(self) -> np.ndarray:
        return self.P0[None, :] + np.arange(self.n)[:, None] * self.step[None, :]

    @property
    def hr(self) -> int:
        return int(np.ceil(self.matrix / self.f))


def plan(rng: np.random.Generator, anat: Anatomy, pl: Placement, matrix: int, thickness: float, tilt: float,
         small: bool) -> Geometry:
    grid = anat.grid
    t = np.deg2rad(tilt)
    row = np.array([1.0, 0.0, 0.0])
    col = np.array([0.0, np.cos(t), np.sin(t)])
    nrm = np.cross(row, col)
    st = max(1, int(round(3.0 / grid.h)))
    idx = np.argwhere(anat.label[::st, ::st, ::st] != AIR) * st
    c = np.asarray(grid.lo) + grid.h * idx
    p = pl.to_patient(c)
    dn = p @ nrm
    sp = float(thickness)
    if small:
        lv = np.argwhere(anat.lv[::st, ::st, ::st]) * st
        d_c = float((pl.to_patient(np.asarray(grid.lo) + grid.h * lv.mean(0)) @ nrm)) + rng.uniform(-3, 8)
        n = 6
        d0 = d_c - (n - 1) / 2 * sp
    else:
        z_bot = rng.uniform(-62.0, -48.0)
        d0 = float(dn[c[:, 2] >= z_bot].min()) - rng.uniform(0.0, 4.0)
        d1 = float(dn.max()) + rng.uniform(0.0, 6.0)
        n = int(np.ceil((d1 - d0) / sp)) + 1
    k = (dn - d0) / sp
    slab = (k > -1.5) & (k < n + 0.5)
    a = p[slab] @ row
    b = p[slab] @ col - k[slab] * sp * np.tan(t)
    margin = 6.0 + grid.h
    need = max(a.max() - a.min(), b.max() - b.min()) + 2 * margin
    if small:
        pixel = need / matrix * rng.uniform(1.0, 1.1)
    else:
        lo = max(need / matrix, 0.35)
        pixel = lo + (max(0.6, lo) - lo) * rng.random() ** 2  # most FOVs are tight around the head
    fov = pixel * matrix
    a0 = (a.min() + a.max()) / 2 - (matrix - 1) / 2 * pixel
    b0 = (b.min() + b.max()) / 2 - (matrix - 1) / 2 * pixel
    a0 += rng.uniform(-0.4, 0.4) * max(fov - (a.max() - a.min()) - 2 * margin, 0)
    b0 += rng.uniform(-0.4, 0.4) * max(fov - (b.max() - b.min()) - 2 * margin, 0)
    P0 = a0 * row + b0 * col + d0 * nrm
    step = np.array([0.0, 0.0, sp / np.cos(t)])
    f = 1 if small else max(1, int(round(0.95 / pixel)))
    ps = p[slab]
    centre = pl.t[:2]
    post = ps[:, 1] > centre[1]
    r_post = float(np.sqrt(((ps[post, :2] - centre) ** 2).sum(1)).max()) if post.any() else 80.0
    return Geometry(matrix, float(pixel), f, n, sp, sp, float(tilt), row, col, nrm, P0, step, centre, r_post)


def _sample_step(T: float, h: float) -> float:
    return float(np.clip(T / 3.0, 0.5 * h, h))  # the anatomy grid holds nothing finer than h


def box_profile(T: float, h: float) -> tuple[np.ndarray, np.ndarray]:
    """Offsets and weights of a box of width T: a voxel's own extent along the normal."""
    M = max(2, int(np.ceil(T / _sample_step(T, h))))
    return -T / 2 + (np.arange(M) + 0.5) * T / M, np.full(M, 1.0 / M, np.float32)


def slice_profile(rng: np.random.Generator, T: float, h: float):
    """The image's slice profile (box, triangle or Gaussian of FWHM T): (kind, offsets, weights)."""
    kind = str(rng.choice(["box", "triangle", "gaussian"], p=[0.4, 0.3, 0.3]))
    delta = _sample_step(T, h)
    if kind == "box":
        return (kind, *box_profile(T, h))
    if kind == "triangle":
        M = max(3, int(np.ceil(2 * T / delta)))
        s = -T + (np.arange(M) + 0.5) * 2 * T / M
        w = 1 - np.abs(s) / T
    else:
        sig = T / 2.3548
        half = 2.5 * sig
        M = max(3, int(np.ceil(2 * half / delta)))
        s = -half + (np.arange(M) + 0.5) * 2 * half / M
        w = np.exp(-s ** 2 / (2 * sig ** 2))
    return kind, s, (w / w.sum()).astype(np.float32)


class _Sampler:
    """Samples a canonical (cropped) volume on the render grid of one slice, averaged over the slice profile."""

    def __init__(self, grid: Grid, pl: Placement, g: Geometry, offsets, weights):
        self.Mq, self.q0 = pl.index_map(grid)
        self.g, self.s, self.w = g, offsets, weights
        self.ds = float(offsets[1] - offsets[0]) if len(offsets) > 1 else 0.0
        ps, f = g.pixel, g.f
        self.A = np.stack([self.Mq @ g.normal * self.ds, self.Mq @ g.col * f * ps, self.Mq @ g.row * f * ps], 1)
        self.grid = grid

    def cloud(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Patient-frame coordinates of canonical voxel indices: (normal, column-axis, row-axis) relative to P0."""
        g = self.g
        if not len(idx):
            e = np.zeros(0)
            return e, e, e
        p = (idx - self.q0) @ np.linalg.inv(self.Mq).T - g.P0
        return p @ g.normal, p @ g.col, p @ g.row

    def window(self, k: int, cl, margin: float):
        """Render-grid (i0, i1, j0, j1) covering the cloud's points near slice k, or None if there are none."""
        g = self.g
        dn, b, a = cl
        if not len(dn):
            return None
        z = k * g.spacing
        sel = (dn > z + self.s[0] - margin) & (dn < z + self.s[-1] + margin)
        if not sel.any():
            return None
        shear = k * g.spacing * np.tan(np.deg2rad(g.tilt))  # slice k's origin moves along the column axis
        f, ps, hr = g.f, g.pixel, g.hr
        ii = ((b[sel] - shear) / ps - (f - 1) / 2) / f
        jj = (a[sel] / ps - (f - 1) / 2) / f
        m = margin / (ps * f) + 1
        i0, i1 = max(int(np.floor(ii.min() - m)), 0), min(int(np.ceil(ii.max() + m)) + 1, hr)
        j0, j1 = max(int(np.floor(jj.min() - m)), 0), min(int(np.ceil(jj.max() + m)) + 1, hr)
        if i1 <= i0 or j1 <= j0:
            return None
        return i0, i1, j0, j1

    def __call__(self, vol, k: int, cval: float, origin=(0, 0, 0), win=None) -> np.ndarray:
        g = self.g
        i0, i1, j0, j1 = win if win is not None else (0, g.hr, 0, g.hr)
        ps, f = g.pixel, g.f
        base = (g.P0 + k * g.step + self.s[0] * g.normal + (f * i0 + (f - 1) / 2) * ps * g.col
                + (f * j0 + (f - 1) / 2) * ps * g.row)
        off = self.Mq @ base + self.q0 - np.asarray(origin, float)
        out = ndi.affine_transform(vol, self.A, offset=off, output_shape=(len(self.s), i1 - i0, j1 - j0), order=1,
                                   mode="constant", cval=cval, prefilter=False, output=np.float32)
        return np.tensordot(self.w, out, axes=1)


def _paste_up(dst: np.ndarray, src: np.ndarray, f: int) -> None:
    """Upsample a render-grid slice into an output slice, only over the bounding box of its non-zero pixels."""
    nz = np.nonzero(src.any(1))[0]
    if not len(nz):
        return
    nzc = np.nonzero(src.any(0))[0]
    i0, i1 = max(nz[0] - 1, 0), min(nz[-1] + 2, src.shape[0])
    j0, j1 = max(nzc[0] - 1, 0), min(nzc[-1] + 2, src.shape[1])
    H, W = dst.shape
    o0, o1 = max(f * i0 - f, 0), min(f * i1 + f, H)
    p0, p1 = max(f * j0 - f, 0), min(f * j1 + f, W)
    blk = interp_axis(src[i0:i1, j0:j1], (np.arange(o0, o1) - (f - 1) / 2.0) / f - i0, 0)
    dst[o0:o1, p0:p1] = interp_axis(blk, (np.arange(p0, p1) - (f - 1) / 2.0) / f - j0, 1)


def acquire(rng: np.random.Generator, grid: Grid, pl: Placement, g: Geometry, hu, wm, occ, wcrop, clouds,
            small: bool):
    """(image HU, wm_fraction, wml_fraction, info) on the output grid (z, y, x). The image is sampled with the drawn
    slice profile; the truth maps with a box over the slice spacing, so each is the occupancy of the voxel itself
    (a triangle or Gaussian profile reaches into the next slices, which is the image's blur, not the voxel's truth)."""
    u = rng.uniform
    kind, offsets, weights = slice_profile(rng, g.thickness, grid.h)
    S = _Sampler(grid, pl, g, offsets, weights)
    truth = _Sampler(grid, pl, g, *box_profile(g.spacing, grid.h))
    nz, hr, H = g.n, g.hr, g.matrix
    clean = np.full((nz, hr, hr), -1000.0, np.float32)
    wm_r = np.zeros((nz, hr, hr), np.float32)
    les_r = np.zeros((nz, hr, hr), np.float32)
    origin = tuple(s.start for s in wcrop)
    margin = 4.0 * grid.h  # the clouds hold every 3rd voxel
    cl = {k: S.cloud(v) for k, v in clouds.items()}
    for k in range(nz):
        for smp, name, vol, dst, org, cval in ((S, "head", hu, clean, (0, 0, 0), -1000.0),
                                               (truth, "wm", wm, wm_r, origin, 0.0),
                                               (truth, "lesion", occ, les_r, origin, 0.0)):
            win = smp.window(k, cl[name], margin)
            if win is not None:
                i0, i1, j0, j1 = win
                dst[k, i0:i1, j0:j1] = smp(vol, k, cval, org, win)
    np.minimum(les_r, wm_r, out=les_r)  # one sampler for both: only guards float rounding
    info = {"slice_profile": kind, "profile_samples": int(len(offsets)), "render_mm": round(g.pixel * g.f, 3)}

    # render-grid patient coordinates (x, y) of every pixel of slice k: x = P.x + a, y = P.y + b cos(tilt)
    ps, f = g.pixel, g.f
    ax = (f * np.arange(hr) + (f - 1) / 2) * ps
    # head holder (carbon shell with foam) and table, below the head (patient posterior = +y)
    if not small and rng.random() < 0.75:
        gap = u(3.0, 10.0)
        R_h = g.r_post + gap
        shell, foam, table = u(2.5, 6.0), u(-950.0, -800.0), u(50.0, 400.0)
        shell_hu = u(100.0, 500.0)
        t_gap, t_thk = u(5.0, 25.0), u(4.0, 10.0)
        info["head_holder"] = {"radius_mm": round(R_h, 1), "shell_hu": round(shell_hu, 1), "table_hu": round(table, 1)}
        for k in range(nz):
            P = g.P0 + k * g.step
            X = P[0] + ax[None, :] - g.head_xy[0]
            Yp = P[1] + ax[:, None] * g.col[1] - g.head_xy[1]
            r = np.sqrt(X ** 2 + Yp ** 2)
            lower = Yp > 0.15 * R_h
            hmap = np.full((hr, hr), -1000.0, np.float32)
            hmap[(r < R_h) & lower] = foam
            hmap[(r >= R_h) & (r < R_h + shell) & lower] = shell_hu
            ty = R_h + shell + t_gap
            hmap[(Yp > ty) & (Yp < ty + t_thk) & (np.abs(X) < 220)] = table
            np.maximum(clean[k], hmap, out=clean[k])
    if rng.random() < 0.2:
        k0 = int(rng.integers(0, nz))
        ks = list(range(k0, min(nz, k0 + int(rng.integers(1, 5)))))
        for k in ks:
            w, dy, dx = u(0.2, 0.5), u(-5, 5) / (ps * f), u(-5, 5) / (ps * f)
            clean[k] = (1 - w) * clean[k] + w * ndi.shift(clean[k], (dy, dx), order=1, cval=-1000.0)
        info["motion_slices"] = ks

    # beam hardening on a ~3 mm grid, every ~2.5 mm along z (linear in between)
    gb = max(1, int(round(3.0 / (ps * f))))
    nc = hr // gb
    kstep = max(1, int(round(2.5 / g.spacing)))
    kk = sorted(set(range(0, nz, kstep)) | {nz - 1})
    coarse = clean[kk, : nc * gb, : nc * gb].reshape(len(kk), nc, gb, nc, gb).mean(axis=(2, 4))
    streak = np.empty_like(coarse)
    cup = np.empty_like(coarse)
    for i in range(len(kk)):
        streak[i], cup[i] = render.beam_hardening(coarse[i], gb * f * ps / 10.0)
    softm = (coarse > -20) & (coarse < 100)
    a_streak = u(0.0, 5.0) if rng.random() < 0.35 else u(5.0, 40.0)
    a_cup = u(0.0, 6.0)
    art = np.zeros_like(coarse)
    if softm.any():
        q = float(np.percentile(streak[softm], 0.5))
        if q < 0:
            art += streak * np.float32(a_streak / -q)
        rng_c = float(np.percentile(cup[softm], 95) - np.percentile(cup[softm], 5))
        if rng_c > 0:
            art += cup * np.float32(a_cup / rng_c)
        art -= np.float32(np.median(art[softm]))
    art = interp_axis(art, np.interp(np.arange(nz), kk, np.arange(len(kk))), 0)
    del streak, cup, coarse, softm
    info.update({"beam_hardening_streak_hu": round(a_streak, 2), "cupping_hu": round(a_cup, 2)})

    # low-frequency bias and calibration offset
    a_bias = u(0.0, 3.0)
    waves = []
    for _ in range(3):
        d = rng.normal(size=3)
        waves.append((d / np.linalg.norm(d), 1.0 / u(150.0, 400.0), u(0, 2 * np.pi), rng.normal()))
    offset = u(-4.0, 4.0)
    info.update({"bias_hu": round(a_bias, 2), "calibration_offset_hu": round(offset, 2)})

    # kernel and noise
    fwhm = u(0.5, 1.5)
    sigma = float(np.exp(u(np.log(2.0), np.log(12.0))))
    f_c = u(0.2, 0.9)
    f_0 = u(0.01, 0.1)
    rho = u(0.0, 0.4) if g.thickness < 2.0 else u(0.0, 0.15)
    centre_gain = u(0.0, 0.6)
    Rc = u(55.0, 85.0)
    info.update({"blur_fwhm_mm": round(fwhm, 3), "noise_sd_hu": round(sigma, 3), "noise_cutoff_lpmm": round(f_c, 3),
                 "noise_low_freq": round(f_0, 3), "noise_z_corr": round(rho, 3),
                 "noise_centre_gain": round(centre_gain, 3)})
    noise = render.noise_slices(rng, nz, (H, H), ps, f_c, f_0, rho)
    oax = np.arange(H) * ps
    sig_r = fwhm / 2.3548 / (ps * f)  # the kernel, applied on the render grid before interpolation
    ex = np.exp(-((g.P0[0] + oax - g.head_xy[0]) ** 2) / (Rc * Rc)).astype(np.float32)
    image = np.empty((nz, H, H), np.float32)
    for k in range(nz):
        P = g.P0 + k * g.step
        sl = clean[k]
        a_k = art[k] if gb == 1 and nc == hr else render.upsample2d(art[k], gb, (hr, hr))
        sl += a_k
        if a_bias > 0:
            xx = P[0] + ax[None, :]
            yy = P[1] + ax[:, None] * g.col[1]
            zz = P[2] + ax[:, None] * g.col[2]
            b = np.zeros((hr, hr), np.float32)
            for d, fr, ph, amp in waves:
                b += amp * np.cos(2 * np.pi * fr * (d[0] * xx + d[1] * yy + d[2] * zz) + ph)
            sl += np.float32(a_bias / 1.7) * b
        if sig_r > 0.25:
            sl = ndi.gaussian_filter(sl, sig_r, mode="nearest")
        img = render.upsample2d(sl, f, (H, H))
        ey = np.exp(-((P[1] + oax * g.col[1] - g.head_xy[1]) ** 2) / (Rc * Rc)).astype(np.float32)
        sd = np.float32(sigma * centre_gain) * np.outer(ey, ex) + np.float32(sigma * (1.0 - centre_gain))
        img += next(noise) * sd
        img += np.float32(offset)
        np.rint(img, out=img)
        np.clip(img, -1024, 3071, out=image[k])
    del clean
    wm_frac = np.zeros((nz, H, H), np.float32)
    les = np.zeros((nz, H, H), np.float32)
    for k in range(nz):
        _paste_up(wm_frac[k], wm_r[k], f)
        _paste_up(les[k], les_r[k], f)
    del wm_r, les_r
    np.minimum(les, wm_frac, out=les)  # linear interpolation keeps both in [0, 1] and les <= wm
    return image, wm_frac, les, info

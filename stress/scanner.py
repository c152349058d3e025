"""Acquisition physics: pose, (tilted) slice geometry, slice-profile sampling, CT and SWI image formation.

CT: HU per tissue with low-frequency texture, beam-hardening pseudo-enhancement
near the inner table, slice-profile (trapezoid) averaging along the slice normal,
kernel blur, noise shaped by a ramp x apodisation noise power spectrum in 2-D
Fourier space (SD scaling with 1/sqrt(thickness)), dark bands and fine streaks
between dense skull-base bone.
SWI: relative magnitude per tissue (iron-dark pallidum/putamen), veins as dark
tubes, susceptibility drop-out next to air, blooming microbleeds rendered
analytically on the acquisition grid, coil bias field, Rician noise at a
1.5 T / 3 T-like SNR.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from . import anatomy as A


# --------------------------------------------------------------------------- geometry


def rotation(rx: float, ry: float, rz: float) -> np.ndarray:
    cx, sx = math.cos(rx), math.sin(rx)
    cy, sy = math.cos(ry), math.sin(ry)
    cz, sz = math.cos(rz), math.sin(rz)
    Rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    Ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    Rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return Rz @ Ry @ Rx


@dataclass
class Pose:
    """patient = R @ head + t (LPS, mm)."""

    R: np.ndarray
    t: np.ndarray

    def to_patient(self, head_xyz) -> np.ndarray:
        return np.asarray(head_xyz, float) @ self.R.T + self.t

    def to_head(self, patient_xyz) -> np.ndarray:
        return (np.asarray(patient_xyz, float) - self.t) @ self.R


def random_pose(rng: np.random.Generator, pitch_deg: float = 8.0) -> Pose:
    R = rotation(np.radians(rng.uniform(-pitch_deg, pitch_deg)), np.radians(rng.uniform(-4, 4)),
                 np.radians(rng.uniform(-5, 5)))
    t = np.array([rng.uniform(-8, 8), rng.uniform(-25, 10), rng.uniform(-220, 60)])
    return Pose(R, t)


@dataclass
class Acquisition:
    rows: int
    cols: int
    spacing: tuple[float, float]  # (between rows, between columns) mm
    row_dir: np.ndarray
    col_dir: np.ndarray
    positions: np.ndarray  # (n, 3) top-left pixel centre of each slice, patient mm
    thickness: float
    tilt_deg: float
    tilt_style: str  # "none" | "sheared" | "normal"

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.row_dir, self.col_dir)

    @property
    def plane_spacing(self) -> float:
        return abs(float((self.positions[1] - self.positions[0]) @ self.normal))

    @property
    def voxel_ml(self) -> float:
        return self.spacing[0] * self.spacing[1] * self.plane_spacing / 1000.0


def make_acquisition(pose: Pose, *, fov: float, matrix: int, thickness: float, spacing: float | None,
                     tilt_deg: float, tilt_style: str, head_z_range: tuple[float, float],
                     oblique_deg: float = 0.0) -> Acquisition:
    """Axial stack around the head. CT gantry tilt: rotation about patient x; ``sheared`` keeps the table
    stepping along z (true tilted-gantry stack), ``normal`` steps along the tilted normal. ``oblique_deg``
    tilts an MR stack the same way, always stepping along its normal."""
    t = math.radians(tilt_deg if tilt_style != "none" else oblique_deg)
    row = np.array([1.0, 0.0, 0.0])
    col = np.array([0.0, math.cos(t), -math.sin(t)])
    normal = np.cross(row, col)
    spacing = spacing or thickness
    centre = pose.to_patient(np.array([0.0, 5.0, 10.0]))
    lo = pose.to_patient(np.array([0.0, 10.0, head_z_range[0]])) @ normal
    hi = pose.to_patient(np.array([0.0, 0.0, head_z_range[1]])) @ normal
    d = np.arange(min(lo, hi), max(lo, hi) + spacing, spacing)
    n = len(d)
    px = fov / matrix
    half = (matrix - 1) / 2.0 * px
    if tilt_style == "sheared":
        # isocentre track along z; plane k at normal distance d_k
        dz = spacing / math.cos(t)
        z0 = (d[0] - centre[:2] @ normal[:2]) / normal[2]
        iso = np.stack([np.full(n, centre[0]), np.full(n, centre[1]), z0 + dz * np.arange(n)], 1)
    else:
        base = centre - (centre @ normal) * normal
        iso = base[None] + d[:, None] * normal[None]
    pos = iso - half * row[None] - half * col[None]
    return Acquisition(matrix, matrix, (px, px), row, col, pos, float(thickness),
                       float(tilt_deg if tilt_style != "none" else 0.0), tilt_style)


def sample(acq: Acquisition, pose: Pose, grid: A.WorldGrid, arr: np.ndarray, order: int,
           normal_offsets, weights, inplane=((0.0, 0.0),), cval: float = 0.0, dtype=np.float32, transform=None) -> np.ndarray:
    """Weighted average of ``arr`` (world grid) over slice-profile and in-plane sub-samples of every voxel.

    ``transform`` is applied to each sub-sample before averaging (e.g. ``v > 0`` for an occupancy fraction).
    """
    out = np.zeros((len(acq.positions), acq.rows, acq.cols), dtype)
    Rt = pose.R.T
    ii, jj = np.meshgrid(np.arange(acq.rows, dtype=np.float64), np.arange(acq.cols, dtype=np.float64), indexing="ij")
    vi = (Rt @ (acq.col_dir * acq.spacing[0])) / grid.h
    vj = (Rt @ (acq.row_dir * acq.spacing[1])) / grid.h
    vn = (Rt @ acq.normal) / grid.h
    w = np.asarray(weights, float)
    w = w / w.sum()
    n_in = len(inplane)
    for k, p in enumerate(acq.positions):
        base = (Rt @ (p - pose.t) - grid.origin) / grid.h
        acc = np.zeros((acq.rows, acq.cols), np.float64)
        for s, ws in zip(normal_offsets, w):
            for a, b in inplane:
                o = base + s * vn + a * vi + b * vj
                q = np.stack([o[d] + ii * vi[d] + jj * vj[d] for d in range(3)])
                v = ndi.map_coordinates(arr, q.reshape(3, -1), order=order, mode="constant", cval=cval,
                                        prefilter=False).reshape(acq.rows, acq.cols)
                acc += ws / n_in * (transform(v) if transform is not None else v)
        out[k] = acc
    return out


def profile(thickness: float, step: float = 0.5, shape: str = "trapezoid"):
    n = max(1, int(math.ceil(thickness / step)))
    offs = (np.arange(n) + 0.5) / n * thickness - thickness / 2
    if shape == "trapezoid" and n >= 3:
        w = np.clip(1.6 - 1.2 * np.abs(offs) / (thickness / 2), 0.0, 1.0) + 0.15
    else:
        w = np.ones(n)
    return offs, w


def patient_to_index(acq: Acquisition, xyz) -> np.ndarray:
    """Continuous (k, i, j) of a patient point on this (possibly sheared) grid."""
    n = len(acq.positions)
    step = (acq.positions[-1] - acq.positions[0]) / max(n - 1, 1)
    M = np.stack([step, acq.col_dir * acq.spacing[0], acq.row_dir * acq.spacing[1]], 1)
    return np.linalg.solve(M, np.asarray(xyz, float) - acq.positions[0])


# --------------------------------------------------------------------------- CT


CT_KERNELS = {  # blur sigma (mm) and NPS cut-off (cycles/mm)
    "soft": (0.75, 0.32), "standard": (0.55, 0.45), "sharp-brain": (0.4, 0.6),
}


def ct_world(head: A.Head, rng, L: np.ndarray | None) -> tuple[np.ndarray, dict]:
    gm = rng.uniform(34, 41)
    wm = gm - rng.uniform(4.5, 9.5)  # elderly: reduced grey-white contrast
    csf = rng.uniform(3, 11)
    hu = {
        A.AIR: -1000, A.SOFT: rng.uniform(30, 48), A.FAT: -95, A.BONE: rng.uniform(1250, 1700),
        A.DIPLOE: rng.uniform(450, 800), A.SAS: csf, A.VENT: csf, A.GM: gm, A.WM: wm,
        A.CAUDATE: gm - 1, A.PUTAMEN: gm - 1.5, A.PALLIDUM: gm - 4, A.THALAMUS: gm - 2.5,
        A.CBL_GM: gm - 1, A.CBL_WM: wm + 2, A.STEM: wm + 3, A.SINUS_AIR: -950, A.ORBIT_FAT: -90,
        A.GLOBE: 12, A.DURA: rng.uniform(45, 65), A.CHOROID: gm + 3, A.LACUNE: csf + 3,
        A.INFARCT: csf + rng.uniform(4, 10), A.CALC: rng.uniform(140, 480), A.WML: wm - 6,
    }
    lut = np.zeros(256, np.float32)
    for k, v in hu.items():
        lut[k] = v
    img = lut[head.labels]
    brain = np.isin(head.labels, A.BRAIN)
    tex = A.coarse_field(rng, head.grid, 3.0, 2.0, 6.0, 60.0)
    img += (1.2 * tex) * brain
    del tex
    bh = rng.uniform(2.0, 6.0)
    inside = head.sd_cavity < 0
    img[inside] += bh * np.exp(np.maximum(head.sd_cavity[inside], -60) / 7.0)
    delta = 0.0
    if L is not None:
        delta = rng.uniform(4.0, 9.0)
        dark = np.clip(0.5 + L / 1.5, 0.0, 1.0) * (head.labels == A.WM)
        img -= (delta * dark).astype(np.float32)
    img = ndi.gaussian_filter(img, 0.5)
    return img, {"gm_hu": gm, "wm_hu": wm, "csf_hu": csf, "wml_contrast_hu": delta, "beam_hardening_hu": bh}


def ct_noise(rng, shape2d, px_mm: float, fc: float) -> np.ndarray:
    white = rng.standard_normal(shape2d)
    fy = np.fft.fftfreq(shape2d[0], d=px_mm)
    fx = np.fft.rfftfreq(shape2d[1], d=px_mm)
    f = np.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)
    amp = np.sqrt(f) * np.exp(-(f / fc) ** 2)  # sqrt(NPS), NPS ~ |f| * apodisation^2
    n = np.fft.irfft2(np.fft.rfft2(white) * amp, s=shape2d)
    return n / n.std()


def ct_streaks(rng, img: np.ndarray, px: float, base_weight: float) -> np.ndarray:
    """Beam-hardening dark bands between dense skull-base bone blobs and fine radial streaks (one slice).

    Only bone well inside the head outline counts (petrous ridges, clivus), not the calvarial ring;
    ``base_weight`` (0..1) says how far into the skull base the slice lies.
    """
    if base_weight < 0.05:
        return np.zeros_like(img)
    head = ndi.binary_fill_holes(img > -300)
    interior = ndi.binary_erosion(head, iterations=max(1, int(14 / px)))
    dense = (img > 900) & interior
    if dense.sum() * px * px < 20:
        return np.zeros_like(img)
    lab, n = ndi.label(dense)
    sizes = ndi.sum(dense, lab, index=np.arange(1, n + 1))
    top = np.argsort(sizes)[::-1][:4] + 1
    cents = np.array(ndi.center_of_mass(dense, lab, top))
    H, W = img.shape
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    art = np.zeros_like(img)
    strength = base_weight * min(1.0, dense.sum() * px * px / 150.0)
    for a in range(len(cents)):
        for b in range(a + 1, len(cents)):
            p, q = cents[a], cents[b]
            d = q - p
            Ld = np.linalg.norm(d)
            if Ld < 15 / px:
                continue
            u = d / Ld
            rel_y, rel_x = yy - p[0], xx - p[1]
            along = rel_y * u[0] + rel_x * u[1]
            across = -rel_y * u[1] + rel_x * u[0]
            w = rng.uniform(2.5, 6.0) / px
            band = np.exp(-0.5 * (across / w) ** 2) * np.clip(np.minimum(along, Ld - along) / (8 / px), 0, 1)
            art -= rng.uniform(10, 30) * strength * band
    c = cents[0]
    rel_y, rel_x = yy - c[0], xx - c[1]
    r = np.hypot(rel_y, rel_x) + 1e-3
    ang = np.arctan2(rel_y, rel_x)
    for _ in range(int(rng.integers(6, 16))):
        th = rng.uniform(-np.pi, np.pi)
        dth = np.angle(np.exp(1j * (ang - th)))
        width = (0.8 / px) / r
        art += rng.choice([-1, 1]) * rng.uniform(3, 10) * strength * np.exp(-0.5 * (dth / width) ** 2) * np.exp(-r * px / 45)
    return (art * head).astype(np.float32)


# --------------------------------------------------------------------------- SWI


def swi_world(head: A.Head, rng, vein_occ: np.ndarray, field_t: float) -> tuple[np.ndarray, dict]:
    j = lambda a, b: float(rng.uniform(a, b))  # noqa: E731
    val = {
        A.AIR: 0.0, A.SOFT: j(0.5, 0.75), A.FAT: j(0.8, 1.0), A.BONE: 0.04, A.DIPLOE: j(0.2, 0.4), A.SAS: j(1.35, 1.7),
        A.VENT: j(1.4, 1.75), A.GM: j(0.82, 0.92), A.WM: 1.0, A.CAUDATE: j(0.78, 0.88), A.PUTAMEN: j(0.6, 0.78),
        A.PALLIDUM: j(0.35, 0.55), A.THALAMUS: j(0.8, 0.9), A.CBL_GM: j(0.8, 0.9), A.CBL_WM: j(0.9, 1.0),
        A.STEM: j(0.85, 0.98), A.SINUS_AIR: 0.0, A.ORBIT_FAT: j(0.8, 1.0), A.GLOBE: j(1.2, 1.5), A.DURA: j(0.5, 0.7),
        A.CHOROID: j(0.9, 1.1), A.LACUNE: j(1.3, 1.6), A.INFARCT: j(1.1, 1.4), A.CALC: j(0.12, 0.3), A.WML: 1.05,
    }
    lut = np.zeros(256, np.float32)
    for k, v in val.items():
        lut[k] = v
    img = lut[head.labels]
    if head.atrophy > 0.5 or rng.uniform() < 0.3:  # reserved draw (brainstem iron, not modelled); keeps seeds stable
        pass
    img *= (1.0 + 0.04 * A.coarse_field(rng, head.grid, 3.0, 2.0, 8.0, 60.0))
    vdepth = j(0.6, 0.85) if field_t > 2 else j(0.45, 0.7)
    img *= 1.0 - vdepth * vein_occ
    air = head.labels == A.SINUS_AIR
    d_air = ndi.distance_transform_edt(~air, sampling=head.grid.h).astype(np.float32)
    drop = j(0.5, 0.85) * (field_t / 3.0)
    img *= 1.0 - drop * np.exp(-d_air / j(4.0, 7.0)) * (~air)
    img = ndi.gaussian_filter(img, 0.4)
    return img, {"vein_contrast": vdepth, "air_dropout": drop, **{f"tissue_{A.LABEL_NAMES[k]}": v for k, v in val.items()}}


def bleed_attenuation(acq: Acquisition, pose: Pose, bleeds, normal_offsets, weights, rng) -> tuple[np.ndarray, list]:
    """Multiplicative blooming factor on the acquisition grid, and each bleed's patient centre."""
    fac = np.ones((len(acq.positions), acq.rows, acq.cols), np.float32)
    w = np.asarray(weights, float)
    w /= w.sum()
    sub = [(-0.25, -0.25), (-0.25, 0.25), (0.25, -0.25), (0.25, 0.25)]
    centres = []
    for b in bleeds:
        c = pose.to_patient(b.center)
        centres.append(c)
        R = b.diameter / 2.0
        depth = float(rng.uniform(0.78, 0.95))
        kij = patient_to_index(acq, c)
        ext_mm = R + 2.0
        nk = int(math.ceil(ext_mm / acq.plane_spacing + abs(acq.thickness) / acq.plane_spacing)) + 2
        ni = int(math.ceil(ext_mm / acq.spacing[0])) + 3
        nj = int(math.ceil(ext_mm / acq.spacing[1])) + 3
        k0, i0, j0 = (int(round(v)) for v in kij)
        ks = np.arange(max(k0 - nk - 3, 0), min(k0 + nk + 4, len(acq.positions)))
        is_ = np.arange(max(i0 - ni, 0), min(i0 + ni + 1, acq.rows))
        js = np.arange(max(j0 - nj, 0), min(j0 + nj + 1, acq.cols))
        if len(ks) == 0 or len(is_) == 0 or len(js) == 0:
            continue
        att = np.zeros((len(ks), len(is_), len(js)))
        for s, ws in zip(normal_offsets, w):
            for a, bb in sub:
                P = (acq.positions[ks][:, None, None, :] + s * acq.normal
                     + (is_[None, :, None, None] + a) * acq.spacing[0] * acq.col_dir
                     + (js[None, None, :, None] + bb) * acq.spacing[1] * acq.row_dir)
                r = np.linalg.norm(P - c, axis=-1)
                att += ws / len(sub) / (1.0 + np.exp(-(R - r) / 0.3))
        view = fac[np.ix_(ks, is_, js)]
        fac[np.ix_(ks, is_, js)] = np.minimum(view, 1.0 - depth * att)
    return fac, centres

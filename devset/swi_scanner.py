"""MR scanner model for the SWI set: acquisition draw, slab geometry, sampling with a slice profile,
coil bias, partial-Fourier blur, motion ghost and Rician noise.

* Geometry: head pose (yaw/roll/pitch) in the patient frame (LPS); axial or oblique (tilt about the
  patient's left-right axis) slices stacked along their normal, overlapping when spacing < thickness;
  the slab covers the whole brain (``--small``: a ~40 mm slab through the ventricles).
* Sampling: the template signal is resampled on thin planes (≤ 0.6 mm apart) at a ~0.9 mm in-plane
  lattice; a written slice is the slice-profile-weighted sum of the thin planes (rectangle with soft
  edges, width = thickness), zoomed linearly to the written matrix.
* Finishing (per slice): smooth multiplicative coil bias (polynomial + radial term), a ghost (shifted copy
  along the phase-encode axis), complex Gaussian noise, a 1-D k-space window along the phase-encode axis
  (partial Fourier zero filling with a soft edge, optional apodisation), magnitude (Rician).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import fft as sfft
from scipy import ndimage
from scipy.special import erf

from devset import anatomy as A
from devset.fields import rotation

TECHNIQUE = {"SIEMENS": ["swi-pm"], "GE": ["swan"], "PHILIPS": ["swip", "venbold"], "CANON": ["fsbb"]}
THICK = {"SIEMENS": (1.2, 1.5, 1.6, 2.0, 2.5), "GE": (2.0, 2.4, 2.8, 3.0), "PHILIPS": (1.0, 1.2, 1.5, 2.0),
         "CANON": (1.0, 1.5, 2.0, 2.5, 3.0)}
MATRIX = ((256, 0.82, 0.94), (320, 0.68, 0.75), (384, 0.56, 0.62), (448, 0.5, 0.54), (512, 0.5, 0.5))
MAX_VOXELS = 36e6  # written voxels per case (keeps a case < ~40 s): spacing is raised to fit


@dataclass
class MRAcq:
    vendor: str
    technique: str
    field_t: float
    te_ms: float  # (last) echo time
    te_first_ms: float
    n_echoes: int
    te_eff_ms: float  # what sets the T2* blooming
    tr_ms: float
    flip_deg: float
    pm_power: int
    pm_strength: float
    thickness: float
    spacing: float
    matrix: int
    pixel_spacing: float
    pe_dir: str  # ROW / COL
    pf: float  # partial Fourier fraction (1 = full)
    apod: float  # k-space apodisation strength
    tilt_deg: float
    pose_deg: tuple
    offset_mm: tuple
    table_z0: float
    snr: float
    bias_strength: float
    ghost_amp: float
    ghost_shift: float  # fraction of the matrix
    distortion_mm: float
    dropout: float
    dropout_len: float
    band_period: float
    tex_wm: float
    tex_gm: float
    vein_mag: float
    vein_pm: float
    vein_widen: float
    artery_dark: float
    bloom_factor: float
    dipole: float
    core_signal: float
    small: bool = False

    @property
    def fov(self) -> float:
        return self.matrix * self.pixel_spacing


def draw(rng: np.random.Generator, small: bool) -> MRAcq:
    vendor = str(rng.choice(["SIEMENS", "GE", "PHILIPS", "CANON"], p=[0.35, 0.3, 0.2, 0.15]))
    tech = str(rng.choice(TECHNIQUE[vendor], p=[0.75, 0.25] if vendor == "PHILIPS" else None))
    b0 = 3.0 if rng.random() < 0.6 else 1.5
    hi = b0 > 2
    te_first, n_echo = 0.0, 1
    if tech == "swan":
        te = rng.uniform(30.0, 45.0) if hi else rng.uniform(40.0, 55.0)
        te_first, n_echo = rng.uniform(4.0, 9.0), int(rng.integers(4, 9))
        te_eff = 0.5 * (te + te_first)
    else:
        te = rng.uniform(15.0, 26.0) if hi else rng.uniform(26.0, 40.0)
        if tech == "venbold":
            te = rng.uniform(25.0, 40.0)
        te_eff = te
    thickness = float(rng.choice(THICK[vendor]))
    overlap = rng.random() < (0.7 if vendor == "GE" else 0.3)
    spacing = round(thickness * (float(rng.choice([0.5, 0.6, 0.75])) if overlap else 1.0), 3)
    mi = int(rng.choice(len(MATRIX), p=[0.2, 0.15, 0.25, 0.15, 0.25]))
    matrix, p0, p1 = MATRIX[mi]
    ps = float(rng.uniform(p0, p1))
    if small:
        matrix, ps, thickness, spacing = 128, 1.8, 2.5, 2.5
    # keep the written volume bounded: ~175 mm of coverage along the normal
    min_sp = matrix * matrix * 175.0 / MAX_VOXELS
    if spacing < min_sp:
        spacing = round(min_sp + 0.05, 1)
        thickness = max(thickness, spacing)
    tilt = float(rng.uniform(5.0, 15.0) * rng.choice([-1.0, 1.0])) if rng.random() < 0.35 else 0.0
    snr = (rng.uniform(18.0, 45.0) if hi else rng.uniform(10.0, 25.0)) * (1.4 if tech == "swan" else 1.0)
    snr *= float(np.clip(np.sqrt(ps * ps * thickness / 0.9), 0.6, 1.6))
    snr = float(np.clip(snr, 7.0, 60.0)) if not small else float(np.clip(snr, 25.0, 60.0))
    tf = (te_eff / 20.0)
    bloom = float(np.clip(1.0 + rng.uniform(0.3, 0.5) * (b0 / 1.5) ** 0.8 * tf ** 0.6, 1.2, 2.4))
    if tech in ("swi-pm", "swip", "venbold"):
        bloom = min(2.4, bloom * 1.06)
    ghost = float(rng.uniform(0.02, 0.1)) if rng.random() < 0.2 else 0.0
    return MRAcq(
        vendor=vendor, technique=tech, field_t=b0, te_ms=round(float(te), 1), te_first_ms=round(float(te_first), 1),
        n_echoes=n_echo, te_eff_ms=round(float(te_eff), 1),
        tr_ms=round(float(rng.uniform(27.0, 50.0) if tech != "swan" else rng.uniform(40.0, 70.0)), 1),
        flip_deg=float(rng.choice([12.0, 15.0, 20.0])), pm_power=int(4 if vendor == "SIEMENS" else rng.integers(3, 6)),
        pm_strength=float(rng.uniform(0.6, 1.2)), thickness=float(thickness), spacing=float(spacing),
        matrix=int(matrix), pixel_spacing=round(ps, 4), pe_dir="ROW" if rng.random() < 0.7 else "COL",
        pf=float(rng.choice([1.0, 0.875, 0.75], p=[0.4, 0.35, 0.25])), apod=float(rng.uniform(0.0, 0.5)),
        tilt_deg=tilt,
        pose_deg=(float(rng.uniform(-6, 6)), float(rng.uniform(-5, 5)), float(rng.uniform(-10, 12))),
        offset_mm=(float(rng.uniform(-10, 10)), float(rng.uniform(-10, 10)), 0.0),
        table_z0=float(rng.uniform(-60.0, 40.0)), snr=snr, bias_strength=float(rng.uniform(0.1, 0.6)),
        ghost_amp=ghost, ghost_shift=float(rng.uniform(0.2, 0.5)),
        distortion_mm=float(rng.uniform(0.5, 2.5) * np.sqrt(b0 / 3.0) * rng.choice([-1.0, 1.0])),
        dropout=float(np.clip(rng.uniform(0.35, 0.8) * np.sqrt(b0 / 3.0) * np.sqrt(te_eff / 20.0), 0.15, 0.92)),
        dropout_len=float(rng.uniform(3.0, 8.0)), band_period=float(rng.uniform(3.0, 6.0)),
        tex_wm=float(rng.uniform(0.01, 0.04)), tex_gm=float(rng.uniform(0.01, 0.05)),
        vein_mag=float(np.clip(rng.uniform(0.3, 0.7) * (b0 / 3.0) ** 0.3 * tf ** 0.3, 0.1, 0.75)),
        vein_pm=float(rng.uniform(0.08, 0.25)),
        vein_widen=float(np.clip((1.0 + 0.3 * (b0 / 1.5) ** 0.7 * tf ** 0.5) * rng.uniform(0.8, 1.2), 1.0, 2.2)),
        artery_dark=float(rng.uniform(0.6, 0.9) if tech == "fsbb" else rng.uniform(-0.15, 0.35)),
        bloom_factor=round(bloom, 3), dipole=float(rng.uniform(0.0, 0.6)), core_signal=float(rng.uniform(0.04, 0.2)),
        small=small)


@dataclass
class Geometry:
    R: np.ndarray  # template -> patient rotation
    t: np.ndarray
    row: np.ndarray
    col: np.ndarray
    normal: np.ndarray
    centres: np.ndarray  # (n, 3)
    ipp: np.ndarray  # (n, 3)
    ps: float
    N: int

    @property
    def n(self) -> int:
        return len(self.centres)

    def to_patient(self, u: np.ndarray) -> np.ndarray:
        return np.asarray(u) @ self.R.T + self.t

    def to_template(self, p: np.ndarray) -> np.ndarray:
        return (np.asarray(p) - self.t) @ self.R

    def to_voxel(self, p: np.ndarray) -> np.ndarray:
        """(slice, row, col) continuous indices of patient points (n, 3)."""
        d = np.asarray(p) - self.ipp[0]
        return np.stack([d @ self.normal / self.step, d @ self.col / self.ps, d @ self.row / self.ps], axis=-1)

    @property
    def step(self) -> float:
        return float((self.centres[1] - self.centres[0]) @ self.normal) if self.n > 1 else 1.0


def geometry(rng: np.random.Generator, acq: MRAcq, ph: A.Phantom, small: bool) -> Geometry:
    R = rotation(*acq.pose_deg)
    t = np.array([rng.uniform(-5, 5), rng.uniform(-20, 10), acq.table_z0])
    a = np.radians(acq.tilt_deg)
    row = np.array([1.0, 0.0, 0.0])
    col = np.array([0.0, np.cos(a), -np.sin(a)])
    normal = np.cross(row, col)
    g = ph.grid
    par = np.argwhere(np.isin(ph.labels[::3, ::3, ::3], (A.WM, A.GM, A.CBL, A.BSTEM, A.VENT)))
    u = par[:, ::-1] * 3 * g.h + g.origin
    u = u[u[:, 2] > -64.0 * ph.scale[2]]  # the brain down to the lower cerebellum / medulla, not the cord
    if small:
        u = u[(u[:, 2] > -8.0) & (u[:, 2] < 30.0)]
    proj = (u @ R.T + t) @ normal
    lo = proj.min() - (0.0 if small else rng.uniform(3.0, 8.0))
    hi = proj.max() + (0.0 if small else rng.uniform(3.0, 8.0))
    n = int(np.ceil((hi - lo) / acq.spacing)) + 1
    c0 = np.array([0.0, -4.0, 10.0]) * ph.scale @ R.T + t + np.array(acq.offset_mm)
    centres = np.array([c0 + ((lo + k * acq.spacing) - c0 @ normal) * normal for k in range(n)])
    half = (acq.matrix - 1) / 2.0 * acq.pixel_spacing
    ipp = centres - half * row - half * col
    return Geometry(R=R, t=t, row=row, col=col, normal=normal, centres=centres, ipp=ipp, ps=acq.pixel_spacing,
                    N=acq.matrix)


def sample(acq: MRAcq, geo: Geometry, grid: A.Grid, T: np.ndarray) -> np.ndarray:
    """Slice-profile-integrated image (n, N, N) float32 of the template signal ``T``."""
    N, ps, n = geo.N, geo.ps, geo.n
    fov = N * ps
    nc = int(np.ceil(fov / (0.9 * grid.h)))
    cps = fov / nc
    pix = (np.arange(nc) + 0.5) * cps - ps / 2.0  # from the first written pixel centre
    th = acq.thickness
    delta = min(0.6 * grid.h, th / 3.0)
    z0, z1 = -th / 2.0 - 0.4 * th, (n - 1) * acq.spacing + th / 2.0 + 0.4 * th
    zs = np.arange(z0, z1 + 1e-6, delta)
    planes = np.empty((len(zs), nc, nc), np.float32)
    Rt = geo.R
    chunk = max(1, 1_500_000 // (nc * nc))
    for a in range(0, len(zs), chunk):
        z = zs[a:a + chunk]
        P = (geo.ipp[0][None, None, None, :] + z[:, None, None, None] * geo.normal
             + pix[None, :, None, None] * geo.col + pix[None, None, :, None] * geo.row)
        u = (P.reshape(-1, 3) - geo.t) @ Rt
        idx = ((u - grid.origin) / grid.h)[:, ::-1].T.reshape(3, len(z), nc, nc).astype(np.float32)
        planes[a:a + chunk] = ndimage.map_coordinates(T, idx, order=1, mode="constant", cval=0.0)
    out = np.empty((n, nc, nc), np.float32)
    sig = 0.12 * th
    for k in range(n):
        dz = zs - k * acq.spacing
        w = 0.5 * (erf((th / 2.0 - dz) / sig) + erf((th / 2.0 + dz) / sig))
        sel = np.nonzero(w > 1e-3)[0]
        ww = (w[sel] / w[sel].sum()).astype(np.float32)
        out[k] = np.tensordot(ww, planes[sel], axes=(0, 0))
    del planes
    z = N / nc
    return ndimage.zoom(out, (1, z, z), order=1, grid_mode=True, mode="nearest").astype(np.float32)


def voxel_labels(geo: Geometry, grid: A.Grid, labels: np.ndarray) -> np.ndarray:
    """Template label at every written voxel centre (nearest template voxel), (n, N, N) uint8."""
    N = geo.N
    out = np.zeros((geo.n, N, N), np.uint8)
    r = np.arange(N, dtype=np.float32) * geo.ps
    shape = np.array(grid.shape)
    for k in range(geo.n):
        u0 = ((geo.ipp[k] - geo.t) @ geo.R - grid.origin) / grid.h
        ur = (geo.row @ geo.R) / grid.h
        uc = (geo.col @ geo.R) / grid.h
        ix = [np.rint(u0[j] + r[:, None] * uc[j] + r[None, :] * ur[j]).astype(np.int32) for j in range(3)]
        ok = np.ones((N, N), bool)
        for j in range(3):
            ok &= (ix[j] >= 0) & (ix[j] < shape[2 - j])
        v = labels[np.clip(ix[2], 0, shape[0] - 1), np.clip(ix[1], 0, shape[1] - 1), np.clip(ix[0], 0, shape[2] - 1)]
        out[k] = np.where(ok, v, 0)
    return out


def _bias(rng, acq: MRAcq, geo: Geometry, centre: np.ndarray):
    c = rng.normal(0.0, 1.0, 10)
    c /= np.linalg.norm(c)
    rad = rng.uniform(-0.6, 0.9)

    def field(k):
        r = np.arange(geo.N, dtype=np.float32) * geo.ps
        P = geo.ipp[k][None, None, :] + r[:, None, None] * geo.col + r[None, :, None] * geo.row
        x, y, z = np.moveaxis((P - centre) / 90.0, -1, 0)
        poly = c[0] * x + c[1] * y + c[2] * z + c[3] * x * x + c[4] * y * y + c[5] * z * z + c[6] * x * y \
            + c[7] * x * z + c[8] * y * z + c[9] * x * y * z
        return np.exp(acq.bias_strength * (poly + rad * (x * x + y * y + 0.5 * z * z))).astype(np.float32)

    return field


def kspace_window(acq: MRAcq, N: int) -> np.ndarray:
    k = np.fft.fftfreq(N) * N  # -N/2 .. N/2-1 in fft order
    w = np.ones(N, np.float32)
    if acq.pf < 1.0:
        cut = -(2.0 * acq.pf - 1.0) * N / 2.0  # lines below this are not acquired (zero filled)
        w *= (0.5 + 0.5 * np.tanh((k - cut) / 2.0)).astype(np.float32)
    if acq.apod > 0:
        w *= (1.0 - acq.apod * (k / (N / 2.0)) ** 2).astype(np.float32)
    return w


def finish(rng: np.random.Generator, acq: MRAcq, geo: Geometry, img: np.ndarray, level: float,
           centre: np.ndarray) -> dict:
    """Bias, ghost, partial Fourier, Rician noise: in place on ``img`` (n, N, N). ``level``: the WM signal,
    which sets the noise SD (SNR = level / SD)."""
    N = geo.N
    axis = 2 if acq.pe_dir == "ROW" else 1
    wk = kspace_window(acq, N)
    gain = float(np.sqrt(np.mean(wk ** 2)))
    sd = level / acq.snr
    sd0 = sd / max(gain, 1e-3)
    shift = int(round(acq.ghost_shift * N))
    bias = _bias(rng, acq, geo, centre)
    shape = [1, 1, 1]
    shape[axis] = N
    wk = wk.reshape(shape)
    step = 8
    for a in range(0, geo.n, step):
        s = img[a:a + step]
        for j in range(len(s)):
            s[j] *= bias(a + j)
        if acq.ghost_amp > 0:
            s += acq.ghost_amp * (np.roll(s, shift, axis=axis) + np.roll(s, -shift, axis=axis)) * 0.5
        z = s.astype(np.complex64)
        z += (rng.standard_normal(s.shape, dtype=np.float32) + 1j * rng.standard_normal(s.shape, dtype=np.float32)) \
            * np.float32(sd0 / np.sqrt(1.0))
        if acq.pf < 1.0 or acq.apod > 0:
            z = sfft.ifft(sfft.fft(z, axis=axis) * wk, axis=axis)
        img[a:a + step] = np.abs(z)
    return dict(noise_sd=round(float(sd), 5), kspace_gain=round(gain, 4))

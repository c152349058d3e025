"""Scanner model: acquisition draw, slice geometry (pose, gantry tilt), slice-profile integration,
in-plane blur, beam hardening, non-stationary noise.

* Sampling: the template is resampled onto thin planes stacked along the table/normal direction at a
  coarse in-plane lattice (the written pixel times an integer m); a written slice is a weighted sum of
  thin planes (image: a rectangle blurred by a Gaussian slice sensitivity profile; truth: the exact
  rectangle of the voxel), then upsampled by m (cubic for the image, linear for the lesion fraction,
  which keeps sums exact).
* Physics on a coarse 2-D parallel-beam model per slice (a sparse projector built once):
  the noise variance map is the back-projection of exp(line integral) (photon starvation behind bone),
  beam hardening is the filtered back-projection of -(bone path)^2 (dark streaks between petrous ridges),
  and low-frequency streak noise is the filtered back-projection of sinogram noise scaled by exp(p/2).
* Fine noise: white noise coloured by a kernel-dependent noise power spectrum ``|f| * W(f)^2`` on the
  written grid, scaled by the variance map.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, sparse
from scipy.special import erf

from devset import anatomy as A
from devset.fields import rotation

MU_WATER = 0.0193  # 1/mm at an effective ~70 keV


@dataclass
class Acquisition:
    vendor: str
    thickness: float
    matrix: int
    pixel_spacing: float
    kernel_class: str  # soft / standard / sharp
    ctdi_mgy: float
    kvp: int
    noise_target: float
    tilt_deg: float
    tilt_style: str  # none / sheared / normal
    pose_deg: tuple[float, float, float]  # yaw, roll, pitch
    offset_mm: tuple[float, float, float]
    table_z0: float
    bottom_mm: float  # template z of the lowest covered anatomy
    ssp_sigma: float
    psf_mm: float
    bh_amp: float
    streak_ratio: float
    aec_gamma: float
    small: bool = False

    @property
    def fov(self) -> float:
        return self.pixel_spacing * self.matrix


THICKNESS = {
    "SIEMENS": ((5.0, 4.0, 3.0, 2.0, 1.0, 0.75), (0.35, 0.15, 0.15, 0.1, 0.15, 0.1)),
    "GE": ((5.0, 2.5, 1.25, 0.625), (0.45, 0.25, 0.15, 0.15)),
    "PHILIPS": ((5.0, 4.0, 3.0, 2.0, 1.0), (0.35, 0.2, 0.15, 0.1, 0.2)),
    "CANON": ((5.0, 4.0, 3.0, 2.0, 1.0), (0.35, 0.25, 0.15, 0.1, 0.15)),
}


def draw(rng: np.random.Generator, small: bool) -> Acquisition:
    vendor = str(rng.choice(["SIEMENS", "GE", "PHILIPS", "CANON"], p=[0.3, 0.3, 0.2, 0.2]))
    ths, p = THICKNESS[vendor]
    thickness = float(rng.choice(ths, p=p))
    matrix = int(rng.choice([512, 384, 256], p=[0.8, 0.05, 0.15]))
    fov = rng.uniform(200.0, 250.0)
    kernel_class = str(rng.choice(["soft", "standard", "sharp"], p=[0.35, 0.45, 0.2]))
    ctdi = rng.uniform(35.0, 70.0)
    base = {"soft": 3.0, "standard": 3.8, "sharp": 5.2}[kernel_class]
    noise = float(np.clip(base * np.sqrt(5.0 / thickness) * np.sqrt(55.0 / ctdi) * rng.uniform(0.8, 1.2), 2.5, 12.0))
    tilt, style = 0.0, "none"
    if vendor in ("GE", "CANON", "SIEMENS") and rng.random() < 0.3:
        tilt = float(rng.uniform(8.0, 25.0) * rng.choice([-1.0, 1.0]))
        style = "sheared" if rng.random() < 0.7 else "normal"
    pose = (float(rng.uniform(-7, 7)), float(rng.uniform(-5, 5)), float(rng.uniform(-6, 18)))
    offset = (float(rng.uniform(-8, 8)), float(rng.uniform(-10, 14)), 0.0)
    acq = Acquisition(
        vendor=vendor, thickness=thickness, matrix=matrix, pixel_spacing=0.0, kernel_class=kernel_class,
        ctdi_mgy=float(ctdi), kvp=int(rng.choice([100, 120, 120, 120, 140])), noise_target=noise,
        tilt_deg=tilt, tilt_style=style, pose_deg=pose, offset_mm=offset,
        table_z0=float(rng.uniform(-250.0, 50.0)), bottom_mm=float(rng.uniform(-72.0, -55.0)),
        ssp_sigma=float(rng.uniform(0.08, 0.22)),
        psf_mm={"soft": rng.uniform(0.6, 0.85), "standard": rng.uniform(0.45, 0.65),
                "sharp": rng.uniform(0.3, 0.45)}[kernel_class],
        bh_amp=float(rng.uniform(1.0, 10.0)), streak_ratio=float(rng.uniform(0.1, 0.35)),
        aec_gamma=float(rng.uniform(0.4, 1.0)), small=small)
    if small:
        acq.matrix, acq.thickness, fov = 128, 5.0, 230.0
        acq.noise_target = float(np.clip(acq.noise_target, 2.5, 6.0))
    acq.pixel_spacing = round(max(fov, 212.0) / acq.matrix, 4)
    return acq


@dataclass
class Geometry:
    R: np.ndarray  # template -> patient rotation
    t: np.ndarray  # template origin in patient coordinates
    row: np.ndarray
    col: np.ndarray
    normal: np.ndarray
    stack: np.ndarray  # unit step direction of the stack (table z when sheared)
    step: float  # mm along ``stack`` between slices
    centres: np.ndarray  # (n, 3) slice centres
    ipp: np.ndarray  # (n, 3) ImagePositionPatient

    @property
    def n(self) -> int:
        return len(self.centres)

    def to_template(self, p: np.ndarray) -> np.ndarray:
        return (p - self.t) @ self.R


def geometry(acq: Acquisition, ph: A.Phantom, small: bool) -> Geometry:
    R = rotation(*acq.pose_deg)
    t = np.array([0.0, 0.0, acq.table_z0])
    a = np.radians(acq.tilt_deg)
    row = np.array([1.0, 0.0, 0.0])
    col = np.array([0.0, np.cos(a), np.sin(a)])
    normal = np.cross(row, col)
    stack = np.array([0.0, 0.0, 1.0]) if acq.tilt_style == "sheared" else normal
    step = acq.thickness / float(stack @ normal)
    g = ph.grid
    head = np.argwhere((ph.labels[::3, ::3, ::3] != 0))[:, ::-1] * 3 * g.h + g.origin  # (x, y, z) template
    if small:
        lo_z, hi_z = -4.0, 36.0
        sel = head[(head[:, 2] > lo_z) & (head[:, 2] < hi_z)]
    else:
        sel = head[head[:, 2] > acq.bottom_mm]
    p = sel @ R.T + t
    proj = p @ stack
    if small:
        lo, hi = np.percentile(proj, 20), np.percentile(proj, 80)
    else:
        lo, hi = proj.min() + 1.0, proj.max() + 2.0
    n = int(np.ceil((hi - lo) / step)) + 1
    # in-plane: the reconstruction centre sits near the head's centre
    hc = np.array([0.0, -4.0, 10.0]) @ R.T + t + np.array(acq.offset_mm)
    c0 = np.array([hc[0], hc[1], 0.0])
    centres = np.array([c0 + ((lo + k * step) - c0 @ stack) / float(stack @ stack) * stack for k in range(n)])
    if acq.tilt_style != "sheared":
        # keep the plane through the recon centre: shift centres along the normal only
        centres = np.array([c0 + ((lo + k * step) - c0 @ normal) * normal for k in range(n)])
    half = (acq.matrix - 1) / 2.0 * acq.pixel_spacing
    ipp = centres - half * row - half * col
    return Geometry(R=R, t=t, row=row, col=col, normal=normal, stack=stack, step=step, centres=centres, ipp=ipp)


# --------------------------------------------------------------------------- sampling


def _plane_coords(geo: Geometry, acq: Acquisition, ph: A.Phantom, offsets: np.ndarray, m: int) -> np.ndarray:
    """Template index coordinates (3, n_planes, Nc, Nc) of coarse pixel centres of thin planes at
    ``offsets`` (mm along the stack direction from slice 0's centre)."""
    nc = acq.matrix // m
    ps = acq.pixel_spacing
    pix = ((np.arange(nc) + 0.5) * m - 0.5) * ps  # from the first written pixel centre
    base = geo.ipp[0]
    P = (base[None, None, None, :] + offsets[:, None, None, None] * geo.stack
         + pix[None, :, None, None] * geo.col + pix[None, None, :, None] * geo.row)
    u = geo.to_template(P.reshape(-1, 3))
    idx = (u - ph.grid.origin) / ph.grid.h  # (x, y, z) index
    return idx[:, ::-1].T.reshape(3, len(offsets), nc, nc).astype(np.float32)


def _ramp(n_det: int) -> np.ndarray:
    nf = 2 * n_det
    f = np.fft.rfftfreq(nf)
    return (np.abs(f) * (0.5 + 0.5 * np.cos(np.pi * f / f.max()))).astype(np.float32)


def _projector(nb: int, n_ang: int) -> tuple[sparse.csr_matrix, int]:
    """Parallel-beam projector of an nb x nb image (pixel units) with linear detector interpolation."""
    n_det = int(np.ceil(nb * np.sqrt(2))) + 2
    c = (np.arange(nb) - (nb - 1) / 2.0)
    yy, xx = np.meshgrid(c, c, indexing="ij")
    xx, yy = xx.ravel(), yy.ravel()
    rows, cols, vals = [], [], []
    pix = np.arange(nb * nb)
    for k, th in enumerate(np.linspace(0, np.pi, n_ang, endpoint=False)):
        s = xx * np.cos(th) + yy * np.sin(th) + (n_det - 1) / 2.0
        i0 = np.floor(s).astype(int)
        w = s - i0
        for di, ww in ((0, 1 - w), (1, w)):
            rows.append(k * n_det + i0 + di)
            cols.append(pix)
            vals.append(ww)
    A_ = sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                           shape=(n_ang * n_det, nb * nb), dtype=np.float32)
    return A_, n_det


def _fbp(Aop, sino: np.ndarray, n_ang: int, n_det: int) -> np.ndarray:
    s = sino.reshape(n_ang, n_det, -1)
    F = np.fft.rfft(s, n=2 * n_det, axis=1) * _ramp(n_det)[None, :, None]
    filt = np.fft.irfft(F, axis=1)[:, :n_det, :].astype(np.float32)
    return Aop.T @ filt.reshape(n_ang * n_det, -1)


def nps_filter(n: int, ps: float, kernel_class: str) -> np.ndarray:
    """Amplitude filter (rfft2 layout) for unit-variance noise with a ramp-times-window NPS."""
    fc = {"soft": 0.30, "standard": 0.40, "sharp": 0.60}[kernel_class]
    fy = np.fft.fftfreq(n, d=ps)[:, None]
    fx = np.fft.fftfreq(n, d=ps)[None, :]
    fr = np.sqrt(fx * fx + fy * fy)
    win = np.exp(-(fr / fc) ** 2)
    if kernel_class == "sharp":
        win = win * (1.0 + 0.6 * (fr / fc) ** 2)
    nps = (fr + 0.02) * win ** 2
    amp = np.sqrt(nps / nps.mean())
    return amp[:, : n // 2 + 1].astype(np.float32)


def render(rng: np.random.Generator, acq: Acquisition, geo: Geometry, ph: A.Phantom, frac_t: np.ndarray):
    """Returns (image HU float32, fraction float32, labels uint8, stats dict) on the written grid."""
    h = ph.grid.h
    ps = acq.pixel_spacing
    m = max(1, int(round(0.85 / ps)))
    while acq.matrix % m:
        m -= 1
    nc = acq.matrix // m
    n = geo.n
    n_sub = max(1, int(np.ceil(acq.thickness / (0.75 * h))))
    M = int(np.ceil(0.6 * n_sub)) + 1
    delta = geo.step / n_sub
    q = np.arange(-M, n * n_sub + M)
    offsets = (q + 0.5) * delta - geo.step / 2.0
    thin_hu = np.empty((len(q), nc, nc), np.float32)
    thin_f = np.zeros((len(q), nc, nc), np.float32)
    has_lesion = bool(frac_t.any())
    chunk = max(1, 2_000_000 // (nc * nc))
    for a in range(0, len(q), chunk):
        cc = _plane_coords(geo, acq, ph, offsets[a:a + chunk], m)
        thin_hu[a:a + chunk] = ndimage.map_coordinates(ph.hu, cc, order=1, mode="nearest")
        if has_lesion:
            thin_f[a:a + chunk] = ndimage.map_coordinates(frac_t, cc, order=1, mode="constant", cval=0.0)
    cc = _plane_coords(geo, acq, ph, np.arange(n) * geo.step, m)
    lab_c = ndimage.map_coordinates(ph.labels, cc, order=0, mode="constant", cval=0)
    del cc
    # slice profiles
    u = ((np.arange(-M, n_sub + M) + 0.5) / n_sub) - 0.5
    s = acq.ssp_sigma * np.sqrt(2.0)
    w = 0.5 * (erf((u + 0.5) / s) - erf((u - 0.5) / s))
    w /= w.sum()
    base = np.arange(n) * n_sub + M
    hu_c = np.zeros((n, nc, nc), np.float32)
    for j, wj in enumerate(w):
        hu_c += np.float32(wj) * thin_hu[base + j - M]
    frac_c = np.zeros((n, nc, nc), np.float32)
    for j in range(n_sub):
        frac_c += thin_f[base + j]
    frac_c /= n_sub
    del thin_hu, thin_f

    # coarse physics
    nb = 64 if acq.small else 96
    n_ang = 60 if acq.small else 90
    Aop, n_det = _projector(nb, n_ang)
    zb = nb / nc
    hu_b = ndimage.zoom(hu_c, (1, zb, zb), order=1, grid_mode=True, mode="nearest")
    lab_b = lab_c[:, ::max(1, nc // nb)][:, :, ::max(1, nc // nb)]
    lab_b = ndimage.zoom(lab_b, (1, nb / lab_b.shape[1], nb / lab_b.shape[2]), order=0, grid_mode=True,
                         mode="nearest")
    intra = np.isin(lab_b, A.BRAIN_LABELS)
    pix_mm = acq.fov / nb
    mu = np.clip(MU_WATER * (1.0 + hu_b / 1000.0), 0.0, None) * pix_mm
    flat = mu.reshape(n, -1).T
    p = Aop @ flat  # (rays, n)
    var = (Aop.T @ np.exp(np.minimum(p, 12.0))).T.reshape(n, nb, nb) / n_ang
    sdm = np.sqrt(var)
    ref = np.median(sdm[intra]) if intra.any() else np.median(sdm)
    sdm = (sdm / ref) ** acq.aec_gamma
    bone = np.clip((hu_b - 150.0) / 1000.0, 0.0, None).reshape(n, -1).T * pix_mm / 10.0
    pb = Aop @ bone
    bh = _fbp(Aop, -(pb ** 2), n_ang, n_det).T.reshape(n, nb, nb)
    for k in range(n):
        if intra[k].any():
            bh[k] -= np.median(bh[k][intra[k]])
    scale = np.percentile(np.abs(bh[intra]), 99.5) if intra.sum() > 10 else 0.0
    bh = bh * (acq.bh_amp / scale) if scale > 0 else bh * 0
    sino = rng.standard_normal(p.shape).astype(np.float32) * np.exp(np.minimum(p, 12.0) / 2.0)
    streak = _fbp(Aop, sino, n_ang, n_det).T.reshape(n, nb, nb)
    ssd = streak[intra].std() if intra.sum() > 10 else 1.0
    streak *= acq.streak_ratio * acq.noise_target / max(ssd, 1e-6)
    zc = nc / nb
    hu_c += ndimage.zoom(bh.astype(np.float32), (1, zc, zc), order=1, grid_mode=True, mode="nearest")
    streak_c = ndimage.zoom(streak.astype(np.float32), (1, zc, zc), order=1, grid_mode=True, mode="nearest")
    sd_c = ndimage.zoom(sdm.astype(np.float32), (1, zc, zc), order=1, grid_mode=True, mode="nearest")

    # in-plane blur (and edge enhancement for sharp kernels)
    sig = acq.psf_mm / (m * ps)
    hu_c = ndimage.gaussian_filter(hu_c, (0, sig, sig))
    if acq.kernel_class == "sharp":
        hu_c += 0.35 * (hu_c - ndimage.gaussian_filter(hu_c, (0, 1.4 / (m * ps), 1.4 / (m * ps))))

    N = acq.matrix

    def rep(a):
        return a if m == 1 else np.repeat(np.repeat(a, m, axis=1), m, axis=2)

    if m > 1:
        img = ndimage.zoom(hu_c, (1, m, m), order=3 if n <= 120 else 1, grid_mode=True, mode="nearest")
    else:
        img = hu_c
    img = img.astype(np.float32)
    labels = rep(lab_c).astype(np.uint8)
    frac = np.zeros((n, N, N), np.float32)
    if frac_c.any():
        idx = np.argwhere(frac_c > 0)
        lo = np.maximum(idx.min(axis=0) - 2, 0)
        hi = np.minimum(idx.max(axis=0) + 3, frac_c.shape)
        sub = frac_c[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        if m > 1:
            sub = ndimage.zoom(sub, (1, m, m), order=1, grid_mode=True, mode="nearest")
        frac[lo[0]:hi[0], lo[1] * m:hi[1] * m, lo[2] * m:hi[2] * m] = np.clip(sub, 0, 1)
        # fraction outside the coarse box is zero by construction; "nearest" edges only repeat zeros

    # fine noise: coloured by the kernel's NPS, scaled by the variance map
    H = nps_filter(N, ps, acq.kernel_class)
    noise = np.empty((n, N, N), np.float32)
    for a in range(0, n, 16):
        wn = rng.standard_normal((min(16, n - a), N, N)).astype(np.float32)
        noise[a:a + 16] = np.fft.irfft2(np.fft.rfft2(wn) * H, s=(N, N))
    noise *= np.float32(acq.noise_target)
    noise *= rep(sd_c)
    noise += rep(streak_c)
    wmv = labels == A.WM
    wm_clean = wmv & (frac == 0)
    noiseless_wm = img[wm_clean]
    img += noise
    stats = dict(noise_sd_hu=float(noise[wmv].std()) if wmv.any() else float("nan"),
                 wm_image_sd_hu=float(img[wm_clean].std()) if wm_clean.any() else float("nan"),
                 wm_mean_hu=float(noiseless_wm.mean()) if wm_clean.any() else float("nan"),
                 coarse_factor=m, thin_planes_per_slice=n_sub)
    # outside the reconstruction circle
    cgrid = (np.arange(N) - (N - 1) / 2.0) * ps
    outside = (cgrid[:, None] ** 2 + cgrid[None, :] ** 2) > (acq.fov / 2.0) ** 2
    return img, frac, labels, outside, stats

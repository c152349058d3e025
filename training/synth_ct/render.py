"""CT physics: tissue densities, the noiseless density volume, and the scanner's degradations.

Densities are drawn per head and per label, independently within physical ranges (grey 32-45 HU, white 22-34 HU
with a grey-white difference of 3-16 HU, CSF 0-15 HU and 8-35 HU below white matter, cortical bone 700-1800 HU),
so no single intensity look is learnt. Degradations are applied in the scanner frame:

* beam hardening: the residual error of a water-corrected scanner is quadratic in the line integrals, so the
  artefact is the filtered back-projection of -p^2 (bone line integrals: dark streaks between the petrous bones and
  across the skull base; soft-tissue line integrals: cupping), computed per slice with a small parallel-beam
  projector (a sparse matrix) on a ~2.5 mm grid;
* in-plane blur (a Gaussian kernel of drawn width), noise of drawn SD whose texture is white noise filtered by a
  random reconstruction-like power spectrum (sharp or soft), stronger in the centre of the head and correlated
  along z; a low-frequency bias; a calibration offset; motion ghosts in a few slices; a head holder and table.
"""
from __future__ import annotations

import functools

import numpy as np
from scipy import fft as sfft
from scipy import sparse

from . import labels as L
from .fields import bbox, interp_axis, smooth_noise


def draw_tissues(rng: np.random.Generator) -> dict:
    u = rng.uniform
    while True:
        wm, gm = u(22.0, 34.0), u(32.0, 45.0)
        if 3.0 <= gm - wm <= 16.0:
            break
    while True:
        csf = u(0.0, 15.0)
        if 8.0 <= wm - csf <= 35.0:
            break
    bone = u(700.0, 1800.0)
    t = {
        "white_matter": wm, "grey_matter": gm, "csf": csf,
        "ventricle": csf + u(-1.0, 2.0),
        "deep_grey": wm + u(0.45, 0.95) * (gm - wm),
        "brainstem": wm + u(0.1, 0.5) * (gm - wm),
        "cerebellar_grey": gm + u(-3.0, 2.0),
        "cerebellar_white": wm + u(-1.0, 3.0),
        "dura": u(35.0, 60.0), "venous_sinus": u(38.0, 60.0), "choroid_plexus": u(25.0, 45.0),
        "cortical_bone": bone, "diploe": u(250.0, min(900.0, 0.75 * bone)),
        "petrous_bone": min(bone * u(1.0, 1.4), 2400.0),
        "scalp": u(20.0, 55.0), "fat": u(-120.0, -70.0), "muscle": u(35.0, 65.0),
        "globe": u(0.0, 20.0), "lens": u(80.0, 130.0), "sinus_air": u(-1000.0, -960.0), "air": -1000.0,
    }
    return {k: round(float(v), 2) for k, v in t.items()}


def canonical_volumes(rng: np.random.Generator, anat: L.Anatomy, tissues: dict, crop, occ, deficit):
    """(HU volume, white-matter indicator crop, lesion occupancy crop, crop, point clouds) on the canonical grid."""
    lut = np.full(256, -1000.0, np.float32)
    for code, name in L.NAMES.items():
        lut[code] = tissues[name]
    for code, c in anat.custom.items():
        lut[code] = c["hu"] if "hu" in c else tissues["csf"] + c["csf_plus"]
    lab = anat.label
    hu = lut[lab]
    h = anat.grid.h
    shape = lab.shape
    # anatomical texture: low-frequency heterogeneity of the brain, trabecular diploe, soft-tissue mottle
    brain = np.isin(lab, L.BRAIN)
    hu[brain] += rng.uniform(0.2, 1.5) * smooth_noise(rng, shape, h, rng.uniform(6.0, 14.0))[brain]
    dip = lab == L.DIPLOE
    hu[dip] += rng.uniform(40.0, 200.0) * smooth_noise(rng, shape, h, rng.uniform(2.0, 4.0))[dip]
    soft = np.isin(lab, (L.SCALP, L.MUSCLE, L.FAT))
    hu[soft] += rng.uniform(2.0, 8.0) * smooth_noise(rng, shape, h, 5.0)[soft]
    del brain, dip, soft
    if crop is None:  # no lesion: a small empty crop keeps the sampler uniform
        crop = tuple(slice(n // 2, n // 2 + 2) for n in shape)
        occ = np.zeros((2, 2, 2), np.float32)
    else:
        hu[crop] -= deficit
    # the white-matter map must cover the lesion crop and beyond (cerebellar white matter too)
    wm_full = np.isin(lab, L.WHITE)
    wcrop = bbox(wm_full, 2)
    wcrop = tuple(slice(min(a.start, b.start), max(a.stop, b.stop)) for a, b in zip(wcrop, crop))
    wm = wm_full[wcrop].astype(np.float32)
    occ_w = np.zeros(wm.shape, np.float32)
    inner = tuple(slice(c.start - w.start, c.stop - w.start) for c, w in zip(crop, wcrop))
    occ_w[inner] = occ
    # point clouds (canonical index units, every 3rd voxel) telling the sampler where each field is non-trivial
    st = 3
    clouds = {"head": np.argwhere(lab[::st, ::st, ::st] != L.AIR) * st,
              "wm": np.argwhere(wm[::st, ::st, ::st] > 0) * st + [w.start for w in wcrop],
              "lesion": np.argwhere(occ_w > 0) + [w.start for w in wcrop]}
    return hu, wm, occ_w, wcrop, clouds


# --------------------------------------------------------------------------- beam hardening


@functools.lru_cache(maxsize=4)
def projector(n: int, n_ang: int):
    """Parallel-beam projector on an n x n grid (pixel units): sparse (n_ang * n_bins, n * n), linear in the bins."""
    nb = int(np.ceil(np.sqrt(2.0) * n)) + 3
    c = (n - 1) / 2.0
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float64)
    xx, yy = (xx - c).ravel(), (yy - c).ravel()
    th = np.arange(n_ang) * np.pi / n_ang
    t = np.outer(np.cos(th), xx) + np.outer(np.sin(th), yy) + (nb - 1) / 2.0
    t0 = np.floor(t).astype(np.int64)
    w1 = t - t0
    rows0 = np.arange(n_ang)[:, None] * nb + t0
    cols = np.broadcast_to(np.arange(n * n), t.shape)
    r = np.concatenate([rows0.ravel(), (rows0 + 1).ravel()])
    v = np.concatenate([(1 - w1).ravel(), w1.ravel()])
    A = sparse.csr_matrix((v, (r, np.concatenate([cols.ravel(), cols.ravel()]))), shape=(n_ang * nb, n * n))
    k = np.abs(sfft.rfftfreq(2 * nb))
    ramp = k * (0.5 + 0.5 * np.cos(np.pi * k / 0.5))  # Hann-windowed ramp
    return A, A.T.tocsr(), ramp, nb


def beam_hardening(slab: np.ndarray, pix_cm: float, n_ang: int = 96):
    """(streak, cupping) artefact images, unscaled, for one coarse slice of HU values."""
    n = slab.shape[0]
    A, At, ramp, nb = projector(n, n_ang)
    bone = np.clip((slab - 150.0) / 1000.0, 0, None).ravel() * pix_cm
    water = np.clip((slab + 1000.0) / 1000.0, 0, 2.5).ravel() * pix_cm
    out = []
    for mu in (bone, water):
        p = (A @ mu).reshape(n_ang, nb)
        e = -(p ** 2)
        ef = sfft.irfft(sfft.rfft(e, n=2 * nb, axis=1) * ramp, axis=1)[:, :nb]
        out.append((At @ ef.ravel()).reshape(n, n).astype(np.float32) * (np.pi / n_ang))
    return out


# --------------------------------------------------------------------------- noise texture


def noise_filter(shape, pix_mm: float, f_c: float, f_0: float) -> tuple[np.ndarray, float]:
    """rfft2 transfer function of the noise texture and the factor that makes the filtered noise unit-SD."""
    fy = sfft.fftfreq(shape[0], d=pix_mm)[:, None]
    fx = sfft.rfftfreq(shape[1], d=pix_mm)[None, :]
    fr = np.sqrt(fx ** 2 + fy ** 2)
    H = (np.sqrt(fr + f_0) * np.exp(-(fr / f_c) ** 2)).astype(np.float32)
    wcol = np.full(H.shape[1], 2.0)
    wcol[0] = 1.0
    if shape[1] % 2 == 0:
        wcol[-1] = 1.0
    power = float((H ** 2 * wcol[None, :]).sum()) / (shape[0] * shape[1])
    return H, 1.0 / np.sqrt(max(power, 1e-12))


def noise_slices(rng: np.random.Generator, n: int, shape, pix_mm: float, f_c: float, f_0: float, rho: float):
    """Yield n unit-SD noise slices with the drawn texture, AR(1)-correlated along z (lag-1 correlation rho).

    The spectrum is drawn directly (complex normals times the transfer function), one inverse FFT per slice."""
    Hf, norm = noise_filter(shape, pix_mm, f_c, f_0)
    Hf *= np.float32(norm * np.sqrt(shape[0] * shape[1] / 2.0))
    a, b = np.float32(np.sqrt(1.0 - rho ** 2)), np.float32(rho)
    prev = None
    for _ in range(n):
        spec = rng.standard_normal((2, shape[0], shape[1] // 2 + 1), dtype=np.float32)
        nk = sfft.irfft2((spec[0] + 1j * spec[1]) * Hf, s=tuple(shape)).astype(np.float32)
        if prev is not None:
            nk = a * nk + b * prev
        prev = nk
        yield nk


def upsample2d(a: np.ndarray, f: int, out_hw) -> np.ndarray:
    """Linear upsampling of the last two axes from the render grid (centres at f*I + (f-1)/2) to the output grid."""
    if f == 1 and a.shape[-2:] == tuple(out_hw):
        return a
    out = interp_axis(a, (np.arange(out_hw[0]) - (f - 1) / 2.0) / f, a.ndim - 2)
    return interp_axis(out, (np.arange(out_hw[1]) - (f - 1) / 2.0) / f, a.ndim - 1)

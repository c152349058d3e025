"""make_ncct / make_swi: render a synthetic head (analytic, or the MNI152 atlas) on an acquisition grid, with truth."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import ndimage

from .anatomy import F32, HeadModel, _soft, ellipsoid_sd
from .geometry import Block, Grid, make_grid
from .intensities import independent_ct_values, lesion_contrast, lesion_texture
from .lesions import (
    _BoxedPoints,
    _occupancy,
    build_mimics,
    build_wml,
    draw_grade,
    mimic_effect,
    place_cmbs,
    sample_cmb_count,
    sample_wml_ml,
    wm_fraction,
    wml_volume_mm3,
)
from .types import Phantom, SeriesKind, synthetic_uid

CHUNK_POINTS = 2_500_000


def _matrix(matrix) -> tuple[int, int]:
    if isinstance(matrix, (tuple, list)):
        return int(matrix[0]), int(matrix[1])
    return int(matrix), int(matrix)


def ct_values(rng: np.random.Generator, contrast: bool = False) -> dict:
    gm = rng.uniform(35, 42)
    wm = float(np.clip(gm - rng.uniform(6.5, 11), 25, 32))
    csf = rng.uniform(5, 12)
    v = {
        "air": -1000.0, "scalp": rng.uniform(35, 50), "fat": rng.uniform(-100, -80), "bone": rng.uniform(1150, 1500),
        "diploe": rng.uniform(550, 850), "soft": rng.uniform(40, 55), "orbitfat": rng.uniform(-100, -85),
        "globe": rng.uniform(8, 16), "csf": csf, "gm": gm, "wm": wm, "cbl": gm - rng.uniform(0, 3),
        "stem": wm + rng.uniform(1, 4), "dentate": gm, "rednuc": wm + 3, "nigra": wm + 3, "dgm": gm - rng.uniform(0, 2.5),
        "putamen": gm - rng.uniform(0, 2), "gp": gm - rng.uniform(1, 4), "thal": gm - rng.uniform(1.5, 4),
        "chp": gm - 2, "falx": rng.uniform(50, 70), "sinus": rng.uniform(50, 64), "vein": rng.uniform(42, 50),
        "medullary": wm + 1.0, "artery": rng.uniform(38, 46),
    }
    if contrast:
        v.update({"sinus": rng.uniform(170, 260), "vein": rng.uniform(120, 190), "artery": rng.uniform(250, 380),
                  "chp": rng.uniform(70, 110), "falx": rng.uniform(70, 100), "gm": gm + 3, "wm": wm + 1.5,
                  "dgm": v["dgm"] + 3, "putamen": v["putamen"] + 3, "thal": v["thal"] + 3, "medullary": wm + 6,
                  "scalp": v["scalp"] + 25, "cbl": v["cbl"] + 4})
    return v


def swi_values(rng: np.random.Generator) -> dict:
    j = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
    wm = j(0.52, 0.62)
    return {
        "air": 0.0, "scalp": j(0.35, 0.5), "fat": j(0.7, 0.95), "bone": 0.03, "diploe": j(0.1, 0.25), "soft": j(0.3, 0.45),
        "orbitfat": j(0.7, 0.9), "globe": j(0.7, 0.95), "csf": j(0.9, 1.1), "gm": wm + j(0.1, 0.18), "wm": wm,
        "cbl": wm + j(0.06, 0.14), "stem": wm - 0.02, "dentate": j(0.25, 0.4), "rednuc": j(0.22, 0.38),
        "nigra": j(0.22, 0.38), "dgm": wm + j(0.02, 0.08), "putamen": wm - j(0.0, 0.12), "gp": j(0.2, 0.35),
        "thal": wm + j(0.0, 0.06), "chp": j(0.4, 0.6), "falx": 0.25, "sinus": j(0.05, 0.15), "vein": j(0.08, 0.2),
        "medullary": j(0.15, 0.3), "artery": j(0.6, 0.95),
    }


ANATOMIES = ("analytic", "mni152")


def _check_anatomy(anatomy: str):
    """Validate ``anatomy`` early; 'mni152' raises ``AtlasUnavailable`` (an ImportError) without nilearn."""
    if anatomy == "analytic":
        return
    if anatomy == "mni152":
        from .atlas import require_mni152

        require_mni152()
        return
    raise ValueError(f"unknown anatomy {anatomy!r}; use one of {ANATOMIES}")


def _make_head(anatomy: str, seed: int, origin, atrophy: float | None = None) -> HeadModel:
    """The random head of ``seed``: the analytic model or the MNI152 atlas head (same interface). ``atrophy``
    (0-1) erodes the atlas head (``atlas`` module doc); the analytic head draws its own atrophy."""
    if anatomy == "mni152":
        from .atlas import AtlasHead

        return AtlasHead.random(seed, origin=origin, atrophy=atrophy)
    if atrophy is not None:
        raise ValueError("atrophy is a parameter of the mni152 anatomy; the analytic head draws its own")
    return HeadModel.random(seed, origin=origin)


def _render(head: HeadModel, grid: Grid, values: dict, ns: int, hook=None, wm_out: np.ndarray | None = None
            ) -> np.ndarray:
    """The image on ``grid`` (``ns`` sub-planes per slice); ``wm_out``: filled with each voxel's white-matter
    fraction, the tissue a WML may occupy (``lesions.wm_fraction``), from the same points."""
    nz, nr, nc = grid.shape
    out = np.empty((nz, nr, nc), F32)
    kchunk = max(1, int(CHUNK_POINTS // (ns * nr * nc)))
    for k0 in range(0, nz, kchunk):
        k1 = min(nz, k0 + kchunk)
        blk = Block(grid, k0, k1, ns, head.R, head.origin)
        blk.u = head.warp(blk.v)
        val = head.paint(blk, values)
        if hook is not None:
            hook(blk, val)
        out[k0:k1] = val.mean(axis=1)
        if wm_out is not None:
            wm_out[k0:k1] = wm_fraction(head, blk).mean(axis=1)
    return out


def _index_box(grid: Grid, head: HeadModel, lo_v, hi_v, pad_vox=1):
    corners = np.array([[x, y, z] for x in (lo_v[0], hi_v[0]) for y in (lo_v[1], hi_v[1]) for z in (lo_v[2], hi_v[2])])
    kij = grid.to_index(head.v_to_patient(corners))
    nz, nr, nc = grid.shape
    lo = np.floor(kij.min(0)).astype(int) - pad_vox
    hi = np.ceil(kij.max(0)).astype(int) + pad_vox + 1
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, [nz, nr, nc])
    if np.any(hi <= lo):
        return None
    return lo, hi


def _pixel_xy(grid: Grid, k: int):
    """Patient (x, y, z) of every pixel of slice k, each (rows, cols)."""
    nr, nc = grid.shape[1:]
    ii, jj = np.meshgrid(np.arange(nr), np.arange(nc), indexing="ij")
    P = (grid.positions[k][:, None, None] + np.asarray(grid.row_direction)[:, None, None] * jj * grid.pixel_spacing[1]
         + np.asarray(grid.column_direction)[:, None, None] * ii * grid.pixel_spacing[0])
    return P


def _correlated_noise(rng, shape, sigma_px, sd):
    n = rng.standard_normal(shape, dtype=np.float32)
    if sigma_px > 0.05:
        n = ndimage.gaussian_filter(n, (0, sigma_px, sigma_px), mode="wrap")
        n /= max(float(n.std()), 1e-6)
    return n * F32(sd)


# --------------------------------------------------------------------------- NCCT


def make_ncct(
    seed: int = 0,
    matrix=128,
    slice_thickness: float = 5.0,
    tilt_deg: float = 0.0,
    wml_ml: float | None = None,
    mimics: bool = True,
    *,
    n_slices: int | None = None,
    fov_mm: float | None = None,
    contrast: bool = False,
    kernel: str = "soft",
    anatomy: str = "analytic",
    noise_hu: float | None = None,
    atrophy: float | None = None,
    wml_spread: bool = False,
    wml_rims: bool = False,
    wml_graded: bool = False,
    wm_map: bool = False,
    independent: bool = False,
) -> Phantom:
    """A non-contrast head CT with WML truth (HU, source grid, possibly gantry-tilted).

    ``wml_ml`` is a *target*: the phantom's ``truth_wml_ml`` is the physical volume of
    the lesion model actually generated (None: sampled, many small cases, ~12 % zero).
    ``contrast=True`` renders the same head with enhanced vessels (CTA-like distractor).
    ``anatomy``: 'analytic' (the randomly warped analytic head) or 'mni152' (the MNI152 tissue maps shipped
    with nilearn, randomly scaled, rotated and warped; needs the ``train`` extra, see ``phantom.atlas``).
    ``atrophy`` (0-1, 'mni152' only): sulci, fissures and ventricles widened by eroding the brain.
    ``wml_spread``: deep lesions anywhere in the cerebral white matter (``lesions.DEEP_BOX_SPREAD``).
    ``wml_rims``: periventricular rims along the ventricle walls as well (``lesions.add_rims``).
    ``wml_graded``: lesions darken gradually from a faint label edge to a dark core and fade on outside the label
    (``lesions.draw_grade``, a stream of its own) instead of a soft edge at half the contrast; the truth is the same.
    ``wm_map``: also ``aux["wm_fraction"]``, each voxel's white-matter fraction (the same image either way).
    ``independent``: brain tissue intensities and the lesion contrast drawn independently and wide, lesions of uneven
    depth (``phantom.intensities``; non-contrast only); the head, lesions, mimics and noise stay the seed's.
    """
    _check_anatomy(anatomy)
    rng = np.random.default_rng([int(seed), 0xC7])
    rows, cols = _matrix(matrix)
    fov = float(fov_mm or rng.uniform(220, 250))
    px = fov / cols
    coverage = rng.uniform(135, 160)
    nz = int(n_slices or max(4, math.ceil(coverage / slice_thickness)))
    head_origin = np.array([rng.uniform(-6, 6), rng.uniform(-25, 5), rng.uniform(-250, 50)])
    head = _make_head(anatomy, seed, head_origin, atrophy)
    # stack centre: in the head frame z ≈ 5 mm (skull base to vertex), on the table axis in x, y
    iso = np.array([rng.uniform(-4, 4), head_origin[1] + rng.uniform(-8, 8) + 2, 0.0])
    zc = head.v_to_patient([0, 0, 5.0 + rng.uniform(-4, 4)])[2]
    iso[2] = zc
    grid = make_grid(rows=rows, cols=cols, n_slices=nz, pixel_mm=px, thickness=slice_thickness,
                     tilt_deg=tilt_deg, sheared=True, center=tuple(iso), descending=bool(rng.random() < 0.3))
    if wml_ml is None:
        wml_ml = sample_wml_ml(rng)
    vals = ct_values(rng, contrast=contrast)
    wml = build_wml(head, float(wml_ml), np.random.default_rng([int(seed), 0x3A1]), spread=wml_spread,
                    rims=np.random.default_rng([int(seed), 0x3A2]) if wml_rims else None)
    if wml_graded:
        wml.grade = draw_grade(np.random.default_rng([int(seed), 0x3A3]))
    mims = build_mimics(head, np.random.default_rng([int(seed), 0x313]), enabled=mimics)
    tissue_rng = np.random.default_rng([int(seed), 0x1D7]) if independent else None
    if tissue_rng is not None:
        if contrast:
            raise ValueError("independent tissue intensities are for non-contrast heads")
        vals = independent_ct_values(vals, tissue_rng)
        wml.contrast = lesion_contrast(tissue_rng)

    ns = int(np.clip(round(slice_thickness / 1.7), 1, 3))

    def hook(blk, val):
        mimic_effect(head, mims, blk, val, vals)

    wm = np.empty(grid.shape, F32) if wm_map else None
    img = _render(head, grid, vals, ns, hook, wm)
    mask, drop = _wml_on_grid(head, wml, grid)
    if tissue_rng is not None and drop.any():
        drop *= lesion_texture(tissue_rng, drop.shape, min(grid.pixel_spacing))
    img -= drop
    wml_fraction = getattr(wml, "grid_fraction", None)
    if wml_fraction is None or wml_fraction.shape != mask.shape:
        wml_fraction = mask.astype(np.float32)
    truth_ml = wml_volume_mm3(wml) / 1000.0 if not wml.empty else 0.0

    # head holder (carbon fibre shell) below the occiput
    _headholder(img, grid, head, rng)
    # scanner PSF + correlated quantum noise
    sharp = kernel == "bone"
    psf_mm = 0.25 if sharp else rng.uniform(0.35, 0.6)
    img = ndimage.gaussian_filter(img, (0, psf_mm / px, psf_mm / px))
    sd = float(noise_hu if noise_hu is not None else rng.uniform(2.5, 5.0) * math.sqrt(5.0 / slice_thickness))
    corr = (0.35 if sharp else rng.uniform(0.6, 1.0)) * (0.49 / px)
    img += _correlated_noise(rng, img.shape, corr, sd * (3.0 if sharp else 1.0))
    # reconstruction circle
    yy, xx = np.mgrid[0:rows, 0:cols]
    r = np.hypot((yy - (rows - 1) / 2) * px, (xx - (cols - 1) / 2) * px)
    img[:, r > fov / 2 - px] = -1024.0
    np.clip(img, -1024, 3071, out=img)

    return Phantom(
        image=img.astype(np.float32),
        pixel_spacing=grid.pixel_spacing,
        positions=grid.positions.copy(),
        row_direction=grid.row_direction,
        column_direction=grid.column_direction,
        frame_of_reference_uid=synthetic_uid("for", "ct", seed),
        slice_thickness=float(slice_thickness),
        truth_mask=mask,
        truth_wml_ml=float(truth_ml),
        microbleeds=(),
        modality="CT",
        kind=SeriesKind.CT_CONTRAST if contrast else SeriesKind.NCCT,
        seed=int(seed),
        spacing_between_slices=float(grid.spacing),
        gantry_tilt_deg=float(tilt_deg),
        meta={"fov_mm": fov, "target_wml_ml": float(wml_ml), "wml_contrast_hu": wml.contrast,
              "mimics": [m.kind for m in mims], "noise_hu": sd, "values": vals, "kernel": kernel,
              "anatomy": anatomy, "head_origin": head_origin.tolist(), **({"atrophy": atrophy} if atrophy else {}),
              **({"independent": True} if independent else {}),
              **({"wml_grade": list(wml.grade)} if wml.grade is not None else {})},
        aux={"wml_fraction": wml_fraction, **({"wm_fraction": wm} if wm is not None else {})},
    )


def _headholder(img, grid, head, rng):
    r0 = rng.uniform(108, 118)
    thick = rng.uniform(2.5, 4.5)
    hu = rng.uniform(150, 350)
    pad_hu = rng.uniform(-950, -850)
    c = head.origin
    for k in range(grid.shape[0]):
        P = _pixel_xy(grid, k)
        dx, dy = P[0] - c[0], P[1] - c[1]
        rr = np.hypot(dx * 1.05, dy)
        below = dy > 55
        shell = below & (np.abs(rr - r0) < thick / 2)
        pad = below & (rr < r0 - thick / 2) & (img[k] < -900)
        img[k][pad] = pad_hu
        img[k][shell] = hu


def _wml_on_grid(head: HeadModel, wml, grid: Grid):
    """Source-grid WML mask (≥ 50 % voxel occupancy) and HU drop, by sub-sampling voxels near lesions."""
    nz, nr, nc = grid.shape
    mask = np.zeros((nz, nr, nc), np.uint8)
    drop = np.zeros((nz, nr, nc), F32)
    if wml.empty:
        return mask, drop
    lo, hi = wml.bbox()
    box = _index_box(grid, head, lo - head.warp_max - 3, hi + head.warp_max + 3)
    if box is None:
        return mask, drop
    (k0, i0, j0), (k1, i1, j1) = box
    px = min(grid.pixel_spacing)
    sub = int(np.clip(math.ceil(px / 0.9), 1, 3))
    ns = int(np.clip(math.ceil(grid.slice_thickness / 0.9), 2, 8))
    h = max(px / sub, grid.slice_thickness / ns)
    # 1) coarse pass at voxel centres: which voxels can touch a lesion (or its soft edge)?
    half_diag = 0.5 * math.sqrt(2 * px * px + grid.slice_thickness ** 2)
    reach = F32(1.5 * half_diag + wml.reach_mm + 0.5)
    blk = Block(grid, k0, k1, 1, head.R, head.origin, i_range=(i0, i1), j_range=(j0, j1))
    sd0 = wml.sd(*head.warp(blk.v))[:, 0]
    cand = np.argwhere(sd0 < reach)
    if len(cand) == 0:
        return mask, drop
    cand += [k0, i0, j0]
    # 2) sub-sample the candidate voxels (box along the normal × sub × sub in plane)
    so = ((np.arange(ns) + 0.5) / ns - 0.5) * grid.slice_thickness
    sp = (np.arange(sub) + 0.5) / sub - 0.5
    offs = (so[:, None, None, None] * grid.normal
            + sp[None, :, None, None] * grid.pixel_spacing[0] * np.asarray(grid.column_direction)
            + sp[None, None, :, None] * grid.pixel_spacing[1] * np.asarray(grid.row_direction)).reshape(-1, 3)
    nsub = len(offs)
    occ_v = np.zeros(len(cand), F32)
    drop_v = np.zeros(len(cand), F32)
    step = max(1, 600_000 // nsub)
    for s0 in range(0, len(cand), step):
        c = cand[s0:s0 + step]
        P = (grid.to_patient(c.astype(float))[:, None, :] + offs[None]).reshape(-1, 3)
        V = head.patient_to_v(P).astype(F32)
        U = head.warp([V[:, 0], V[:, 1], V[:, 2]])
        sd = wml.sd(*U)
        near = sd < F32(max(h, wml.reach_mm))
        occ = np.zeros(sd.shape, F32)
        dr = np.zeros(sd.shape, F32)
        if near.any():
            wm = wm_fraction(head, _BoxedPoints([u[near] for u in U]))
            occ[near] = _occupancy(sd[near], wm, h)
            dr[near] = wml.drop(sd[near], wm)
        occ_v[s0:s0 + step] = occ.reshape(-1, nsub).mean(1)
        drop_v[s0:s0 + step] = dr.reshape(-1, nsub).mean(1)
    kk, ii, jj = cand.T
    mask[kk, ii, jj] = occ_v >= 0.5
    drop[kk, ii, jj] = drop_v
    frac = np.zeros((nz, nr, nc), F32)
    frac[kk, ii, jj] = occ_v
    wml.grid_fraction = frac  # per-voxel partial-volume occupancy, exposed as Phantom.aux["wml_fraction"]
    return mask, drop


# --------------------------------------------------------------------------- SWI


def make_swi(
    seed: int = 0,
    matrix=128,
    slice_thickness: float = 2.0,
    n_cmb: int | None = None,
    *,
    n_slices: int | None = None,
    fov_mm: float | None = None,
    oblique_deg: float = 0.0,
    anatomy: str = "analytic",
    noise: float | None = None,
    field_t: float = 3.0,
    calcifications: bool = False,
    atrophy: float | None = None,
    mimic_variety: bool = False,
    blooming: bool = False,
) -> Phantom:
    """An SWI magnitude volume with microbleed truth (centres in patient mm); ``anatomy`` as in :func:`make_ncct`.

    ``field_t`` 1.5 renders a 1.5 T look (:data:`FIELD_1P5T`): noisier, veins and blooming weaker; 3.0 is the
    generator's original look; an explicit ``noise`` is taken as it is. ``calcifications``: physiological
    calcifications (pineal, choroid plexus, pallidum) drawn as dark foci that are not microbleeds (on the magnitude
    image only phase tells them apart); ``meta["calcifications"]`` lists each one's centre in the head's model
    frame (mm, not patient coordinates) and its diameter. ``atrophy`` as in :func:`make_ncct`.
    ``mimic_variety``: the calcifications drawn far wider (:func:`_varied_calcifications`: any darkness up to a
    void, punctate to about 12 mm, ellipsoids and clumps, the habenula and paired pallida too) and the iron-rich
    nuclei from a faint to a near-black hypointensity (:func:`_varied_iron`; the atlas head's darkened pallida are
    listed in ``meta["iron"]`` as calcifications are), in place of ``calcifications``' draws, whatever that flag
    says. ``blooming``: each bleed darkens the image by the dipole falloff of :class:`Blooming` (a near-void deposit
    and a tail beyond its apparent diameter; ``meta["blooming"]``) in place of a sphere with a 1 mm edge; the truth
    (apparent diameters and centres) is the same. These draw from their own random streams (atrophy from the
    head's own, none from this function's), so the defaults give the same image as before for every seed."""
    _check_anatomy(anatomy)
    if field_t not in (1.5, 3.0):
        raise ValueError(f"field_t must be 1.5 or 3.0 (tesla), not {field_t!r}")
    rng = np.random.default_rng([int(seed), 0x5A1])
    rows, cols = _matrix(matrix)
    fov = float(fov_mm or rng.uniform(210, 240))
    px = fov / cols
    coverage = rng.uniform(100, 130)
    nz = int(n_slices or max(4, math.ceil(coverage / slice_thickness)))
    head_origin = np.array([rng.uniform(-5, 5), rng.uniform(-20, 10), rng.uniform(-40, 40)])
    head = _make_head(anatomy, seed + 7919, head_origin, atrophy)
    zc = head.v_to_patient([0, 0, 12.0 + rng.uniform(-6, 6)])[2]
    iso = np.array([head_origin[0] + rng.uniform(-3, 3), head_origin[1] + rng.uniform(-6, 6), zc])
    grid = make_grid(rows=rows, cols=cols, n_slices=nz, pixel_mm=px, thickness=slice_thickness,
                     tilt_deg=oblique_deg, sheared=False, center=tuple(iso), descending=bool(rng.random() < 0.5))
    vals = swi_values(rng)
    if n_cmb is None:
        n_cmb = sample_cmb_count(rng)
    cmbs = place_cmbs(head, grid, int(n_cmb), np.random.default_rng([int(seed), 0xCB]))
    art = _air_artefacts(rng)
    low_field = field_t == 1.5
    if low_field:
        vals, cmbs = _at_1p5t(vals, cmbs)
    iron: list[tuple] = []  # dark foci that are neither bleeds nor calcifications
    if mimic_variety:
        vals, iron = _varied_iron(vals, head, anatomy, np.random.default_rng([int(seed), 0x1F0E]))
        calcs = _varied_calcifications(head, np.random.default_rng([int(seed), 0x7A1C]))
    elif calcifications:
        calcs = [(c, (r,) * 3, a) for c, r, a in _swi_calcifications(head, np.random.default_rng([int(seed), 0xCA1C]))]
    else:
        calcs = []

    def hook(blk, val):
        # susceptibility signal loss near air-tissue interfaces
        u = blk.u
        loss = np.zeros(u[0].shape, F32)
        for c, s, amp in art:
            sl = blk.box(np.asarray(c) - 3 * np.asarray(s), np.asarray(c) + 3 * np.asarray(s), 0)
            if sl is None:
                continue
            e = ((u[0][sl] - F32(c[0])) / F32(s[0])) ** 2 + ((u[1][sl] - F32(c[1])) / F32(s[1])) ** 2 + (
                (u[2][sl] - F32(c[2])) / F32(s[2])) ** 2
            loss[sl] = np.maximum(loss[sl], F32(amp) * np.exp(-0.5 * e))
        for c, axes, amp in calcs + iron:
            # the focus is drawn in the warped frame (u), the box is taken in v: widen it by the warp's reach
            sl = blk.box(np.asarray(c) - max(axes), np.asarray(c) + max(axes), head.warp_max + 1)
            if sl is not None:
                inside = _soft(ellipsoid_sd(u[0][sl], u[1][sl], u[2][sl], c, axes), 0.5)
                loss[sl] = np.maximum(loss[sl], F32(amp) * inside)
        val *= 1 - loss

    ns = 2
    img = _render(head, grid, vals, ns, hook)
    bloom = draw_blooming(seed, field_t) if blooming else None
    mask, mbs, dark = _cmb_truth(grid, head, cmbs, bloom)
    img *= 1 - dark  # blooming dark foci, partial-volume averaged per voxel
    # bias field (receive coil profile) and Rician noise
    bias = _bias_field(grid, head, rng)
    scale = rng.uniform(300, 1500)
    img *= bias * F32(scale)
    level = noise if noise is not None else rng.uniform(0.02, 0.045) * (FIELD_1P5T["noise"] if low_field else 1.0)
    sd = float(level) * vals["wm"] * scale
    n1 = rng.standard_normal(img.shape, dtype=np.float32) * F32(sd)
    n2 = rng.standard_normal(img.shape, dtype=np.float32) * F32(sd)
    img = np.sqrt((img + n1) ** 2 + n2 ** 2)

    return Phantom(
        image=img.astype(np.float32),
        pixel_spacing=grid.pixel_spacing,
        positions=grid.positions.copy(),
        row_direction=grid.row_direction,
        column_direction=grid.column_direction,
        frame_of_reference_uid=synthetic_uid("for", "mr", seed),
        slice_thickness=float(slice_thickness),
        truth_mask=mask,
        truth_wml_ml=0.0,
        microbleeds=mbs,
        modality="MR",
        kind=SeriesKind.SWI,
        seed=int(seed),
        spacing_between_slices=float(grid.spacing),
        gantry_tilt_deg=0.0,
        meta={"fov_mm": fov, "noise_sd": sd, "scale": scale, "values": vals, "oblique_deg": oblique_deg,
              "anatomy": anatomy, "cmb_depth": [c.depth for c in cmbs], "field_t": field_t,
              "calcifications": [[float(v) for v in c] + [2 * max(a)] for c, a, _ in calcs],
              **({"atrophy": atrophy} if atrophy else {}),
              **({"blooming": dataclasses.asdict(bloom)} if bloom else {}),
              **({"iron": [[float(v) for v in c] + [2 * max(a)] for c, a, _ in iron]} if iron else {})},
    )


# 1.5 T against 3 T at the same sequence: about half the SNR, and weaker susceptibility contrast (veins, blooming),
# which grows with the field (fewer and smaller microbleeds are seen at 1.5 T: Nandigam et al., AJNR 2009). The
# factors are this generator's choices, not fitted to any data.
FIELD_1P5T = {"noise": 2.0, "vein_contrast": 0.6, "blooming": 0.8}


def _at_1p5t(vals: dict, cmbs: list) -> tuple[dict, list]:
    """Tissue values and bleeds of a 3 T draw as 1.5 T shows them: veins closer to tissue, smaller blooming."""
    keep = FIELD_1P5T["vein_contrast"]
    vals = dict(vals)
    for k in ("vein", "medullary", "sinus"):
        vals[k] = vals["wm"] - (vals["wm"] - vals[k]) * keep
    return vals, [dataclasses.replace(c, diameter_mm=c.diameter_mm * FIELD_1P5T["blooming"]) for c in cmbs]


def _swi_calcifications(head: HeadModel, rng: np.random.Generator) -> list[tuple]:
    """(centre u, radius mm, signal loss) of the physiological calcifications of one head; none are bleeds."""
    sites, out = head.sites(), []
    if rng.random() < 0.7:
        out.append((sites["pineal"], rng.uniform(1.5, 3.5), rng.uniform(0.5, 0.9)))
    for sx in (-1, 1):
        if rng.random() < 0.6:
            out.append((sites["glomus"][sx], rng.uniform(1.5, 3.5), rng.uniform(0.4, 0.85)))
        if rng.random() < 0.3:
            out.append((sites["pallidum"][sx], rng.uniform(1.0, 2.5), rng.uniform(0.3, 0.7)))
    return [(tuple(float(v) for v in c), float(r), float(a)) for c, r, a in out]


def _varied_calcifications(head: HeadModel, rng: np.random.Generator) -> list[tuple]:
    """(centre u, semi-axes mm, signal loss) of one head's physiological calcifications, drawn wide.

    On the magnitude image a calcification is a dark focus of any size from punctate to several mm, round, ovoid
    or a clump of grains; it lies in the pineal gland and habenula, the choroid plexus glomera and the pallida
    (often both sides), none of which a microbleed's definition allows except the pallidum (phase tells them
    apart). The darkness runs from faint to a void, so a calcification cannot be told from a bleed by its depth."""
    sites, out = head.sites(), []
    pineal = np.asarray(sites["pineal"], float)
    anchors = []
    if rng.random() < 0.75:
        anchors.append((pineal, 0.6, 4.0))
    if rng.random() < 0.25:
        anchors.append((pineal + (0.0, -5.0, 1.5), 0.6, 2.0))  # habenula, just in front of the pineal
    for sx in (-1, 1):
        if rng.random() < 0.65:
            anchors.append((np.asarray(sites["glomus"][sx], float), 0.8, 4.0))
    if rng.random() < 0.4:  # the pallida: mostly both sides
        sides = (-1, 1) if rng.random() < 0.8 else (int(rng.choice([-1, 1])),)
        anchors += [(np.asarray(sites["pallidum"][sx], float) + rng.normal(0, 1.5, 3), 0.6, 2.5) for sx in sides]
    for centre, r_lo, r_hi in anchors:
        radius = float(np.exp(rng.uniform(np.log(r_lo), np.log(r_hi))))
        loss = float(rng.uniform(0.4, 1.0))
        if rng.random() < 0.3:  # a clump of 2-4 grains
            for _ in range(int(rng.integers(2, 5))):
                grain = max(0.5, radius * float(rng.uniform(0.35, 0.7)))
                out.append((centre + rng.normal(0, 0.6 * radius, 3), (grain,) * 3, loss * float(rng.uniform(0.8, 1.0))))
        else:
            out.append((centre, tuple(radius * rng.uniform(0.6, 1.5, 3)), loss))
    return [(tuple(float(v) for v in c), tuple(float(v) for v in a), min(float(s), 1.0)) for c, a, s in out]


def _varied_iron(vals: dict, head: HeadModel, anatomy: str, rng: np.random.Generator) -> tuple[dict, list]:
    """The iron-rich nuclei from faintly to nearly black against white matter (their iron, and so their T2*
    darkening, grows with age and with the field): the analytic head's pallidum, red nucleus, substantia nigra and
    dentate values; the atlas head paints none of them, so its pallida are darkened as ellipsoid foci (returned as
    (centre u, semi-axes mm, signal loss), like calcifications)."""
    vals = dict(vals)
    for k in ("gp", "rednuc", "nigra", "dentate"):
        vals[k] = vals["wm"] * float(rng.uniform(0.08, 0.7))
    if anatomy == "analytic":
        return vals, []
    loss = float(rng.uniform(0.3, 0.92))
    return vals, [(head.sites()["pallidum"][sx], tuple(np.array([3.0, 8.0, 6.0]) * rng.uniform(0.8, 1.2)), loss)
                  for sx in (-1, 1)]


def _air_artefacts(rng):
    out = [((0, -72, -22), (22, 12, 10), rng.uniform(0.5, 0.95))]  # frontal sinus / orbitofrontal
    for sx in (-1, 1):
        out.append(((sx * 44, 14, -42), (10, 12, 8), rng.uniform(0.4, 0.9)))  # mastoid / petrous
    out.append(((0, -14, -50), (14, 10, 8), rng.uniform(0.3, 0.8)))  # sphenoid / skull base
    return out


def _bias_field(grid, head, rng):
    nz, nr, nc = grid.shape
    kk = np.linspace(-1, 1, nz, dtype=np.float32)[:, None, None]
    ii = np.linspace(-1, 1, nr, dtype=np.float32)[None, :, None]
    jj = np.linspace(-1, 1, nc, dtype=np.float32)[None, None, :]
    c = rng.normal(0, 0.12, 9)
    b = (1 + c[0] * ii + c[1] * jj + c[2] * kk + c[3] * ii * jj + c[4] * ii ** 2 + c[5] * jj ** 2 + c[6] * kk ** 2
         + c[7] * ii * kk + c[8] * jj * kk)
    # head coils: brighter periphery
    b = b * (1 + F32(rng.uniform(0.1, 0.35)) * (ii ** 2 + jj ** 2))
    return np.clip(b, 0.4, 2.0).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Blooming:
    """How a head's microbleeds darken the magnitude image (:func:`_cmb_truth`); one draw per head.

    Static dephasing around a magnetised sphere: the field offset falls as (a/r)^3 x (3 cos^2 theta - 1) about B0
    (patient z), so the signal outside the deposit is exp(-ln 2 (Rb/r)^3 g(theta)), half at the apparent (bloom)
    radius Rb and with a long tail beyond it, and near void inside the deposit, whose radius is Rb / ``factor``
    (the blooming factor grows with field and echo time). ``dipole`` weighs the angular term (0: isotropic)."""

    factor: float
    dipole: float


def draw_blooming(seed: int, field_t: float) -> Blooming:
    """A head's dipole blooming, from a stream of its own: factor 1.3-2.4 at 3 T, 1.1-1.8 at 1.5 T."""
    rng = np.random.default_rng([int(seed), 0xB1])
    lo, hi = (1.3, 2.4) if field_t >= 3.0 else (1.1, 1.8)
    return Blooming(factor=round(float(rng.uniform(lo, hi)), 3), dipole=round(float(rng.uniform(0.0, 0.6)), 3))


# mean of |3 cos^2 theta - 1| over the sphere: g(theta) averages to 1 whatever the dipole weight
_DIPOLE_MEAN = 4 / (3 * math.sqrt(3))
_TAIL_END = 2.5  # x Rb: where the dipole tail's loss reaches 0


def _dipole_loss(r2, z, R: float, depth: float, bloom: Blooming):
    """1 - signal of one bleed drawn with ``bloom`` at sub-sample points (squared distance ``r2`` and patient-z
    offset ``z`` from its centre). Outside the deposit 1 - exp(-ln 2 (R/r)^3 g(theta)), tapered to 0 from 2 R to
    2.5 R; inside it ``depth``, or the loss at the deposit's edge where that is deeper (at its pole), so the deposit
    is never lighter than the shell around it and the loss never rises with distance. Without the angular term the
    loss is half at ``R``; with it the half-loss surface bulges along B0 and narrows across it, but g averages to 1
    over the sphere, so it encloses the truth sphere's volume."""
    rho = np.sqrt(r2)
    cos2 = z * z / np.maximum(r2, F32(1e-6))
    g = F32(1 - bloom.dipole) + F32(bloom.dipole / _DIPOLE_MEAN) * np.abs(3 * cos2 - 1)
    out = 1 - np.exp(-F32(math.log(2)) * (F32(R) / np.maximum(rho, F32(1e-3))) ** 3 * g)
    out *= np.clip((F32(_TAIL_END * R) - rho) / F32(0.5 * R), 0, 1)  # 8 % at 2 R where g = 1
    g_pole = 1 - bloom.dipole + 2 * bloom.dipole / _DIPOLE_MEAN
    inside = max(depth, 1 - 2.0 ** (-(bloom.factor ** 3) * g_pole))
    return np.where(rho < F32(R / bloom.factor), F32(inside), out).astype(F32)


def _cmb_truth(grid: Grid, head: HeadModel, cmbs, bloom: Blooming | None = None):
    """The bleeds' truth (mask of the apparent spheres, centres, diameters) and each voxel's signal loss."""
    nz, nr, nc = grid.shape
    mask = np.zeros((nz, nr, nc), np.uint8)
    dark = np.zeros((nz, nr, nc), F32)
    out = []
    px = min(grid.pixel_spacing)
    sub = int(np.clip(math.ceil(px / 0.4), 2, 8))
    ns = int(np.clip(math.ceil(grid.slice_thickness / 0.4), 2, 8))
    for cm in cmbs:
        c = np.asarray(cm.center_v)
        cp = head.v_to_patient(c)
        R = cm.diameter_mm / 2
        out.append((tuple(round(float(v), 3) for v in cp), float(cm.diameter_mm), cm.location))
        reach = R + 2 if bloom is None else _TAIL_END * R + 1
        box = _index_box(grid, head, c - reach, c + reach)
        if box is None:
            continue
        (k0, i0, j0), (k1, i1, j1) = box
        blk = Block(grid, k0, k1, ns, np.eye(3), cp, sub_ij=sub, i_range=(i0, i1), j_range=(j0, j1))
        x, y, z = blk.v  # patient coordinates relative to the centre
        r2 = x * x + y * y + z * z
        shp = (k1 - k0, ns, i1 - i0, sub, j1 - j0, sub)
        f = (r2 <= F32(R * R)).astype(F32).reshape(shp).mean(axis=(1, 3, 5))
        mask[k0:k1, i0:i1, j0:j1] |= (f >= 0.5).astype(np.uint8)
        if bloom is None:  # a sphere with a 1 mm edge
            prof = np.clip(0.5 - (np.sqrt(r2) - F32(R)) / F32(1.0), 0, 1).reshape(shp).mean(axis=(1, 3, 5))
            loss = F32(cm.depth) * prof
        else:
            loss = _dipole_loss(r2, z, R, cm.depth, bloom).reshape(shp).mean(axis=(1, 3, 5))
        d = dark[k0:k1, i0:i1, j0:j1]
        np.maximum(d, loss, out=d)
        kij = np.rint(grid.to_index(cp)).astype(int)
        if np.all(kij >= 0) and np.all(kij < [nz, nr, nc]):
            mask[tuple(kij)] = 1
    return mask, tuple(out), dark

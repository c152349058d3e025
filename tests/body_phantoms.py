"""Generated non-head volumes (abdomen, pelvis, chest CT; knee, spine, QA-phantom MR) as svdmark ``Phantom``
records, so that ``svdmark_phantom.write_series`` writes them with a vendor's *head* header: the pixel
check, not the header, must then be what stops them. No tests here.

Tissue values are textbook HU (fat -100, soft tissue 30-60, lung -850, bone 700+); shapes are ellipses.
"""
from __future__ import annotations

import numpy as np

from svdmark_phantom import Phantom, SeriesKind, synthetic_uid


def _grid(n: int, rows: int, px: float):
    yy, xx = np.mgrid[0:rows, 0:rows]
    return ((yy - (rows - 1) / 2) * px, (xx - (rows - 1) / 2) * px)  # (y mm, x mm) from the centre


def _ell(y, x, cy, cx, ry, rx):
    return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0


def _phantom(img: np.ndarray, px: float, thk: float, modality: str, seed: int, *,
             row=(1.0, 0.0, 0.0), col=(0.0, 1.0, 0.0), start=(0.0, 0.0, 0.0), step=(0.0, 0.0, 1.0)) -> Phantom:
    n, rows, cols = img.shape
    start_v = np.asarray(start) - (np.asarray(row) * (cols - 1) / 2 + np.asarray(col) * (rows - 1) / 2) * px
    positions = np.array([start_v + k * thk * np.asarray(step) for k in range(n)])
    kind = SeriesKind.NCCT if modality == "CT" else SeriesKind.SWI
    return Phantom(image=img.astype(np.float32), pixel_spacing=(px, px), positions=positions,
                   row_direction=tuple(row), column_direction=tuple(col),
                   frame_of_reference_uid=synthetic_uid("for", f"body-{modality}", seed), slice_thickness=thk,
                   truth_mask=np.zeros(img.shape, np.uint8), truth_wml_ml=0.0, microbleeds=(), modality=modality,
                   kind=kind, seed=seed, spacing_between_slices=thk, meta={"noise_hu": 5.0})


def _ct_noise(img, rng, sd=5.0):
    img += rng.normal(0, sd, img.shape)
    return np.clip(img, -1024, 3071)


def abdomen_ct(seed: int = 0, matrix: int = 96, n_slices: int = 24, thk: float = 5.0) -> Phantom:
    """An abdomen: fat-wrapped soft tissue (liver, bowel), a spine with its canal, no skull."""
    rng = np.random.default_rng(seed)
    px = 400.0 / matrix
    y, x = _grid(n_slices, matrix, px)
    sl = np.full((matrix, matrix), -1000.0)
    sl[_ell(y, x, 0, 0, 115, 160)] = -100.0  # subcutaneous fat
    sl[_ell(y, x, -5, 0, 100, 145)] = 45.0  # organs
    sl[_ell(y, x, -10, -60, 60, 70)] = 60.0  # liver
    sl[_ell(y, x, 70, 0, 22, 22)] = 750.0  # vertebral body
    sl[_ell(y, x, 100, 0, 9, 8)] = 20.0  # canal
    sl[_ell(y, x, 100, 0, 13, 12) & ~_ell(y, x, 100, 0, 9, 8)] = 700.0  # posterior arch
    sl[_ell(y, x, -20, 40, 12, 30)] = -900.0  # bowel gas
    img = _ct_noise(np.repeat(sl[None], n_slices, 0), rng)
    return _phantom(img, px, thk, "CT", seed, start=(0.0, 0.0, -200.0))


def pelvis_ct(seed: int = 0, matrix: int = 96, n_slices: int = 16, thk: float = 5.0) -> Phantom:
    """A closed bony ring (a pelvis) around fat and bowel: a ring, but not around brain-density tissue."""
    rng = np.random.default_rng(seed)
    px = 420.0 / matrix
    y, x = _grid(n_slices, matrix, px)
    sl = np.full((matrix, matrix), -1000.0)
    sl[_ell(y, x, 0, 0, 120, 175)] = -100.0
    ring_out, ring_in = _ell(y, x, 0, 0, 85, 120), _ell(y, x, 0, 0, 75, 110)
    sl[ring_out & ~ring_in] = 800.0
    inner = ring_in
    sl[inner] = -100.0  # pelvic fat
    sl[inner & _ell(y, x, -20, 0, 40, 55)] = 15.0  # bladder
    sl[inner & (np.hypot(y - 30, x + 45) < 18)] = 35.0  # bowel
    sl[inner & (np.hypot(y - 30, x - 45) < 14)] = -800.0  # gas
    img = _ct_noise(np.repeat(sl[None], n_slices, 0), rng)
    return _phantom(img, px, thk, "CT", seed, start=(0.0, 0.0, -700.0))


def chest_ct(seed: int = 0, matrix: int = 96, n_slices: int = 24, thk: float = 5.0) -> Phantom:
    """A chest: lungs, heart, ribs as separate arcs, sternum and spine."""
    rng = np.random.default_rng(seed)
    px = 380.0 / matrix
    y, x = _grid(n_slices, matrix, px)
    sl = np.full((matrix, matrix), -1000.0)
    sl[_ell(y, x, 0, 0, 120, 165)] = 30.0  # chest wall
    sl[_ell(y, x, 0, -70, 85, 65)] = -850.0
    sl[_ell(y, x, 0, 70, 85, 65)] = -850.0
    sl[_ell(y, x, -10, 15, 50, 55)] = 40.0  # heart
    theta = np.degrees(np.arctan2(y, x))
    rim = _ell(y, x, 0, 0, 110, 155) & ~_ell(y, x, 0, 0, 102, 147)
    sl[rim & ((theta % 30) < 12)] = 750.0  # ribs: arcs with gaps
    sl[_ell(y, x, 85, 0, 18, 18)] = 750.0  # vertebral body
    img = _ct_noise(np.repeat(sl[None], n_slices, 0), rng)
    return _phantom(img, px, thk, "CT", seed, start=(0.0, 0.0, -350.0))


def _mr_texture(shape, rng, scale=0.25):
    from scipy import ndimage

    t = ndimage.gaussian_filter(rng.standard_normal(shape), (1, 2, 2))
    return 1.0 + scale * t / max(float(t.std()), 1e-6)


def knee_mr(seed: int = 0, matrix: int = 96, n_slices: int = 40, thk: float = 2.0) -> Phantom:
    """An axial knee: a 120 x 105 mm limb with bone marrow, muscle and fat."""
    rng = np.random.default_rng(seed)
    px = 180.0 / matrix
    y, x = _grid(n_slices, matrix, px)
    sl = np.zeros((matrix, matrix))
    sl[_ell(y, x, 0, 0, 52, 60)] = 900.0  # fat/skin
    sl[_ell(y, x, 0, 0, 45, 52)] = 500.0  # muscle
    sl[_ell(y, x, -5, 0, 28, 34)] = 700.0  # marrow
    img = np.repeat(sl[None], n_slices, 0) * _mr_texture((n_slices, matrix, matrix), rng)
    img += rng.normal(0, 10, img.shape)
    return _phantom(np.clip(img, 0, None), px, thk, "MR", seed, start=(0.0, 0.0, -600.0))


def spine_mr(seed: int = 0, matrix: int = 128, n_slices: int = 20, thk: float = 3.0) -> Phantom:
    """A sagittal lumbar spine: slices along x, the body filling a 420 mm field of view head to foot."""
    rng = np.random.default_rng(seed)
    px = 420.0 / matrix
    r, c = _grid(n_slices, matrix, px)  # r: rows (down = feet), c: columns (anterior -> posterior)
    sl = np.zeros((matrix, matrix))
    sl[np.abs(c) < 130] = 600.0  # the trunk, cut by the field of view above and below
    sl[(np.abs(c - 40) < 20) & ((r % 35) < 28)] = 800.0  # vertebral bodies
    sl[np.abs(c - 75) < 8] = 1000.0  # CSF
    img = np.repeat(sl[None], n_slices, 0) * _mr_texture((n_slices, matrix, matrix), rng)
    img += rng.normal(0, 10, img.shape)
    return _phantom(np.clip(img, 0, None), px, thk, "MR", seed, row=(0.0, 1.0, 0.0), col=(0.0, 0.0, -1.0),
                    start=(-30.0, 0.0, -300.0), step=(1.0, 0.0, 0.0))


def sphere_phantom_mr(seed: int = 0, matrix: int = 96, n_slices: int = 40, thk: float = 2.0) -> Phantom:
    """A uniform 180 mm water sphere (a QA phantom): head-sized, but without a head's structure."""
    rng = np.random.default_rng(seed)
    px = 240.0 / matrix
    n = n_slices
    y, x = _grid(n, matrix, px)
    z = (np.arange(n) - (n - 1) / 2) * thk
    inside = (z[:, None, None] ** 2 + y[None] ** 2 + x[None] ** 2) <= 90.0 ** 2
    shading = 1.0 + 0.03 * (x / 90.0)[None]  # mild coil shading
    img = np.where(inside, 800.0 * shading, 0.0) + rng.normal(0, 8, inside.shape)
    return _phantom(np.clip(img, 0, None), px, thk, "MR", seed)

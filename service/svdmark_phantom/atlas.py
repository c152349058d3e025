"""An MNI152 head: nilearn's ICBM 2009a tissue maps as a drop-in for the analytic :class:`HeadModel`.

``AtlasHead`` keeps the analytic head's frames (patient → rigid ``v`` → smooth warp ``u``; ``u`` in
mm, x → left, y → posterior, z → up) and its painter (``paint`` / ``label`` / ``fraction``
composite :class:`Layer` s in order); only the layers differ. The model frame is MNI space made
LPS and scaled: ``u = scale * F (ras - ANCHOR_RAS)`` with ``F = diag(-1, -1, 1)`` (MNI +x is the
subject's right, which is DICOM -x) and ``scale`` a random per-axis factor in [0.9, 1.1].

Layers, from the fields below (all precomputed once per process and trilinearly interpolated):

* grey / white matter: the GM and WM probability maps (sharpened towards one head's partial-volume
  width); CSF is what is left of the cranial cavity (the skull-stripped T1's mask), so ventricles,
  sulci and cisterns come from the atlas, and a random extra subarachnoid width (0.5-2.5 mm) moves
  skull and scalp out;
* regions (hand-drawn in MNI mm): cerebellum (below the tentorium), brainstem and deep grey
  matter (their GM is painted ``cbl`` / ``stem`` / ``dgm``);
* skull and scalp: shells of a signed distance to the cranial cavity, and to the cavity extended
  downwards into a face/neck block; air sinuses, mastoids and orbits are ellipsoids;
* ventricles: the interior CSF component(s) near the centre (signed distance, for the
  periventricular WML caps and bands, whose anchors ``sites()`` takes from the atlas too);
* vessels: the analytic tree, snapped onto the atlas (sinuses to the inner table, cortical veins
  into the subarachnoid space, medullary veins to the ventricle wall).

Atrophy (``AtlasHead.random(..., atrophy=a)``, ``a`` in [0, 1]; off by default, so every seed's head is
as before): the brain is eroded from its CSF surfaces by a signed distance to the template's tissue
boundary (:func:`brain_surface_field`), up to ``2.2 a`` mm at the cortex (frontal-predominant: 1.25× at the
front to 0.75× at the back), widening sulci and fissures by twice that, and by ``3.5 a`` mm at the
ventricle wall, whose distance field (the periventricular lesions' anchor) moves out with it. The
template's sulci are a population average, shallow and smooth; an atrophic head also gets sulci of its
own, CSF sheets (the zero set of a random wave field of nine waves, wavelengths 18-30 mm; the analytic
head's are 28-44 mm) 6-12 mm deep from the outer brain surface, 0.6-2.8 mm wide and fading out with
depth, which cut the cortex into folds and, in cross-section, the small cortical islands between bright
CSF that a microbleed detector must learn to leave alone.

Not modelled: skull-thickness variation, facial bones.

The maps ship inside the nilearn wheel (``nilearn/datasets/data``); they are located with
``importlib.util.find_spec`` (nilearn itself is never imported, and nothing is downloaded).
nilearn (and nibabel, which reads the maps) come with the ``phantom`` extra; the service never needs this module.
"""
from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from .anatomy import F32, HeadModel, Layer, capsule_sd, ellipsoid_sd

ATLAS_FILES = {k: f"mni_icbm152_{k}_tal_nlin_sym_09a_converted.nii.gz" for k in ("gm", "wm", "t1")}
ANCHOR_RAS = np.array([0.0, -12.0, 0.0])  # MNI point at the model-frame origin (deep grey matter ≈ u 0)
FLIP = np.array([-1.0, -1.0, 1.0])  # RAS <-> LPS
COARSE_MM = 2.0  # grid of the skull / scalp distance fields
PAD_MM = (30, 30, 90, 30)  # padding of that grid: x, y, below, above (the face/neck block hangs below)
FAR = F32(1000.0)  # "far outside" for distance fields
CEREBRUM, CEREBELLUM, STEM, DEEP = 0, 1, 2, 3  # region codes
VENTRICLE_GROWTH_MM = 3.5  # ventricle wall moved out at atrophy 1
SHARPEN = 2.0  # exponent of the tissue-fraction sharpening (see _sharpen)
TISSUE_KEYS = ("gm", "dgm", "wm", "cbl", "stem")  # brain layers, painted in this order over CSF


class AtlasUnavailable(ImportError):
    """The MNI152 tissue maps (shipped in the nilearn wheel) are not installed."""


# --------------------------------------------------------------------------- files


def find_mni152_files() -> dict[str, Path] | None:
    """Paths of the GM / WM / T1 maps inside the installed nilearn wheel, or None (nilearn is not imported)."""
    try:
        spec = importlib.util.find_spec("nilearn")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        paths = {k: Path(root) / "datasets" / "data" / f for k, f in ATLAS_FILES.items()}
        if all(p.is_file() for p in paths.values()):
            return paths
    return None


def require_mni152() -> dict[str, Path]:
    paths = find_mni152_files()
    if paths is None:
        raise AtlasUnavailable(
            "anatomy='mni152' needs the MNI152 tissue maps that ship inside the nilearn wheel; install the "
            "phantom extra (pip install 'svdmark[phantom]', or pip install -e '.[phantom]' in a checkout)")
    return paths


# --------------------------------------------------------------------------- the atlas (once per process)


@dataclass(frozen=True)
class RasGrid:
    """Axis-aligned grid in MNI RAS mm: voxel (i, j, k) of an (x, y, z)-ordered array is at origin + spacing * ijk."""

    origin: np.ndarray
    spacing: float

    def index(self, ras) -> np.ndarray:
        return (np.asarray(ras, float) - self.origin) / self.spacing

    def ras(self, shape) -> list[np.ndarray]:
        """Broadcastable RAS coordinate arrays (x, y, z) of every voxel (float32)."""
        return [(self.origin[d] + self.spacing * np.arange(n, dtype=F32)).astype(F32).reshape(
            [-1 if e == d else 1 for e in range(3)]) for d, n in enumerate(shape)]


@dataclass(frozen=True)
class Atlas:
    fine: RasGrid  # 1 mm: gm, wm, region
    gm: np.ndarray  # uint8 probability × 255, (x, y, z)
    wm: np.ndarray
    region: np.ndarray  # uint8 region codes
    coarse: RasGrid  # COARSE_MM, padded: cavity_sd, head_sd
    cavity_sd: np.ndarray  # float32 mm, signed distance to the cranial cavity (negative inside)
    head_sd: np.ndarray  # float32 mm, to the cavity plus the face/neck block below it
    vent: RasGrid  # 1 mm crop around the ventricles
    vent_sd: np.ndarray
    landmarks: dict  # RAS mm: see _landmarks
    vent_box: tuple  # RAS (lo, hi) of the ventricles
    head_box: tuple  # RAS (lo, hi) enclosing any scalp
    sa_mm: float  # median depth of the brain surface below the cavity surface


def _read_ras(path: Path) -> tuple[np.ndarray, RasGrid]:
    """A NIfTI volume as an (x, y, z)-ordered array with RAS axes increasing, and its grid (nibabel: the NIfTI
    affine is RAS already; the same arrays and grids as the SimpleITK reader it replaced, checked on all three maps)."""
    import nibabel as nib

    img = nib.load(str(path))
    arr = np.asanyarray(img.dataobj)
    lin = np.asarray(img.affine, float)[:3, :3]
    step = np.diag(lin)
    if not np.allclose(lin, np.diag(step)) or not np.allclose(np.abs(step), abs(step[0])):
        raise ValueError(f"{path.name}: expected an axis-aligned isotropic grid")
    origin = np.asarray(img.affine, float)[:3, 3].copy()
    for d in range(3):
        if step[d] < 0:
            arr = np.flip(arr, d)
            origin[d] += step[d] * (arr.shape[d] - 1)
    return np.ascontiguousarray(arr), RasGrid(origin, float(abs(step[0])))


@functools.lru_cache(maxsize=1)
def load_atlas() -> Atlas:
    """Read the maps and precompute the fields (2-3 s, about 60 MB; cached for the process)."""
    paths = require_mni152()
    gm, fine = _read_ras(paths["gm"])
    wm, g2 = _read_ras(paths["wm"])
    t1, g3 = _read_ras(paths["t1"])
    if not (gm.shape == wm.shape == t1.shape and all(np.allclose(fine.origin, g.origin) for g in (g2, g3))):
        raise ValueError("MNI152 maps are not on one grid")
    cavity = ndimage.binary_fill_holes(t1 > 0)  # the template is skull-stripped: its mask is the cranial cavity
    tissue = (gm.astype(F32) + wm.astype(F32)) * F32(1 / 255)
    vent = _ventricles(cavity, tissue)
    coarse, cavity_sd, head_sd = _shell_fields(cavity, fine)
    vgrid, vent_sd, vent_box = _ventricle_field(vent, tissue, fine)
    region = _regions(fine, gm.shape)
    gm, wm = _sharpen(gm, wm)
    head_box = _box(head_sd < 17.0, coarse)  # thickest skull + scalp is 15 mm
    sa = _subarachnoid_depth(tissue, fine, cavity_sd, coarse)
    for a in (gm, wm, region, cavity_sd, head_sd, vent_sd):
        a.setflags(write=False)
    landmarks = _landmarks(vent, fine, cavity_sd, coarse)
    return Atlas(fine, gm, wm, region, coarse, cavity_sd, head_sd, vgrid, vent_sd, landmarks, vent_box, head_box, sa)


def _sharpen(gm: np.ndarray, wm: np.ndarray, gamma: float = SHARPEN) -> tuple[np.ndarray, np.ndarray]:
    """Tissue fractions f ∝ p^gamma (CSF = 1 - GM - WM): keeps every boundary (where two fractions are equal)
    but narrows the partial-volume band of the population-average template towards one head's."""
    g, w = gm.astype(F32) * F32(1 / 255), wm.astype(F32) * F32(1 / 255)
    c = np.clip(1 - g - w, 0, 1)
    g, w, c = g ** gamma, w ** gamma, c ** gamma
    norm = F32(255) / np.maximum(g + w + c, F32(1e-6))
    return tuple(np.rint(a * norm).astype(np.uint8) for a in (g, w))


def _box(mask: np.ndarray, grid: RasGrid) -> tuple[np.ndarray, np.ndarray]:
    idx = np.argwhere(mask)
    return grid.origin + grid.spacing * idx.min(0), grid.origin + grid.spacing * idx.max(0)


def _signed_distance(mask: np.ndarray, spacing: float, smooth_vox: float, inside: bool = True) -> np.ndarray:
    """Signed distance (mm, negative inside) to the boundary of a binary mask, lightly smoothed.

    ``inside=False`` skips the interior distances (every inside voxel reads -spacing / 2).
    """
    half = 0.5 * spacing
    depth = ndimage.distance_transform_edt(mask, sampling=spacing) if inside else spacing
    sd = np.where(mask, half - depth, ndimage.distance_transform_edt(~mask, sampling=spacing) - half).astype(F32)
    return ndimage.gaussian_filter(sd, smooth_vox) if smooth_vox > 0 else sd


def _shell_fields(cavity: np.ndarray, fine: RasGrid):
    """Coarse padded grid; signed distances to the cavity and to the cavity plus a face/neck block."""
    step = int(round(COARSE_MM / fine.spacing))
    px, py, below, above = (step * int(round(v / COARSE_MM)) for v in PAD_MM)
    m = np.pad(cavity, ((px, px), (py, py), (0, above)))
    m = np.concatenate([np.repeat(m[:, :, :1], below, axis=2), m], axis=2)  # spinal canal continues downwards
    b = _block_count(m, step) * 2 >= step ** 3  # at least half of each coarse voxel
    corner = fine.origin - fine.spacing * np.array([px, py, below])
    coarse = RasGrid(corner + 0.5 * (COARSE_MM - fine.spacing), COARSE_MM)  # block centres
    cavity_sd = _signed_distance(b, COARSE_MM, 1.0)
    head_sd = _signed_distance(b | _face_block(b, coarse), COARSE_MM, 1.0, inside=False)  # only its outside is used
    return coarse, cavity_sd, head_sd


def _block_count(m: np.ndarray, step: int) -> np.ndarray:
    """Number of set voxels in each step³ block of a boolean array."""
    n = [s // step for s in m.shape]
    m = m[:n[0] * step, :n[1] * step, :n[2] * step]
    return m.reshape(n[0], step, n[1], step, n[2], step).sum(axis=(1, 3, 5), dtype=np.int16)


def _face_block(b: np.ndarray, grid: RasGrid) -> np.ndarray:
    """Below the widest axial section of the cavity: its silhouette, tapering downwards (face, skull base, neck)."""
    area = b.sum(axis=(0, 1))
    kz = int(np.argmax(area))
    sil = b.any(axis=2)
    depth = ndimage.distance_transform_edt(sil, sampling=grid.spacing)  # mm inside the silhouette
    dz = (kz - np.arange(b.shape[2])) * grid.spacing  # mm below the widest section
    taper = np.where(dz > 0, 0.004 * dz ** 2, np.inf)
    return depth[:, :, None] > taper[None, None, :]


def _ventricles(cavity: np.ndarray, tissue: np.ndarray) -> np.ndarray:
    """Interior CSF components of at least 1 mL (the lateral and third ventricles)."""
    csf = cavity & (tissue < 0.5)
    inner = ndimage.binary_erosion(cavity, iterations=4)
    lab, n = ndimage.label(csf)
    touching = np.unique(lab[csf & ~inner])
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    keep = np.zeros(n + 1, bool)
    keep[1:] = sizes[1:] >= 1000
    keep[touching] = False
    if not keep.any():
        raise ValueError("no ventricles found in the MNI152 maps")
    return keep[lab]


def _ventricle_field(vent: np.ndarray, tissue: np.ndarray, fine: RasGrid, margin_mm: float = 30.0):
    """Signed distance to the ventricle wall on a crop around the ventricles.

    The wall is where tissue reaches 90 % (up to 3 mm out from the 50 % surface): the template's blurred
    CSF / white-matter transition belongs to the ventricle, so periventricular shells start in white matter
    (as the analytic head's sharp wall does) instead of in partial volume.
    """
    idx = np.argwhere(vent)
    m = int(round(margin_mm / fine.spacing))
    lo = np.maximum(idx.min(0) - m, 0)
    hi = np.minimum(idx.max(0) + m + 1, vent.shape)
    sl = tuple(slice(a, b) for a, b in zip(lo, hi))
    crop = vent[sl]
    wall = crop | (ndimage.binary_dilation(crop, iterations=3) & (tissue[sl] < 0.9))
    grid = RasGrid(fine.origin + fine.spacing * lo, fine.spacing)
    return grid, _signed_distance(wall, fine.spacing, 0.7), _box(vent, fine)


def _regions(fine: RasGrid, shape) -> np.ndarray:
    """Region codes drawn in MNI mm: deep grey matter, cerebellum (below the tentorium), brainstem; else cerebrum."""
    def tentorium(x, y, z):  # steep along the straight sinus in the midline, flatter laterally
        ax = np.abs(x)
        tent = np.maximum(14.0 + (y + 50.0) - ax, -14.0 + 0.17 * (y + 60.0) - 0.35 * np.maximum(ax - 20.0, 0))
        return z < tent

    def stem(x, y, z):
        return np.minimum(capsule_sd(x, y, z, (0, -26, -5), (0, -42, -200), 10.0),
                          ellipsoid_sd(x, y, z, (0, -24, -28), (16, 14, 13))) < 0

    def deep(x, y, z):
        return np.minimum(ellipsoid_sd(x, y, z, (17, -2, 6), (15, 32, 17)),
                          ellipsoid_sd(x, y, z, (-17, -2, 6), (15, 32, 17))) < 0

    region = np.full(shape, CEREBRUM, np.uint8)
    for code, fn, lo, hi in ((DEEP, deep, (-33, -35, -12), (33, 31, 24)),
                             (CEREBELLUM, tentorium, (-99, -200, -200), (99, -44, 40)),
                             (STEM, stem, (-17, -60, -200), (17, 0, 10))):
        sl = tuple(slice(max(0, int(np.floor(a))), max(0, int(np.ceil(b)) + 1))
                   for a, b in zip(fine.index(lo), fine.index(hi)))
        sub = region[sl]
        x, y, z = (r[s] for r, s in zip(fine.ras(shape), _axis_slices(sl)))
        sub[np.broadcast_to(fn(x, y, z), sub.shape)] = code
    return region


def _axis_slices(sl):
    """Per-axis slices for the broadcastable coordinate arrays of RasGrid.ras."""
    return [tuple(s if e == d else slice(None) for e in range(3)) for d, s in enumerate(sl)]


def _landmarks(vent: np.ndarray, fine: RasGrid, cavity_sd: np.ndarray, coarse: RasGrid) -> dict:
    """RAS anchors from the ventricles (per side: +1 = MNI right) and the frontal inner table."""
    pts = fine.origin + fine.spacing * np.argwhere(vent)
    out = {"frontal_tip": {}, "occipital_tip": {}, "glomus": {}}
    for side in (-1, 1):
        s = pts[pts[:, 0] * side > 2.0]
        out["frontal_tip"][side] = s[s[:, 1] > s[:, 1].max() - 5].mean(0)
        out["occipital_tip"][side] = s[s[:, 1] < s[:, 1].min() + 10].mean(0)
        out["glomus"][side] = s[(s[:, 1] < s[:, 1].min() + 22) & (s[:, 1] > s[:, 1].min() + 8)].mean(0)
    out["pineal"] = np.array([0.0, -28.0, -1.0])  # on the tectum, under the splenium (read off the T1)
    out["pallidum"] = {side: np.array([side * 19.0, -3.0, -1.0]) for side in (-1, 1)}
    # frontal inner table in the midline, 8 mm below the AC-PC plane (frontal sinus level)
    ys = np.arange(0.0, 120.0, 0.5)
    sd = sample(cavity_sd, coarse, [np.zeros_like(ys), ys, np.full_like(ys, -8.0)])
    out["frontal_table"] = np.array([0.0, ys[np.argmax(sd > 0)], -8.0])
    return out


def _subarachnoid_depth(tissue, fine: RasGrid, cavity_sd, coarse: RasGrid) -> float:
    """Median depth (mm) of the outer brain surface (tissue = 0.5) below the cavity surface."""
    surf = np.argwhere((tissue > 0.4) & (tissue < 0.6))[::7]
    d = sample(cavity_sd, coarse, list((fine.origin + fine.spacing * surf).T))
    return float(np.median(-d[(d < 0) & (d > -8)]))


@functools.lru_cache(maxsize=1)
def brain_surface_field() -> np.ndarray:
    """Signed distance (mm, negative inside the brain) to the template's tissue boundary (GM + WM = 0.5) on the
    fine grid: the erosion field of atrophic heads. Computed on first use (~3 s, 35 MB), so heads
    without atrophy never pay for it."""
    a = load_atlas()
    tissue = (a.gm.astype(F32) + a.wm.astype(F32)) * F32(1 / 255)  # sharpened fractions: the same 0.5 surface
    return _signed_distance(tissue >= 0.5, a.fine.spacing, 0.5)


def sample(arr: np.ndarray, grid: RasGrid, ras, order: int = 1, mode: str = "constant",
           cval: float = 0.0) -> np.ndarray:
    """Interpolate ``arr`` at RAS points given as three coordinate arrays (float32 result)."""
    coords = [(np.asarray(c, F32) - F32(grid.origin[d])) * F32(1 / grid.spacing) for d, c in enumerate(ras)]
    return ndimage.map_coordinates(arr, coords, order=order, mode=mode, cval=cval, output=F32)


# --------------------------------------------------------------------------- the head


@dataclass
class AtlasHead(HeadModel):
    """MNI152 head with the :class:`HeadModel` interface (frames, warp, ``paint``, ``label``, ``sites``...)."""

    atlas: Atlas = field(default=None, repr=False)
    scale: np.ndarray = None  # per-axis scale of the model frame relative to MNI
    # the atlas's periventricular shells overlap caudate, thalamus and CSF partial volume: only about half of
    # them is white matter, and that share grows with the lesion scale, so the fit needs more rounds
    WML_FIT_ROUNDS = 8

    @classmethod
    def random(cls, seed: int, *, origin=(0.0, 0.0, 0.0), rotate=True, warp_mm=4.0,
               atrophy: float | None = None) -> "AtlasHead":
        """The head of ``seed``; ``atrophy`` in [0, 1] erodes the brain (module doc), None or 0 leaves it as drawn."""
        if atrophy is not None and not 0.0 <= atrophy <= 1.0:
            raise ValueError(f"atrophy must be within [0, 1], not {atrophy!r}")
        atlas = load_atlas()
        rng = np.random.default_rng([int(seed), 0xA71A5])
        m = cls(seed=int(seed), rng=rng, atlas=atlas)
        m._draw_placement(origin, rotate, warp_mm)
        m.scale = rng.uniform(0.9, 1.1, 3)
        p = m.p
        p["scale"] = m.scale
        p["skull"] = rng.uniform(5.0, 8.0)
        p["scalp"] = rng.uniform(4.0, 7.0)
        p["vs"] = 1.0  # nominal: the atlas ventricles are the template's (atrophy below scales it)
        p["sa_extra"] = rng.uniform(0.5, 2.5)  # widens the subarachnoid space: skull and scalp move out
        p["sa"] = atlas.sa_mm * m.mm + p["sa_extra"]
        # ellipsoid roughly inscribed in the cavity: seeds the sinuses and cortical veins, which are then snapped
        p["in_c"] = m.u_from_ras([0.0, -17.0, 20.0])
        p["in_a"] = np.array([68.0, 88.0, 60.0]) * m.scale
        if atrophy:  # its own stream: the rest of the head is the same as without atrophy
            p["atrophy"] = float(atrophy)
            p["vs"] = 1.0 + 1.15 * atrophy  # the ventricles' nominal scale, as the analytic head reports it
            more = np.random.default_rng([int(seed), 0xA760])
            p["sulc_w"] = 0.6 + 1.8 * atrophy + more.uniform(0, 0.4)  # the extra sulci (module doc)
            p["sulc_depth"] = more.uniform(6.0, 12.0)
            ks = more.normal(size=(9, 3))
            ks /= np.linalg.norm(ks, axis=1, keepdims=True)
            p["sulc_k"] = ks * (2 * np.pi / more.uniform(18, 30, 9))[:, None]
            p["sulc_phi"] = more.uniform(0, 2 * np.pi, 9)
        m._build_vessels()
        return m

    def _erosion(self, ras, cav) -> np.ndarray | None:
        """Atrophy's cap on the tissue fraction at RAS points (None: no atrophy): eroded from the cortical surface
        and the ventricle wall, and cut by the extra sulci (module doc)."""
        p = self.p
        a = p.get("atrophy", 0.0)
        if not a:
            return None
        frontal = F32(0.75) + F32(0.5) / (F32(1) + np.exp(-ras[1] * F32(1 / 25)))  # anterior (RAS y > 0) more
        depth = -sample(brain_surface_field(), self.atlas.fine, ras, cval=50.0) * F32(self.mm)  # outside: no brain
        cap = np.clip(depth - F32(2.2 * a) * frontal + F32(0.5), 0, 1)
        wall = self._ventricle_wall(ras)
        np.minimum(cap, np.clip(wall + F32(1.5), 0, 1), out=cap)  # the ventricle's CSF reaches 1 mm past its wall
        outer = -cav - F32(p["sa"])  # depth below the outer brain surface, not the ventricles'
        near = outer < F32(p["sulc_depth"])
        if near.any():  # a sulcus narrows and fades with depth; the wave field (RAS mm) only where one can reach
            x, y, z = (c[near] for c in ras)
            taper = np.clip(F32(1) - outer[near] * F32(1 / p["sulc_depth"]), 0, 1)
            sheet = np.clip(F32(p["sulc_w"] * 0.5) * taper - self.sulc_field(x, y, z) + F32(0.5), 0, 1)  # CSF share
            cap[near] = np.minimum(cap[near], F32(1) - sheet * taper)
        return cap

    # ----------------------------------------------------------------- frames
    @property
    def mm(self) -> float:
        """Model-frame mm per atlas mm (geometric mean of the scale), for distances."""
        return float(np.prod(self.scale) ** (1 / 3))

    def u_from_ras(self, ras) -> np.ndarray:
        return (np.asarray(ras, float) - ANCHOR_RAS) * FLIP * self.scale

    def ras_from_u(self, u) -> np.ndarray:
        return ANCHOR_RAS + FLIP * np.asarray(u, float) / self.scale

    def _ras(self, x, y, z) -> list[np.ndarray]:
        """Model-frame coordinate arrays → RAS arrays (float32)."""
        a = (FLIP / self.scale).astype(F32)
        b = ANCHOR_RAS.astype(F32)
        return [x * a[0] + b[0], y * a[1] + b[1], z * a[2] + b[2]]

    def _box_u(self, lo_ras, hi_ras, pad=0.0):
        corners = np.stack([self.u_from_ras(lo_ras), self.u_from_ras(hi_ras)])
        return tuple(corners.min(0) - pad), tuple(corners.max(0) + pad)

    # ----------------------------------------------------------------- fields
    def cavity_sd(self, x, y, z):
        return self._shell_sd(self.atlas.cavity_sd, self._ras(x, y, z))

    def _shell_sd(self, field_mm: np.ndarray, ras) -> np.ndarray:
        """Cavity or head-envelope distance (model-frame mm) at RAS points, moved out by ``sa_extra``."""
        return sample(field_mm, self.atlas.coarse, ras, cval=FAR) * F32(self.mm) - F32(self.p["sa_extra"])

    def ventricle_sd(self, x, y, z):
        return self._ventricle_wall(self._ras(x, y, z))

    def _ventricle_wall(self, ras) -> np.ndarray:
        """Signed distance (model-frame mm) to the ventricle wall at RAS points: the template's, moved out by
        atrophy."""
        a = self.atlas
        grown = F32(VENTRICLE_GROWTH_MM * self.p.get("atrophy", 0.0))
        return sample(a.vent_sd, a.vent, ras, cval=50.0) * F32(self.mm) - grown

    def _fields(self, x, y, z) -> dict:
        return self._memo("atlas", self._compute_fields, x, y, z)

    def _compute_fields(self, x, y, z) -> dict:
        """Per point: head / cavity distances and the tissue layers' coverages (each evaluated only where needed)."""
        a, p = self.atlas, self.p
        ras = self._ras(x, y, z)
        head = self._shell_sd(a.head_sd, ras)
        cav = _where(head < F32(p["skull"] + p["scalp"] + 2.0), FAR, ras, lambda r: self._shell_sd(a.cavity_sd, r))
        out = {"head": head, "cavity": cav}
        inside = cav < F32(1.0)
        if inside.all():
            return {**out, **self._tissue(ras, cav)}
        sub = self._tissue([r[inside] for r in ras], cav[inside]) if inside.any() else None
        for key in TISSUE_KEYS + ("falx",):
            arr = np.full(x.shape, FAR if key == "falx" else F32(0.5), F32)  # no coverage / far from the falx
            if sub is not None:
                arr[inside] = sub[key]
            out[key] = arr
        return out

    def _tissue(self, ras, cav) -> dict:
        """Layer pseudo-distances (0.5 - coverage, edge 1) of the brain tissues at RAS points inside the cavity.

        Painted in order gm|dgm, wm, cbl|stem over CSF, the coverages give the mixture
        ``csf * (1 - g - w) + gm * g + wm * w`` (``gm / (1 - w)`` then ``w``).
        """
        a = self.atlas
        inner = np.clip(F32(0.5) - cav * F32(1 / 0.8), 0, 1)  # nothing outside the cavity
        g = sample(a.gm, a.fine, ras, mode="nearest") * (inner * F32(1 / 255))
        w = sample(a.wm, a.fine, ras, mode="nearest") * (inner * F32(1 / 255))
        reg = sample(a.region, a.fine, ras, order=0, mode="nearest")
        cap = self._erosion(ras, cav)
        if cap is not None:  # atrophy: tissue only up to the cap, GM and WM in their proportions
            t = g + w
            keep = np.minimum(cap, t) / np.maximum(t, F32(1e-6))
            g, w = g * keep, w * keep
        g_over = np.clip(g / np.maximum(F32(1) - w, F32(1e-3)), 0, 1)
        all_t = np.clip(g + w, 0, 1)
        zero = np.zeros_like(g)
        cov = {
            "gm": np.where(reg == CEREBRUM, g_over, zero), "dgm": np.where(reg == DEEP, g_over, zero),
            "wm": np.where((reg == CEREBRUM) | (reg == DEEP), w, zero),
            "cbl": np.where(reg == CEREBELLUM, all_t, zero), "stem": np.where(reg == STEM, all_t, zero),
        }
        out = {k: F32(0.5) - v for k, v in cov.items()}
        # falx: a midline sheet above the callosal / diencephalic block
        x, y, z = ras
        falx = np.maximum(np.abs(x) - F32(0.35), -ellipsoid_sd(x, y, z, (0, -4, 2), (26, 42, 26)))
        out["falx"] = np.where(reg == CEREBRUM, np.maximum(falx, cav + F32(0.3)), FAR)
        return out

    # ----------------------------------------------------------------- layers
    def layers(self, ct_like: bool = True):
        p = self.p
        sk, sc = p["skull"], p["scalp"]
        box = self._box_u(*self.atlas.head_box, pad=2.0 + p["sa_extra"])
        f = self._fields

        def fat_sd(x, y, z):
            h = f(x, y, z)["head"] - F32(sk + sc)
            return np.maximum(h + F32(1.2), -h - F32(1.2 + 0.35 * sc))

        yield Layer("scalp", *box, lambda x, y, z: f(x, y, z)["head"] - F32(sk + sc))
        yield Layer("fat", *box, fat_sd)
        yield Layer("soft", *box, lambda x, y, z: f(x, y, z)["head"] - F32(sk))
        yield Layer("bone", *box, lambda x, y, z: f(x, y, z)["cavity"] - F32(sk))
        yield Layer("diploe", *box, lambda x, y, z: np.abs(f(x, y, z)["cavity"] - F32(sk / 2)) - F32(sk * 0.22))
        yield from self._air_layers()
        yield Layer("csf", *box, lambda x, y, z: f(x, y, z)["cavity"])
        for key in TISSUE_KEYS:
            yield Layer(key, *box, lambda x, y, z, key=key: f(x, y, z)[key], 1.0)
        yield Layer("falx", *box, lambda x, y, z: f(x, y, z)["falx"], 0.6)
        yield from self.vessel_layers()
        self.__dict__.pop("_cache", None)

    def _air_layers(self):
        """Frontal and sphenoid sinuses, nasal cavity, maxillary sinuses, mastoids, orbits (MNI mm, scaled)."""
        sk = self.p["skull"]
        ft = self.atlas.landmarks["frontal_table"]
        fs = ft + [0.0, sk / 2 / self.mm, 0.0]  # the middle of the frontal bone
        shapes = [("bone", fs, (20, sk * 0.5 + 3, 15)), ("air", fs, (14, sk * 0.5 + 1, 10)),
                  ("air", (0, 14, -42), (11, 11, 9)), ("air", (0, 60, -62), (9, 22, 16))]
        for side in (-1, 1):
            shapes += [("air", (side * 24, 50, -64), (12, 14, 14)), ("air", (side * 50, -34, -46), (9, 10, 10)),
                       ("orbitfat", (side * 31, 46, -38), (16, 20, 15)), ("globe", (side * 32, 58, -40), (12, 12, 12))]
        for key, c, r in shapes:
            cu = self.u_from_ras(c)
            ru = np.asarray(r, float) * self.scale
            yield Layer(key, cu - ru - 2, cu + ru + 2, lambda x, y, z, cu=cu, ru=ru: ellipsoid_sd(x, y, z, cu, ru))

    def label(self, u_points: np.ndarray) -> np.ndarray:
        self._key = ("label", id(u_points))  # share the atlas lookups between layers
        try:
            return super().label(u_points)
        finally:
            self._key = None
            self.__dict__.pop("_cache", None)

    # ----------------------------------------------------------------- anchors, vessels
    def sites(self) -> dict:
        lm = self.atlas.landmarks
        u = self.u_from_ras

        def sided(name):  # keyed by the model-frame side (u x > 0 is the subject's left = MNI -x)
            return {sx: tuple(u(lm[name][-sx])) for sx in (-1, 1)}

        lo, hi = self._box_u(*self.atlas.vent_box, pad=16.0)
        return {"frontal_tip": sided("frontal_tip"), "occipital_tip": sided("occipital_tip"), "glomus": sided("glomus"),
                "pineal": tuple(u(lm["pineal"])), "pallidum": sided("pallidum"), "periventricular_box": (lo, hi)}

    def _build_vessels(self):
        """The analytic vessel tree on the inscribed ellipsoid, snapped onto the atlas: dural sinuses to the inner
        table, cortical veins into the subarachnoid space, medullary veins to the ventricle wall."""
        super()._build_vessels()
        sa = self.p["sa"]
        for v in self.vessels:
            if v.kind in ("sinus", "vein"):
                target = -(v.radius + 0.7) if v.kind == "sinus" else -(0.5 * sa + 0.5)
                v.points = _snap(v.points, self.cavity_sd, target, reach=20.0)
            elif v.kind == "medullary":
                start = _snap(v.points[:1], self.ventricle_sd, 0.5, reach=30.0)
                v.points = v.points + (start - v.points[:1])


def _where(sel: np.ndarray, fill, ras, fn) -> np.ndarray:
    """``fn(ras)`` where ``sel`` (elsewhere ``fill``), evaluating ``fn`` only on the selected points."""
    if sel.all():
        return fn(ras)
    out = np.full(sel.shape, fill, F32)
    if sel.any():
        out[sel] = fn([r[sel] for r in ras])
    return out


def _snap(points: np.ndarray, field_fn, target: float, reach: float, iters: int = 5) -> np.ndarray:
    """Move points within ``reach`` mm of the ``target`` level of a distance field onto that level (Newton steps)."""
    p = np.asarray(points, float).copy()
    h = 0.75

    def f(q):
        return field_fn(*[q[:, i].astype(F32) for i in range(3)]).astype(float)

    near = np.abs(f(p) - target) < reach
    for _ in range(iters):
        val = f(p) - target
        grad = np.stack([(f(p + h * e) - f(p - h * e)) / (2 * h) for e in np.eye(3)], 1)
        g2 = np.maximum((grad ** 2).sum(1), 0.25)
        step = np.clip(val / g2, -5.0, 5.0)[:, None] * grad
        p = np.where(near[:, None], p - step, p)
    return p

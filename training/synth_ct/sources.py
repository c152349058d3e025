"""Two independent sources of brain anatomy, both returning soft grey/white maps in template space.

* ``atlas``: the MNI152 2009 grey- and white-matter probability maps and the brain mask of its T1 (shipped in the
  nilearn wheel, read with nibabel; nilearn itself is never imported), sampled through the random elastic warp.
  Only the maps are used: tissue classes, ventricles, sulci and atrophy are decided later by our own rules.
* ``procedural``: a brain built from geometric primitives: a perturbed ellipsoidal cerebrum with temporal lobes,
  an interhemispheric and Sylvian fissure, random gyral folding (sulci are the zero sets of band-limited noise
  near the surface), deep nuclei, C-shaped lateral ventricles with horns, a brainstem and a cerebellum with folia.

Both give ``gm``, ``wm`` (float32 in [0, 1]), ``icv`` (bool: the intracranial space the skull is built around) and
``lv`` (bool: where CSF counts as lateral ventricle), so the label rules downstream do not know which one ran.
"""
from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from .fields import Grid, block_mean, distance, ellipsoid, interp_axis, segment_distance, smooth_noise

ATLAS_ORIGIN = np.array([-98.0, -134.0, -72.0])  # mm of voxel (0, 0, 0) of the 1 mm MNI152 2009 maps (RAS)
_FILES = {"gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
          "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
          "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"}


def z_tent(X, Y):
    """Height of the tentorium (template mm): it slopes down towards the occiput and laterally."""
    return -6.0 - 0.28 * np.maximum(0.0, -(Y + 40.0)) - 0.25 * np.abs(X)


def behind_petrous(X, Y):
    """Behind the petrous ridges (template mm)."""
    return Y < -42.0 + 0.15 * np.maximum(np.abs(X) - 8.0, 0.0)


def posterior_fossa(X, Y, Z):
    """Below the tentorium and behind the petrous ridges: cerebellum territory."""
    return behind_petrous(X, Y) & (Z < z_tent(X, Y))


def atlas_dir() -> Path | None:
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    return d if all((d / f).exists() for f in _FILES.values()) else None


def atlas_available() -> bool:
    return importlib.util.find_spec("nibabel") is not None and atlas_dir() is not None


@functools.lru_cache(maxsize=1)
def _atlas_base() -> dict:
    """The 1 mm maps as uint8 (0-255) plus our own ICV and lateral-ventricle envelope."""
    import nibabel as nib

    d = atlas_dir()
    arr = {k: np.asarray(nib.load(str(d / v)).dataobj) for k, v in _FILES.items()}
    icv = ndi.binary_fill_holes(ndi.binary_closing(arr["t1"] > 0, iterations=2))
    csf = arr["gm"].astype(np.int16) + arr["wm"] < 90
    deep = icv & csf & (distance(~icv, 1.0, 2) > 8)
    lab, n = ndi.label(deep)
    lv = np.zeros_like(icv)
    if n:
        size = np.bincount(lab.ravel(), minlength=n + 1)
        boxes = ndi.find_objects(lab)
        keep = []
        for i in np.flatnonzero(size[1:] > 1500) + 1:
            sl = boxes[i - 1]
            com = np.argwhere(lab[sl] == i).mean(0) + [s.start for s in sl] + ATLAS_ORIGIN
            if abs(com[0]) > 6 and com[2] > -5:
                keep.append(i)
        lv = np.isin(lab, keep)
    lv = distance(lv, 1.0, 2) <= 6.0  # envelope: the ventricles may grow into it after warping
    return {"gm": arr["gm"], "wm": arr["wm"], "icv": icv.astype(np.uint8) * 255, "lv": lv.astype(np.uint8) * 255}


@functools.lru_cache(maxsize=2)
def _atlas(f: int) -> dict:
    out = dict(_atlas_base())
    if f > 1:
        out = {k: np.clip(block_mean(v, f), 0, 255).astype(np.uint8) for k, v in out.items()}
    out["origin"] = ATLAS_ORIGIN + (f - 1) / 2.0
    out["spacing"] = float(f)
    return out


def _coords(X, Y, Z, origin, spacing) -> np.ndarray:
    c = np.empty((3,) + X.shape, np.float64)
    for a, v in enumerate((X, Y, Z)):
        np.subtract(v, origin[a], out=c[a])
        c[a] /= spacing
    return c


def _upsample2(a: np.ndarray, shape) -> np.ndarray:
    out = a
    for ax in range(3):
        out = interp_axis(out, np.arange(shape[ax]) / 2.0, ax)
    return out


def atlas(rng: np.random.Generator, grid: Grid, X, Y, Z) -> dict:
    A = _atlas(max(1, int(round(grid.h))))
    o, sp = A["origin"], A["spacing"]
    sub = (slice(None, None, 2),) * 3
    c = _coords(X[sub], Y[sub], Z[sub], o, sp)
    icv, lv = (_upsample2(ndi.map_coordinates(A[k], c, order=1, output=np.float32, prefilter=False), grid.shape)
               > 127.5 for k in ("icv", "lv"))
    # grey and white matter only where they can matter: inside the intracranial space
    m = icv
    c = _coords(X[m], Y[m], Z[m], o, sp)
    gm = np.zeros(grid.shape, np.float32)
    wm = np.zeros(grid.shape, np.float32)
    gm[m] = ndi.map_coordinates(A["gm"], c, order=1, output=np.float32, prefilter=False) / 255.0
    wm[m] = ndi.map_coordinates(A["wm"], c, order=1, output=np.float32, prefilter=False) / 255.0
    return {"gm": gm, "wm": wm, "icv": icv, "lv": lv, "info": {"source": "mni152_deformed"}}


# --------------------------------------------------------------------------- procedural brain


def _polyline_tube(X, Y, Z, pts, radii, scale):
    """Inside-ness of a tube of varying radius along a polyline: max over segments of r(t) - distance."""
    best = np.full(X.shape, -1e3, np.float32)
    for (p0, r0), (p1, r1) in zip(zip(pts[:-1], radii[:-1]), zip(pts[1:], radii[1:])):
        dist, t = segment_distance(X, Y, Z, p0, p1, scale)
        np.maximum(best, (r0 + (r1 - r0) * t) - dist, out=best)
    return best


def procedural(rng: np.random.Generator, grid: Grid, X, Y, Z, umax: float) -> dict:
    h = grid.h
    shape = grid.shape
    u = rng.uniform
    ax, ay = u(64, 72), u(82, 90)
    az_up, az_dn = u(60, 68), u(38, 46)
    y0, z0 = u(-20, -14), u(8, 14)
    taper = u(0.04, 0.12)
    # cerebrum envelope: a tapered ellipsoid with a flatter base, its surface pushed by smooth noise
    az = np.where(Z > z0, az_up, az_dn).astype(np.float32)
    axx = ax * (1.0 - taper * (Y - y0) / ay)
    r = np.sqrt((X / axx) ** 2 + ((Y - y0) / ay) ** 2 + ((Z - z0) / az) ** 2)
    bump = smooth_noise(rng, shape, h, u(20, 35)) * u(1.5, 4.0)
    sd = (r - 1.0) * 70.0 - bump  # approx. signed distance to the cerebral surface (mm), < 0 inside
    del r, az, axx
    # temporal lobes, smoothly united
    tl = {}
    for side in (-1, 1):
        c = (side * u(36, 40), u(-14, -6), u(-26, -20))
        s = (u(17, 21), u(36, 44), u(18, 23))
        tl[side] = (c, s)
        sl = grid.roi(np.subtract(c, s), np.add(c, s), umax + 5)
        t = (ellipsoid(X[sl], Y[sl], Z[sl], c, s) - 1.0) * 20.0
        sd[sl] = np.minimum(sd[sl], t - bump[sl])
    del bump
    # below the tentorium the cerebrum stops
    zt_full = z_tent(X, Y)
    sd = np.maximum(sd, np.where(behind_petrous(X, Y), zt_full - Z, -1e3))
    cerebrum = sd < 0
    # fissures: interhemispheric (above the corpus callosum) and Sylvian
    w_ih = u(1.2, 2.6)
    xmid = smooth_noise(rng, shape, h, 40.0) * u(0.5, 2.0)
    cc_top = np.where(np.abs(Y + 4) < 38, 20.0 + 7.0 * (1 - ((Y + 4) / 38.0) ** 2), -12.0)
    fiss = (np.abs(X - xmid) < w_ih / 2) & (Z > cc_top)
    del xmid, cc_top
    syl_z = u(-8, -2) + 0.25 * (Y + 5)
    syl = (np.abs(Z - syl_z) < u(1.0, 2.2)) & (np.abs(X) > u(30, 36)) & (Y > -38) & (Y < 28)
    # gyral folding: sulci are near-radial sheets, the zero set of a 3D noise sampled at each point's radial
    # projection onto a sphere, drifting a little with depth, cut at a depth that varies over the surface
    shell = cerebrum & (sd > -30.0)
    pts = np.nonzero(shell)
    px, py, pz = X[pts], Y[pts] - y0, Z[pts] - z0
    rr = np.sqrt(px ** 2 + py ** 2 + pz ** 2) + 1e-3
    drift = rng.normal(size=3)
    drift *= u(0.15, 0.4) / np.linalg.norm(drift)
    dpt = -sd[pts]
    step = 2.5
    nshape = (int(240 / step),) * 3
    noise = smooth_noise(rng, nshape, step, u(5.5, 7.5))
    c = np.stack([(70.0 * p / rr + drift[a] * dpt + 120.0) / step for a, p in enumerate((px, py, pz))])
    nval = ndi.map_coordinates(noise, c, order=1, output=np.float32, prefilter=False)
    del noise, c, px, py, pz, rr
    depth = u(10, 20) + 5.0 * smooth_noise(rng, shape, h, 30.0)[pts]
    eps = u(0.12, 0.24)
    sulci = np.zeros(shape, bool)
    sulci[pts] = (np.abs(nval) < eps) & (dpt < depth)
    del nval, depth, dpt, pts, shell
    brain = cerebrum & ~fiss & ~syl & ~sulci
    del fiss, syl, sulci
    # cortex: the ribbon within t_c of any CSF (outer surface, fissures, sulci)
    t_c = u(2.4, 3.6)
    cortex = brain & (distance(~brain, h, 2 if h < 1.5 else 1, any_=True) < t_c)
    gm = np.zeros(shape, np.float32)
    wm = brain.astype(np.float32)
    gm[cortex] = 1.0
    wm[cortex] = 0.0
    del cortex
    # deep nuclei (grey): caudate head and body, lentiform, thalamus
    nuclei = []
    for side in (-1, 1):
        nuclei += [((side * u(11, 15), u(9, 15), u(6, 11)), (u(5, 7), u(8, 12), u(8, 11))),
                   ((side * u(21, 25), u(-3, 4), u(-2, 3)), (u(6, 8), u(14, 18), u(9, 12))),
                   ((side * u(10, 13), u(-21, -15), u(3, 8)), (u(8, 10), u(12, 15), u(8, 10)))]
    for c, s in nuclei:
        sl = grid.roi(np.subtract(c, s), np.add(c, s), umax + 2)
        m = ellipsoid(X[sl], Y[sl], Z[sl], c, s) < 1.0
        gm[sl][m], wm[sl][m] = 1.0, 0.0
    # lateral ventricles: C-shaped tubes (frontal horn, body, atrium, occipital and temporal horns)
    big = u(0.8, 1.5)
    lv = np.zeros(shape, bool)
    vent = np.zeros(shape, bool)
    zsc = u(0.5, 0.8)  # tall, thin cross-section
    for side in (-1, 1):
        pts = [(side * u(8, 12), u(26, 33), u(9, 14)), (side * u(12, 15), u(8, 13), u(16, 21)),
               (side * u(15, 19), u(-22, -16), u(18, 23)), (side * u(24, 30), u(-42, -34), u(10, 15)),
               (side * u(17, 23), u(-72, -60), u(4, 9))]
        radii = [u(3.0, 5.5), u(3.5, 6.0), u(3.5, 6.5), u(5.5, 9.0), u(1.5, 3.5)]
        radii = [r * big for r in radii]
        temporal = [pts[3], (side * u(31, 35), u(-28, -20), u(-6, 0)), (side * u(31, 35), u(-8, -2), u(-20, -14))]
        tr = [radii[3] * 0.6, u(1.5, 3.0) * big, u(1.0, 2.0)]
        lo = np.min(np.array(pts + temporal), 0) - 12
        hi = np.max(np.array(pts + temporal), 0) + 12
        sl = grid.roi(lo, hi, umax + 2)
        m = (_polyline_tube(X[sl], Y[sl], Z[sl], pts, radii, (1.0, 1.0, zsc)) > 0) | \
            (_polyline_tube(X[sl], Y[sl], Z[sl], temporal, tr, (1.0, 1.0, 1.0)) > 0)
        lv[sl] |= m
    # third and fourth ventricles
    w3 = u(1.5, 3.0) * big
    c3, s3 = (0.0, u(-14, -10), u(0, 4)), (w3, u(13, 17), u(8, 11))
    c4, s4 = (0.0, u(-48, -43), u(-34, -29)), (u(4, 7), u(3, 5), u(6, 9))
    for c, s in ((c3, s3), (c4, s4)):
        sl = grid.roi(np.subtract(c, s), np.add(c, s), umax + 2)
        vent[sl] |= ellipsoid(X[sl], Y[sl], Z[sl], c, s) < 1.0
    # brainstem (midbrain, pons bulge, medulla) and cerebellum (hemispheres, vermis, folia, white core)
    sl = grid.roi((-62, -100, -80), (62, 10, 10), umax + 2)
    Xs, Ys, Zs = X[sl], Y[sl], Z[sl]
    d_ms, _ = segment_distance(Xs, Ys, Zs, (0, u(-20, -16), -2), (0, u(-44, -38), -80))
    stem = (d_ms < u(8.0, 9.5)) | (ellipsoid(Xs, Ys, Zs, (0, u(-28, -24), u(-30, -26)), (12, 10, 11)) < 1)
    stem &= Zs < 2
    cb = np.zeros(Xs.shape, bool)
    cb_core = np.zeros(Xs.shape, bool)
    for side in (-1, 1):
        c, s = (side * u(22, 27), u(-66, -58), u(-36, -30)), (u(27, 32), u(25, 30), u(18, 22))
        e = ellipsoid(Xs, Ys, Zs, c, s)
        cb |= e < 1.0
        cb_core |= e < u(0.35, 0.5)
    cb |= ellipsoid(Xs, Ys, Zs, (0, u(-64, -56), u(-30, -26)), (u(8, 11), u(18, 22), u(14, 18))) < 1.0
    cb &= Zs < zt_full[sl] - 1.0
    cb &= ~vent[sl]
    del zt_full
    folia_n = smooth_noise(rng, Xs.shape, h, u(4.0, 6.0))
    folia = (np.abs(folia_n) < u(0.08, 0.16)) & ~cb_core
    g_sl, w_sl = gm[sl], wm[sl]
    g_sl[stem] = 0.35
    w_sl[stem] = 0.65
    g_sl[cb & ~folia] = 1.0
    w_sl[cb & ~folia] = 0.0
    g_sl[cb & cb_core] = 0.0
    w_sl[cb & cb_core] = 1.0
    g_sl[cb & folia] = 0.0
    brain_pf = stem | cb
    # intracranial space: the cerebrum with a CSF gap, the posterior fossa and the basal cisterns
    gap = u(0.8, 2.0)
    icv = sd < gap
    pf = (ellipsoid(Xs, Ys, Zs, (0, -60, -34), (u(44, 50), u(28, 32), u(24, 28))) < 1.0) & (Zs < z_tent(Xs, Ys) + 2)
    icv[sl] |= pf | ndi.binary_dilation(brain_pf, iterations=max(1, int(round(2.0 / h))))
    icv[sl] |= ellipsoid(Xs, Ys, Zs, (0, -14, -22), (18, 22, 16)) < 1.0
    icv = ndi.binary_fill_holes(ndi.gaussian_filter(icv.astype(np.float32), 2.0 / h) > 0.4)
    # anything inside the ventricles is CSF
    csf = lv | vent
    gm[csf], wm[csf] = 0.0, 0.0
    gm[~icv], wm[~icv] = 0.0, 0.0
    info = {"source": "procedural", "cortex_mm": round(t_c, 2), "ventricle_scale": round(big, 2)}
    return {"gm": gm, "wm": wm, "icv": icv, "lv": lv, "info": info}

"""Classical baselines, reported next to the learned models (``python -m training.evaluate``); training only,
never run by the service.

* ``wml_threshold``: hypodensity thresholding inside white matter on NCCT.
  Intracranial space from the skull; white matter from the brain histogram;
  a voxel is lesion where the smoothed HU lies between the CSF and the
  white-matter level by more than a fixed margin, away from cortex and
  ventricles. Volume = thresholded voxel count × physical voxel volume.
* ``cmb_blobs``: multi-scale LoG detector of dark blobs on SWI with vessel
  suppression (Hessian eigenvalue blobness / Frangi-like tubularity) and a
  contrast threshold. Diameter from the detection scale.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from svdmark.domain import CmbFindings, Volume, WmlFindings
from svdmark.infer import preprocess as pp
from svdmark.measure import cmb_findings

WML_PARAMS = dict(smooth_mm=2.0, margin_hu=3.0, noise_k=2.5, floor_below_wm_hu=9.0, cortex_mm=7.0,
                  ventricle_mm=3.0, min_size_mm3=20.0)
CMB_PARAMS = dict(sigmas_mm=(0.8, 1.2, 1.7, 2.4, 3.2), threshold=0.30, min_blobness=0.30, max_tubularity=0.6,
                  erode_mm=4.0, min_distance_mm=3.0, max_candidates=400)


def _spacing(volume: Volume) -> tuple[float, float, float]:
    return (max(volume.slice_spacing, 1e-3), float(volume.pixel_spacing[0]), float(volume.pixel_spacing[1]))


def _dist_mm(mask: np.ndarray, spacing) -> np.ndarray:
    return ndi.distance_transform_edt(mask, sampling=spacing)


def intracranial_mask(hu: np.ndarray) -> np.ndarray:
    """Inside of the skull, slice by slice (bone ring filled, bone removed)."""
    bone = hu > 300
    out = np.zeros(hu.shape, bool)
    for k in range(hu.shape[0]):
        b = ndi.binary_closing(bone[k], iterations=3)
        filled = ndi.binary_fill_holes(b)
        inner = filled & ~b
        lab, n = ndi.label(inner)
        if n:
            sizes = ndi.sum(inner, lab, np.arange(1, n + 1))
            out[k] = lab == 1 + int(np.argmax(sizes))
    return out


def wml_threshold(volume: Volume, params: dict | None = None) -> WmlFindings:
    p = {**WML_PARAMS, **(params or {})}
    sp = _spacing(volume)
    hu = volume.array
    ic = intracranial_mask(hu)
    sm = ndi.gaussian_filter(hu, [0.0, p["smooth_mm"] / sp[1], p["smooth_mm"] / sp[2]])
    brain = ic & (sm > 10) & (sm < 60)
    if brain.sum() < 100:
        return WmlFindings(0.0, np.zeros(hu.shape, np.uint8), ("baseline: no brain found",))
    vals = sm[brain]
    hist, edges = np.histogram(vals, bins=120, range=(0, 60))
    hist = ndi.gaussian_filter1d(hist.astype(float), 2)
    centres = 0.5 * (edges[1:] + edges[:-1])
    # white matter is the lower of the two tissue peaks (GM ~ 8 HU brighter)
    tissue = (centres > 18) & (centres < 45)
    peaks = [i for i in range(1, len(hist) - 1) if tissue[i] and hist[i] >= hist[i - 1] and hist[i] >= hist[i + 1]]
    wm = float(centres[min(peaks)]) if peaks else float(np.median(vals))
    # noise of the smoothed image in white matter (robust spread around the WM level)
    near = vals[np.abs(vals - wm) < 6]
    sigma = float(1.4826 * np.median(np.abs(near - np.median(near)))) if near.size > 50 else 2.0
    margin = max(p["margin_hu"], p["noise_k"] * sigma)
    csf = ic & (sm < wm - p["floor_below_wm_hu"])
    deep = _dist_mm(ic, sp) > p["cortex_mm"] + 3.0
    away_csf = _dist_mm(~csf, sp) > p["ventricle_mm"]
    lesion = deep & away_csf & (sm < wm - margin) & (sm > wm - p["floor_below_wm_hu"])
    lab, n = ndi.label(lesion)
    if n:
        sizes = ndi.sum(lesion, lab, np.arange(1, n + 1)) * volume.voxel_volume_mm3
        keep = np.zeros(n + 1, bool)
        keep[1:] = sizes >= p["min_size_mm3"]
        lesion = keep[lab]
    ml = float(lesion.sum() * volume.voxel_volume_mm3 / 1000.0)
    return WmlFindings(ml, lesion.astype(np.uint8), (f"classical baseline (WM {wm:.1f} HU, cut {wm - margin:.1f} HU)",))


def cmb_blobs(volume: Volume, params: dict | None = None) -> CmbFindings:
    p = {**CMB_PARAMS, **(params or {})}
    sp = _spacing(volume)
    ref = pp.foreground_reference(volume.array)
    norm = pp.normalise(volume.array, {"type": "foreground_median", "clip": [0.0, 3.0]}, ref=ref)
    mask = pp.head_mask(volume.array, ref, 0.35, erode_mm=p["erode_mm"], spacing=sp)
    cents, resp, sig = pp.log_candidates(norm, sp, tuple(p["sigmas_mm"]), p["threshold"], mask,
                                         p["max_candidates"], p["min_distance_mm"])
    blob, tube = pp.hessian_blobness(norm, cents, sig, sp)
    keep = (blob >= p["min_blobness"]) & (tube <= p["max_tubularity"])
    conf = np.clip(resp / (2 * p["threshold"]), 0, 1)
    diam = 2.0 * np.sqrt(3.0) * sig
    cands = [(tuple(c), float(q), float(d)) for c, q, d, k in zip(cents, conf, diam, keep) if k]
    return cmb_findings(volume, cands, threshold=0.0, merge_mm=p["min_distance_mm"])

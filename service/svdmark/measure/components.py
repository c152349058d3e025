"""Which regions of a WML model's counted fraction are lesion: a small logistic model over each region's look and place.

On heads drawn by code other than our generator, most of what the net counts lies off any lesion (normal white
matter darkened by beam hardening or partial volume, ventricles and sulci at a white-matter-like HU, cortex), and
nearly all of it in connected regions of its own, apart from the lesions it finds. Each 26-connected component of
the counted fraction gets :data:`FEATURES`, read from the image and the head's own tissue levels (:mod:`.head`), so
that a head whose CSF lies close to white matter is measured in its own units. The manifest's
``output.component_filter`` (fitted by ``training.component_filter`` on heads of generators the net never saw) holds
a logistic model over them and a threshold: a component whose probability of being lesion is below it counts
nothing, in the volume, the SEG and every interval pass alike (:func:`kept_region`).

Own code: the features are this reading's own, and a logistic model is one dot product; no library holds either.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

from ..domain import WML_COMPONENT_FEATURES as FEATURES
from ..domain import ComponentFilter, Volume
from .head import SmoothedHead, smoothed_head

MIN_GAP_HU = 4.0  # a CSF-white-matter gap read smaller than this is taken as this (gap units stay finite)
CSF_SHARE_AT = 0.4  # csf_share counts voxels below csf + this x gap
CSF_CORE_AT = 0.25  # csf_mm measures to voxels below csf + this x gap
RING_MM = (1.0, 3.0)


def components(counted: np.ndarray) -> tuple[np.ndarray, int]:
    """The 26-connected components of ``counted > 0``: (labels, how many)."""
    return ndi.label(counted > 0, structure=np.ones((3, 3, 3), bool))


def _in_plane_distance(mask: np.ndarray, spacing) -> np.ndarray:
    """Each voxel's in-plane distance (mm) to the nearest voxel outside ``mask`` on its own slice (a slice without
    one: far)."""
    py, px = spacing
    out = np.full(mask.shape, 1e3, np.float32)
    for k, sl in enumerate(mask):
        if sl.any() and not sl.all():
            out[k] = ndi.distance_transform_edt(sl, sampling=(py, px))
    return out


def component_features(volume: Volume, counted: np.ndarray, head: SmoothedHead,
                       labels: np.ndarray | None = None, n: int | None = None) -> np.ndarray:
    """A (components, len(FEATURES)) table, row i for label i + 1 of :func:`components` (or the ``labels`` given)."""
    if labels is None:
        labels, n = components(counted)
    if not n:
        return np.zeros((0, len(FEATURES)))
    idx = np.arange(1, n + 1)
    py, px = (float(v) for v in volume.pixel_spacing)
    gap = max(head.wm - head.csf, MIN_GAP_HU)
    sm, inside = head.smooth, head.inside
    lesion = labels > 0
    lab = labels[lesion]  # the per-component statistics over counted voxels only: the background is most voxels
    frac, hu = counted[lesion], sm[lesion]
    nvox = np.bincount(lab, minlength=n + 1)[1:]
    mass = ndi.sum(frac, lab, idx)
    level = ndi.sum(frac * hu, lab, idx) / np.maximum(mass, 1e-9)
    ml = mass * volume.voxel_volume_mm3 / 1000.0
    edge = _in_plane_distance(inside, (py, px))
    csf_core = inside & (sm <= head.csf + CSF_CORE_AT * gap)
    to_csf = _in_plane_distance(~csf_core, (py, px))
    area = inside.sum(axis=(1, 2)).astype(float)
    mirrored = _mirrored(sm, inside)
    spacing_z = float(volume.slice_spacing or 1.0)
    rows = []
    parenchyma = inside & ~lesion & (sm > head.csf + CSF_SHARE_AT * gap)
    for i, sl in enumerate(ndi.find_objects(labels)):
        own_box = labels[sl] == i + 1
        ring = _ring_level(sm, parenchyma, sl, own_box, (py, px))
        ks = np.nonzero(own_box.any(axis=(1, 2)))[0] + sl[0].start
        centre = int(round(float(np.mean(ks))))
        own_mirror = mirrored[sl][own_box]
        rows.append((ring, float(area[centre] / max(area.max(), 1.0)), float(np.nanmean(own_mirror)),
                     (ks.max() - ks.min() + 1) * spacing_z))
    ring, slice_area, mirror, height = (np.array(c, float) for c in zip(*rows))
    table = np.column_stack([
        np.log10(ml + 1e-3),
        mass / np.maximum(nvox, 1),
        ndi.maximum(frac, lab, idx),
        (head.wm - level) / gap,
        ndi.mean(hu <= head.csf + CSF_SHARE_AT * gap, lab, idx),
        np.where(np.isfinite(ring), ring - level, 0.0) / gap,
        ndi.median(edge[lesion], lab, idx),
        ndi.minimum(to_csf[lesion], lab, idx),
        slice_area,
        np.where(np.isfinite(mirror), mirror - level, 0.0) / gap,
        height,
    ])
    return table


def _ring_level(sm, parenchyma, sl, own_box, spacing) -> float:
    """Mean smoothed HU of the ``parenchyma`` (inside the skull, above the CSF level, off every component) in the
    in-plane ring ``RING_MM`` about one component (nan where there is none)."""
    py, px = spacing
    pad = int(math.ceil(RING_MM[1] / min(py, px))) + 1
    k0, k1 = sl[0].start, sl[0].stop
    r0, r1 = max(sl[1].start - pad, 0), min(sl[1].stop + pad, sm.shape[1])
    c0, c1 = max(sl[2].start - pad, 0), min(sl[2].stop + pad, sm.shape[2])
    own = np.zeros((k1 - k0, r1 - r0, c1 - c0), bool)
    own[:, sl[1].start - r0:sl[1].stop - r0, sl[2].start - c0:sl[2].stop - c0] = own_box
    dist = _in_plane_distance(~own, (py, px))
    box = (slice(k0, k1), slice(r0, r1), slice(c0, c1))
    ring = (dist > RING_MM[0]) & (dist <= RING_MM[1]) & parenchyma[box]
    return float(sm[box][ring].mean()) if ring.any() else float("nan")


def _mirrored(sm: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """The smoothed image mirrored left-right about each slice's intracranial midline (nan outside the skull)."""
    out = np.full(sm.shape, np.nan, np.float32)
    cols = np.arange(sm.shape[2])
    for k in range(sm.shape[0]):
        if not inside[k].any():
            continue
        mid = float(np.mean(np.nonzero(inside[k])[1]))
        src = np.round(2 * mid - cols).astype(int)
        ok = (src >= 0) & (src < sm.shape[2])
        out[k][:, ok] = sm[k][:, src[ok]]
        out[k][~inside[k]] = np.nan
    return out


def kept_region(volume: Volume, counted: np.ndarray, flt: ComponentFilter,
                head: SmoothedHead | None = None) -> np.ndarray | None:
    """Where the counted fraction still counts under ``flt``: the union of its components whose probability of being
    lesion is at least the threshold. None where the head's tissue levels are not found (nothing is filtered)."""
    head = smoothed_head(volume) if head is None else head
    if head is None:
        return None
    labels, n = components(counted)
    if not n:
        return np.zeros(counted.shape, bool)
    keep = flt.probability(component_features(volume, counted, head, labels, n)) >= flt.threshold
    return np.concatenate([[False], keep])[labels]

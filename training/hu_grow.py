"""Probe: grow a WML model's counted lesion into the head's own faint hypodensity ("the net finds it, the image says
how far it reaches").

Session 43 found the nets read what is visibly dark and the development set labels a load well past it (1.12.5 reads
a fifth of its lesion edge, half its core); session 45 found no map of the reading undoes it (``training.volume_map``):
the information has to come from the image. This asks the simplest image-based question. Each head's counted fraction
(the model's own post-processing) seeds a growth, in-plane only (slices are 2.5-5 mm), through voxels whose in-plane
smoothed HU (sigma 1.5 mm) lies at least ``k`` smoothed-noise SDs below the head's white matter and above the middle
of its CSF-to-white-matter gap, for at most ``g`` mm; grown voxels count as whole lesion. The head's levels come from
its image (``gap_probe.tissue_levels``), the noise SD from the smoothed image's residual about a 4 mm smoothing (of
the image clipped to 30 HU about white matter) in voxels within 4 HU of white matter. Each head is read once
(``training.counted``).

    PYTHONPATH=.:service .venv/bin/python -m training.hu_grow --set dev --data /work/dev_data/choose --n 30
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from .counted import Probe, main, volume_ml
from .gap_probe import SmoothedHead, in_plane, smoothed_head

RESIDUAL_MM = 4.0
NEAR_WM_HU = 4.0
GRID = tuple(f"{k:g}/{g:g}" for k in (0.5, 1, 1.5, 2) for g in (1, 2, 4, 8))  # noise SDs below WM / mm grown


def noise_sd(head: SmoothedHead, pixel_spacing) -> float:
    """The smoothed image's noise SD: the robust spread of its residual about a 4 mm smoothing in voxels within 4 HU
    of white matter (NaN with too few of them)."""
    py, px = (float(v) for v in pixel_spacing)
    # clipped about white matter first, so the skull's 1000 HU does not bleed into the brain's residual
    coarse = ndimage.gaussian_filter(np.clip(head.smooth, head.wm - 30.0, head.wm + 30.0),
                                     (0, RESIDUAL_MM / py, RESIDUAL_MM / px))
    near = head.inside & (np.abs(head.smooth - head.wm) < NEAR_WM_HU)
    resid = (head.smooth - coarse)[near]
    return float(1.4826 * np.median(np.abs(resid - np.median(resid)))) if resid.size > 1000 else float("nan")


def grown(counted: np.ndarray, head: SmoothedHead, sd: float, k: float, grow_mm: float, pixel_mm: float,
          seed_at: float = 0.5) -> np.ndarray:
    """The counted fraction with the in-plane growth of its cores (>= ``seed_at``) through the faint band counted as
    whole lesion."""
    sm, wm, csf = head.smooth, head.wm, head.csf
    band = head.inside & (sm <= wm - k * sd) & (sm >= csf + 0.5 * (wm - csf))
    seeds = counted >= seed_at
    it = max(1, int(round(grow_mm / pixel_mm)))
    region = ndimage.binary_dilation(seeds, structure=in_plane(2), iterations=it, mask=band | seeds)
    return np.maximum(counted, region.astype(np.float32))


def measure(case, counted: np.ndarray, settings: list[str]) -> tuple[dict[str, float], dict]:
    """The head's volume under each ``k/g`` setting (the model's where its levels are not found), and its levels."""
    head = smoothed_head(case.volume)
    if head is None:
        return {s: volume_ml(case, counted) for s in settings}, {}
    pixel_mm = float(case.volume.pixel_spacing[0])
    sd = noise_sd(head, case.volume.pixel_spacing)
    out = {}
    for s in settings:
        k, g = (float(v) for v in s.split("/"))
        out[s] = volume_ml(case, grown(counted, head, sd, k, g, pixel_mm))
    return out, {"wm_hu": head.wm, "csf_hu": head.csf, "noise_sd": sd}


PROBE = Probe("growth into the head's faint hypodensity", "hu_grow", GRID, measure)

if __name__ == "__main__":
    raise SystemExit(main(__doc__, PROBE))

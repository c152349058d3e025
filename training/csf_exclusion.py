"""Probe: no lesion counted at the head's own CSF level.

Half of what 1.12.5 counts off the development set's lesions lies in ventricles and sulcal CSF (``training.false_ml``
on `choose`: 49.3 of 98.5 mL), most of it in heads whose CSF lies within 16 HU of white matter. Here the counted
fraction is set to 0 where the in-plane smoothed HU (sigma 1.5 mm) is at or below ``csf + t (wm - csf)``, that mask
grown ``d`` mm in-plane; the head's levels come from its image (``gap_probe.tissue_levels``), heads without them are
left as read. A lesion as dark as the head's CSF is lost with it: the table says what that costs. Each head is read
once (``training.counted``). Rule: ``training/preregistered/2026-12-07-wml-csf-exclusion.md``.

    PYTHONPATH=.:service .venv/bin/python -m training.csf_exclusion --set dev --data /work/dev_data/choose --n 30
    PYTHONPATH=.:service .venv/bin/python -m training.csf_exclusion --set dev --data DIR --n 60 --only 0.4/0 \\
        --pair model 0.4/0
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from .counted import Probe, main, volume_ml
from .gap_probe import in_plane, smoothed_head

GRID = tuple(f"{t:g}/{d:g}" for t in (0.2, 0.3, 0.4, 0.5) for d in (0, 1, 2))  # share of the gap / mm grown


def csf_level_mask(sm: np.ndarray, wm: float, csf: float, t: float, grow_mm: float, pixel_mm: float) -> np.ndarray:
    """Voxels at the head's CSF level (smoothed HU at or below ``csf + t (wm - csf)``), grown ``grow_mm`` in-plane."""
    mask = sm <= csf + t * (wm - csf)
    if grow_mm > 0:
        mask = ndimage.binary_dilation(mask, structure=in_plane(2), iterations=max(1, int(round(grow_mm / pixel_mm))))
    return mask


def measure(case, counted: np.ndarray, settings: list[str]) -> tuple[dict[str, float], dict]:
    """The head's volume under each ``t/d`` setting (the model's where its levels are not found), and its levels."""
    head = smoothed_head(case.volume)
    if head is None:
        return {s: volume_ml(case, counted) for s in settings}, {}
    pixel_mm = float(case.volume.pixel_spacing[0])
    out = {}
    for s in settings:
        t, d = (float(v) for v in s.split("/"))
        out[s] = volume_ml(case, np.where(csf_level_mask(head.smooth, head.wm, head.csf, t, d, pixel_mm), 0.0, counted))
    return out, {"wm_hu": head.wm, "csf_hu": head.csf}


PROBE = Probe("no lesion at the head's own CSF level", "csf_exclusion", GRID, measure)

if __name__ == "__main__":
    raise SystemExit(main(__doc__, PROBE))

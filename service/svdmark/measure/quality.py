"""The quality gate: is this input one on which the model can measure?

Each check computes one score from the image (or the model's own behaviour on it) and compares it
with a limit from the manifest's ``quality`` section. Limits are set from the range the model was
trained and validated on, with a margin, and the manifest says where they came from. A failed check
adds a reason a radiologist can act on; any failed check makes the result "not reliably measurable":
the SR then carries the reasons and no number.

Scores
* ``coverage_mm`` — head extent covered by the stack along the slice normal (a partial scan under-reads).
* ``tissue_level`` — median of brain-range voxels (CT: HU; SWI: relative to the foreground median):
  calibration, contrast agent, or a mis-routed series.
* ``noise`` — robust noise of brain-range voxels: 1.4826 × MAD of an in-plane residual (the MAD keeps the
  minority of voxels at tissue edges from counting); on thin CT stacks that the model reads as averaged slabs
  (``input.min_slice_mm``), on those slabs. SWI (relative to the tissue level): the residual to a 3×3 median.
  CT (HU): the residual the manifest's ``quality.noise_score`` names. ``"neighbour_mean"``: each pixel less the
  mean of its 8 neighbours, scaled to white noise's SD, in steps of 1/8 HU. ``"median"`` (the SWI residual; every
  manifest without the field set its limit on it): CT values are integers and brain kernels smooth them, so this
  residual is exactly 0 in most voxels and its MAD reads 0 on heads with 4 HU of noise.
* ``slice_mm`` — the larger of slice spacing and slice thickness (SWI: bleeds of 2–10 mm are missed in thick
  slices).
* ``tta_spread`` (WML) — the model's own out-of-distribution score: the spread of its
  test-time-augmentation pass volumes relative to (volume + 1 mL), beyond what validation cases showed.
* ``candidates_per_ml`` (CMB) — candidate-stage density: artefact-ridden or unfamiliar images make
  far more dark blobs than any validation case. A ``min`` is read too (an image whose contrast the candidate
  stage cannot read makes almost none, and its count of 0 would be a silent grade 0), but ``training.calibrate``
  sets none: from our own validation range it withheld too many heads built by other code.

Own code: the scores are a few numpy/scipy lines each; no library knows these limits.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import ndimage as ndi

from ..domain import Quality, Volume
from ..infer.preprocess import average_slabs


def _coverage_mm(volume: Volume, in_head: np.ndarray) -> float:
    """Extent along the stack of the slices with ≥ 2 % of their pixels in the head."""
    frac = in_head.reshape(in_head.shape[0], -1).mean(1)
    ks = np.nonzero(frac >= 0.02)[0]
    if len(ks) == 0:
        return 0.0
    return float((ks[-1] - ks[0] + 1) * max(volume.slice_spacing, 1e-3))


def _median_residual(img: np.ndarray) -> np.ndarray:
    """A slice less its 3×3 median."""
    return img - ndi.median_filter(img, size=3)


_NEIGHBOURS = np.array([[1.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 1.0]]) / 8.0


def _neighbour_residual(img: np.ndarray) -> np.ndarray:
    """A slice less the mean of each pixel's 8 neighbours, divided by √(9/8): white noise of SD s keeps SD s."""
    img = img.astype(np.float64)
    return (img - ndi.convolve(img, _NEIGHBOURS, mode="nearest")) / np.sqrt(9.0 / 8.0)


_CT_RESIDUALS = {"median": _median_residual, "neighbour_mean": _neighbour_residual}  # domain.NOISE_SCORES


def _robust_noise(array: np.ndarray, sel: np.ndarray,
                  residual: Callable[[np.ndarray], np.ndarray] = _median_residual) -> float:
    """1.4826 × MAD of each slice's ``residual``, over the selected voxels (a sample of slices)."""
    step = max(1, array.shape[0] // 12)
    ks = np.arange(0, array.shape[0], step)
    res = []
    for k in ks:
        if sel[k].sum() < 200:
            continue
        r = residual(array[k])
        res.append(r[sel[k]])
    if not res:
        return float("nan")
    r = np.concatenate(res)
    return float(1.4826 * np.median(np.abs(r - np.median(r))))


def ct_scores(volume: Volume, slab_group: int = 1, noise_score: str = "median") -> dict[str, float]:
    """``slab_group`` > 1: the model reads means of that many slices (``input.min_slice_mm``), so the noise is
    scored on those slabs, as the model sees it; ``noise_score``: the manifest's ``quality.noise_score``."""
    a = volume.array
    brain = (a >= 0) & (a <= 80)
    lvl = a[brain] if brain.any() else np.array([np.nan])
    seen = average_slabs(a, slab_group)  # the array itself when slab_group is 1
    return {
        "coverage_mm": round(_coverage_mm(volume, brain), 1),
        "tissue_level": round(float(np.median(lvl)), 1),
        "noise": round(_robust_noise(seen, (seen >= 15) & (seen <= 45), _CT_RESIDUALS[noise_score]), 2),
    }


def swi_scores(volume: Volume, reference: float) -> dict[str, float]:
    a = volume.array / max(float(reference), 1e-6)
    head = a > 0.35
    core = (a > 0.5) & (a < 1.5)
    return {
        "coverage_mm": round(_coverage_mm(volume, head), 1),
        "noise": round(_robust_noise(a, core), 4),
        # the thicker of spacing and thickness: a 5.6 mm slice reconstructed every 2.8 mm loses small bleeds too
        "slice_mm": round(max(float(volume.slice_spacing), float(volume.slice_thickness or 0.0)), 2),
    }


def tta_spread(pass_volumes_ml, volume_ml: float) -> float:
    """The WML model's out-of-distribution score: spread of its pass volumes relative to (volume + 1 mL)."""
    return round((max(pass_volumes_ml) - min(pass_volumes_ml)) / (1.0 + volume_ml), 3)


def candidate_density(volume: Volume, reference: float, n_candidates: int) -> float:
    """CMB candidates per mL of head (voxels above 0.35 × the foreground reference intensity)."""
    head_ml = float((volume.array > 0.35 * reference).sum() * volume.voxel_volume_mm3 / 1000.0)
    return round(n_candidates / max(head_ml, 1.0), 3)


_REASONS = {
    "coverage_mm": "head coverage {v:.0f} mm is below the {lim:.0f} mm the model needs (partial scan)",
    "tissue_level": "brain tissue level {v:.0f} is outside {lo:.0f}–{hi:.0f} (calibration, contrast agent or "
                    "not a plain head scan)",
    "noise": "image noise {v:.3g} is above the model's limit of {lim:.3g}",
    "slice_mm": "slice thickness or spacing {v:.1f} mm is above the model's limit of {lim:.1f} mm",
    "tta_spread": "the model's test-time-augmentation passes disagree by {v:.0%} of (volume + 1 mL), above its "
                  "limit of {lim:.0%} (image unlike its training data)",
    "candidates_per_ml": "{v:.1f} dark-blob candidates per mL of head, above the model's limit of {lim:.1f} "
                         "(artefacts or an unfamiliar image)",
}
SCORES = tuple(_REASONS)  # every score the gate can report (a results table has a column for each)
# each score's unit and meaning, for a results table's data dictionary (one table holds CT and SWI rows)
DESCRIPTIONS = {
    "coverage_mm": ("mm", "head extent covered by the stack along the slice normal"),
    "tissue_level": ("HU", "median of brain-range voxels (wml rows only)"),
    "noise": ("HU on wml rows; fraction of the tissue level on cmb rows",
              "robust in-plane noise of brain-range voxels (1.4826 x MAD of a residual)"),
    "slice_mm": ("mm", "the larger of slice spacing and slice thickness (cmb rows only)"),
    "tta_spread": ("fraction of (volume + 1 mL)", "spread of the model's test-time-augmentation pass volumes "
                                                  "(wml rows only)"),
    "candidates_per_ml": ("per mL of head", "dark-blob candidates the candidate stage found (cmb rows only)"),
}
# where falling below a floor means something else than exceeding a limit
_REASONS_BELOW = {
    "candidates_per_ml": "only {v:.3f} dark-blob candidates per mL of head, below the model's floor of {lim:.3f}: "
                         "its candidate stage cannot read this image's contrast, so a low count cannot be trusted",
}


def judge(scores: dict[str, float], limits: dict) -> Quality:
    """Compare ``scores`` with the manifest's ``limits`` ({name: {"min"|"max": x} or {"range": [lo, hi]}})."""
    reasons = []
    for name, lim in limits.items():
        if name not in scores or name not in _REASONS:
            continue
        v = float(scores[name])
        text = _REASONS[name]
        if not np.isfinite(v):
            reasons.append(f"{name.replace('_', ' ')} could not be measured")
        elif "min" in lim and v < float(lim["min"]):
            reasons.append(_REASONS_BELOW.get(name, text).format(v=v, lim=float(lim["min"])))
        elif "max" in lim and v > float(lim["max"]):
            reasons.append(text.format(v=v, lim=float(lim["max"])))
        elif "range" in lim and not float(lim["range"][0]) <= v <= float(lim["range"][1]):
            reasons.append(text.format(v=v, lo=float(lim["range"][0]), hi=float(lim["range"][1])))
    return Quality(measurable=not reasons, reasons=tuple(reasons), scores=dict(scores))

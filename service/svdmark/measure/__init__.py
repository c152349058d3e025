"""Model output → findings.

``from_output(model, volume, output)`` returns

* ``WmlFindings`` for WML models: ``volume_ml`` = Σ (predicted lesion fraction ×
  physical voxel volume) — partial-volume aware, so a small lesion diluted by a
  5 mm slice still counts at its physical size — and the binary mask
  (fraction ≥ the manifest's ``mask_threshold``) on the source grid, for the SEG.
* ``CmbFindings`` for CMB models: candidates at or above the manifest's
  ``threshold`` (and, where the manifest sets ``max_core_level`` or
  ``max_core_to_surround``, dark enough: :mod:`.darkness`; where it sets ``mimic_sites``, not at a calcified
  mimic site of the head's anatomical frame: :mod:`.frame`), duplicates
  merged, each a ``Microbleed`` with its centre in patient coordinates
  (``volume.index_to_patient``), diameter, confidence and location; the mask
  draws each as a ball on the source grid.
"""
from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np

from ..domain import CmbFindings, Manifest, Microbleed, ModelSpec, Task, Volume, WmlFindings
from ..infer.preprocess import expand_slabs, foreground_reference, slab_group, slab_starts
from . import quality
from .darkness import dark_enough
from .frame import outside_mimic_sites, split_at_mimic_sites
from .geometry import HeadFrame, ball_mask, head_frame, locate
from .uncertainty import cmb_interval, wml_interval

# the findings' note when the anatomical frame kept foci at the pineal or a glomus out of the count (:mod:`.frame`)
MIMIC_SITE_NOTE = ("{n} dark foc{i} at the pineal gland or a choroid plexus glomus, where calcification is usual, "
                   "not counted as microbleed{s}")

__all__ = ["from_output", "wml_findings", "wml_volume_ml", "counted_fraction", "wml_support", "unit_fraction",
           "wml_postprocessing", "cmb_findings", "candidate_tuples", "dark_candidates", "counted_candidates",
           "merged_centres", "cmb_merging", "reference_intensity"]


def from_output(model: ModelSpec, volume: Volume, output) -> WmlFindings | CmbFindings:
    """Findings with their uncertainty interval and the quality gate's verdict (manifest ``uncertainty`` and
    ``quality`` sections; either may be absent, then that part is None)."""
    out = model.manifest.output
    unc = model.manifest.uncertainty
    limits = model.manifest.quality_limits
    if Task(model.task) is Task.WML:
        post = wml_postprocessing(model.manifest, volume)
        f = wml_findings(volume, output.fraction, out.mask_threshold, **post)
        pass_ml = [wml_volume_ml(volume, p, **post) for p in getattr(output, "passes", ())]
        interval = wml_interval(f.volume_ml, pass_ml, unc.get("wml"))
        gate = None
        if limits is not None:
            scores = quality.ct_scores(volume, post["slab_group"], model.manifest.noise_score)
            if pass_ml:
                scores["tta_spread"] = quality.tta_spread(pass_ml, f.volume_ml)
            gate = quality.judge(scores, limits)
        return replace(f, interval=interval, quality=gate)
    merge = cmb_merging(model.manifest)
    dark = dark_candidates(model.manifest, volume, output)
    with ThreadPoolExecutor(1) as pool:
        # the MARS head frame beside the anatomical frame's fit (both only read the volume: 1-2 s less than one after
        # the other), when a finding may be placed at all: the split only removes candidates
        head = pool.submit(head_frame, volume) if any(c[1] >= out.threshold for c in dark) else None
        cands, at_sites = split_at_mimic_sites(volume, dark, out.mimic_sites)
        f = cmb_findings(volume, cands, threshold=out.threshold, head=head.result if head else None, **merge)
    n_sites = len(merged_centres(volume, at_sites, out.threshold, **merge))
    if n_sites:
        f = replace(f, warnings=f.warnings + (MIMIC_SITE_NOTE.format(n=n_sites, s="" if n_sites == 1 else "s",
                                                                     i="us" if n_sites == 1 else "i"),))
    interval = cmb_interval(lambda t: len(merged_centres(volume, cands, t, **merge)), f.count, unc.get("cmb"))
    gate = None
    if limits is not None:
        ref = reference_intensity(volume, output)
        scores = quality.swi_scores(volume, ref)
        # what the manifest's limit was set on: every candidate the stage found (an artefact-ridden image finds
        # thousands more than the cap), or, for a manifest from before that, the ones it passed on
        n = len(output.candidates)
        if model.manifest.candidate_count == "found":
            n = int(output.extras.get("n_candidates_found", n))
        scores["candidates_per_ml"] = quality.candidate_density(volume, ref, n)
        gate = quality.judge(scores, limits)
    return replace(f, interval=interval, quality=gate)


def wml_postprocessing(manifest: Manifest, volume: Volume | None = None) -> dict:
    """The manifest's WML volume post-processing, as keyword arguments of ``wml_volume_ml``; with the ``volume``,
    also how many of its slices the runtime read as one slab (``input.min_slice_mm``)."""
    out = manifest.output
    group = 1
    if volume is not None and manifest.input is not None:
        group = slab_group(volume.slice_spacing, manifest.input.min_slice_mm)
    return dict(fraction_floor=out.fraction_floor, support_threshold=out.support_threshold,
                support_dilate_vox=out.support_dilate_vox, slab_group=group)


def reference_intensity(volume: Volume, output) -> float:
    """The foreground median the CMB runtime normalised by (its ``reference_intensity``), else measured here."""
    return float(output.extras.get("reference_intensity") or foreground_reference(volume.array))


def candidate_tuples(output) -> list:
    """Every candidate of a CMB model's output as ``(index, probability, diameter_mm)``, before any criterion."""
    return [(c.index, c.probability, c.diameter_mm) for c in output.candidates]


def dark_candidates(manifest: Manifest, volume: Volume, output) -> list:
    """The classifier's candidates as ``(index, probability, diameter_mm)``, less those the manifest's darkness
    criteria (``output.max_core_level``, ``output.max_core_to_surround``, :mod:`.darkness`) reject."""
    cands = candidate_tuples(output)
    out = manifest.output
    if not cands or not (np.isfinite(out.max_core_level) or np.isfinite(out.max_core_to_surround)):
        return cands
    return dark_enough(volume, cands, reference_intensity(volume, output), out.max_core_level,
                       out.max_core_to_surround)


def counted_candidates(manifest: Manifest, volume: Volume, output) -> list:
    """The dark candidates (:func:`dark_candidates`) outside the manifest's mimic sites (``output.mimic_sites``,
    :mod:`.frame`): what the count and its interval see. (The gate's ``candidates_per_ml`` scores the candidate
    stage itself, so it counts every candidate.)"""
    return outside_mimic_sites(volume, dark_candidates(manifest, volume, output), manifest.output.mimic_sites)


def cmb_merging(manifest: Manifest) -> dict:
    """The manifest's CMB duplicate merging, as keyword arguments of ``merged_centres`` / ``cmb_findings``."""
    return dict(merge_mm=manifest.output.merge_mm, max_count=manifest.output.max_count)


def wml_volume_ml(volume: Volume, fraction: np.ndarray, fraction_floor: float = 0.0,
                  support_threshold: float = 0.0, support_dilate_vox: int = 0, slab_group: int = 1) -> float:
    """PV-aware WML volume (mL) of a fraction map after the manifest's post-processing.

    ``fraction_floor``: fractions below it are the model's background noise and count as 0.
    ``support_threshold`` > 0: hysteresis — only fractions within ``support_dilate_vox`` voxels
    (in-plane, and one slice through-plane) of a voxel ≥ ``support_threshold`` count, so the
    partial-volume rim of a detected lesion is kept while isolated low-level noise is not.
    ``slab_group`` > 1: the model read slabs of that many slices, so "one slice" through-plane is one slab.
    """
    frac = counted_fraction(fraction, fraction_floor, support_threshold, support_dilate_vox, slab_group)
    return volume.physical_ml(frac)


def counted_fraction(fraction: np.ndarray, fraction_floor: float = 0.0, support_threshold: float = 0.0,
                     support_dilate_vox: int = 0, slab_group: int = 1) -> np.ndarray:
    """The fraction map ``wml_volume_ml`` sums: clipped, floored and restricted to its support (same arguments)."""
    frac = unit_fraction(fraction)
    if fraction_floor > 0:
        frac[frac < fraction_floor] = 0.0
    if support_threshold > 0:
        frac[~wml_support(frac, support_threshold, support_dilate_vox, slab_group)] = 0.0
    return frac


def unit_fraction(fraction: np.ndarray) -> np.ndarray:
    """A float32 copy clipped to 0..1, NaN as 0 (what ``np.nan_to_num`` then ``np.clip`` give, at a fraction of
    their time and memory on a 0.625 mm stack)."""
    frac = np.clip(np.asarray(fraction, np.float32), 0.0, 1.0)
    frac[np.isnan(frac)] = 0.0
    return frac


def wml_support(fraction: np.ndarray, support_threshold: float, support_dilate_vox: int = 0,
                slab_group: int = 1) -> np.ndarray:
    """Where fractions count (``wml_volume_ml``'s hysteresis): voxels ≥ ``support_threshold``, grown by
    ``support_dilate_vox`` in-plane and, when grown, by one (thick) slice or slab either side on the grid the model
    read (the last slab may be longer)."""
    seed = fraction >= support_threshold
    if support_dilate_vox > 0 and seed.any():
        from scipy import ndimage as ndi

        n = seed.shape[0]
        # the slab's union first: growing in-plane commutes with it, and the slab grid is slab_group times smaller
        per_slab = np.logical_or.reduceat(seed, slab_starts(n, slab_group), axis=0) if slab_group > 1 else seed
        st = np.zeros((3, 3, 3), bool)
        st[1] = ndi.generate_binary_structure(2, 1)
        per_slab = ndi.binary_dilation(per_slab, structure=st, iterations=int(support_dilate_vox))
        per_slab = ndi.binary_dilation(per_slab, structure=np.ones((3, 1, 1), bool))
        seed = expand_slabs(per_slab, slab_group, n)
    return seed


def wml_findings(volume: Volume, fraction: np.ndarray, mask_threshold: float = 0.5,
                 fraction_floor: float = 0.0, support_threshold: float = 0.0,
                 support_dilate_vox: int = 0, slab_group: int = 1) -> WmlFindings:
    """PV-aware WML volume (``wml_volume_ml``) and mask (fraction ≥ ``mask_threshold``) from a fraction map."""
    if fraction is None or fraction.shape != volume.shape:
        raise ValueError("WML output fraction map must have the volume's shape")
    volume_ml = wml_volume_ml(volume, fraction, fraction_floor, support_threshold, support_dilate_vox, slab_group)
    mask = (fraction >= mask_threshold).astype(np.uint8)
    warnings = []
    if volume.slice_spacing > 0 and volume.slice_thickness and volume.slice_thickness > volume.slice_spacing * 1.05:
        warnings.append("overlapping slices: WML volume computed from slice spacing, not thickness")
    return WmlFindings(volume_ml=volume_ml, mask=mask, warnings=tuple(warnings))


def merged_centres(volume: Volume, candidates, threshold: float, merge_mm: float = 4.0, max_count: int = 200):
    """The candidates called at ``threshold``, duplicates merged: [(index, confidence, diameter, patient xyz)].

    Strongest first; a candidate closer than max(``merge_mm``, its diameter / 2) to a kept one is the same bleed.
    """
    kept = sorted((c for c in candidates if c[1] >= threshold), key=lambda c: -c[1])
    picked: list[tuple[tuple[float, float, float], float, float, np.ndarray]] = []
    for idx, conf, diam in kept:
        xyz = volume.index_to_patient(*idx)
        d = float(max(diam, 0.5))
        if any(np.linalg.norm(xyz - p[3]) < max(merge_mm, 0.5 * d) for p in picked):
            continue
        picked.append((tuple(float(v) for v in idx), float(conf), d, xyz))
        if len(picked) >= max_count:
            break
    return picked


def cmb_findings(
    volume: Volume,
    candidates,
    threshold: float = 0.5,
    merge_mm: float = 4.0,
    max_count: int = 200,
    head: Callable[[], HeadFrame | None] | None = None,
) -> CmbFindings:
    """``candidates``: iterable of ((k, i, j), confidence, diameter_mm); ``head``: as :func:`.geometry.locate`'s."""
    picked = merged_centres(volume, candidates, threshold, merge_mm, max_count)
    locations = locate(volume, [p[0] for p in picked], head=head)
    bleeds = tuple(
        Microbleed(
            center_mm=(float(xyz[0]), float(xyz[1]), float(xyz[2])),
            diameter_mm=round(d, 2),
            confidence=float(np.clip(conf, 0.0, 1.0)),
            location=loc,
        )
        for (idx, conf, d, xyz), loc in zip(picked, locations)
    )
    mask = ball_mask(volume, [p[0] for p in picked], [p[2] for p in picked])
    return CmbFindings(microbleeds=bleeds, mask=mask)

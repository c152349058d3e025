"""Is the built volume a head? The pixel check that runs after ``volume.load`` and before the model.

The header rules (``data/routing.toml``) exclude what a header *says* is not a head: another body part,
another body region or a cardiac/calcium-score protocol in the descriptions, a body field of view, a
contrast agent, a non-head receive coil. Many scanners leave BodyPartExamined empty, so a header that
says nothing is not by itself a reason to ignore a real head. The pixels decide in that case, and
they must agree in every other case too:

====================================  ===================  =========================================
header                                pixels               outcome
====================================  ===================  =========================================
says another body part / region,      (not looked at)      ignored by the header rule that matched
cardiac protocol, body FOV, contrast,
non-head coil, phantom/QA naming
says head (body part, description,    a head               analysed
protocol, procedure code, head coil)
says head                             not a head           ignored: the pixel check's reason
says nothing about the anatomy        a head               analysed (site option: the
                                                           ``no-head-evidence`` rule, disabled by
                                                           default, ignores these instead)
says nothing about the anatomy        not a head           ignored: the pixel check's reason
====================================  ===================  =========================================

What "a head" means in the pixels (limits in the ``[anatomy]`` table of the routing file, so a site
can tune them; ``enabled = false`` switches the pixel check off):

* **CT**: slices in which a high-HU rim (bone, > ``ct_bone_hu``) encloses a region that is mostly brain
  density (``ct_brain_hu``, 0-80 HU): the enclosed 0-80 HU area is at least ``ct_slice_area_cm2[0]``,
  at most ``ct_slice_area_cm2[1]``, and at least ``ct_min_brain_fraction`` of the enclosed non-bone area
  (a rib cage or pelvis encloses lung, fat or gas; a vertebral canal is far smaller). The intracranial
  0-80 HU volume summed over those slices lies in ``ct_brain_ml``; for a stack shorter than
  ``full_coverage_mm`` the lower limit is scaled by the fraction of a head it covers (the quality gate,
  not this check, judges partial coverage). The stack is no longer than ``max_extent_mm``.
* **MR** (SWI): the largest connected object (intensity above ``mr_foreground`` of the 99th
  percentile, holes filled) has a head-sized largest cross-section (``mr_slice_area_cm2``), is no
  longer than ``max_extent_mm`` in any direction, and is not homogeneous (coefficient of variation
  inside it at least ``mr_min_cv``: a test phantom is uniform, a head is skin, skull, CSF and brain).

Hand-written with numpy/scipy.ndimage (binary closing, hole filling, labelling) because no
maintained library answers "is this a head" for CT and MR; the figures behind each verdict are
returned so that a reason can quote them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from scipy import ndimage

from svdmark.domain import RouteKind, RoutingDecision, Volume
from svdmark.errors import ConfigError
from svdmark.masks import largest_object

RULE_CT = "pixels-not-a-head-ct"
RULE_MR = "pixels-not-a-head-mr"
_HINT_CT = "only head CT is analysed"
_HINT_MR = "only brain SWI is analysed"
_WORK_MM = 1.5  # in-plane sampling of the check (coarser images are used as they are)


@dataclass(frozen=True)
class AnatomyLimits:
    """Limits of the pixel check (the ``[anatomy]`` table of the routing file)."""

    enabled: bool = True
    ct_bone_hu: float = 300.0
    ct_brain_hu: tuple[float, float] = (0.0, 80.0)
    ct_brain_ml: tuple[float, float] = (800.0, 2000.0)
    ct_slice_area_cm2: tuple[float, float] = (15.0, 260.0)
    ct_min_brain_fraction: float = 0.7
    ct_min_head_slice_fraction: float = 0.25
    ct_closing_mm: float = 3.0
    full_coverage_mm: float = 140.0
    max_extent_mm: float = 300.0
    mr_foreground: float = 0.15
    mr_slice_area_cm2: tuple[float, float] = (120.0, 380.0)
    mr_min_cv: float = 0.1

    @classmethod
    def parse(cls, raw: Any, source: str) -> "AnatomyLimits":
        if raw is None:
            return cls()
        if not isinstance(raw, dict):
            raise ConfigError(f"routing table {source}: [anatomy] must be a table")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise ConfigError(f"routing table {source}: [anatomy] has unknown keys {unknown} (known: {sorted(known)})")
        values: dict[str, Any] = {}
        for key, value in raw.items():
            default = getattr(cls, key)
            where = f"routing table {source}: [anatomy] {key}"
            if isinstance(default, bool):
                if not isinstance(value, bool):
                    raise ConfigError(f"{where} must be true or false")
            elif isinstance(default, tuple):
                if (not isinstance(value, list) or len(value) != 2
                        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
                        or not value[0] < value[1]):
                    raise ConfigError(f"{where} must be [low, high] with low < high, got {value!r}")
                value = (float(value[0]), float(value[1]))
            elif not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"{where} must be a non-negative number, got {value!r}")
            else:
                value = float(value)
            values[key] = value
        return cls(**values)


@dataclass(frozen=True)
class AnatomyVerdict:
    """What the pixels say: a head or not, why (a sentence for the PACS admin), and the figures."""

    is_head: bool
    reason: str
    figures: dict[str, float]


# --------------------------------------------------------------------------- shared geometry


def _in_plane_step(vol: Volume) -> tuple[int, float, float]:
    """(stride, row mm, column mm) of the working grid."""
    rmm, cmm = (float(x) for x in vol.pixel_spacing)
    stride = max(1, int(_WORK_MM / max(min(rmm, cmm), 1e-3)))
    return stride, rmm * stride, cmm * stride


def _extent_mm(vol: Volume) -> float:
    """Length of the stack along its normal (slice centres ± half a spacing)."""
    n = vol.array.shape[0]
    return n * (vol.slice_spacing if n > 1 else float(vol.slice_thickness or 1.0))


def _plane_structure() -> np.ndarray:
    s = np.zeros((3, 3, 3), bool)
    s[1] = ndimage.generate_binary_structure(2, 1)
    return s


def _disk(radius_px: int) -> np.ndarray:
    r = max(1, radius_px)
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return (yy * yy + xx * xx <= r * r)[None]


# --------------------------------------------------------------------------- CT


def check_ct(vol: Volume, limits: AnatomyLimits = AnatomyLimits()) -> AnatomyVerdict:
    """Skull ring around a brain-sized volume of brain-density tissue (see the module docstring)."""
    stride, rmm, cmm = _in_plane_step(vol)
    hu = np.asarray(vol.array[:, ::stride, ::stride], dtype=np.float32)
    n = hu.shape[0]
    px_cm2 = rmm * cmm / 100.0
    spacing = vol.slice_spacing if n > 1 else float(vol.slice_thickness or 1.0)
    extent = _extent_mm(vol)
    bone = hu > limits.ct_bone_hu
    bone = ndimage.binary_closing(bone, _disk(round(limits.ct_closing_mm / min(rmm, cmm))))
    inside = ndimage.binary_fill_holes(bone, structure=_plane_structure()) & ~bone
    lo, hi = limits.ct_brain_hu
    brain = inside & (hu >= lo) & (hu <= hi)
    inside_cm2 = inside.sum(axis=(1, 2)) * px_cm2
    brain_cm2 = brain.sum(axis=(1, 2)) * px_cm2
    fraction = np.divide(brain_cm2, inside_cm2, out=np.zeros_like(brain_cm2), where=inside_cm2 > 0)
    a_lo, a_hi = limits.ct_slice_area_cm2
    head = (brain_cm2 >= a_lo) & (brain_cm2 <= a_hi) & (fraction >= limits.ct_min_brain_fraction)
    brain_ml = float(brain_cm2[head].sum() * spacing / 10.0)
    figures = {
        "slices": float(n), "head_slices": float(head.sum()), "extent_mm": round(extent, 1),
        "intracranial_ml": round(brain_ml, 1), "max_enclosed_brain_cm2": round(float(brain_cm2.max(initial=0)), 1),
    }
    ml_lo, ml_hi = limits.ct_brain_ml
    ml_lo_here = ml_lo * min(1.0, extent / limits.full_coverage_mm)
    if extent > limits.max_extent_mm:
        why = f"the stack is {extent:.0f} mm long, longer than a head ({limits.max_extent_mm:.0f} mm)"
    elif not head.any():
        big = int(np.argmax(brain_cm2)) if n else 0
        why = (f"no slice shows a skull ring (> {limits.ct_bone_hu:.0f} HU) around brain-density tissue "
               f"({lo:.0f}-{hi:.0f} HU) of {a_lo:.0f}-{a_hi:.0f} cm²; the largest enclosed brain-density area is "
               f"{figures['max_enclosed_brain_cm2']:.1f} cm²"
               + (f" ({fraction[big]:.0%} of its enclosure)" if n and inside_cm2[big] > 0 else ""))
    elif head.sum() < limits.ct_min_head_slice_fraction * n:
        why = (f"only {int(head.sum())} of {n} slices show a skull ring around brain-density tissue "
               f"(a head scan shows one in most slices)")
    elif brain_ml > ml_hi:
        why = f"the bone-enclosed {lo:.0f}-{hi:.0f} HU volume is {brain_ml:.0f} mL, more than a brain ({ml_hi:.0f} mL)"
    elif brain_ml < ml_lo_here:
        why = (f"the bone-enclosed {lo:.0f}-{hi:.0f} HU volume is {brain_ml:.0f} mL, less than a brain "
               f"({ml_lo_here:.0f} mL expected over {extent:.0f} mm of coverage)")
    else:
        return AnatomyVerdict(True, f"skull ring around {brain_ml:.0f} mL of brain-density tissue "
                                    f"in {int(head.sum())} of {n} slices", figures)
    return AnatomyVerdict(False, why, figures)


# --------------------------------------------------------------------------- MR


def check_mr(vol: Volume, limits: AnatomyLimits = AnatomyLimits()) -> AnatomyVerdict:
    """A head-sized, non-uniform object (see the module docstring)."""
    stride, rmm, cmm = _in_plane_step(vol)
    img = np.asarray(vol.array[:, ::stride, ::stride], dtype=np.float32)
    n = img.shape[0]
    px_cm2 = rmm * cmm / 100.0
    spacing = vol.slice_spacing if n > 1 else float(vol.slice_thickness or 1.0)
    finite = img[np.isfinite(img)]
    top = float(np.percentile(finite, 99)) if finite.size else 0.0
    figures: dict[str, float] = {"slices": float(n), "extent_mm": round(_extent_mm(vol), 1)}
    if top <= 0:
        return AnatomyVerdict(False, "the images are empty (no signal above zero)", figures)
    fg = ndimage.binary_fill_holes(img > limits.mr_foreground * top, structure=_plane_structure())
    fg = ndimage.binary_opening(fg, _disk(1))
    obj = largest_object(fg)
    if obj is None:
        return AnatomyVerdict(False, "no object stands out from the background", figures)
    area = obj.sum(axis=(1, 2)) * px_cm2
    zs, ys, xs = np.nonzero(obj)
    extents = ((zs.max() - zs.min() + 1) * spacing, (ys.max() - ys.min() + 1) * rmm, (xs.max() - xs.min() + 1) * cmm)
    core = ndimage.binary_erosion(obj, _disk(2))
    vals = img[core] if core.any() else img[obj]
    cv = float(vals.std() / vals.mean()) if vals.size and vals.mean() > 0 else 0.0
    figures.update({"max_area_cm2": round(float(area.max()), 1), "longest_mm": round(float(max(extents)), 1),
                    "cv": round(cv, 3)})
    a_lo, a_hi = limits.mr_slice_area_cm2
    if max(extents) > limits.max_extent_mm:
        why = f"the imaged object is {max(extents):.0f} mm long, longer than a head ({limits.max_extent_mm:.0f} mm)"
    elif area.max() < a_lo:
        why = (f"the imaged object's largest cross-section is {area.max():.0f} cm², smaller than a head "
               f"({a_lo:.0f}-{a_hi:.0f} cm²)")
    elif area.max() > a_hi:
        why = (f"the imaged object's largest cross-section is {area.max():.0f} cm², larger than a head "
               f"({a_lo:.0f}-{a_hi:.0f} cm²)")
    elif cv < limits.mr_min_cv:
        why = (f"the imaged object is uniform (coefficient of variation {cv:.2f} < {limits.mr_min_cv:.2f}): "
               "a test phantom, not a head")
    else:
        return AnatomyVerdict(True, f"a head-sized object (largest cross-section {area.max():.0f} cm²)", figures)
    return AnatomyVerdict(False, why, figures)


# --------------------------------------------------------------------------- the pipeline's call


def check(decision: RoutingDecision, vol: Volume, limits: AnatomyLimits = AnatomyLimits()) -> AnatomyVerdict | None:
    """The pixel verdict for a routed series (None when the check is off or the series is not routed)."""
    if not limits.enabled or decision.kind is RouteKind.IGNORED:
        return None
    return check_ct(vol, limits) if decision.kind is RouteKind.WML else check_mr(vol, limits)


def not_a_head(decision: RoutingDecision, vol: Volume,
               limits: AnatomyLimits = AnatomyLimits()) -> RoutingDecision | None:
    """The IGNORED decision (with the pixel check's reason) when the volume is not a head; None when it is,
    when the check is off or when the series is not routed."""
    verdict = check(decision, vol, limits)
    if verdict is None or verdict.is_head:
        return None
    ct = decision.kind is RouteKind.WML
    return RoutingDecision(RouteKind.IGNORED, RULE_CT if ct else RULE_MR,
                           f"ignored: not a head in the pixels ({verdict.reason}) — {_HINT_CT if ct else _HINT_MR}")

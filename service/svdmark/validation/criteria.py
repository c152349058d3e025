"""Acceptance criteria of a site validation, and the verdict.

The criteria come from the model manifest's ``validation`` section when it has one (its keys
replace the defaults below one by one; the report says which came from where), else from these
defaults. A criterion that cannot be evaluated (too few cases, a statistic that is undefined on
this reference, bleed locations missing) is *not met*: a validation passes only on evidence. The
agreement figures are on the measured cases only, so the share the model failed on or withheld (its
quality gate) is judged too: those are the hardest cases, and leaving them out flatters the model.

Manifest example::

    "validation": {"min_cases": 30, "max_abs_bias_ml": 0.8, "max_mae_ml": 1.2, "min_icc": 0.92}
"""
from __future__ import annotations

from ..errors import SvdmarkError

_SHARES = {"max_failed_fraction": 0.0, "max_withheld_fraction": 0.1}  # of the referenced cases with images
DEFAULTS: dict[str, dict[str, float]] = {
    "wml": {"min_cases": 20, "max_abs_bias_ml": 1.0, "max_mae_ml": 1.5, "min_icc": 0.9, **_SHARES},
    "cmb": {"min_cases": 20, "min_sensitivity": 0.8, "max_false_positives_per_scan": 1.5, "min_kappa": 0.8,
            **_SHARES},
}

_TEXT = {
    "min_cases": "cases in the agreement analysis (n) ≥ {t:g}",
    "max_abs_bias_ml": "|bias| (model − reference) ≤ {t:g} mL",
    "max_mae_ml": "mean absolute error ≤ {t:g} mL",
    "min_icc": "ICC(2,1) absolute agreement ≥ {t:g}",
    "min_sensitivity": "microbleed sensitivity ≥ {t:g}",
    "max_false_positives_per_scan": "false-positive microbleeds per scan ≤ {t:g}",
    "min_kappa": "burden grade linear-weighted kappa ≥ {t:g}",
    "max_failed_fraction": "share of the cases the model failed on ≤ {t:g}",
    "max_withheld_fraction": "share of the cases withheld as not reliably measurable ≤ {t:g}",
}


def resolve(task: str, manifest: dict) -> list[dict]:
    """The criteria for ``task``: [{"key", "threshold", "source", "text"}]."""
    section = manifest.get("validation") or {}
    if not isinstance(section, dict):
        raise SvdmarkError(f"manifest 'validation' section must be an object, not {type(section).__name__}")
    tasks = [k for k in section if k in DEFAULTS]
    if tasks:  # {"wml": {...}} or the criteria themselves, never both (a flat key would be dropped unseen)
        flat = sorted(k for k in section if k not in DEFAULTS)
        if flat:
            raise SvdmarkError(f"manifest 'validation' section mixes criteria ({', '.join(flat)}) with per-task "
                               f"sections ({', '.join(tasks)}); put every criterion under its task")
        section = section.get(task) or {}
        if not isinstance(section, dict):
            raise SvdmarkError(f"manifest 'validation' section {task!r} must be an object")
    unknown = sorted(k for k in section if k not in DEFAULTS[task] and k not in DEFAULTS)
    if unknown:
        raise SvdmarkError(f"manifest 'validation' section has unknown criteria: {', '.join(unknown)}"
                           f" (known for {task}: {', '.join(DEFAULTS[task])})")
    out = []
    for key, default in DEFAULTS[task].items():
        from_manifest = key in section
        value = section[key] if from_manifest else default
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise SvdmarkError(f"manifest 'validation' criterion {key!r} must be a number, not {value!r}")
        t = float(value)
        out.append({"key": key, "threshold": t, "source": "manifest" if from_manifest else "default",
                    "text": _TEXT[key].format(t=t)})
    return out


def _value(key: str, figures: dict):
    q = figures.get("primary") or {}
    counts = figures["counts"]
    if key == "min_cases":
        return counts["included"], None
    if key in _SHARES:
        what = counts["failed" if key == "max_failed_fraction" else "withheld"]
        return (what / counts["cases"] if counts["cases"] else None), "no cases"
    if key == "max_abs_bias_ml":
        bias = (q.get("bland_altman") or {}).get("bias")
        return (abs(bias) if bias is not None else None), "no cases"
    if key == "max_mae_ml":
        return q.get("mae"), "no cases"
    if key == "min_icc":
        return (q.get("icc") or {}).get("value"), "undefined (fewer than 2 cases, or no variance)"
    det = figures.get("detection") or {}
    if key == "min_sensitivity":
        why = ("the reference gives counts only; sensitivity needs bleed locations (SEG or points)"
               if not det.get("scans") else "no reference microbleeds")
        return det.get("sensitivity"), why
    if key == "max_false_positives_per_scan":
        return det.get("false_positives_per_scan"), "the reference gives counts only; needs bleed locations"
    if key == "min_kappa":
        return (figures.get("grades") or {}).get("kappa_linear"), "undefined (every case in one grade on both sides)"
    raise KeyError(key)


def evaluate(criteria: list[dict], figures: dict) -> tuple[bool, list[dict]]:
    """Each criterion with its measured value and whether it is met; the verdict (all met)."""
    rows = []
    for c in criteria:
        value, why = _value(c["key"], figures)
        if value is None:
            met, note = False, f"not evaluable: {why}"
        elif c["key"].startswith("min_"):
            met, note = value >= c["threshold"], ""
        else:
            met, note = value <= c["threshold"], ""
        rows.append(dict(c, value=value, met=bool(met), note=note))
    return bool(rows) and all(r["met"] for r in rows), rows

"""Flat, JSON-able summaries of an analysis: the journal's job summary and the results-table row.

Uncertainty and the quality gate (``Findings.interval`` / ``Findings.quality``):

* ``measurable``: True or False from the quality gate, None when no gate ran;
* ``quality_reasons`` (the gate's sentences) and ``quality_scores`` (its raw figures);
* a withheld result (``measurable`` False) has ``wml_ml`` / ``cmb_count`` / ``cmb_grade`` None
  and no interval, so statistics over these columns never include a number the gate rejected;
* ``wml_ml_low``/``wml_ml_high`` or ``cmb_count_low``/``cmb_count_high`` and ``interval_method``
  when the result has an interval;
* ``category_uncertain``: True when some flag's interval crosses its category boundary
  (cut-point or burden grade), False when intervals exist and none crosses, None without one.
"""
from __future__ import annotations

import math

from .domain import AnalysisResult, CmbFindings, WmlFindings


def _num(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def summarise(result: AnalysisResult) -> dict:
    f = result.findings
    row: dict = {
        "task": result.model.task.value,
        "model_name": result.model.name,
        "model_version": result.model.version,
        "model_sha256": result.model.sha256,
        "ruleset_id": result.ruleset.id,
        "ruleset_version": result.ruleset.version,
        "slices": result.volume.shape[0],
        "slice_spacing_mm": round(result.volume.slice_spacing, 3),
        "gantry_tilt_deg": round(result.volume.gantry_tilt_degrees, 2),
        "warnings": list(result.volume.warnings) + list(f.warnings),
        "seconds": round(result.seconds, 3),
        "wml_ml": None,
        "cmb_count": None,
        "cmb_grade": None,
    }
    quality = getattr(f, "quality", None)
    withheld = quality is not None and not quality.measurable
    interval = None if withheld else getattr(f, "interval", None)
    row["measurable"] = None if quality is None else bool(quality.measurable)
    row["quality_reasons"] = list(quality.reasons) if quality is not None else []
    row["quality_scores"] = {str(k): _num(v) for k, v in dict(quality.scores).items()} if quality is not None else {}
    row["interval_method"] = interval.method if interval is not None else None
    if withheld:
        pass  # no number: the quality gate withheld it
    elif isinstance(f, WmlFindings):
        row["wml_ml"] = round(float(f.volume_ml), 3)
        if interval is not None:
            row["wml_ml_low"], row["wml_ml_high"] = round(float(interval.low), 3), round(float(interval.high), 3)
    elif isinstance(f, CmbFindings):
        if interval is not None:
            row["cmb_count_low"], row["cmb_count_high"] = float(interval.low), float(interval.high)
        row["cmb_count"] = f.count
        row["cmb_grade"] = int(f.grade)
        row["microbleeds"] = [
            {"center_mm": [round(c, 2) for c in m.center_mm], "diameter_mm": round(m.diameter_mm, 2),
             "confidence": round(m.confidence, 3)}
            for m in f.microbleeds
        ]
    row["flags"] = [
        {"rule_id": fl.rule_id, "rule_version": fl.rule_version, "category": fl.category, **fl.values}
        for fl in result.flags
    ]
    marks = [bool(fl.values["category_uncertain"]) for fl in result.flags if "category_uncertain" in fl.values]
    row["category_uncertain"] = any(marks) if marks else None
    return row

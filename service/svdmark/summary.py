"""Flat, JSON-able summaries of an analysis: the journal's job summary and the results-table row."""
from __future__ import annotations

from .domain import AnalysisResult, CmbFindings, WmlFindings


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
    if isinstance(f, WmlFindings):
        row["wml_ml"] = round(float(f.volume_ml), 3)
    elif isinstance(f, CmbFindings):
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
    return row

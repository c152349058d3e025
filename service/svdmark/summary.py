"""``ResultSummary``: the flat summary of an analysis, the one schema of the journal's job and shadow
summaries, the CLI's views, the results table and shadow agreement.

Stored as JSON (``to_json``; key order and presence as the rows existing journals hold, so a row
read back with ``from_json`` writes out byte for byte the same; an old row without some keys reads
with those fields None; keys this version does not know are kept in ``extra``).

Uncertainty and the quality gate (``Findings.interval`` / ``Findings.quality``):

* ``measurable``: True or False from the quality gate, None when no gate ran;
* ``quality_reasons`` (the gate's sentences) and ``quality_scores`` (its raw figures);
* a withheld result (``measurable`` False) has ``wml_ml`` / ``cmb_count`` / ``cmb_grade`` None
  and no interval, so statistics over these columns never include a number the gate rejected;
* ``wml_ml_low``/``wml_ml_high`` or ``cmb_count_low``/``cmb_count_high`` and ``interval_method``
  when the result has an interval;
* ``category_uncertain``: True when some flag's interval crosses its category boundary
  (cut-point or burden grade), or a microbleed count's interval spans burden grades, flag or not;
  False when intervals exist and none crosses; None without one (or without a category: a WML
  volume with no flag has no cut-point).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from .domain import WML_REPORTED_DECIMALS, AnalysisResult, BurdenGrade, CmbFindings, WmlFindings

#: keys written only when they have a value (an interval; a CMB result's microbleeds; a job's completion warning)
_OPTIONAL = ("wml_ml_low", "wml_ml_high", "cmb_count_low", "cmb_count_high", "microbleeds", "completion_warning")


@dataclass(frozen=True)
class ResultSummary:
    task: str | None = None  # "wml" | "cmb"
    model_name: str | None = None
    model_version: str | None = None
    model_sha256: str | None = None
    ruleset_id: str | None = None
    ruleset_version: str | None = None
    slices: int | None = None
    slice_spacing_mm: float | None = None
    gantry_tilt_deg: float | None = None
    warnings: tuple[str, ...] = ()
    seconds: float | None = None
    wml_ml: float | None = None  # None when withheld (or a CMB result)
    cmb_count: int | None = None
    cmb_grade: int | None = None
    measurable: bool | None = None  # the quality gate's verdict; None when no gate ran
    quality_reasons: tuple[str, ...] = ()
    quality_scores: Mapping[str, float | None] = field(default_factory=dict)
    interval_method: str | None = None
    wml_ml_low: float | None = None
    wml_ml_high: float | None = None
    cmb_count_low: float | None = None
    cmb_count_high: float | None = None
    microbleeds: tuple[Mapping[str, Any], ...] | None = None  # center_mm, diameter_mm, confidence
    flags: tuple[Mapping[str, Any], ...] = ()  # rule_id, rule_version, category and the flag's values
    category_uncertain: bool | None = None
    completion_warning: str | None = None  # a job's: the series was analysed although incomplete
    extra: Mapping[str, Any] = field(default_factory=dict)  # keys of a newer version, kept as read
    keys: tuple[str, ...] = field(default=(), compare=False, repr=False)  # the JSON keys, in order, when read

    def for_job(self, completion_warning: str | None) -> "ResultSummary":
        """The summary a job journals: with its completion warning (written even when None)."""
        return dataclasses.replace(self, completion_warning=completion_warning,
                                   keys=tuple(k for k in self._keys() if k != "completion_warning")
                                   + ("completion_warning",))

    def to_json(self) -> dict:
        return {k: self._value(k) for k in self._keys()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ResultSummary":
        known = {f.name for f in dataclasses.fields(cls)} - {"extra", "keys"}
        values: dict[str, Any] = {k: v for k, v in data.items() if k in known}
        for k in ("warnings", "quality_reasons", "flags"):
            values[k] = tuple(values.get(k) or ())
        if values.get("microbleeds") is not None:
            values["microbleeds"] = tuple(values["microbleeds"])
        values["quality_scores"] = dict(values.get("quality_scores") or {})
        return cls(**values, extra={k: v for k, v in data.items() if k not in known}, keys=tuple(data))

    def _keys(self) -> tuple[str, ...]:
        if self.keys:
            return self.keys
        return tuple(f.name for f in dataclasses.fields(self) if f.name not in ("extra", "keys")
                     and (f.name not in _OPTIONAL or getattr(self, f.name) is not None)) + tuple(self.extra)

    def _value(self, key: str) -> Any:
        if key in self.extra:
            return self.extra[key]
        value = getattr(self, key)
        if isinstance(value, tuple):
            return [dict(v) if isinstance(v, Mapping) else v for v in value]
        return dict(value) if isinstance(value, Mapping) else value


def _num(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def summarise(result: AnalysisResult) -> ResultSummary:
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
        row["wml_ml"] = round(float(f.volume_ml), WML_REPORTED_DECIMALS)  # as the SR says it (domain)
        if interval is not None:
            row["wml_ml_low"], row["wml_ml_high"] = (round(float(interval.low), WML_REPORTED_DECIMALS),
                                                     round(float(interval.high), WML_REPORTED_DECIMALS))
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
    if isinstance(f, CmbFindings) and interval is not None:  # the burden grade is a category, flag or not
        low, high = BurdenGrade.spanned(f.count, interval.low, interval.high)
        marks.append(low != high)
    row["category_uncertain"] = any(marks) if marks else None
    return ResultSummary.from_json(row)  # the key order of the rows journals hold

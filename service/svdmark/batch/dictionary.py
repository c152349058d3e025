"""The data dictionary (``dictionary.csv``: name, type, unit, meaning) and the rule constants
(``rules.json``) written beside a results table.

Fixed columns are described in ``MEANINGS``; ``flag_<rule>_*`` and ``quality_<score>`` columns
are described from their names and the rule set. Every column of the table gets a row; a test
checks that none is left undescribed.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..measure import quality
from .files import write_file

# column -> (unit, meaning); the type comes from the table itself
MEANINGS: dict[str, tuple[str, str]] = {
    "study_uid": ("", "Study Instance UID (0020,000D)"),
    "series_uid": ("", "Series Instance UID (0020,000E); one row per series"),
    "series_number": ("", "Series Number (0020,0011)"),
    "series_description": ("", "Series Description (0008,103E)"),
    "patient_pseudonym": ("", "keyed hash (HMAC-SHA256) of Patient ID, qualified by Issuer of Patient ID when the "
                              "header has one; never the ID itself"),
    "modality": ("", "Modality (0008,0060)"),
    "study_date": ("", "Study Date as YYYY-MM-DD; shifted per patient when study_date_shifted is true"),
    "study_date_shifted": ("", "true: study_date moved by the patient's keyed offset (-365..365 days, not 0)"),
    "manufacturer": ("", "scanner Manufacturer (0008,0070)"),
    "scanner_model": ("", "Manufacturer's Model Name (0008,1090)"),
    "kernel": ("", "Convolution Kernel (0018,1210), values joined with '/' (CT)"),
    "slice_thickness_mm": ("mm", "Slice Thickness (0018,0050)"),
    "scanner_software": ("", "scanner Software Versions (0018,1020), values joined with '/'"),
    "patient_age_years": ("a", "age at the study in whole years (Patient's Age, else from birth and study date)"),
    "patient_sex": ("", "Patient's Sex (0010,0040): M, F or O; empty when not given"),
    "n_instances": ("1", "instances of the series that were read"),
    "status": ("", "analysed, ignored, failed or pending"),
    "routing": ("", "routing decision: wml, cmb or ignored"),
    "rule_id": ("", "routing rule that decided (data/routing.toml)"),
    "reason": ("", "why the series was routed, ignored or not analysed"),
    "task": ("", "analysis: wml (white-matter lesions on NCCT) or cmb (microbleeds on SWI)"),
    "svdmark_version": ("", "svdmark version that analysed the series (routed it, for ignored/failed rows)"),
    "model_name": ("", "model that analysed the series"),
    "model_version": ("", "version of that model"),
    "model_sha256": ("", "SHA-256 of the model file (identifies the exact weights)"),
    "ruleset_id": ("", "flag rule set id (constants in rules.json)"),
    "ruleset_version": ("", "flag rule set version"),
    "wml_ml": ("mL", "white-matter lesion volume; empty when withheld by the quality gate"),
    "cmb_count": ("1", "number of cerebral microbleeds; empty when withheld"),
    "cmb_grade": ("1", "microbleed burden grade 0-3 (0 none, 1 1-9, 2 10-30, 3 >30)"),
    "cmb_grade_meaning": ("", "the burden grade in words"),
    "measurable": ("", "quality gate verdict: false = result withheld (no number); empty = no gate ran"),
    "quality_reasons": ("", "the quality gate's reasons, '; '-joined (one per row in notes.csv)"),
    "wml_ml_low": ("mL", "lower end of the WML volume uncertainty interval"),
    "wml_ml_high": ("mL", "upper end of the WML volume uncertainty interval"),
    "cmb_count_low": ("1", "lower end of the microbleed count uncertainty interval"),
    "cmb_count_high": ("1", "upper end of the microbleed count uncertainty interval"),
    "interval_method": ("", "how the uncertainty interval was obtained"),
    "category_uncertain": ("", "true when an interval crosses a flag cut-point or grade boundary"),
    "n_warnings": ("1", "volume and measurement warnings (listed in notes.csv)"),
    "slices": ("1", "slices of the analysed volume"),
    "slice_spacing_mm": ("mm", "spacing between slice centres of the analysed volume"),
    "gantry_tilt_deg": ("deg", "gantry tilt of the analysed volume"),
    "seconds": ("s", "analysis time (model and measurement)"),
    "total_seconds": ("s", "time for the whole series (reading, analysis, writing)"),
    "sr_file": ("", "path of the TID 1500 SR, relative to the output folder"),
    "seg_file": ("", "path of the segmentation (SEG), relative to the output folder"),
    "summary_file": ("", "path of the summary image (Secondary Capture), relative to the output folder; results "
                     "export: empty once retention removed the file (svdmark purge; the PACS holds the object)"),
    "sr_sop_uid": ("", "SOP Instance UID of the SR"),
    "analysed_at": ("", "UTC time of the analysis, ISO 8601"),
    "job_id": ("", "service journal job id (results export)"),
    "generation": ("1", "analysis generation of the series in the service (results export)"),
    "job_state": ("", "service journal job state (results export)"),
    "completion": ("", "how the service decided the series was complete (results export)"),
}
_FLAG_VALUES: dict[str, tuple[str, str]] = {
    "category": ("", "the flag's category (not-measurable when the result was withheld)"),
    "uncertain": ("", "true when the uncertainty interval spans more than one category"),
    "low": ("", "lower end of the input's uncertainty interval (unit of the rule's input)"),
    "high": ("", "upper end of the input's uncertainty interval (unit of the rule's input)"),
    "measurable": ("", "false when the result was withheld"),
    "or_ratio": ("1", "point estimate of the modification at this input value (per-unit OR to the power of it)"),
    "ci_low": ("1", "lower 95% CI of that modification"),
    "ci_high": ("1", "upper 95% CI of that modification"),
    "grade": ("1", "burden grade"),
    "grade_low": ("1", "burden grade at the interval's lower end"),
    "grade_high": ("1", "burden grade at the interval's upper end"),
    "interval_method": ("", "how the interval was obtained"),
}
_TYPES = {"date32[day][pyarrow]": "date", "string": "string", "str": "string", "Int64": "integer", "float64": "float",
          "boolean": "boolean", "int64": "integer", "bool": "boolean", "object": "string"}
# a rule's UCUM input unit as the dictionary writes units elsewhere (rules.json keeps the UCUM code)
_UNITS = {"ml": "mL", "{count}": "1"}


def rules_metadata(ruleset) -> dict:
    """The rule set's constants and provenance, once per table (not on every row)."""
    return {
        "ruleset_id": ruleset.info.id, "ruleset_version": ruleset.info.version,
        "rules": [{"rule_id": r.id, "rule_version": r.version, "name": r.name, "input": r.input_name,
                   "input_unit": r.input_unit, "evidence_doi": r.evidence_doi,
                   "evidence_citation": r.evidence_citation, "population": r.population,
                   "constants": {str(k): v for k, v in r.thresholds.items()},
                   "categories": dict(r.categories)} for r in ruleset.rules],
    }


def describe(df, ruleset=None) -> list[dict]:
    """One dictionary row (name, type, unit, meaning) per column of ``df``."""
    from .table import flag_column

    flags: dict[str, tuple[str, str, str]] = {}  # column -> (rule id, value, rule unit)
    for r in (ruleset.rules if ruleset is not None else ()):
        for what in _FLAG_VALUES:
            flags[flag_column(r.id, what)] = (r.id, what, r.input_unit)
    out = []
    for c in df.columns:
        kind = _TYPES.get(str(df[c].dtype), str(df[c].dtype))
        if c in MEANINGS:
            unit, meaning = MEANINGS[c]
        elif c in flags:
            rid, what, rule_unit = flags[c]
            unit, meaning = _FLAG_VALUES[what]
            unit = _UNITS.get(rule_unit, rule_unit) if what in ("low", "high") else unit
            meaning = f"flag rule {rid} (rules.json): {meaning}"
        elif c.startswith("flag_"):
            unit, meaning = "", "a per-series value of a flag rule (see rules.json)"
        elif c.startswith("quality_"):
            unit, what = quality.DESCRIPTIONS.get(c[len("quality_"):], ("", f"score {c[len('quality_'):]}"))
            meaning = f"quality gate: {what} (limits in the model's manifest)"
        else:
            unit, meaning = "", ""
        out.append({"name": c, "type": kind, "unit": unit, "meaning": meaning})
    return out


def write_beside(table: Path, df, ruleset, prefix: str = "") -> list[Path]:
    """``<prefix>dictionary.csv`` and ``<prefix>rules.json`` in the folder of ``table``."""
    import pandas as pd

    folder = Path(table).parent
    dictionary = pd.DataFrame(describe(df, ruleset), columns=["name", "type", "unit", "meaning"])
    paths = [write_file(folder / f"{prefix}dictionary.csv", dictionary.to_csv(index=False).encode())]
    if ruleset is not None:
        doc: Any = rules_metadata(ruleset)
        paths.append(write_file(folder / f"{prefix}rules.json", json.dumps(doc, indent=1, default=str).encode()))
    return paths

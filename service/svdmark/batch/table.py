"""Results and errors tables: one row per series, written as CSV and Parquet with pandas.

The same row shape serves ``svdmark analyze`` (rows from analyses it ran) and
``svdmark results export`` (rows from the service journal's jobs), so cohort
statistics read either.

Tidy for R, Stata and SAS: every column name is snake_case ASCII, at most 32 characters, starting
with a letter (``valid_name``); every column holds one typed value. ``dictionary.csv`` beside the
table gives each column's type, unit and meaning (``batch.dictionary``); the rule constants
(cut-points, published odds ratios) are in ``rules.json`` once, not on every row.

Uncertainty and the quality gate, for filtering: ``measurable`` (True/False, empty when no
gate ran; withheld rows have no ``wml_ml``/``cmb_count``/``cmb_grade``), ``quality_reasons``
(the gate's sentences, "; "-joined for reading; one per row in ``notes.*``), one
``quality_<score>`` column per gate score, the interval ends ``wml_ml_low``/``wml_ml_high`` or
``cmb_count_low``/``cmb_count_high``, ``interval_method``, and ``category_uncertain`` (True when
an interval crosses the flag's cut-point or a burden-grade boundary). Per flag rule,
``flag_<rule>_category`` is the category ("not-measurable" for withheld results) and
``flag_<rule>_<value>`` its per-series values (``_uncertain``, ``_low``/``_high`` interval ends,
``_grade``, ``_or_ratio``...). ``result_columns`` fixes the columns from the rule set and the gate's scores, so
every run with one rule set has the same columns (empty where no series gave a value) and tables stack. Warnings
are counted in ``n_warnings`` and listed one per row in ``notes.*`` (series_uid, kind, text). ``measurable``, ``category_uncertain`` and the flags'
``_uncertain``/``_measurable`` are nullable booleans (empty: no gate ran / no interval), so a
filter reads e.g. ``df[df.measurable.fillna(True) & ~df.category_uncertain.fillna(False)]``.
"""
from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path
from typing import Iterable

from ..domain import BurdenGrade
from ..summary import ResultSummary
from .acquisition import DESCRIPTOR_COLUMNS
from .files import write_file

# status of a series in the table
ANALYSED, IGNORED, FAILED, PENDING = "analysed", "ignored", "failed", "pending"

COLUMNS = [
    "study_uid", "series_uid", "series_number", "series_description", "patient_pseudonym", "modality",
    *DESCRIPTOR_COLUMNS,
    "n_instances", "status", "routing", "rule_id", "reason", "task", "svdmark_version", "model_name", "model_version",
    "model_sha256", "ruleset_id", "ruleset_version", "wml_ml", "cmb_count", "cmb_grade", "cmb_grade_meaning",
    "measurable", "quality_reasons", "wml_ml_low", "wml_ml_high", "cmb_count_low", "cmb_count_high",
    "interval_method", "category_uncertain", "n_warnings", "slices", "slice_spacing_mm", "gantry_tilt_deg",
    "seconds", "total_seconds", "sr_file", "seg_file", "summary_file", "sr_sop_uid", "analysed_at",
]
ERROR_COLUMNS = ["file", "series_uid", "study_uid", "sop_uid", "reason"]
NOTE_COLUMNS = ["series_uid", "kind", "text"]
NOTES = "_notes"  # a row's private list of (kind, text), written to notes.*

_FROM_SUMMARY = ("task", "model_name", "model_version", "model_sha256", "ruleset_id", "ruleset_version", "wml_ml",
                 "cmb_count", "cmb_grade", "slices", "slice_spacing_mm", "gantry_tilt_deg", "seconds",
                 "measurable", "wml_ml_low", "wml_ml_high", "cmb_count_low", "cmb_count_high", "interval_method",
                 "category_uncertain")
_BOOL_COLUMNS = ("measurable", "category_uncertain", "study_date_shifted")
_DATE_COLUMNS = ("study_date",)  # ISO text in rows and CSV; a date (Arrow date32) in the frame and Parquet
_INT_COLUMNS = ("cmb_count", "cmb_grade", "n_instances", "slices", "n_warnings", "patient_age_years")
_FLOAT_COLUMNS = ("wml_ml", "wml_ml_low", "wml_ml_high", "cmb_count_low", "cmb_count_high", "seconds",
                  "total_seconds", "slice_spacing_mm", "gantry_tilt_deg", "slice_thickness_mm")
# a flag value's column suffix (the rest keep their key)
_FLAG_SUFFIX = {"category_uncertain": "uncertain", "interval_low": "low", "interval_high": "high"}
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
MAX_NAME = 32


def valid_name(name: str) -> bool:
    """A column name R, Stata and SAS all take: ``[a-z][a-z0-9_]*``, at most 32 characters."""
    return bool(NAME_RE.match(name))


def snake(text: str) -> str:
    out = re.sub(r"[^a-z0-9]+", "_", str(text).lower()).strip("_")
    return out if out and out[0].isalpha() else f"x_{out}"


def column_name(prefix: str, middle: str, suffix: str = "") -> str:
    """``prefix_middle_suffix`` in snake_case; a middle too long for 32 characters is cut and given
    a 4-hex hash of itself, so two long names stay apart and the suffix stays readable."""
    mid = snake(middle)
    tail = f"_{snake(suffix)}" if suffix else ""
    room = MAX_NAME - len(prefix) - 1 - len(tail)
    if len(mid) > room:
        mid = mid[:room - 5].rstrip("_") + "_" + hashlib.sha256(middle.encode()).hexdigest()[:4]
    return f"{prefix}_{mid}{tail}"


def flag_column(rule_id: str, what: str) -> str:
    return column_name("flag", rule_id, _FLAG_SUFFIX.get(what, what))


def quality_column(score: str) -> str:
    return column_name("quality", score)


def rule_constants(ruleset) -> set[tuple[str, str]]:
    """(rule id, name) of every rule constant: the [rule.thresholds] of each rule (in ``rules.json``, not on rows)."""
    return {(r.id, str(k)) for r in ruleset.rules for k in r.thresholds}


def result_columns(ruleset) -> list[str]:
    """The results table's columns for this rule set: the fixed ones, then each rule's category and per-series
    values (``RuleSet.value_names`` less the constants), then one per quality-gate score. The same for every run
    with the same rule set, whatever its series were (all WML, all SWI, all failed), so tables stack."""
    from ..measure.quality import SCORES

    constants = rule_constants(ruleset)
    flags = [flag_column(r.id, what) for r in ruleset.rules
             for what in ("category", *ruleset.value_names(r.id)) if (r.id, what) not in constants]
    return COLUMNS + flags + [quality_column(s) for s in SCORES]


def base_row(**identity) -> dict:
    row = {c: None for c in COLUMNS}
    row.update({k: v for k, v in identity.items() if k in row})
    return row


def fill_from_summary(row: dict, summary: ResultSummary | None, constants: Iterable[tuple[str, str]] = ()) -> dict:
    """Copy a ``ResultSummary`` (the journal's job summary) into a table row (what it leaves None, the row keeps).

    ``constants``: (rule id, value name) pairs that are rule constants (``rules.json``), left out."""
    if summary is None:
        return row
    constants = set(constants)
    for k in _FROM_SUMMARY:
        if getattr(summary, k) is not None:
            row[k] = getattr(summary, k)
    if summary.cmb_grade is not None:
        row["cmb_grade_meaning"] = BurdenGrade(int(summary.cmb_grade)).meaning
    warnings = [str(w) for w in summary.warnings]
    reasons = [str(r) for r in summary.quality_reasons]
    row["n_warnings"] = len(warnings)
    row["quality_reasons"] = "; ".join(reasons)
    row[NOTES] = [("warning", w) for w in warnings] + [("quality_reason", r) for r in reasons]
    for k, v in summary.quality_scores.items():
        row[quality_column(k)] = v
    for f in summary.flags:  # per flag: its category and each per-series value
        rid = f["rule_id"]
        row[flag_column(rid, "category")] = f.get("category")
        for k, v in f.items():
            if k not in ("rule_id", "rule_version", "category") and (rid, k) not in constants:
                row[flag_column(rid, k)] = v
    return row


def notes(rows: Iterable[dict]) -> list[dict]:
    """The long table of warnings and quality reasons: one row per (series, note)."""
    return [{"series_uid": r["series_uid"], "kind": kind, "text": text}
            for r in rows for kind, text in (r.get(NOTES) or [])]


def _flag_kind(column: str) -> str:
    if column.endswith("_category"):
        return "string"
    if column.endswith(("_uncertain", "_measurable")):
        return "boolean"
    if column.endswith(("_grade", "_grade_low", "_grade_high")):
        return "Int64"
    return "float64"


def frame(rows: Iterable[dict], columns: list[str] = COLUMNS):
    """A typed DataFrame of ``rows`` (private ``_`` keys dropped); every column name is ``valid_name``."""
    import pandas as pd

    rows = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
    extra = sorted({k for r in rows for k in r} - set(columns))
    bad = [c for c in columns + extra if not valid_name(c)]
    if bad:
        raise ValueError(f"column names not valid in R/Stata/SAS: {bad}")
    df = pd.DataFrame(rows, columns=columns + extra)
    for c in _INT_COLUMNS:
        if c in df:
            df[c] = pd.to_numeric(df[c], errors="coerce").astype("Int64")
    for c in _FLOAT_COLUMNS + tuple(c for c in df.columns if c.startswith("quality_") and c != "quality_reasons"):
        if c in df:
            df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
    for c in _BOOL_COLUMNS:
        if c in df:
            df[c] = df[c].map(_bool).astype("boolean")
    for c in _DATE_COLUMNS:
        if c in df:
            df[c] = _dates(df[c])
    for c in (c for c in df.columns if c.startswith("flag_")):
        kind = _flag_kind(c)
        if kind == "boolean":
            df[c] = df[c].map(_bool).astype("boolean")
        elif kind in ("Int64", "float64"):
            df[c] = pd.to_numeric(df[c], errors="coerce").astype(kind)
    for c in df.columns:
        if df[c].dtype == object:
            df[c] = df[c].astype("string")
    return df


def _dates(column):
    """ISO dates (or dates, from a Parquet table read back) as an Arrow ``date32`` column; anything else is empty."""
    import pandas as pd
    import pyarrow as pa

    parsed = pd.to_datetime(column.astype("string"), format="%Y-%m-%d", errors="coerce")
    return parsed.dt.date.astype(pd.ArrowDtype(pa.date32()))


def _csv(df) -> bytes:
    """CSV text of a table: dates as YYYY-MM-DD, empty when missing (as every other column)."""
    dates = {c: "string" for c in _DATE_COLUMNS if c in df}
    return (df.astype(dates) if dates else df).to_csv(index=False).encode()


def _bool(v):
    """True/False from a bool or its text (a resumed CSV row); None for empty."""
    if v is None or (isinstance(v, float) and v != v):
        return None
    if isinstance(v, str):
        return {"true": True, "false": False, "1": True, "0": False}.get(v.strip().lower())
    try:
        return bool(v)
    except (TypeError, ValueError):  # pragma: no cover - pandas NA
        return None


def write_tables(df, stem: Path) -> list[Path]:
    """``stem``.csv and ``stem``.parquet, each written atomically."""
    paths = [Path(stem).with_suffix(".csv"), Path(stem).with_suffix(".parquet")]
    for path in paths:
        write_file(path, _encoded(df, path.suffix[1:]))
    return paths


def _encoded(df, fmt: str) -> bytes:
    """The table as ``fmt`` ("csv" or "parquet") bytes."""
    if fmt == "csv":
        return _csv(df)
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def write_one(df, path: Path, fmt: str) -> None:
    data = _encoded(df, fmt)
    if str(path) == "-":
        import sys

        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        write_file(Path(path), data)


def read_table(path: Path):
    """A results table from a .csv/.parquet file or an ``svdmark analyze`` output folder."""
    import pandas as pd

    from ..errors import ConfigError

    path = Path(path)
    if path.is_dir():
        for name in ("results.parquet", "results.csv"):
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise ConfigError(f"{path} holds no results.parquet or results.csv (is it an analyze output folder?)")
    if not path.is_file():
        raise ConfigError(f"table {path} does not exist")
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path, dtype={"series_number": "string", "study_uid": "string", "series_uid": "string"})
    except Exception as exc:  # pandas/pyarrow raise many types for a bad file
        raise ConfigError(f"cannot read table {path}: {type(exc).__name__}: {exc}") from None


def read_errors(path: Path):
    """The errors table next to a results table, if there is one."""
    import pandas as pd

    path = Path(path)
    folder = path if path.is_dir() else path.parent
    for name in ("errors.parquet", "errors.csv"):
        if (folder / name).is_file():
            try:
                return pd.read_parquet(folder / name) if name.endswith("parquet") else pd.read_csv(folder / name)
            except Exception:  # an unreadable errors table only loses the file-error counts
                return None
    return None


def dumps(obj) -> str:
    return json.dumps(obj, indent=2, default=str)

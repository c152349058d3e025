"""Results and errors tables: one row per series, written as CSV and Parquet with pandas.

The same row shape serves ``svdmark analyze`` (rows from analyses it ran) and
``svdmark results export`` (rows from the service journal's jobs), so cohort
statistics read either.

Uncertainty and the quality gate, for filtering: ``measurable`` (True/False, empty when no
gate ran; withheld rows have no ``wml_ml``/``cmb_count``/``cmb_grade``), ``quality_reasons``
("; "-joined), one ``quality.<score>`` column per gate score, the interval ends
``wml_ml_low``/``wml_ml_high`` or ``cmb_count_low``/``cmb_count_high``, ``interval_method``,
and ``category_uncertain`` (True when an interval crosses the flag's cut-point or a burden-grade
boundary). Per flag, ``flag.<rule>`` is the category ("not-measurable" for withheld results) and
``flag.<rule>.category_uncertain`` / ``.interval_low`` / ``.interval_high`` its values.
``measurable`` and ``category_uncertain`` are nullable booleans (empty: no gate ran / no interval),
so a filter reads e.g. ``df[df.measurable.fillna(True) & ~df.category_uncertain.fillna(False)]``.
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Iterable

from ..domain import BurdenGrade
from ..spool import write_durably

# status of a series in the table
ANALYSED, IGNORED, FAILED, PENDING = "analysed", "ignored", "failed", "pending"

COLUMNS = [
    "study_uid", "series_uid", "series_number", "series_description", "patient_pseudonym", "modality",
    "n_instances", "status", "routing", "rule_id", "reason", "task", "model_name", "model_version",
    "model_sha256", "ruleset_id", "ruleset_version", "wml_ml", "cmb_count", "cmb_grade", "cmb_grade_meaning",
    "measurable", "quality_reasons", "wml_ml_low", "wml_ml_high", "cmb_count_low", "cmb_count_high",
    "interval_method", "category_uncertain", "flags", "warnings", "slices", "slice_spacing_mm", "gantry_tilt_deg", "seconds", "total_seconds",
    "sr_file", "seg_file", "summary_file", "sr_sop_uid", "analysed_at",
]
ERROR_COLUMNS = ["file", "series_uid", "study_uid", "sop_uid", "reason"]

_FROM_SUMMARY = ("task", "model_name", "model_version", "model_sha256", "ruleset_id", "ruleset_version", "wml_ml",
                 "cmb_count", "cmb_grade", "slices", "slice_spacing_mm", "gantry_tilt_deg", "seconds",
                 "measurable", "wml_ml_low", "wml_ml_high", "cmb_count_low", "cmb_count_high", "interval_method",
                 "category_uncertain")
_BOOL_COLUMNS = ("measurable", "category_uncertain")
_FLOAT_COLUMNS = ("wml_ml", "wml_ml_low", "wml_ml_high", "cmb_count_low", "cmb_count_high", "seconds",
                  "total_seconds", "slice_spacing_mm", "gantry_tilt_deg")


def base_row(**identity) -> dict:
    row = {c: None for c in COLUMNS}
    row.update({k: v for k, v in identity.items() if k in row})
    return row


def fill_from_summary(row: dict, summary: dict | None) -> dict:
    """Copy a ``summary.summarise`` dict (the journal's job summary) into a table row."""
    if not summary:
        return row
    for k in _FROM_SUMMARY:
        if k in summary:
            row[k] = summary[k]
    if summary.get("cmb_grade") is not None:
        row["cmb_grade_meaning"] = BurdenGrade(int(summary["cmb_grade"])).meaning
    row["warnings"] = "; ".join(summary.get("warnings") or [])
    row["quality_reasons"] = "; ".join(summary.get("quality_reasons") or [])
    for k, v in (summary.get("quality_scores") or {}).items():
        row[f"quality.{k}"] = v
    flags = summary.get("flags") or []
    row["flags"] = "; ".join(f"{f['rule_id']}={f.get('category', '')}" for f in flags)
    for f in flags:  # one column per flag (its category) and per flag value
        rid = f["rule_id"]
        row[f"flag.{rid}"] = f.get("category")
        for k, v in f.items():
            if k not in ("rule_id", "rule_version", "category"):
                row[f"flag.{rid}.{k}"] = v
    return row


def frame(rows: Iterable[dict], columns: list[str] = COLUMNS):
    import pandas as pd

    rows = list(rows)
    extra = sorted({k for r in rows for k in r} - set(columns))
    df = pd.DataFrame(rows, columns=columns + extra)
    for c in ("cmb_count", "cmb_grade", "n_instances", "slices"):
        if c in df:
            df[c] = pd.to_numeric(df[c], errors="coerce").astype("Int64")
    for c in _FLOAT_COLUMNS + tuple(c for c in df.columns if c.startswith("quality.")):
        if c in df:
            df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
    for c in _BOOL_COLUMNS:
        if c in df:
            df[c] = df[c].map(_bool).astype("boolean")
    for c in df.columns:
        if df[c].dtype == object:
            df[c] = df[c].astype("string")
    return df


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
    stem = Path(stem)
    csv_bytes = df.to_csv(index=False).encode()
    write_durably(stem.with_suffix(".csv"), csv_bytes)
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    write_durably(stem.with_suffix(".parquet"), buf.getvalue())
    return [stem.with_suffix(".csv"), stem.with_suffix(".parquet")]


def write_one(df, path: Path, fmt: str) -> None:
    if fmt == "csv":
        data = df.to_csv(index=False).encode()
    else:
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        data = buf.getvalue()
    if str(path) == "-":
        import sys

        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        write_durably(Path(path), data)


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

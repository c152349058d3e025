"""Cohort statistics of a results table, reported the way papers report them.

* WML volume: n, median (IQR) and range over the measurable analysed NCCT series;
* CMB: n, median (IQR) count, and the burden grades as n (%) of the measurable analysed SWI series;
* withheld: per task, the analysed series whose result the quality gate withheld ("not reliably
  measurable", ``measurable`` False: no number), n (% of that task's analysed series). They are
  left out of the WML and CMB statistics, which are over measurable results only (the output says
  so), so the grade percentages add up to 100 % of the measurable SWI series;
* flags: per flag rule, its categories as n (% of the analysed series that carry the flag),
  "not-measurable" included; from ``flag_<rule>_category`` (or an older table's ``flag.<rule>``);
* routing: series by routing decision, n (%); ignore reasons; failure reasons.

Quartiles are the linear-interpolation kind (numpy's default, Hyndman-Fan type 7,
the same as R's default ``quantile``).
"""
from __future__ import annotations

import re

from ..domain import BurdenGrade

MEASURABLE_ONLY = "measurable results only (withheld results excluded)"


def _pct(n: int, total: int) -> float:
    return round(100.0 * n / total, 1) if total else 0.0


def _describe(values) -> dict:
    import numpy as np

    v = np.asarray([float(x) for x in values], float)
    if v.size == 0:
        return {"n": 0, "median": None, "q1": None, "q3": None, "min": None, "max": None, "mean": None}
    q1, med, q3 = (float(np.percentile(v, q)) for q in (25, 50, 75))
    return {"n": int(v.size), "median": med, "q1": q1, "q3": q3, "min": float(v.min()), "max": float(v.max()),
            "mean": float(v.mean())}


def _counts(series) -> list[dict]:
    total = int(series.shape[0])
    vc = series.fillna("(none)").astype(str).value_counts()
    items = sorted(vc.items(), key=lambda kv: (-kv[1], kv[0]))
    return [{"value": k, "n": int(n), "percent": _pct(int(n), total)} for k, n in items]


def _withheld_mask(df):
    """True for rows whose result the quality gate withheld (``measurable`` False; text from a CSV too)."""
    import pandas as pd

    from .table import _bool

    if "measurable" not in df:
        return pd.Series(False, index=df.index, dtype=bool)
    return df["measurable"].map(lambda v: _bool(None if pd.isna(v) else v) is False).astype(bool)


_CATEGORY = re.compile(r"^flag_(?P<rule>.+)_category$|^flag\.(?P<old>[^.]+)$")


def flag_categories(analysed) -> list[dict]:
    """Per flag rule: ``{"rule", "column", "n", "categories": [{"value", "n", "percent"}]}``."""
    out = []
    for c in analysed.columns:
        m = _CATEGORY.match(str(c))
        if not m:
            continue
        present = analysed[c].dropna()
        present = present[present.astype(str) != ""]
        out.append({"rule": m["rule"] or m["old"], "column": str(c), "n": int(present.shape[0]),
                    "categories": _counts(present) if present.shape[0] else []})
    return sorted(out, key=lambda f: f["rule"])


def _patients(pseudonyms) -> int:
    """Distinct patients; a series without a Patient ID is none ("" in a table from before it was left empty)."""
    known = pseudonyms.dropna()
    return int(known[known.astype(str) != ""].nunique())


def cohort(df, errors=None) -> dict:
    status = df["status"].astype("string").fillna("")
    analysed = df[status == "analysed"]
    total = int(df.shape[0])
    withheld_rows = _withheld_mask(analysed)
    measurable = analysed[~withheld_rows]
    task = analysed["task"].astype("string") if "task" in df else None
    withheld = {}
    for t in ("wml", "cmb"):
        n_task = int((task == t).sum()) if task is not None else 0
        n = int(((task == t) & withheld_rows).sum()) if task is not None else 0
        withheld[t] = {"n": n, "of": n_task, "percent": _pct(n, n_task)}
    m_task = measurable["task"].astype("string") if "task" in df else None
    wml = measurable[m_task == "wml"]["wml_ml"].dropna() if m_task is not None else []
    cmb = measurable[m_task == "cmb"] if m_task is not None else analysed.iloc[0:0]
    counts = cmb["cmb_count"].dropna() if len(cmb) else []
    graded = cmb["cmb_grade"].dropna().astype(int) if len(cmb) else []
    n_cmb = int(len(graded))
    grades = []
    for g in BurdenGrade:
        n = int((graded == int(g)).sum()) if n_cmb else 0
        grades.append({"grade": int(g), "meaning": g.meaning, "n": n, "percent": _pct(n, n_cmb)})
    out = {
        "series": total,
        "status": {s: {"n": int((status == s).sum()), "percent": _pct(int((status == s).sum()), total)}
                   for s in ("analysed", "ignored", "failed", "pending") if int((status == s).sum()) or s != "pending"},
        "routing": _counts(df["routing"]) if total else [],
        "wml_ml": _describe(wml),
        "cmb_count": _describe(counts),
        "cmb_grades": grades,
        "withheld": withheld,
        "flags": flag_categories(analysed),
        "statistics_over": MEASURABLE_ONLY,
        "ignore_reasons": _counts(df[status == "ignored"]["reason"]) if total else [],
        "failure_reasons": _counts(df[status == "failed"]["reason"]) if total else [],
        "patients": _patients(df["patient_pseudonym"]) if "patient_pseudonym" in df else None,
        "studies": int(df["study_uid"].dropna().nunique()) if "study_uid" in df else None,
    }
    if "model_version" in df and len(analysed):
        out["models"] = _counts((analysed["model_name"].astype("string") + " " +
                                 analysed["model_version"].astype("string")))
    if errors is not None:  # the failed series are counted above; here the files (a folder of duplicates: one row)
        files = errors[~errors["reason"].astype(str).str.startswith("series not analysed")]
        out["file_errors"] = {"n": int(files.shape[0]), "reasons": _counts(_reason_kind(files["reason"]))}
    return out


def _reason_kind(reasons):
    """Group file-error reasons by their leading words (drop file-specific details after ':')."""
    return reasons.astype(str).str.split(":").str[0].str.strip()


def _fmt(x: float | None, nd: int = 1) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def format_cohort(c: dict) -> str:
    lines = [f"Series: {c['series']}  (studies {c.get('studies')}, patients {c.get('patients')})"]
    lines.append("  " + ", ".join(f"{k} {v['n']} ({v['percent']:.1f}%)" for k, v in c["status"].items()))
    w = c["wml_ml"]
    held = c.get("withheld") or {}
    lines.append("")
    lines.append(f"Volumes, counts and grades: {c.get('statistics_over', MEASURABLE_ONLY)}")
    hw, hc = held.get("wml", {}).get("n", 0), held.get("cmb", {}).get("n", 0)
    if w["n"]:
        lines.append(f"WML volume (n={w['n']}): median {_fmt(w['median'], 2)} mL "
                     f"(IQR {_fmt(w['q1'], 2)}-{_fmt(w['q3'], 2)}); range {_fmt(w['min'], 2)}-{_fmt(w['max'], 2)} mL")
    else:
        lines.append("WML volume: no measurable NCCT series" if hw else "WML volume: no analysed NCCT series")
    if hw:
        lines.append(f"  withheld, not reliably measurable: {hw} of {held['wml']['of']} analysed NCCT series "
                     f"({held['wml']['percent']:.1f}%), not included")
    k = c["cmb_count"]
    if k["n"]:
        lines.append(f"Microbleeds (n={k['n']}): median {_fmt(k['median'])} (IQR {_fmt(k['q1'])}-{_fmt(k['q3'])}); "
                     f"range {_fmt(k['min'], 0)}-{_fmt(k['max'], 0)}")
        lines.append(f"Microbleed burden (% of {sum(g['n'] for g in c['cmb_grades'])} measurable SWI series):")
        for g in c["cmb_grades"]:
            lines.append(f"  grade {g['grade']} {g['meaning']}: {g['n']} ({g['percent']:.1f}%)")
    else:
        lines.append("Microbleeds: no measurable SWI series" if hc else "Microbleeds: no analysed SWI series")
    if hc:
        lines.append(f"  withheld, not reliably measurable: {hc} of {held['cmb']['of']} analysed SWI series "
                     f"({held['cmb']['percent']:.1f}%), not included")
    if c.get("flags"):
        lines.append("")
        lines.append("Flags (n (%) of the analysed series with the flag):")
        for f in c["flags"]:
            lines.append(f"  {f['rule']} (n={f['n']}):")
            lines += [f"    {r['value']}: {r['n']} ({r['percent']:.1f}%)" for r in f["categories"]]
    lines.append("")
    lines.append("Routing decision:")
    lines += [f"  {r['value']}: {r['n']} ({r['percent']:.1f}%)" for r in c["routing"]] or ["  -"]
    if c.get("models"):
        lines.append("Models:")
        lines += [f"  {r['value']}: {r['n']}" for r in c["models"]]
    if c["ignore_reasons"]:
        lines.append("Ignored, by reason:")
        lines += [f"  {r['n']:>4}  {r['value']}" for r in c["ignore_reasons"]]
    lines.append("Failed, by reason:" if c["failure_reasons"] else "Failed: none")
    lines += [f"  {r['n']:>4}  {r['value']}" for r in c["failure_reasons"]]
    if "file_errors" in c:
        fe = c["file_errors"]
        lines.append(f"Files not used: {fe['n']} (errors.csv rows; a folder of duplicate copies is one)")
        lines += [f"  {r['n']:>4}  {r['value']}" for r in fe["reasons"]]
    return "\n".join(lines)

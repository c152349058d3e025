"""Cohort statistics of a results table, reported the way papers report them.

* WML volume: n, median (IQR) and range over analysed NCCT series;
* CMB: n, median (IQR) count, and the burden grades as n (%) of analysed SWI series;
* routing: series by routing decision, n (%); ignore reasons; failure reasons.

Quartiles are the linear-interpolation kind (numpy's default, Hyndman-Fan type 7,
the same as R's default ``quantile``).
"""
from __future__ import annotations

from ..domain import BurdenGrade


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


def cohort(df, errors=None) -> dict:
    status = df["status"].astype("string").fillna("")
    analysed = df[status == "analysed"]
    total = int(df.shape[0])
    wml = analysed[analysed["task"].astype("string") == "wml"]["wml_ml"].dropna() if "task" in df else []
    cmb = analysed[analysed["task"].astype("string") == "cmb"] if "task" in df else analysed.iloc[0:0]
    counts = cmb["cmb_count"].dropna() if len(cmb) else []
    n_cmb = int(len(cmb))
    grades = []
    for g in BurdenGrade:
        n = int((cmb["cmb_grade"].dropna().astype(int) == int(g)).sum()) if n_cmb else 0
        grades.append({"grade": int(g), "meaning": g.meaning, "n": n, "percent": _pct(n, n_cmb)})
    out = {
        "series": total,
        "status": {s: {"n": int((status == s).sum()), "percent": _pct(int((status == s).sum()), total)}
                   for s in ("analysed", "ignored", "failed", "pending") if int((status == s).sum()) or s != "pending"},
        "routing": _counts(df["routing"]) if total else [],
        "wml_ml": _describe(wml),
        "cmb_count": _describe(counts),
        "cmb_grades": grades,
        "ignore_reasons": _counts(df[status == "ignored"]["reason"]) if total else [],
        "failure_reasons": _counts(df[status == "failed"]["reason"]) if total else [],
        "patients": int(df["patient_pseudonym"].dropna().nunique()) if "patient_pseudonym" in df else None,
        "studies": int(df["study_uid"].dropna().nunique()) if "study_uid" in df else None,
    }
    if "model_version" in df and len(analysed):
        out["models"] = _counts((analysed["model_name"].astype("string") + " " +
                                 analysed["model_version"].astype("string")))
    if errors is not None:
        out["file_errors"] = {"n": int(errors.shape[0]), "reasons": _counts(_reason_kind(errors["reason"]))}
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
    lines.append("")
    if w["n"]:
        lines.append(f"WML volume (n={w['n']}): median {_fmt(w['median'], 2)} mL "
                     f"(IQR {_fmt(w['q1'], 2)}-{_fmt(w['q3'], 2)}); range {_fmt(w['min'], 2)}-{_fmt(w['max'], 2)} mL")
    else:
        lines.append("WML volume: no analysed NCCT series")
    k = c["cmb_count"]
    if k["n"]:
        lines.append(f"Microbleeds (n={k['n']}): median {_fmt(k['median'])} (IQR {_fmt(k['q1'])}-{_fmt(k['q3'])}); "
                     f"range {_fmt(k['min'], 0)}-{_fmt(k['max'], 0)}")
        lines.append("Microbleed burden:")
        for g in c["cmb_grades"]:
            lines.append(f"  grade {g['grade']} {g['meaning']}: {g['n']} ({g['percent']:.1f}%)")
    else:
        lines.append("Microbleeds: no analysed SWI series")
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
        lines.append(f"Files not used: {fe['n']}")
        lines += [f"  {r['n']:>4}  {r['value']}" for r in fe["reasons"]]
    return "\n".join(lines)

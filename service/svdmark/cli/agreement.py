"""Agreement of shadow results with the active model's, and its text (``svdmark models compare``).

Rows come from the journal (:meth:`svdmark.journal.Journal.shadow_results`), chosen by
:meth:`svdmark.lifecycle.Lifecycle.shadow_runs`.
"""
from __future__ import annotations

from typing import Any

from ..domain import Task
from ..journal import ShadowResult
from ..summary import ResultSummary


def compare(rows: list[ShadowResult]) -> list[dict]:
    """One :func:`agreement` per (model, active version, shadow version, task), in that order."""
    groups: dict[tuple, list[ShadowResult]] = {}
    for r in rows:
        groups.setdefault((r.shadow_name, r.active_version, r.shadow_version, r.task), []).append(r)
    return [agreement(k[0], k[1], k[2], k[3], g) for k, g in sorted(groups.items())]


def _withheld(summary: ResultSummary, key: str) -> bool:
    """A result the quality gate withheld (no number to compare); also a summary without the number."""
    return summary.measurable is False or getattr(summary, key) is None


def agreement(name: str, active_version: str, shadow_version: str, task: str, rows: list[ShadowResult]) -> dict:
    """Paired agreement of shadow vs active on the same series (shadow minus active).

    Withheld results (the quality gate's ``measurable`` False: no number) are counted, not compared:
    ``withheld`` gives how many series the active version withheld, the shadow withheld, and both
    (``active_only`` / ``shadow_only``: one version measured what the other withheld). Every
    agreement figure (differences, exact count, grade and flag agreement) is over the
    ``measurable_pairs`` series that both versions measured.
    """
    import numpy as np

    ok = [r for r in rows if not r.error and r.shadow_summary and r.active_summary]
    paired = [(r.active_summary, r.shadow_summary) for r in ok]
    key = "wml_ml" if task == Task.WML.value else "cmb_count"
    wa = [_withheld(p[0], key) for p in paired]
    ws = [_withheld(p[1], key) for p in paired]
    pairs = [p for p, a, s in zip(paired, wa, ws) if not a and not s]
    withheld = {"active": sum(wa), "shadow": sum(ws), "both": sum(a and s for a, s in zip(wa, ws)),
                "active_only": sum(a and not s for a, s in zip(wa, ws)),
                "shadow_only": sum(s and not a for a, s in zip(wa, ws))}
    out: dict[str, Any] = {"name": name, "task": task, "active_version": active_version,
                           "shadow_version": shadow_version, "series": len(ok), "errors": len(rows) - len(ok),
                           "series_uids": sorted({r.series_uid for r in ok}),
                           "withheld": withheld, "measurable_pairs": len(pairs),
                           "agreement_over": "series measurable by both versions (withheld results excluded)"}
    a = np.array([getattr(p[0], key) for p in pairs], float)
    s = np.array([getattr(p[1], key) for p in pairs], float)
    d = s - a
    out[key] = _diff_stats(d, a, s)
    if task != Task.WML.value:
        out["cmb_count"]["exact_agreement_percent"] = round(100.0 * float(np.mean(d == 0)), 1) if len(d) else None
        ga = [p[0].cmb_grade for p in pairs]
        gs = [p[1].cmb_grade for p in pairs]
        out["grade_agreement_percent"] = round(100.0 * sum(x == y for x, y in zip(ga, gs)) / len(ga), 1) if ga else None
    fa = [{f["rule_id"]: f.get("category") for f in p[0].flags} for p in pairs]
    fs = [{f["rule_id"]: f.get("category") for f in p[1].flags} for p in pairs]
    out["flag_agreement_percent"] = (round(100.0 * sum(x == y for x, y in zip(fa, fs)) / len(fa), 1) if fa else None)
    return out


def _diff_stats(d, a, s) -> dict:
    import numpy as np

    if len(d) == 0:
        return {"n": 0}
    sd = float(np.std(d, ddof=1)) if len(d) > 1 else 0.0
    mean = float(np.mean(d))
    return {"n": int(len(d)), "mean_active": float(np.mean(a)), "mean_shadow": float(np.mean(s)),
            "mean_difference": mean, "sd_difference": sd, "mean_abs_difference": float(np.mean(np.abs(d))),
            "max_abs_difference": float(np.max(np.abs(d))),
            "limits_of_agreement": [mean - 1.96 * sd, mean + 1.96 * sd]}


def format_comparison(c: dict) -> str:
    lines = [f"{c['name']}: shadow {c['shadow_version']} vs active {c['active_version']} ({c['task']}),"
             f" {c['series']} paired series" + (f", {c['errors']} shadow error(s)" if c["errors"] else "")]
    key = "wml_ml" if "wml_ml" in c else "cmb_count"
    st = c[key]
    unit = " mL" if key == "wml_ml" else ""
    w = c.get("withheld") or {}
    if w:
        lines.append(f"  withheld (not reliably measurable): active {w['active']}, shadow {w['shadow']},"
                     f" both {w['both']} (active only {w['active_only']}, shadow only {w['shadow_only']});"
                     f" agreement over the {c['measurable_pairs']} series measurable by both")
    if st.get("n"):
        lines.append(f"  {'volume' if key == 'wml_ml' else 'count'} difference (shadow - active): mean"
                     f" {st['mean_difference']:+.3f}{unit} (SD {st['sd_difference']:.3f}), mean abs"
                     f" {st['mean_abs_difference']:.3f}{unit}, max abs {st['max_abs_difference']:.3f}{unit};"
                     f" 95% limits of agreement {st['limits_of_agreement'][0]:+.3f} to {st['limits_of_agreement'][1]:+.3f}")
        if key == "cmb_count":
            lines.append(f"  exact count agreement {st['exact_agreement_percent']:.1f}%,"
                         f" burden grade agreement {c['grade_agreement_percent']:.1f}%")
        if c.get("flag_agreement_percent") is not None:
            lines.append(f"  flag agreement {c['flag_agreement_percent']:.1f}%")
    elif c["series"]:
        lines.append("  no series measurable by both versions yet")
    else:
        lines.append("  no paired results yet")
    return "\n".join(lines)

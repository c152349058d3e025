"""Write a validation's report: ``report.json`` (every figure), ``report.html`` and its PNG plots.

Plots are drawn with matplotlib on the Agg backend (no display needed): a Bland–Altman plot
(difference model − reference against the pair's mean, with the bias and the 95 % limits of
agreement) and a scatter of model against reference with the identity line.
"""
from __future__ import annotations

import html
import json
import math
from pathlib import Path

PLOTS = {"bland_altman": "bland_altman.png", "scatter": "scatter.png"}


def write(out_dir: Path, report: dict, cases: list[dict]) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    inc = [c for c in cases if c["status"] == "measured"]
    unit = "mL" if report["task"] == "wml" else "microbleeds"
    plots = {}
    if inc:
        plots["bland_altman"] = _bland_altman(out_dir / PLOTS["bland_altman"], inc, report["figures"], unit)
        plots["scatter"] = _scatter(out_dir / PLOTS["scatter"], inc, unit)
    report = dict(report, files={"json": str(out_dir / "report.json"), "html": str(out_dir / "report.html"),
                                 **{k: str(v) for k, v in plots.items()}})
    (out_dir / "report.json").write_text(json.dumps(dict(report, cases=cases), indent=2, default=_json))
    (out_dir / "report.html").write_text(_html(report, cases, plots), encoding="utf-8")
    return report


def _json(o):
    if hasattr(o, "item"):
        return o.item()
    return str(o)


# --------------------------------------------------------------------------- plots
def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _bland_altman(path: Path, cases: list[dict], figures: dict, unit: str) -> Path:
    plt = _pyplot()
    m = [c["model_value"] for c in cases]
    r = [c["reference_value"] for c in cases]
    mean = [(a + b) / 2 for a, b in zip(m, r)]
    diff = [a - b for a, b in zip(m, r)]
    ba = figures["primary"]["bland_altman"]
    fig, ax = plt.subplots(figsize=(6.4, 4.6), dpi=110)
    ax.scatter(mean, diff, s=22, alpha=0.8, color="#1f5f8b", edgecolors="none")
    ax.axhline(0, color="#999999", lw=0.8)
    ax.axhline(ba["bias"], color="#c0392b", lw=1.5, label=f"bias {ba['bias']:+.2f} {unit}")
    limits = [(y, lab) for y, lab in ((ba["loa_low"], "−1.96 SD"), (ba["loa_high"], "+1.96 SD")) if y is not None]
    for y, lab in limits:  # (none for a single case)
        ax.axhline(y, color="#c0392b", lw=1, ls="--")
        ax.annotate(f"{lab}: {y:+.2f}", xy=(1.0, y), xycoords=("axes fraction", "data"), xytext=(-4, 3),
                    textcoords="offset points", ha="right", fontsize=8, color="#c0392b")
    ys = diff + [y for y, _ in limits] + [0.0]
    pad = 0.18 * max(max(ys) - min(ys), 1e-6)
    ax.set_ylim(min(ys) - pad, max(ys) + pad)  # room for the labels above and below the limits
    ax.set_xlabel(f"mean of model and reference ({unit})")
    ax.set_ylabel(f"model − reference ({unit})")
    ax.set_title(f"Bland–Altman, n = {ba['n']}", fontsize=11)
    ax.legend(loc="best", fontsize=8, framealpha=0.8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _scatter(path: Path, cases: list[dict], unit: str) -> Path:
    plt = _pyplot()
    m = [c["model_value"] for c in cases]
    r = [c["reference_value"] for c in cases]
    hi = max(max(m), max(r), 1e-6) * 1.05
    fig, ax = plt.subplots(figsize=(5.2, 5.0), dpi=110)
    ax.plot([0, hi], [0, hi], color="#999999", lw=1, label="identity (model = reference)")
    ax.scatter(r, m, s=22, alpha=0.8, color="#1f5f8b", edgecolors="none")
    ax.set_xlim(0, hi)
    ax.set_ylim(0, hi)
    ax.set_aspect("equal")
    ax.set_xlabel(f"reference ({unit})")
    ax.set_ylabel(f"model ({unit})")
    ax.set_title(f"Model against reference, n = {len(m)}", fontsize=11)
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- html
def _f(v, nd=2, unit="") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v}{unit}"
    return f"{v:.{nd}f}{unit}"


def _e(v) -> str:
    return html.escape(str(v))


def _table(head: list[str], rows: list[list], cls: str = "") -> str:
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;color:#222;line-height:1.4}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#f3f3f3}.verdict{font-size:1.3em;padding:.6em 1em;display:inline-block;border-radius:4px}
.pass{background:#dff0d8;color:#2b5f2b}.fail{background:#f8d7da;color:#7a1f1f}.met{color:#2b5f2b}.unmet{color:#7a1f1f}
.small{font-size:.85em;color:#555}img{max-width:100%;border:1px solid #eee;margin-right:1em}
"""


def _html(report: dict, cases: list[dict], plots: dict) -> str:
    fig = report["figures"]
    task = report["task"]
    unit = " mL" if task == "wml" else ""
    q = fig["primary"]
    ba, icc, pr = q["bland_altman"], q["icc"], q["pearson"]
    verdict = "PASS" if report["passed"] else "FAIL"
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>svdmark validation {_e(report['model'])}"
             f" {_e(report['version'])}</title><style>{_CSS}</style></head><body>",
             f"<h1>Site validation: {_e(report['model'])} {_e(report['version'])}</h1>",
             f"<p class='verdict {'pass' if report['passed'] else 'fail'}'>Verdict: {verdict}</p>",
             _table(["", ""], [
                 ["model", f"{_e(report['model'])} {_e(report['version'])} ({_e(task)}), sha256 "
                           f"<code>{_e(report['sha256'])}</code>"],
                 ["quantity", _e(fig["quantity"])],
                 ["reference folder", f"<code>{_e(report['reference_dir'])}</code>"],
                 ["run", f"{_e(report['finished_at'])} by {_e(report['actor'])}, svdmark {_e(report['svdmark'])},"
                         f" {_e(report['seconds'])} s"],
                 ["intended use", "research and decision support; this report describes agreement with this site's"
                                  " reference, it does not recommend a treatment"],
             ])]
    # criteria
    rows = []
    for c in report["criteria"]:
        rows.append([_e(c["text"]), _e(c["source"]), _f(c["value"], 3),
                     f"<span class='{'met' if c['met'] else 'unmet'}'>{'met' if c['met'] else 'NOT met'}</span>"
                     + (f" <span class='small'>({_e(c['note'])})</span>" if c["note"] else "")])
    src = "the model's manifest ('validation' section)" if report["criteria_source"] == "manifest" else \
        "svdmark's defaults (the manifest has no 'validation' section)"
    parts += ["<h2>Acceptance criteria</h2>", f"<p>From {src}. The verdict is PASS only when every criterion is met;"
              " a criterion that cannot be evaluated is not met.</p>",
              _table(["criterion", "from", "measured", "result"], rows)]
    # counts
    inv, cnt = report["inventory"], fig["counts"]
    parts += ["<h2>Cases</h2>", _table(["", "n"], [
        ["image series found", inv["series"]],
        [f"series routed to the {task.upper()} task", inv["for_task"]],
        ["… with a reference (cases)", cnt["cases"]],
        ["… in the agreement figures (n)", f"<b>{cnt['included']}</b>"],
        ["… withheld by the quality gate (not measurable; excluded)", cnt["withheld"]],
        ["… failed (excluded; reason in the table below)", cnt["failed"]],
        [f"series routed to the {task.upper()} task without a reference (not run)", len(inv["no_reference"])],
        ["series routed to the other task", inv["other_task"]],
        ["series ignored by routing", len(inv["ignored"])],
        ["references whose images were not found", len(inv["reference_without_images"])],
        ["files neither image nor reference", len(inv["unusable_files"])],
    ])]
    if inv["reference_without_images"]:
        parts.append("<p class='small'>References without images: "
                     + ", ".join(f"<code>{_e(u)}</code>" for u in inv["reference_without_images"]) + "</p>")
    if inv["reference_problems"]:
        parts.append("<p class='small'>Reference problems: " + "; ".join(
            f"{_e(p['file'])}: {_e(p['reason'])}" for p in inv["reference_problems"]) + "</p>")
    # agreement
    parts += ["<h2>Agreement</h2>", _table(["figure", "value"], [
        ["n", ba["n"]],
        ["mean model / mean reference", f"{_f(q['mean_model'])}{unit} / {_f(q['mean_reference'])}{unit}"],
        ["bias (mean of model − reference), 95% CI",
         f"{_f(ba['bias'], 3)}{unit}" + (f" ({_f(ba['bias_ci95'][0], 3)} to {_f(ba['bias_ci95'][1], 3)})"
                                         if ba["bias_ci95"] else "")],
        ["SD of the differences", f"{_f(ba['sd'], 3)}{unit}"],
        ["95% limits of agreement (bias ± 1.96 SD)", f"{_f(ba['loa_low'], 3)} to {_f(ba['loa_high'], 3)}{unit}"],
        ["mean absolute error", f"{_f(q['mae'], 3)}{unit}"],
        ["ICC(2,1), two-way random, absolute agreement, single measurement; 95% CI",
         _f(icc["value"], 3) + (f" ({_f(icc['ci95'][0], 3)} to {_f(icc['ci95'][1], 3)})" if icc["ci95"] else "")],
        ["Pearson r (p)", f"{_f(pr['r'], 3)} ({_f(pr['p'], 4) if pr['p'] is not None else '–'})"],
        ["Dice (mask references; mean / median, n)",
         f"{_f(fig['dice']['mean'], 3)} / {_f(fig['dice']['median'], 3)} (n = {fig['dice']['n']})"],
        ["uncertainty interval coverage (reference inside the model's interval)",
         (f"{fig['intervals']['covered']} of {fig['intervals']['n_with_interval']}"
          f" ({_f(fig['intervals']['coverage'] * 100, 1)}%)") if fig["intervals"]["n_with_interval"]
         else "– (the model reports no intervals)"],
    ])]
    if plots:
        parts.append("<p>" + "".join(f"<img src='{_e(Path(p).name)}' alt='{_e(k)}'>" for k, p in plots.items())
                     + "</p>")
    if task == "wml":
        parts += ["<h3>Mean absolute error by reference volume</h3>", _table(
            ["reference volume (mL)", "n", "MAE (mL)", "bias (mL)"],
            [[_e(b["bin"]), b["n"], _f(b["mae"], 3), _f(b["bias"], 3)] for b in fig["mae_by_bin"]])]
    else:
        d, g = fig["detection"], fig["grades"]
        exact = "–" if g["exact_agreement"] is None else _f(g["exact_agreement"] * 100, 1) + "%"
        parts += ["<h3>Microbleed detection</h3>",
                  f"<p class='small'>{_e(d['matching'])}; cases whose reference has bleed locations"
                  " (SEG or points).</p>",
                  _table(["figure", "value"], [
                      ["scans", d["scans"]], ["reference microbleeds", d["reference_bleeds"]],
                      ["model microbleeds", d["model_bleeds"]], ["true positives", d["true_positives"]],
                      ["false negatives", d["false_negatives"]], ["false positives", d["false_positives"]],
                      ["sensitivity", _f(d["sensitivity"], 3)], ["precision", _f(d["precision"], 3)],
                      ["false positives per scan", _f(d["false_positives_per_scan"], 3)]]),
                  "<h3>Burden grade</h3>",
                  f"<p class='small'>Grades {_e(g['grades'])}. Linear-weighted Cohen's kappa"
                  f" {_f(g['kappa_linear'], 3)}; exact agreement {exact}"
                  f" (n = {g['n']}).</p>",
                  _table(["reference \\ model", "0", "1", "2", "3"],
                         [[f"<b>{i}</b>", *row] for i, row in enumerate(g["confusion"])])]
    # per case
    head = ["series UID", "reference", "status", "model", "reference value", "difference"]
    if task == "wml":
        head += ["bin", "Dice"]
    else:
        head += ["grade model/ref", "TP", "FP", "FN", "Dice"]
    head += ["interval", "note"]
    rows = []
    for c in cases:
        diff = (c["model_value"] - c["reference_value"]) if c["model_value"] is not None and \
            c["reference_value"] is not None else None
        row = [f"<code>{_e(c['series_uid'])}</code>", _e(c["reference_kind"]), _e(c["status"]),
               _f(c["model_value"], 3 if task == "wml" else 0), _f(c["reference_value"], 3 if task == "wml" else 0),
               _f(diff, 3 if task == "wml" else 0)]
        if task == "wml":
            from .agreement import volume_bin

            row += [_e(volume_bin(c["reference_value"])) if c["reference_value"] is not None else "–",
                    _f(c["dice"], 3)]
        else:
            row += [f"{_f(c['model_grade'])}/{_f(c['reference_grade'])}", _f(c["true_positives"]),
                    _f(c["false_positives"]), _f(c["false_negatives"]), _f(c["dice"], 3)]
        iv = c["interval"]
        row += [f"{_f(iv[0])}–{_f(iv[1])}" if iv else "–",
                _e("; ".join(x for x in [c["reason"], *c["warnings"]] if x))]
        rows.append(row)
    parts += ["<h2>Per case</h2>", _table(head, rows)]
    parts += ["<h2>Methods</h2><ul class='small'>",
              "<li>Difference = model − reference. Bland–Altman (1986): bias = mean difference (95% CI from the"
              " t distribution), limits of agreement = bias ± 1.96 SD.</li>",
              "<li>ICC(2,1) of Shrout &amp; Fleiss (1979) = ICC(A,1) of McGraw &amp; Wong (1996): two-way random"
              " effects, absolute agreement, single measurement, so a constant bias lowers it; 95% CI after"
              " McGraw &amp; Wong. Pearson r measures association only.</li>",
              "<li>WML reference from a SEG: mask voxels × physical voxel volume on the CT grid (a binary mask;"
              " the model's volume is partial-volume aware). Volume bins are by reference volume.</li>",
              "<li>Microbleeds from a SEG: each 26-connected component is one bleed. Matching: optimal"
              " one-to-one (the most pairs, then the least total distance), within max(5 mm, reference bleed"
              " diameter). Burden grade kappa: Cohen (1968), linear weights over grades 0–3.</li>",
              "<li>Withheld: the model's quality gate judged the input not measurable, so the service reports no"
              " number; such cases are counted above and excluded from every agreement figure, and their share"
              " (and that of failed cases) is a criterion of its own.</li>",
              "</ul></body></html>"]
    return "\n".join(parts)

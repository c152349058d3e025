"""`svdmark models`: list, inspect, install, verify, validate, activate, roll back, shadow and compare models.

Packaged models live in svdmark/data/models/<name>/<version>/ (package data); installed ones in
<data-dir>/models/<name>/<version>/. Which version is active (and which runs in
shadow) is kept in <data-dir>/models/state.json, which `svdmark serve` reads
before every job: an activation takes effect at the next job, without a restart,
and the job in hand finishes with its model. Every change is audited in the
journal (who, what, when, sha256).

`validate` runs a version (active or not) on a site's own labelled cases and writes an agreement
report with a pass/fail verdict (see svdmark.validation); `activate --require-validation` refuses a
version whose latest validation on this site did not pass.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .common import add_config_options, add_json_option, emit, fail, load_config, table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="model versions: list, install, verify, validate, activate, rollback, shadow, compare",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    msub = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    q = _leaf(msub, "list", "every model version, which is active and which is in shadow")
    q.set_defaults(func=run_list)

    q = _leaf(msub, "show", "one model: manifest, versions, activation history, recent changes")
    q.add_argument("name")
    q.add_argument("version", nargs="?", help="default: the active version")
    q.set_defaults(func=run_show)

    q = _leaf(msub, "install", "install a model version from a folder with manifest.json (checksum + self-test)")
    q.add_argument("path", type=Path, metavar="PATH", help="folder holding manifest.json and the model file")
    q.add_argument("--activate", action="store_true", help="activate it once installed")
    q.set_defaults(func=run_install)

    q = _leaf(msub, "verify", "check sha256 and run the self-test of every (or one) model version")
    q.add_argument("name", nargs="?")
    q.add_argument("version", nargs="?")
    q.set_defaults(func=run_verify)

    q = _leaf(msub, "validate", "agreement of a version with this site's labelled cases: report and pass/fail verdict")
    q.add_argument("name")
    q.add_argument("version")
    q.add_argument("--reference", type=Path, required=True, metavar="DIR",
                   help="the site's cases: DICOM images plus reference SEGs, points.csv/points.json "
                        "(microbleed centres, patient mm) or reference.csv (series_uid, wml_ml or cmb_count)")
    q.add_argument("--output", type=Path, metavar="REPORT_DIR",
                   help="where report.html, report.json and the plots go"
                        " (default: <data-dir>/validations/NAME-VERSION-TIME/)")
    q.set_defaults(func=run_validate)

    q = _leaf(msub, "activate", "make a version the active one (checksum + self-test first)")
    q.add_argument("name")
    q.add_argument("version")
    q.add_argument("--require-validation", action="store_true",
                   help="refuse unless the latest `models validate` of this version on this site passed")
    q.set_defaults(func=run_activate)

    q = _leaf(msub, "rollback", "re-activate the previously active version")
    q.add_argument("name")
    q.set_defaults(func=run_rollback)

    q = _leaf(msub, "shadow", "run a candidate version beside the active one on live traffic, sending nothing")
    q.add_argument("name")
    q.add_argument("version", nargs="?", help="the candidate version (omit with --off)")
    q.add_argument("--off", action="store_true", help="stop shadowing this model")
    q.set_defaults(func=run_shadow)

    q = _leaf(msub, "compare", "agreement of shadow results with the active model's (same series)")
    q.add_argument("name", nargs="?")
    q.add_argument("version", nargs="?", help="shadow version (default: the current shadow)")
    q.set_defaults(func=run_compare)


def _leaf(sub, name: str, help_: str) -> argparse.ArgumentParser:
    q = sub.add_parser(name, help=help_, description=help_)
    add_config_options(q)
    add_json_option(q)
    return q


def _lifecycle(args):
    from ..lifecycle import Lifecycle

    return Lifecycle(load_config(args))


def run_list(args) -> int:
    rows = _lifecycle(args).list()
    human = table(("NAME", "VERSION", "TASK", "STATE", "SOURCE", "SHA256", "PATH"),
                  [(r["name"], r["version"], r["task"], "active" if r["active"] else "shadow" if r["shadow"] else "",
                    r["source"], str(r["sha256"])[:12], r["path"]) for r in rows], empty="no models installed")
    human += "".join(f"\n{r['name']} {r['version']}: manifest unreadable: {r['error']}" for r in rows if r["error"])
    emit(args, rows, human)
    return 0


def run_show(args) -> int:
    info = _lifecycle(args).show(args.name, args.version)
    m = info["manifest"]
    lines = [f"{info['name']} {info['version']} ({info['source']})",
             f"  task {m.get('task')}, modality {m.get('modality')}, sha256 {m.get('sha256')}",
             f"  input: {m.get('input', {}).get('kind')}, file {m.get('file', 'model.onnx')}",
             f"  self-test: {json.dumps(m.get('self_test', {}).get('expect', {}))} on "
             f"{m.get('self_test', {}).get('generator', '-')}",
             f"  versions: {', '.join(info['versions'])}; active {info['active_version']};"
             f" shadow {info['shadow_version'] or '-'}; previously active: {', '.join(info['history']) or '-'}"]
    if m.get("training"):
        lines.append(f"  training: {json.dumps(m['training'])[:300]}")
    if m.get("limitations"):  # what the SR and the summary image say with every result of this version
        lines += ["  limitations (in every SR):"] + [f"    - {s}" for s in m["limitations"]]
    if info["recent_changes"]:
        lines.append("  recent changes:")
        for a in info["recent_changes"]:
            d = json.loads(a["detail"])
            when = a["at"]
            lines.append(f"    {when} {a['actor']:<10} {a['action']:<16} {d.get('version') or ''}"
                         f" {(d.get('sha256') or '')[:12]}" + (f" {d['verdict'].upper()}" if d.get("verdict") else ""))
    emit(args, info, "\n".join(lines))
    return 0


def run_install(args) -> int:
    if not args.path.exists():
        return fail(args, f"no such folder: {args.path}", 2)
    out = _lifecycle(args).install(args.path, activate=args.activate)
    if not out.get("installed"):
        act = out.get("activation")
        now = "" if not act else act.get("detail") or f"{out['name']} {out['version']} is now active " \
            f"(was {act.get('previous_version')})"
        emit(args, out, out["detail"] + (f"\n  {now}" if now else ""))
        return 0
    human = (f"installed {out['name']} {out['version']} (sha256 {out['sha256'][:12]}…)\n  {out['self_test']}\n"
             f"  active version of {out['name']}: "
             f"{out.get('activation', {}).get('version') or out['active_version']}")
    emit(args, out, human)
    return 0


def run_verify(args) -> int:
    rows = _lifecycle(args).verify(args.name, args.version)
    lines = []
    for r in rows:
        if r["ok"]:
            lines.append(f"ok      {r['name']} {r['version']}: sha256 {r['sha256'][:12]}…; {r['self_test']['text']}")
        else:
            lines.append(f"FAILED  {r['name']} {r['version']}: {r['error']}")
    emit(args, rows, "\n".join(lines) or "no models to verify")
    return 0 if rows and all(r["ok"] for r in rows) else 1


def run_validate(args) -> int:
    from ..validation import validate

    if not args.reference.is_dir():
        return fail(args, f"no such folder: {args.reference}", 2)
    say = (lambda s: print(s, file=sys.stderr, flush=True))
    out = validate(_lifecycle(args), args.name, args.version, args.reference, args.output, say=say)
    emit(args, out, format_validation(out))
    return 0 if out["passed"] else 1


def format_validation(r: dict) -> str:
    f = r["figures"]
    q, c = f["primary"], f["counts"]
    ba, icc = q["bland_altman"], q["icc"]
    unit = " mL" if r["task"] == "wml" else ""
    num = lambda v, nd=3: "-" if v is None else str(v) if isinstance(v, int) else f"{v:.{nd}f}"  # noqa: E731
    lines = [f"{r['model']} {r['version']} on {r['reference_dir']}: {r['verdict'].upper()}",
             f"  cases {c['cases']}: {c['included']} in the figures, {c['withheld']} withheld (not measurable),"
             f" {c['failed']} failed",
             f"  {f['quantity']}: bias {num(ba['bias'])}{unit}, 95% limits of agreement {num(ba['loa_low'])} to"
             f" {num(ba['loa_high'])}{unit}, MAE {num(q['mae'])}{unit}, ICC(2,1) {num(icc['value'])},"
             f" Pearson r {num(q['pearson']['r'])}"]
    if f["dice"]["n"]:
        lines.append(f"  Dice mean {num(f['dice']['mean'])} (n = {f['dice']['n']})")
    if r["task"] == "cmb":
        d, g = f["detection"], f["grades"]
        lines.append(f"  detection ({d['scans']} scans with locations): sensitivity {num(d['sensitivity'])},"
                     f" false positives per scan {num(d['false_positives_per_scan'])};"
                     f" burden grade kappa (linear) {num(g['kappa_linear'])}")
    if f["intervals"]["n_with_interval"]:
        lines.append(f"  interval coverage {f['intervals']['covered']}/{f['intervals']['n_with_interval']}")
    lines.append(f"  criteria ({r['criteria_source']}):")
    for k in r["criteria"]:
        lines.append(f"    {'met    ' if k['met'] else 'NOT met'} {k['text']}: {num(k['value'])}"
                     + (f" ({k['note']})" if k["note"] else ""))
    lines.append(f"  report: {r['files']['html']}")
    return "\n".join(lines)


def run_activate(args) -> int:
    out = _lifecycle(args).activate(args.name, args.version, require_validation=args.require_validation)
    human = out.get("detail") or (f"{out['name']} {out['version']} is now active (was {out['previous_version']});"
                                  " a running service uses it from its next job")
    emit(args, out, human)
    return 0


def run_rollback(args) -> int:
    out = _lifecycle(args).rollback(args.name)
    emit(args, out, f"{out['name']} rolled back to {out['version']} (was {out['previous_version']})")
    return 0


def run_shadow(args) -> int:
    if args.off == (args.version is not None):
        return fail(args, "give a VERSION, or --off", 2)
    out = _lifecycle(args).set_shadow(args.name, None if args.off else args.version)
    human = (f"shadow of {out['name']} off (was {out['previous_shadow']})" if args.off else
             f"{out['name']} {out['version']} now runs in shadow beside the active version; results are stored, "
             f"not sent. `svdmark models compare {out['name']}` reports agreement.")
    emit(args, out, human)
    return 0


def run_compare(args) -> int:
    from .agreement import compare, format_comparison

    rows = compare(_lifecycle(args).shadow_runs(args.name, args.version))
    emit(args, rows, "\n".join(format_comparison(c) for c in rows) or "no shadow results yet")
    return 0

"""`svdmark routing explain PATH`: which routing rule matched a series, or why it was ignored.

PATH is one DICOM file, a series folder, or any folder (each series in it is explained).
The series' first instance by SOP Instance UID is the header the service routes on.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import add_config_options, add_json_option, emit, load_config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("routing", help="explain routing decisions", description="Series routing rules.")
    rsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = rsub.add_parser("explain", help="which rule matched a series, or why it was ignored",
                        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("path", type=Path, metavar="PATH", help="a DICOM file or a folder")
    q.add_argument("--all-rules", action="store_true", help="evaluate every rule, not only up to the first match")
    q.add_argument("--routing-file", type=Path, help="routing table to use instead of the configured one")
    add_config_options(q)
    add_json_option(q)
    q.set_defaults(func=run_explain)


def run_explain(args: argparse.Namespace) -> int:
    import io

    import pydicom

    from .. import route
    from ..batch.discover import FileError, iter_sources

    if not args.path.exists():
        print(f"svdmark routing explain: error: no such file or folder: {args.path}", file=sys.stderr)
        return 2
    cfg = load_config(args)
    table = route.RoutingTable.load(args.routing_file or cfg.routing_file)
    series: dict[str, list[tuple[str, pydicom.Dataset, str]]] = {}
    problems: list[tuple[str, str]] = []
    for src in iter_sources([args.path]):
        if isinstance(src, FileError):
            problems.append((src.file, src.reason))
            continue
        try:
            data = src.read_bytes()
            ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        except Exception as exc:  # not DICOM, truncated header, ...
            problems.append((src.name, f"not readable as DICOM: {type(exc).__name__}: {exc}"))
            continue
        uid = str(ds.get("SeriesInstanceUID", "") or "")
        if not uid:
            problems.append((src.name, "no SeriesInstanceUID"))
            continue
        series.setdefault(uid, []).append((str(ds.get("SOPInstanceUID", "")), ds, src.name))
    out, lines = [], []
    for uid, items in series.items():
        items.sort(key=lambda t: t[0])
        sop, header, name = items[0]
        decision = route.decide(header, table)
        traces = route.explain(header, table, all_rules=args.all_rules)
        out.append({
            "series_uid": uid, "files": len(items), "header_file": name,
            "modality": str(header.get("Modality", "")), "series_description": str(header.get("SeriesDescription", "")),
            "decision": decision.kind.value, "rule_id": decision.rule_id, "reason": decision.reason,
            "rules": [{"rule_id": t.rule_id, "description": t.description, "matched": t.matched,
                       "outcome": t.outcome, "why": t.why} for t in traces],
        })
        verdict = ("IGNORED: " + decision.reason) if decision.kind.value == "ignored" else \
            f"{decision.kind.value.upper()} (rule {decision.rule_id}): {decision.reason}"
        lines.append(f"series {uid}  ({len(items)} file(s), header from {name})\n"
                     f"  {header.get('Modality', '')} \"{header.get('SeriesDescription', '')}\"\n"
                     f"  decision: {verdict}\n"
                     + "\n".join("    " + ln for ln in route.format_explanation(traces).splitlines()))
    for f, reason in problems:
        lines.append(f"skipped {f}: {reason}")
    if not series:
        print(f"svdmark routing explain: error: no DICOM series found in {args.path}"
              + (f" ({len(problems)} unreadable file(s))" if problems else ""), file=sys.stderr)
        return 1
    emit(args, {"series": out, "skipped": [{"file": f, "reason": r} for f, r in problems]}, "\n\n".join(lines))
    return 0

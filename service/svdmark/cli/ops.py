"""Operations: `echo`, `status`, `jobs`, `outbox`."""
from __future__ import annotations

import argparse
import json

from ..config import Destination
from ..domain import DeliveryState, JobState
from ..export import echo
from ..journal import Journal
from .common import add_config_options, add_json_option, emit, load_config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("echo", help="C-ECHO a DICOM peer", description="C-ECHO a DICOM peer: AET@HOST:PORT")
    p.add_argument("peer", metavar="AET@HOST:PORT")
    p.add_argument("--calling-ae", default="SVDMARK")
    add_json_option(p)
    p.set_defaults(func=run_echo)

    p = sub.add_parser("status", help="listener, queue depth, destinations",
                       description="Show the service's state from its journal and probe its peers.")
    add_config_options(p)
    add_json_option(p)
    p.set_defaults(func=run_status)

    p = sub.add_parser("jobs", help="list, show or retry analysis jobs", description="Analysis jobs.")
    jsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = _leaf(jsub, "list", "list recent jobs")
    q.add_argument("--state", choices=[s.value for s in JobState])
    q.set_defaults(func=run_jobs_list)
    q = _leaf(jsub, "show", "one job in full")
    q.add_argument("job_id", type=int)
    q.set_defaults(func=run_jobs_show)
    q = _leaf(jsub, "retry", "re-queue a failed job")
    q.add_argument("job_id", type=int)
    q.set_defaults(func=run_jobs_retry)

    p = sub.add_parser("outbox", help="list deliveries, resend dead letters", description="The result outbox.")
    osub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = _leaf(osub, "list", "list deliveries")
    q.add_argument("--state", choices=[s.value for s in DeliveryState])
    q.set_defaults(func=run_outbox_list)
    q = _leaf(osub, "resend", "put dead letters back in the queue")
    q.add_argument("ids", type=int, nargs="*", help="delivery ids (default: all dead letters)")
    q.set_defaults(func=run_outbox_resend)


def _leaf(sub: argparse._SubParsersAction, name: str, help_: str) -> argparse.ArgumentParser:
    q = sub.add_parser(name, help=help_, description=help_)
    add_config_options(q)
    add_json_option(q)
    return q


def _journal(args) -> Journal:
    cfg = load_config(args)
    if not cfg.journal_path.exists():
        from ..errors import ConfigError

        raise ConfigError(f"no journal at {cfg.journal_path}; is --data-dir right?")
    return Journal(cfg.journal_path)


def run_echo(args) -> int:
    dest = Destination.parse(args.peer)
    ok, detail = echo(dest.host, dest.port, dest.ae_title, args.calling_ae)
    emit(args, {"peer": dest.name, "ok": ok, "detail": detail}, f"{dest.name}: {'ok' if ok else 'FAILED'} ({detail})")
    return 0 if ok else 1


def run_status(args) -> int:
    cfg = load_config(args)
    journal = _journal(args)
    from ..service import RUNTIME_FILE

    runtime_file = cfg.data_dir / RUNTIME_FILE
    running = json.loads(runtime_file.read_text()) if runtime_file.exists() else {}
    host, port = running.get("host", cfg.host), int(running.get("port", cfg.port))
    ae_title = running.get("ae_title", cfg.ae_title)
    listener_ok, listener_detail = echo("127.0.0.1" if host in ("0.0.0.0", "", "::") else host, port,
                                       ae_title, "SVDMARK-STATUS", timeout=3)
    listener_ok = listener_ok or listener_detail == "association rejected"  # up, but our AE is not on its allow-list
    counts = journal.counts()
    destinations = [Destination.parse(d) for d in running["destinations"]] if "destinations" in running \
        else cfg.destinations
    dests = {d.name: echo(d.host, d.port, d.ae_title, ae_title, timeout=3)[0] for d in destinations}
    from ..lifecycle import Lifecycle

    models = [{k: m[k] for k in ("name", "version", "task", "sha256", "active", "shadow")}
              for m in Lifecycle(cfg).list() if m["active"] or m["shadow"]]
    data = {"listener": {"ae_title": ae_title, "port": port, "up": listener_ok, "detail": listener_detail},
            "queue_depth": counts["jobs"].get("pending", 0) + counts["jobs"].get("running", 0),
            "counts": counts, "models": models, "destinations_reachable": dests}
    lines = [f"listener {ae_title}:{port}: {'up' if listener_ok else 'DOWN'}",
             f"queue depth: {data['queue_depth']}",
             f"series: {counts['series']}", f"jobs: {counts['jobs']}", f"deliveries: {counts['deliveries']}"]
    lines += [f"model {m['name']} {m['version']} ({m['task']}): {'active' if m['active'] else 'shadow'}"
              for m in models]
    lines += [f"destination {k}: {'reachable' if v else 'UNREACHABLE'}" for k, v in dests.items()]
    emit(args, data, "\n".join(lines))
    return 0


def _rows(rows) -> list[dict]:
    return [dict(r) for r in rows]


def run_jobs_list(args) -> int:
    rows = _rows(_journal(args).jobs(JobState(args.state) if args.state else None))
    human = "\n".join(
        f"{r['id']:>5} {r['state']:<10} {r['routing'] or '-':<8} {r['series_uid']}  {r['detail'] or ''}" for r in rows
    ) or "no jobs"
    emit(args, rows, human)
    return 0


def run_jobs_show(args) -> int:
    rows = _rows(_journal(args).query("SELECT * FROM jobs WHERE id=?", (args.job_id,)))
    if not rows:
        print(f"svdmark jobs show: no job {args.job_id}")
        return 1
    row = rows[0]
    if row.get("summary"):
        row["summary"] = json.loads(row["summary"])
    emit(args, row, json.dumps(row, indent=2, default=str))
    return 0


def run_jobs_retry(args) -> int:
    ok = _journal(args).retry_job(args.job_id)
    print(f"job {args.job_id} re-queued" if ok else f"job {args.job_id} is not a failed job")
    return 0 if ok else 1


def run_outbox_list(args) -> int:
    rows = _rows(_journal(args).deliveries(DeliveryState(args.state) if args.state else None))
    human = "\n".join(
        f"{r['id']:>5} {r['state']:<10} tries={r['attempts']:<3} {r['destination']:<28} {r['sop_uid']} {r['last_error'] or ''}"
        for r in rows
    ) or "outbox empty"
    emit(args, rows, human)
    return 0


def run_outbox_resend(args) -> int:
    n = _journal(args).resend_dead(args.ids or None)
    print(f"{n} dead letter(s) re-queued")
    return 0

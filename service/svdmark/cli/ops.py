"""Operations: `echo`, `status`, `jobs`, `outbox`.

`status` exit codes (for monitoring scripts): 0 all well; 3 the listener does not answer;
4 a destination does not answer (the listener does); 5 the data directory is unhealthy
(journal not writable or unreadable, disk nearly full), listener and destinations fine.
"""
from __future__ import annotations

import argparse
import json

from .. import health
from ..config import Config, Destination
from ..domain import DeliveryState, JobState
from ..errors import ConfigError
from ..export import echo
from ..journal import Journal
from . import views
from .common import add_config_options, add_json_option, emit, fail, iso, load_config, open_journal, table

ADMIN_AE = "SVDMARK-ADMIN"  # calling AE of admin commands towards our own listener
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
EXIT_LISTENER_DOWN, EXIT_DESTINATION_UNREACHABLE, EXIT_UNHEALTHY = 3, 4, 5
CLOCK_OFFSET_NOTE_S = 1.0  # a host clock further off than this is named in `status` (harmless, but a sign of no NTP)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("echo", help="C-ECHO a DICOM peer", description=(
        "C-ECHO a DICOM peer: AET@HOST:PORT. Calling AE title (unless --calling-ae): towards our own listener "
        f"(the config's AE title), an entry of its allow_calling_ae admitted from this host, preferring {ADMIN_AE}; "
        "towards anything else, the service's AE title, as its deliveries call."))
    p.add_argument("peer", metavar="AET@HOST:PORT")
    p.add_argument("--calling-ae", help="our AE title for this association (default: see above)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")
    add_config_options(p)
    add_json_option(p)
    p.set_defaults(func=run_echo)

    p = sub.add_parser("status", help="listener, queue depth, destinations (exit 3: listener down, "
                                      "4: destination unreachable, 5: unhealthy)",
                       description="Show the service's state from its journal and probe its peers. " + __doc__)
    add_config_options(p)
    add_json_option(p)
    p.set_defaults(func=run_status)

    p = sub.add_parser("jobs", help="list, show, retry or re-analyse analysis jobs", description="Analysis jobs.")
    jsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = _leaf(jsub, "list", "list recent jobs, newest first")
    q.add_argument("--state", choices=[s.value for s in JobState])
    q.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    q.set_defaults(func=run_jobs_list)
    q = _leaf(jsub, "show", "one job in full")
    q.add_argument("job_id", type=int)
    q.set_defaults(func=run_jobs_show)
    q = _leaf(jsub, "retry", "re-queue a failed job")
    q.add_argument("job_id", type=int)
    q.set_defaults(func=run_jobs_retry)
    q = _leaf(jsub, "reanalyse", "analyse series again with the models active now (after a model change)")
    q.add_argument("series_uids", nargs="*", metavar="SERIES_UID", help="series to analyse again")
    q.add_argument("--analysed-with", metavar="NAME[:VERSION]",
                   help="every series whose latest analysis used this model (version)")
    q.add_argument("--reason", default="requested by an operator", help="recorded with each new job")
    q.set_defaults(func=run_jobs_reanalyse)

    p = sub.add_parser("outbox", help="list or show deliveries, resend dead letters", description="The result outbox.")
    osub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = _leaf(osub, "list", "list deliveries")
    q.add_argument("--state", choices=[s.value for s in DeliveryState])
    q.set_defaults(func=run_outbox_list)
    q = _leaf(osub, "show", "one delivery and every try of it (when, outcome, the destination's answer)")
    q.add_argument("delivery_id", type=int)
    q.set_defaults(func=run_outbox_show)
    q = _leaf(osub, "resend", "put dead letters back in the queue")
    q.add_argument("ids", type=int, nargs="*", help="delivery ids (default: all dead letters)")
    q.set_defaults(func=run_outbox_resend)


def _leaf(sub: argparse._SubParsersAction, name: str, help_: str) -> argparse.ArgumentParser:
    q = sub.add_parser(name, help=help_, description=help_)
    add_config_options(q)
    add_json_option(q)
    return q


def _journal(cfg: Config) -> Journal:
    return open_journal(cfg, "give the service's --data-dir, --journal or --config")


# ------------------------------------------------------------------ echo
def _admitted_locally(entry: str) -> str | None:
    """The AE title of an allow-list entry that admits a caller on this host, else None."""
    aet, _, host = entry.rpartition("@") if "@" in entry else (entry, "", "")
    return aet if not host or host.strip("[]") in LOCAL_HOSTS else None


def default_calling_ae(peer: Destination, cfg: Config) -> str:
    if peer.ae_title != cfg.ae_title:
        return cfg.ae_title
    local = [aet for aet in map(_admitted_locally, cfg.allow_calling_ae) if aet]
    if not cfg.allow_calling_ae or ADMIN_AE in local:
        return ADMIN_AE
    return local[0] if local else ADMIN_AE


def run_echo(args) -> int:
    cfg = load_config(args)
    dest = Destination.parse(args.peer)
    calling = args.calling_ae or default_calling_ae(dest, cfg)
    ok, detail = echo(dest.host, dest.port, dest.ae_title, calling, timeout=args.timeout)
    if detail == "association rejected":
        detail += f" (is {calling} on the peer's list of calling AE titles? --calling-ae chooses another)"
    emit(args, {"peer": dest.name, "calling_ae": calling, "ok": ok, "detail": detail},
         f"{dest.name}: {'ok' if ok else 'FAILED'} ({detail}; calling AE {calling})")
    return 0 if ok else 1


# ------------------------------------------------------------------ status
def _running(cfg: Config) -> dict:
    from ..service import RUNTIME_FILE

    path = cfg.data_dir / RUNTIME_FILE
    try:
        return json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        return {}


def run_status(args) -> int:
    cfg = load_config(args)
    journal = _journal(cfg)
    running = _running(cfg)
    host, port = running.get("host", cfg.host), int(running.get("port", cfg.port))
    ae_title = running.get("ae_title", cfg.ae_title)
    me = Destination(ae_title, "127.0.0.1" if host in ("0.0.0.0", "", "::") else host, port)
    up, detail = echo(me.host, me.port, me.ae_title, default_calling_ae(me, cfg), timeout=3)
    up = up or detail == "association rejected"  # it answered; our AE is just not on its allow-list
    healthy, report = health.check(cfg.journal_url, cfg.spool_dir, lambda: up)
    counts = journal.counts()
    destinations = [Destination.parse(d) for d in running["destinations"] if not d.startswith("stow:")] \
        if "destinations" in running else [d for d in cfg.destinations if isinstance(d, Destination)]  # C-STORE ones
    probes = []
    for d in destinations:
        ok, why = echo(d.host, d.port, d.ae_title, ae_title, timeout=3)
        probes.append({"name": d.name, "reachable": ok, "detail": why})
    problems = {k: v for k, v in report.get("problems", {}).items()}
    models = _models_in_use(cfg, problems)
    if not report.get("journal_writable", True):
        problems["journal"] = report.get("error", "not writable")
    data = {
        "listener": {"ae_title": ae_title, "host": host, "port": port, "up": up, "detail": detail,
                     "pid": running.get("pid"), "started_at": iso(running.get("started_at"))},
        "queue_depth": counts["jobs"].get("pending", 0) + counts["jobs"].get("running", 0),
        "dead_letters": counts["deliveries"].get("dead", 0),
        "counts": counts,
        "models": models,
        "destinations_reachable": {p["name"]: p["reachable"] for p in probes},
        "destinations": probes,
        "problems": problems,
        "processes": _processes(journal, cfg),
    }
    if not up:
        code, verdict = EXIT_LISTENER_DOWN, "listener DOWN"
    elif any(not p["reachable"] for p in probes):
        code, verdict = EXIT_DESTINATION_UNREACHABLE, "destination UNREACHABLE"
    elif problems:
        code, verdict = EXIT_UNHEALTHY, "UNHEALTHY"
    else:
        code, verdict = 0, "ok"
    data["status"], data["exit_code"] = verdict, code

    def _states(d: dict) -> str:
        return ", ".join(f"{n} {k}" for k, n in sorted(d.items())) or "none"

    lines = [f"status: {verdict}",
             f"listener {ae_title} on {host}:{port}: {'up' if up else 'DOWN'} ({detail})"
             + (f", {'PID' if up else 'last started as PID'} {running['pid']} at {iso(running.get('started_at'))}"
                if running.get("pid") else ""),
             f"queue depth: {data['queue_depth']} job(s) waiting or running",
             f"series: {_states(counts['series'])}",
             f"jobs: {_states(counts['jobs'])}",
             f"deliveries: {_states(counts['deliveries'])}"]
    lines += [f"model {m['name']} {m['version']} ({m['task']}): {'active' if m['active'] else 'shadow'}"
              + ("" if m["verified"] else ", NOT USABLE (see its problem below)")
              for m in models] or ["models: NONE active (analysis fails until one is installed)"]
    lines += [f"destination {p['name']}: {'reachable' if p['reachable'] else 'UNREACHABLE'} ({p['detail']})"
              for p in probes] or ["destinations: none configured"]
    lines += [f"problem {k}: {v}" for k, v in problems.items()]
    if data["processes"]:
        lines += ["processes (every svdmark process using this journal):",
                  *table(("ID", "ROLES", "HOST", "PID", "HEARTBEAT", "CURRENT JOB", "STATE"),
                         [(p["id"], ",".join(p["roles"]), p["host"], p["pid"], p["heartbeat_at"],
                           p["current_job"] or "", "live" if p["live"] else f"silent {p['silent_s']:.0f} s")
                          for p in data["processes"]], "").splitlines()]
        lines += [f"clock of {p['host']} is {p['clock_offset_s']:+.1f} s off the database server's (svdmark times "
                  "leases and timers on the server's clock; check the host's NTP)"
                  for p in data["processes"] if p["live"] and abs(p["clock_offset_s"] or 0) > CLOCK_OFFSET_NOTE_S]
    emit(args, data, "\n".join(lines))
    return code


def _models_in_use(cfg: Config, problems: dict) -> list[dict]:
    """The active and shadow model versions (``Lifecycle.in_use``); one that would not load is a problem (status
    UNHEALTHY), not only a failed job later."""
    from ..lifecycle import Lifecycle

    models, found = Lifecycle(cfg).in_use()
    problems.update(found)
    return models


def _processes(journal: Journal, cfg: Config) -> list[dict]:
    """Every process in the journal's process table; live when heard from within three heartbeats."""
    now = journal.now()
    return [{"id": p.id, "roles": list(p.roles), "host": p.host, "pid": p.pid, "started_at": iso(p.started_at),
             "heartbeat_at": iso(p.heartbeat_at), "silent_s": round(now - p.heartbeat_at, 1),
             "live": now - p.heartbeat_at <= 3 * cfg.heartbeat_seconds, "current_job": p.current_job,
             "open_series": len(p.open_series), "clock_offset_s": (p.detail or {}).get("clock_offset_s"),
             **({"port": p.detail["port"]} if p.detail and "port" in p.detail else {})}
            for p in journal.processes()]


# ------------------------------------------------------------------ jobs
JOB_COLUMNS = ("ID", "RECEIVED", "MOD", "SERIES DESCRIPTION", "ACCESSION", "STATE", "RESULT", "REASON")


def run_jobs_list(args) -> int:
    journal = _journal(load_config(args))
    if args.limit < 1:
        raise ConfigError(f"--limit must be at least 1, not {args.limit}")
    rows = views.jobs(journal, journal.job_records(JobState(args.state) if args.state else None, limit=args.limit),
                      full=args.json)
    human = table(JOB_COLUMNS, [(j["id"], j["received_at"], j["modality"], j["series_description"],
                                 j["accession_number"], j["state"], j["result"], j["detail"]) for j in rows],
                  empty="no jobs" + (f" in state {args.state}" if args.state else ""))
    emit(args, rows, human)
    return 0


def run_jobs_show(args) -> int:
    journal = _journal(load_config(args))
    record = journal.job(args.job_id)
    if record is None:
        return fail(args, f"no job {args.job_id}")
    job = views.jobs(journal, [record], full=True)[0]
    summary = job["summary"] or {}
    lines = [f"{k}: {'-' if v is None else v}" for k, v in job.items() if k != "summary"]
    lines += [f"summary.{k}: {json.dumps(v) if isinstance(v, (dict, list)) else v}" for k, v in summary.items()]
    emit(args, job, "\n".join(lines))
    return 0


def run_jobs_retry(args) -> int:
    journal = _journal(load_config(args))
    record = journal.job(args.job_id)
    if record is None:
        return fail(args, f"no job {args.job_id}")
    if not journal.retry_job(args.job_id):
        if record.state.value == "failed" and journal.images_purged(record.series_uid, record.generation):
            return fail(args, f"job {args.job_id}: the series' images were purged (svdmark purge) or sent again "
                              "under another series; send the series again to analyse it")
        series = journal.series_row(record.series_uid)
        if record.state.value == "failed" and series is not None and series.generation != record.generation:
            return fail(args, f"job {args.job_id}: the series has received more images since (generation "
                              f"{series.generation}, this job's {record.generation}), which are analysed on their own; "
                              "svdmark jobs reanalyse runs the series again")
        return fail(args, f"job {args.job_id} is {record.state.value}, not failed; only failed jobs are re-queued")
    emit(args, {"job_id": args.job_id, "requeued": True}, f"job {args.job_id} re-queued")
    return 0


def run_jobs_reanalyse(args) -> int:
    """Queue new analyses; results a destination already holds are superseded by the new ones and
    rejected there with an IOCM note (as for a late instance)."""
    journal = _journal(load_config(args))
    uids = list(args.series_uids)
    if args.analysed_with:
        name, _, version = args.analysed_with.partition(":")
        uids += [u for u in journal.series_analysed_with(name, version or None) if u not in uids]
    if not uids:
        return fail(args, "name series UIDs or --analysed-with NAME[:VERSION] (no series matched)")
    rows = []
    for uid in uids:
        outcome = journal.reanalyse(uid, args.reason)
        rows.append({"series_uid": uid, "job_id": outcome if isinstance(outcome, int) else None,
                     "queued": isinstance(outcome, int), "reason": None if isinstance(outcome, int) else outcome})
    human = "\n".join(f"series {r['series_uid']}: " + (f"job {r['job_id']} queued" if r["queued"]
                                                         else f"not queued: {r['reason']}") for r in rows)
    emit(args, rows, human)
    return 0 if all(r["queued"] for r in rows) else 1


# ------------------------------------------------------------------ outbox
OUTBOX_COLUMNS = ("ID", "DESTINATION", "STATE", "TRIES", "KIND", "MOD", "SERIES DESCRIPTION", "ACCESSION",
                  "CREATED", "LAST ERROR")


def run_outbox_list(args) -> int:
    journal = _journal(load_config(args))
    rows = views.deliveries(journal, journal.deliveries(DeliveryState(args.state) if args.state else None))
    human = table(OUTBOX_COLUMNS, [(d["id"], d["destination"], d["state"], d["attempts"], d["kind"], d["modality"],
                                    d["series_description"], d["accession_number"], d["created_at"],
                                    d["last_error"]) for d in rows],
                  empty="outbox empty" + (f" (no {args.state} deliveries)" if args.state else ""))
    emit(args, rows, human)
    return 0


def run_outbox_show(args) -> int:
    journal = _journal(load_config(args))
    rows = views.deliveries(journal, journal.deliveries(delivery_id=args.delivery_id))
    if not rows:
        return fail(args, f"no delivery {args.delivery_id}")
    delivery = rows[0]
    delivery["tries"] = [{"at": iso(t["at"]), "outcome": t["outcome"], "detail": t["detail"] or None}
                         for t in journal.delivery_attempts(args.delivery_id)]
    lines = [f"{k}: {'-' if v is None else v}" for k, v in delivery.items() if k != "tries"]
    lines += [f"try {i}: {t['at']}  {t['outcome']}" + (f"  {t['detail']}" if t["detail"] else "")
              for i, t in enumerate(delivery["tries"], 1)] or ["tries: none yet"]
    emit(args, delivery, "\n".join(lines))
    return 0


def run_outbox_resend(args) -> int:
    journal = _journal(load_config(args))
    if args.ids:
        known = journal.delivery_states(args.ids)
        missing = [i for i in args.ids if i not in known]
        if missing:
            return fail(args, f"no delivery {', '.join(map(str, missing))}")
        not_dead = [f"{i} ({known[i].value})" for i in args.ids if known[i] is not DeliveryState.DEAD]
        if not_dead:
            return fail(args, f"only dead letters are resent; not dead: {', '.join(not_dead)}")
    n = journal.resend_dead(args.ids or None)
    emit(args, {"requeued": n, "ids": args.ids or None}, f"{n} dead letter(s) re-queued")
    return 0

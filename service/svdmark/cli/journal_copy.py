"""`svdmark journal copy`: move a site's journal to another engine (SQLite → PostgreSQL when it outgrows one
machine), keeping its history: the instances the spool holds (and duplicate checks consult), analyses, results,
deliveries, shadow runs and the audit trail. docs/scaling.md §4 gives the whole procedure."""
from __future__ import annotations

import argparse

from ..journal import COPIED_TABLES, CopyRefused, Journal
from ..journal_engine import Engine, EngineError
from ..lifecycle import actor
from .common import add_config_options, add_json_option, emit, fail, load_config, open_journal, table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("journal", help="copy the journal to another engine",
                       description="The journal itself (its engine and location).")
    cmds = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    q = cmds.add_parser("copy", help="copy every row into a new, empty journal (e.g. SQLite to PostgreSQL)",
                        description=(
                            "Copy every row of the journal (--journal / --data-dir, as for serve) into TARGET, a new "
                            "empty journal: sqlite:///PATH or postgresql://USER@HOST:PORT/DB. Stop every svdmark "
                            "process of the source first; the copy is refused while one heartbeats into it. It runs "
                            "in one transaction on the target (all or nothing) and leaves the source untouched "
                            "except for a schema upgrade, which any newer svdmark would also make. Then start the "
                            "processes with --journal TARGET (and --spool, if the spool moved)."))
    q.add_argument("target", metavar="TARGET", help="the new journal's URL")
    q.add_argument("--rebase-spool", metavar="OLD=NEW",
                   help="the spool moved from OLD to NEW (a shared filesystem): rewrite the stored paths under OLD")
    add_config_options(q)
    add_json_option(q)
    q.set_defaults(func=run_copy)


def run_copy(args) -> int:
    cfg = load_config(args)
    rebase = None
    if args.rebase_spool:
        old, sep, new = args.rebase_spool.partition("=")
        if not (sep and old and new):
            return fail(args, f"--rebase-spool takes OLD=NEW, not {args.rebase_spool!r}")
        rebase = (old.rstrip("/") or "/", new.rstrip("/") or "/")
    try:
        same = Engine(args.target).describe() == Engine(cfg.journal_url).describe()
    except EngineError as exc:
        return fail(args, str(exc))
    if same:
        return fail(args, "the target is the source journal")
    source = open_journal(cfg, "name the journal to copy with --data-dir or --journal")
    target = Journal(args.target)
    try:
        copied = source.copy_into(target, live_within=3 * cfg.heartbeat_seconds, rebase_spool=rebase)
    except CopyRefused as exc:
        return fail(args, str(exc))
    finally:
        source.close()
    target.audit(actor(), "journal.copy", {"from": source.describe(), "rows": copied,
                                           "rebase_spool": list(rebase) if rebase else None})
    target.close()
    data = {"from": source.describe(), "to": target.describe(), "rows": copied}
    human = (f"copied {source.describe()} into {target.describe()}\n"
             + table(("table", "rows"), [(t, copied[t]) for t in COPIED_TABLES], "nothing to copy"))
    emit(args, data, human)
    return 0

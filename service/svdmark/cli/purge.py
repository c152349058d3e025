"""`svdmark purge`: the retention run (:mod:`svdmark.retention`) as an admin command, listed and audited."""
from __future__ import annotations

import argparse

from ..lifecycle import actor
from ..retention import purge
from ..spool import Spool
from .common import add_config_options, add_json_option, emit, fail, iso, load_config, open_journal, table

DAY = 86_400.0
COLUMNS = ("SERIES UID", "MODALITY", "INSTANCES", "MB", "LAST RECEIVED")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("purge", help="remove the received images of series done with for N days (retention)",
                       description=(
                           "Remove the received images (spool files and journal rows) of every series that is "
                           "analysed, has nothing queued or running, had no instance and no finished job in the last "
                           "N days, and has no result still waiting to be sent. Its results, their delivery history "
                           "and the audit trail stay. Afterwards `svdmark jobs reanalyse` refuses the series, and an "
                           "instance that arrives for it starts a new analysis beside the earlier results instead of "
                           "superseding them. Run it from a timer; each series removed is in the audit trail."))
    p.add_argument("--older-than-days", type=float, required=True, metavar="N",
                   help="series whose last instance and last finished job are older than N days (0: done now)")
    p.add_argument("--dry-run", action="store_true", help="list what would be removed; remove nothing")
    add_config_options(p)
    add_json_option(p)
    p.set_defaults(func=run_purge)


def run_purge(args) -> int:
    if not args.older_than_days >= 0:
        return fail(args, f"--older-than-days must be 0 or more, not {args.older_than_days}")
    cfg = load_config(args)
    journal = open_journal(cfg, "give the service's --data-dir, --journal or --config")
    try:
        cutoff = journal.now() - args.older_than_days * DAY
        done = journal.purgeable(cutoff) if args.dry_run else purge(journal, Spool(cfg.spool_dir), cutoff, actor())
    finally:
        journal.close()
    rows = [{"series_uid": p.series_uid, "study_uid": p.study_uid, "modality": p.modality,
             "instances": p.instances, "bytes": p.bytes, "last_received": iso(p.last_received)} for p in done]
    instances, size = sum(p.instances for p in done), sum(p.bytes for p in done)
    verb = "would remove" if args.dry_run else "removed"
    total = f"{verb} {instances} instances ({size / 1e6:.1f} MB) of {len(done)} series done with before {iso(cutoff)}"
    human = table(COLUMNS, [(r["series_uid"], r["modality"], r["instances"], f"{r['bytes'] / 1e6:.1f}",
                             r["last_received"]) for r in rows], empty="") + ("\n" if rows else "") + total
    emit(args, {"dry_run": args.dry_run, "cutoff": iso(cutoff), "series": rows, "instances": instances,
                "bytes": size}, human)
    return 0

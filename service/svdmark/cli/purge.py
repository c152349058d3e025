"""`svdmark purge`: the retention run (:mod:`svdmark.retention`) as an admin command, listed and audited."""
from __future__ import annotations

import argparse

from ..lifecycle import actor
from .. import retention
from ..spool import Spool
from .common import add_config_options, add_json_option, emit, fail, iso, load_config, open_journal, table

COLUMNS = ("SERIES UID", "MODALITY", "INSTANCES", "MB", "LAST RECEIVED")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("purge", help="remove the received images of series done with for N days, and the results "
                       "their destinations hold (retention)",
                       description=(
                           "Remove the received images (spool files and journal rows) of every series that is "
                           "analysed, has nothing queued or running, had no instance and no finished job in the last "
                           "N days, and has no result still waiting to be sent; then the files of those series' "
                           "results (SR, SEG, summary image, rejection notes) that every destination has received, or "
                           "that a newer result replaced before they were sent. A result that went dead keeps its "
                           "file for `outbox resend`, one meant for no destination stays. The "
                           "result rows, their UIDs and delivery history, and the audit trail stay. Afterwards "
                           "`svdmark jobs reanalyse` refuses the series, and an instance that arrives for it starts a "
                           "new analysis beside the earlier results instead of superseding them. Run it from a timer; "
                           "each removal is in the audit trail. Files in the spool that nothing refers to (left by "
                           "a killed write or a failed re-run) go too once they are a day old "
                           "(--orphans-older-than-hours)."))
    p.add_argument("--older-than-days", type=float, required=True, metavar="N",
                   help="series whose last instance and last finished job are older than N days (0: done now)")
    p.add_argument("--dry-run", action="store_true", help="list what would be removed; remove nothing")
    p.add_argument("--orphans-older-than-hours", type=float, default=retention.ORPHAN_AGE_SECONDS / 3600, metavar="H",
                   help="remove the spool files nothing refers to once they are H hours old (default 24: never one "
                        "whose journal row is being written; 0 only while no svdmark process runs)")
    p.add_argument("--keep-results", action="store_true",
                   help="remove only the received images; keep every produced object's file")
    add_config_options(p)
    add_json_option(p)
    p.set_defaults(func=run_purge)


def run_purge(args) -> int:
    if not args.older_than_days >= 0:
        return fail(args, f"--older-than-days must be 0 or more, not {args.older_than_days}")
    if not args.orphans_older_than_hours >= 0:
        return fail(args, f"--orphans-older-than-hours must be 0 or more, not {args.orphans_older_than_hours}")
    cfg = load_config(args)
    journal = open_journal(cfg, "give the service's --data-dir, --journal or --config")
    try:
        cutoff = retention.cutoff(journal, args.older_than_days)
        failed = {}
        if args.dry_run:
            done = journal.purgeable(cutoff)
            # the series this run would purge count as purged: what the run would remove of their results too
            results = {} if args.keep_results else journal.purgeable_results(as_if_purged={p.series_uid for p in done})
        else:
            ran = retention.run(journal, Spool(cfg.spool_dir), cutoff, actor(), keep_results=args.keep_results)
            done, results, failed = ran.series, ran.results, ran.failed
        orphans = retention.remove_orphans(journal, Spool(cfg.spool_dir), args.orphans_older_than_hours * 3600,
                                           dry_run=args.dry_run)
    finally:
        journal.close()
    rows = [{"series_uid": p.series_uid, "study_uid": p.study_uid, "modality": p.modality,
             "instances": p.instances, "bytes": p.bytes, "last_received": iso(p.last_received)} for p in done]
    instances, size = sum(p.instances for p in done), sum(p.bytes for p in done)
    verb = "would remove" if args.dry_run else "removed"
    total = f"{verb} {instances} instances ({size / 1e6:.1f} MB) of {len(done)} series done with before {iso(cutoff)}"
    if not args.keep_results:
        total += (f"; {verb} the files of {sum(results.values())} delivered (or superseded) results of "
                  f"{len(results)} series")
    total += (f"; {verb} {len(orphans.removed)} spool files that nothing refers to "
              f"({args.orphans_older_than_hours:g} hours old or more)")
    if orphans.failed:
        total += "\n" + "\n".join(f"could not remove {path}: {why}" for path, why in sorted(orphans.failed.items()))
    if failed:
        total += "\n" + "\n".join(f"could not remove the files of series {uid}: {why}"
                                  for uid, why in sorted(failed.items()))
    human = table(COLUMNS, [(r["series_uid"], r["modality"], r["instances"], f"{r['bytes'] / 1e6:.1f}",
                             r["last_received"]) for r in rows], empty="") + ("\n" if rows else "") + total
    emit(args, {"dry_run": args.dry_run, "cutoff": iso(cutoff), "series": rows, "instances": instances,
                "bytes": size, "results": None if args.keep_results else {
                    "files": sum(results.values()), "series": [{"series_uid": k, "files": v}
                                                               for k, v in sorted(results.items())]},
                "orphan_files": len(orphans.removed),
                "orphan_files_failed": [{"path": str(p), "reason": why} for p, why in sorted(orphans.failed.items())],
                "failed": [{"series_uid": k, "reason": v} for k, v in sorted(failed.items())]}, human)
    return 1 if failed or orphans.failed else 0


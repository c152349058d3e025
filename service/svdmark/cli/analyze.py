"""`svdmark analyze`: run the service's analysis over folders and zip files of DICOM.

Every series found is routed (NCCT → WML, SWI → microbleeds, anything else is
listed as ignored with the reason), analysed with the same pipeline and models
as `svdmark serve`, and its SR, SEG and summary image are written to
OUTPUT/dicom/<study UID>/<series UID>/{sr,seg,summary}.dcm.

Tables (CSV and Parquet) in OUTPUT, column names valid in R, Stata and SAS:
  results.*  one row per series: UIDs, patient pseudonym (keyed hash, never the ID),
             modality, study date, scanner manufacturer and model, kernel, slice
             thickness, age, sex, routing decision or ignore reason, svdmark, model
             and rule set versions, model sha256, WML mL, CMB count and grade, one
             typed column per flag value, quality gate, seconds
  errors.*   every file that could not be used (file, series if known, reason),
             and every series that could not be analysed
  notes.*    warnings and quality-gate reasons, one per row (series_uid, kind, text)
dictionary.csv: every column's name, type, unit and meaning; rules.json: the flag
rules' constants (cut-points, published odds ratios), once rather than on every row.

Dates: --shift-dates moves each patient's study date in the tables by the same keyed
offset (-365..365 days, never 0; from the pseudonym key), keeping intervals between a
patient's studies; a series without a Patient ID has no date in them. The DICOM
results under OUTPUT/dicom/ are for a viewer or PACS and keep the study's own header
(names, IDs, dates): share results.*, notes.*, dictionary.csv and rules.json, not that
folder. errors.*, run.json and the run's state name the input files as given, so that
you can find them; hospital exports often name folders after the patient: keep those
with the archive.

Re-running the same command resumes: series already analysed from the same files
(their bytes) with the same model (version and sha256), rule set and flag and
incomplete-series settings are not analysed again. Ctrl-C is safe; re-run to finish.

Models: the same as `svdmark serve` with the same --data-dir / --config (packaged
models, plus those installed and activated with `svdmark models`).

Pseudonym key: --key-file, else $SVDMARK_PSEUDONYM_KEY, else a key generated once
and kept in OUTPUT/.pseudonym.key (keep it to link pseudonyms across runs).

Queue instead of analysing here (--enqueue, with --journal postgresql://… or
$SVDMARK_JOURNAL): the same discovery, then every instance goes into the shared spool
(--spool; hard-linked where it is on the same filesystem, else copied) and the journal
as the receiver keeps it, and each whole series is queued as a job. Workers on any
number of hosts analyse them:  svdmark serve --journal URL --spool PATH --roles work
and the tables come from the journal:  svdmark results export --journal URL -o FILE
(its pseudonym key: --key-file, else $SVDMARK_PSEUDONYM_KEY, else one under its
--data-dir; give it --key-file OUTPUT/.pseudonym.key for this run's key). OUTPUT
gets errors.* and enqueue.json. Re-running queues only what is new; Ctrl-C is safe.

Exit status: 0 the run completed and analysed at least one series (unusable files
and ignored series are listed, not fatal), or with --enqueue has at least one series
queued or analysed; 1 nothing was analysed (no DICOM image series found, or every
series ignored or failed), interrupted, a series failed for lack of a working model
or an internal error, or (--enqueue) a series could not be queued; 2 usage error.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .common import add_config_options, add_json_option, emit, load_config

if TYPE_CHECKING:  # pragma: no cover
    from ..config import Config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="analyse folders or zip files of DICOM into a results table",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="folders (searched recursively) or zip files")
    p.add_argument("--output", "-o", type=Path, required=True, metavar="DIR", help="where outputs and tables go")
    p.add_argument("--workers", type=_positive, default=1, metavar="N",
                   help="series analysed in parallel, one process each (default 1; each needs ~1-2 GB)")
    p.add_argument("--key-file", type=Path, metavar="FILE", help="pseudonymisation key (HMAC-SHA256 of PatientID)")
    p.add_argument("--force", action="store_true", help="analyse every series again, even if already done")
    p.add_argument("--shift-dates", action="store_true",
                   help="shift the tables' study dates per patient by a keyed offset (-365..365 days; default: "
                        "true dates); OUTPUT/dicom/ keeps the study's own header")
    p.add_argument("--enqueue", action="store_true",
                   help="queue the series on the shared journal (--journal) for `svdmark serve --roles work` "
                        "processes instead of analysing them here")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    add_config_options(p)
    add_json_option(p)
    p.set_defaults(func=run)


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


def run(args: argparse.Namespace) -> int:
    missing = [str(p) for p in args.paths if not p.exists()]
    if missing:
        print(f"svdmark analyze: error: no such file or folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    if args.output.exists() and not args.output.is_dir():
        print(f"svdmark analyze: error: --output {args.output} exists and is not a folder", file=sys.stderr)
        return 2
    inputs = [p for p in args.paths if p.is_dir() and p.resolve() == args.output.resolve()]
    if inputs:  # its tables, state and DICOM outputs would be read as inputs by the next run
        print(f"svdmark analyze: error: --output {args.output} is also an input folder; write the results to "
              f"another folder (a folder inside it, such as {args.output / 'svdmark'}, is skipped when read)",
              file=sys.stderr)
        return 2
    import signal

    from .. import logs
    from ..batch.run import Runner

    def _terminate(signum, frame):  # a batch scheduler's SIGTERM is an interrupt too
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    logs.setup("ERROR")  # the progress bar and the tables say what happened
    cfg = load_config(args)
    if args.enqueue:
        return enqueue(args, cfg)
    runner = Runner(cfg, args.output, workers=args.workers, key_file=args.key_file,
                    progress=not args.quiet and not args.json, force=args.force, shift_dates=args.shift_dates)
    try:
        report = runner.run(args.paths)
    except KeyboardInterrupt:
        print("\nsvdmark analyze: interrupted before any series was analysed; run the command again",
              file=sys.stderr)
        return 1
    except OSError as exc:  # output folder not writable, disk full, ...
        print(f"svdmark analyze: error: {exc.filename or args.output}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    c = report.counts
    if report.interrupted:
        human = (f"svdmark analyze: interrupted after {c[ 'analysed']} analysed series; {c['pending']} not done yet."
                 f" Run the same command again to finish (finished series are kept).")
    else:
        dups = f", {c['duplicates']} duplicate instance(s) skipped" if c.get("duplicates") else ""
        human = (f"{c['series']} series: {c['analysed']} analysed ({c['reused']} from an earlier run), "
                 f"{c['ignored']} ignored, {c['failed']} failed; {c['file_errors']} of {c['files']} file(s) "
                 f"not usable{dups}\n"
                 f"results: {args.output / 'results.csv'} (and .parquet; columns in dictionary.csv)\n"
                 f"errors:  {args.output / 'errors.csv'} (and .parquet)")
        fails = [e for e in report.errors if e["reason"].startswith("series not analysed")]
        for e in fails[:10]:
            human += f"\nfailed: {e['file']}: series {e['series_uid']}: {e['reason']}"
        if len(fails) > 10:
            human += f"\n... and {len(fails) - 10} more in errors.csv"
    if report.interrupted:
        print(human, file=sys.stderr)
        if args.json:
            emit(args, report.as_dict(), "")
        return 1
    emit(args, report.as_dict(), human)
    if report.nothing_analysed:
        where = ", ".join(str(p) for p in args.paths)
        if not c["series"]:
            why = (f"no DICOM image series found in {where} ({c['files']} file(s) examined, "
                   f"{c['file_errors']} not usable: see errors.csv)")
        else:
            why = f"none of the {c['series']} series found was analysed ({c['ignored']} ignored, {c['failed']} failed)"
        print(f"svdmark analyze: error: nothing analysed: {why}", file=sys.stderr)
        return 1
    return 1 if report.internal_failures else 0


# where each in-process option goes when the work is queued instead
_NOT_WITH_ENQUEUE = {"workers": "start more `svdmark serve --roles work` processes",
                     "force": "`svdmark jobs reanalyse` queues analysed series again",
                     "shift_dates": "give it to `svdmark results export`"}


def enqueue(args: argparse.Namespace, cfg: Config) -> int:
    """``--enqueue``: record and queue every series on the shared journal (:mod:`svdmark.enqueue`)."""
    from ..enqueue import Enqueuer, next_steps
    from ..journal_engine import redact
    from .common import open_journal

    if cfg.journal is None:
        print("svdmark analyze: error: --enqueue needs the shared journal: --journal postgresql://USER@HOST/DB "
              "(or $SVDMARK_JOURNAL, or [storage] journal in the configuration file)", file=sys.stderr)
        return 2
    wrong = [k for k in _NOT_WITH_ENQUEUE if getattr(args, k) not in (None, False, 1)]
    if wrong:
        flag = "--" + wrong[0].replace("_", "-")
        print(f"svdmark analyze: error: {flag} does not apply with --enqueue: {_NOT_WITH_ENQUEUE[wrong[0]]}",
              file=sys.stderr)
        return 2
    journal = open_journal(cfg, "check --journal")
    try:
        report = Enqueuer(journal, cfg.spool_dir, args.output, key_file=args.key_file,
                          progress=not args.quiet and not args.json).run(args.paths)
    except KeyboardInterrupt:
        print("\nsvdmark analyze: interrupted before any series was queued; run the command again", file=sys.stderr)
        return 1
    finally:
        journal.close()
    c = report.counts
    journal_option = f" --journal {redact(args.journal)}" if args.journal else ""
    from_file = not report.key_source.startswith("$")  # else $SVDMARK_PSEUDONYM_KEY, which the export reads too
    key_file = args.key_file or (args.output / ".pseudonym.key" if from_file else None)
    dups = f", {c['duplicates']} duplicate instance(s) skipped" if c["duplicates"] else ""
    human = (f"{c['series']} series: {c['queued']} queued now, {c['present']} already queued or analysed, "
             f"{c['not_queued']} not queued; {c['file_errors']} of {c['files']} file(s) not usable{dups}\n"
             f"instances: {c['instances_new']} new, {c['instances_replaced']} replaced, "
             f"{c['instances_duplicate']} already in the journal (journal {report.journal}, spool {report.spool})\n"
             f"errors:  {args.output / 'errors.csv'} (and .parquet)\n" + next_steps(report, journal_option, key_file))
    if report.interrupted:
        print(f"svdmark analyze: interrupted after queueing {c['queued']} series; the series in hand stays "
              "unqueued until the same command runs again (what is recorded is kept)", file=sys.stderr)
        if args.json:
            emit(args, report.as_dict(), "")
        return 1
    emit(args, report.as_dict(), human)
    if report.nothing_queued:
        where = ", ".join(str(p) for p in args.paths)
        print(f"svdmark analyze: error: nothing queued: no DICOM image series could be recorded from {where} "
              f"({c['files']} file(s) examined, {c['file_errors']} not usable: see errors.csv)", file=sys.stderr)
        return 1
    return 1 if c["not_queued"] else 0

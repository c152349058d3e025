"""`svdmark results`: export the service's results as a table, and cohort statistics.

Both read the service journal (--data-dir / --config), or a results table written
by `svdmark analyze` (--table OUTPUT_DIR or --table results.csv|results.parquet).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .common import add_config_options, add_json_option, emit, load_config, open_journal

if TYPE_CHECKING:  # pragma: no cover
    from ..journal import JobRecord

_STATUS = {"done": "analysed", "ignored": "ignored", "failed": "failed", "pending": "pending", "running": "pending",
           "superseded": "superseded"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("results", help="export results, cohort statistics", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    rsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    q = rsub.add_parser("export", help="results table (one row per series) as CSV or Parquet",
                        description="Write the results table: one row per series, the latest analysis of each "
                                    "(all analyses with --all). Same columns as `svdmark analyze`'s results table, "
                                    "plus job id, generation and times. With --output FILE, FILE's stem + .dictionary.csv "
                                    "(column types, units, meanings) and + .rules.json (rule constants) go beside "
                                    "it.")
    q.add_argument("--format", choices=("csv", "parquet"), default="csv")
    q.add_argument("--output", "-o", type=Path, metavar="FILE", help="output file (default: stdout for csv)")
    q.add_argument("--all", action="store_true", help="every job, superseded analyses included")
    q.add_argument("--shift-dates", action="store_true",
                   help="shift study dates per patient by a keyed offset (-365..365 days; default: true dates)")
    _source_options(q)
    q.set_defaults(func=run_export)

    q = rsub.add_parser("summary", help="cohort statistics: median (IQR) WML, burden grades, flags, routing",
                        description="Cohort statistics as papers report them: median (IQR) WML volume, "
                                    "microbleed burden grades n (%%), flag categories n (%%) per rule, series by "
                                    "routing decision, ignore and failure reasons.")
    _source_options(q)
    add_json_option(q)
    q.set_defaults(func=run_summary)


def _source_options(q: argparse.ArgumentParser) -> None:
    q.add_argument("--table", type=Path, metavar="PATH",
                   help="an `svdmark analyze` output folder or its results.csv/.parquet (instead of the journal)")
    q.add_argument("--key-file", type=Path, metavar="FILE",
                   help="pseudonymisation key for the journal export (default: $SVDMARK_PSEUDONYM_KEY or "
                        "<data-dir>/.pseudonym.key)")
    add_config_options(q)


_FINISHED = ("done", "failed", "ignored")


def _latest_analyses(jobs: list[JobRecord]) -> list[JobRecord]:
    """Per series its latest finished job (done, failed or ignored); a series with none finished yet, its latest
    job that was not superseded (queued or running), else its latest. A re-analysis that is queued, or that a
    newer one replaced before it ran, does not hide the result the PACS holds."""
    best: dict[str, JobRecord] = {}

    def rank(j: JobRecord) -> tuple[int, int]:
        state = j.state.value
        return (2 if state in _FINISHED else 0 if state == "superseded" else 1, j.id)

    for j in jobs:
        if j.series_uid not in best or rank(j) > rank(best[j.series_uid]):
            best[j.series_uid] = j
    return list(best.values())


def journal_rows(args: argparse.Namespace, latest_only: bool = True) -> list[dict]:
    import pydicom

    from .. import __version__
    from ..batch import table as T
    from ..batch.acquisition import descriptors
    from ..batch.state import resolve_key
    from ..domain import OutputKind, iso_utc
    from ..logs import patient_pseudonym

    cfg = load_config(args)
    journal = open_journal(cfg, "is --data-dir right? (or give --table)")
    key, _ = resolve_key(getattr(args, "key_file", None), cfg.data_dir / ".pseudonym.key")
    constants = T.rule_constants(_ruleset(args))
    jobs = journal.job_history()
    if latest_only:
        jobs = _latest_analyses(jobs)
    modality = {s.series_uid: s.modality for s in journal.all_series()}
    rows = []
    header_cache: dict[str, pydicom.Dataset | None] = {}
    for j in sorted(jobs, key=lambda j: j.id):
        uid = j.series_uid
        if uid not in header_cache:
            header_cache[uid] = None
            first = journal.first_instance_path(uid)  # after a purge, the header copy it kept
            if first is not None:
                try:
                    header_cache[uid] = pydicom.dcmread(first, stop_before_pixels=True)
                except Exception:  # spool file cleaned up or unreadable: the row just lacks header fields
                    pass
        h = header_cache[uid]
        row = T.base_row(
            study_uid=j.study_uid, series_uid=uid, modality=modality.get(uid),
            series_number=str(h.get("SeriesNumber", "")) if h is not None else None,
            series_description=str(h.get("SeriesDescription", "")) if h is not None else None,
            patient_pseudonym=(patient_pseudonym(h, key) or None) if h is not None else None,
            n_instances=journal.instance_count(uid), status=_STATUS.get(j.state.value, j.state.value), routing=j.routing,
            rule_id=j.rule_id, reason=j.detail, model_name=j.model_name, model_version=j.model_version,
            model_sha256=j.model_sha, ruleset_version=j.ruleset_version, svdmark_version=__version__)
        if h is not None:
            row.update(descriptors(h, key, getattr(args, "shift_dates", False)))
        T.fill_from_summary(row, j.summary, constants)
        for o in journal.results(job_id=j.id):
            if o.kind == OutputKind.REJECTION:  # an IOCM rejection note is not a result of the analysis
                continue
            row[f"{o.kind}_file"] = None if o.file_removed_at is not None else str(o.path)  # gone: retention
            if o.kind == "sr":
                row["sr_sop_uid"] = o.sop_uid
        if j.finished_at:
            row["analysed_at"] = iso_utc(j.finished_at)
        row.update(job_id=j.id, generation=j.generation, job_state=j.state.value, completion=j.completion)
        rows.append(row)
    return rows


def _ruleset(args: argparse.Namespace):
    from ..rules import RuleSet

    return RuleSet.load(load_config(args).rules_file)


def load_frame(args: argparse.Namespace, latest_only: bool = True):
    from ..batch import table as T

    if args.table is not None:
        return T.read_table(args.table), T.read_errors(args.table)
    return T.frame(journal_rows(args, latest_only), T.result_columns(_ruleset(args))), None


def run_export(args: argparse.Namespace) -> int:
    from ..batch import table as T

    if args.format == "parquet" and args.output is None:
        print("svdmark results export: error: --format parquet needs --output FILE", file=sys.stderr)
        return 2
    from ..batch.dictionary import write_beside

    df, _ = load_frame(args, latest_only=not args.all)
    T.write_one(df, args.output or Path("-"), args.format)
    if args.output is not None:
        extra = write_beside(args.output, df, _ruleset(args), prefix=f"{Path(args.output).stem}.")
        print(f"{len(df)} row(s) written to {args.output}; column meanings in {extra[0]}, rule constants in "
              f"{extra[-1]}", file=sys.stderr)
    return 0


def run_summary(args: argparse.Namespace) -> int:
    from ..batch.cohort import cohort, format_cohort

    df, errors = load_frame(args)
    c = cohort(df, errors)
    emit(args, c, format_cohort(c))
    return 0

"""``svdmark analyze --enqueue``: a trial archive queued on the shared journal, for workers on any number of hosts.

Discovery is ``svdmark analyze``'s (:func:`svdmark.batch.run.find_series`: the same series, duplicate instances
and unusable files with their reasons). Then, series by series, each instance is kept as the receiver keeps a
C-STORE (:func:`svdmark.receive.store.keep`: the spool's ``incoming/`` path, the SHA-256 digest, the journal row),
hard-linked from the archive where the spool is on the same filesystem and copied where it is not (zip members
and files without the Part 10 header are always written); once the whole series is journalled, its job is queued
at once (:meth:`svdmark.journal.Journal.enqueue_series`): no assembler waits for it. Workers (``svdmark serve
--roles work``) claim the jobs under leases and run the pipeline; ``svdmark results export --journal`` builds
the tables.

Safe to repeat and to interrupt: an instance journalled with the same bytes is a duplicate, a series already
queued or analysed is left alone, and a series cut short stays ``receiving`` until the next run records the rest
and queues it (an assembler, if one runs, would take it only after ``incomplete_max_wait_seconds`` of quiet, with
an ``incomplete series`` warning). An instance whose bytes changed replaces the journalled one and reopens its
series for a new analysis, as a resend to the receiver does.
"""
from __future__ import annotations

import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from . import __version__
from .batch import table as T
from .batch.discover import READ_ERRORS, FileError, SeriesGroup
from .batch.progress import Progress
from .batch.run import find_series
from .batch.state import RunState, resolve_key, write_json
from .domain import iso_utc
from .errors import Rejected
from .journal_api import BatchJournal
from .receive.inspect import inspect
from .receive.store import keep
from .spool import PRIVATE_UMASK, Spool


# series: found, queued by this run, queued or analysed before it, left unqueued (a file unreadable now);
# files: examined, not usable, duplicate copies; instances: as store.keep found each (new, replaced, duplicate)
COUNTS = ("series", "queued", "present", "not_queued", "files", "file_errors", "duplicates", "instances_new",
          "instances_replaced", "instances_duplicate", "instances_unreadable")


@dataclass
class EnqueueReport:
    journal: str  # where (a PostgreSQL URL without its password)
    spool: Path
    out_dir: Path
    counts: Counter = field(default_factory=lambda: Counter(dict.fromkeys(COUNTS, 0)))
    errors: list[dict] = field(default_factory=list)
    jobs: list[int] = field(default_factory=list)
    tables: list[Path] = field(default_factory=list)
    key_source: str = ""
    interrupted: bool = False
    seconds: float = 0.0

    @property
    def nothing_queued(self) -> bool:
        """No series is queued or analysed after this run (none found, or none could be recorded)."""
        return not self.interrupted and not (self.counts["queued"] + self.counts["present"])

    def as_dict(self) -> dict:
        return {"journal": self.journal, "spool": str(self.spool), "output": str(self.out_dir),
                "complete": not self.interrupted, "counts": dict(self.counts), "jobs": self.jobs,
                "tables": [str(p) for p in self.tables], "pseudonym_key": self.key_source,
                "seconds": round(self.seconds, 2)}


class Enqueuer:
    """Queue everything under some paths on ``journal``, the instances into ``spool``; tables go to ``out_dir``."""

    def __init__(self, journal: BatchJournal, spool_dir: Path, out_dir: Path, key_file: Path | None = None,
                 progress: bool = True):
        self.journal = journal
        self.spool_dir = Path(spool_dir).resolve()  # the journal names files by this path on every host
        self.out = Path(out_dir)
        self.key_file = key_file
        self.progress = progress

    def say(self, text: str) -> None:
        if self.progress:
            print(text, file=sys.stderr, flush=True)

    def run(self, paths: Sequence[Path]) -> EnqueueReport:
        t0 = time.perf_counter()
        self.out.mkdir(parents=True, exist_ok=True)
        key, key_source = resolve_key(self.key_file, self.out / ".pseudonym.key")
        report = EnqueueReport(self.journal.describe(), self.spool_dir, self.out, key_source=key_source)
        groups, file_errors, stats = find_series(RunState(self.out), list(paths), key, self.progress)
        report.counts.update(series=len(groups), files=stats["files"], file_errors=stats["unusable"],
                             duplicates=stats["duplicates"])
        report.errors = [e.as_row() for e in file_errors]
        self.say(f"enqueue: {stats['files']} file(s), {len(groups)} series, {stats['unusable']} file(s) not usable")
        bar = Progress(len(groups), "enqueue", enabled=self.progress)
        umask = os.umask(PRIVATE_UMASK)  # the spool holds patient data: directories 0700, files 0600
        try:
            spool = Spool(self.spool_dir)
            for g in groups:
                bar.step(self._series(g, spool, _root_of(g, paths), report))
        except KeyboardInterrupt:
            report.interrupted = True
        finally:
            os.umask(umask)
            bar.close()
        report.tables = T.write_tables(T.frame(report.errors, T.ERROR_COLUMNS), self.out / "errors")
        report.seconds = time.perf_counter() - t0
        write_json(self.out / "enqueue.json", {
            "svdmark": __version__, "inputs": [str(p) for p in paths], "journal": report.journal,
            "spool": str(self.spool_dir), "complete": not report.interrupted, "counts": dict(report.counts),
            "jobs": report.jobs, "pseudonym_key": key_source,
            "finished_at": iso_utc()})
        return report

    def _series(self, g: SeriesGroup, spool: Spool, root: str, report: EnqueueReport) -> str:
        """Keep every instance of one series, then queue it; a note for the progress line."""
        kept: Counter = Counter()
        for inst in g.instances:
            src = inst.source
            try:
                data = src.read_bytes()
                item = inspect(data)
            except (*READ_ERRORS, Rejected) as exc:  # changed since the scan
                why = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
                report.errors.append(FileError(src.name, f"cannot be read now: {why}", g.series_uid, g.study_uid,
                                               inst.sop_uid).as_row())
                kept["unreadable"] += 1
                continue
            if (item.sop_uid, item.series_uid) != (inst.sop_uid, g.series_uid):
                report.errors.append(FileError(src.name, "changed since it was scanned; run again", g.series_uid,
                                               g.study_uid, inst.sop_uid).as_row())
                kept["unreadable"] += 1
                continue
            linkable = src.member is None and not src.bare  # the file itself is the Part 10 object
            outcome = keep(self.journal, spool, item, data, transfer_syntax=item.transfer_syntax, calling_ae=None,
                           source=Path(src.path) if linkable else None)
            kept[outcome] += 1
            if outcome == "conflict":
                report.errors.append(FileError(src.name, "not kept: its Series Instance UID already holds another "
                                               "study's instances in the journal", g.series_uid, g.study_uid,
                                               inst.sop_uid).as_row())
        report.counts.update({f"instances_{k}": n for k, n in kept.items()})
        if kept["conflict"]:
            report.counts["not_queued"] += 1
            return f"{_short(g.series_uid)} not queued ({kept['conflict']} file(s) of another study's series UID)"
        if kept["unreadable"]:  # left receiving: the next run records the rest and queues it
            report.counts["not_queued"] += 1
            report.errors.append({"file": root, "series_uid": g.series_uid, "study_uid": g.study_uid, "sop_uid": "",
                                  "reason": f"series not queued: {kept['unreadable']} of {len(g.instances)} "
                                            "instance(s) could not be read now"})
            return f"{_short(g.series_uid)} not queued ({kept['unreadable']} file(s) unreadable)"
        job = self.journal.enqueue_series(g.series_uid, f"batch: {len(g.instances)} file(s) from {root}")
        if job is not None:
            report.counts["queued"] += 1
            report.jobs.append(job)
            return f"{_short(g.series_uid)} queued (job {job})"
        row = self.journal.series_row(g.series_uid)
        report.counts["present"] += 1
        return f"{_short(g.series_uid)} already {row.state.value if row else 'present'}"


def _root_of(group: SeriesGroup, paths: Sequence[Path]) -> str:
    """The input path (as given) that holds the series: named in the job's completion, not the file's folder."""
    first = Path(group.first.source.path).resolve()
    for p in paths:
        if first == Path(p).resolve() or Path(p).resolve() in first.parents:
            return str(p)
    return str(first.parent)


def _short(uid: str) -> str:
    return uid if len(uid) <= 24 else "…" + uid[-22:]


def next_steps(report: EnqueueReport, journal_option: str, key_file: Path | None) -> str:
    """What to run next: workers on any host that mounts the spool at the same path, then the tables.

    ``journal_option``: `` --journal URL`` as the user gave it (password hidden), or "" when the journal came
    from ``$SVDMARK_JOURNAL`` or the configuration file, which the next commands read too."""
    key = f" --key-file {key_file}" if key_file is not None else ""
    return (f"next: start workers on any number of hosts that mount the spool at {report.spool}:\n"
            f"  svdmark serve{journal_option} --spool {report.spool} --roles work\n"
            f"then, once `svdmark jobs list{journal_option}` shows the jobs done, the tables:\n"
            f"  svdmark results export{journal_option}{key} -o {report.out_dir / 'results.csv'}")

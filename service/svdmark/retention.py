"""Retention: removing the received images of series done with, and the produced objects their destinations hold
(``svdmark purge``).

Which series qualify, and their removal under the series' lock in one transaction, are the journal's
(:meth:`~svdmark.journal.Journal.purgeable`, :meth:`~svdmark.journal.Journal.purge_series`). This module runs them
over a spool: before a series' images go, the header of its first readable instance is kept as a DICOM file
without pixel data in the spool's ``headers`` area (pydicom reads it up to the pixel data and writes it back), so
that the job listings and the research table still carry the series' description, number and patient pseudonym.
Then the files of those series' produced objects (SR, SEG, summary image, rejection notes) go once every
destination has them, or a newer result replaced them unsent (:meth:`~svdmark.journal.Journal.purgeable_results`):
a dead letter keeps its file for ``outbox resend``, an object meant for no destination is the only copy and stays.

:func:`remove_orphans` is the spool's other clean-up, run by the service whether retention is on or not: the files
nothing refers to, that a killed write or a failed re-run left (a day old, so never one whose row is being written).
"""
from __future__ import annotations

import io
import logging
import os
import stat
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pydicom

from .journal import Journal, PurgedSeries
from .logs import event
from .spool import Spool, write_durably

log = logging.getLogger("svdmark.retention")


def remove_images(spool: Spool, sources: list[Path]) -> Path | None:
    """Remove ``sources`` from the spool and keep, under ``spool.headers``, the header (everything before the pixel
    data) of the first of them that reads; its path, or None when none reads (the files of a purge that crashed
    before its commit). The header is read first and written last, so a purge run on a full disk frees the space
    it writes into."""
    header = _first_header(spool, sources)
    for source in sources:
        spool.discard(source)
    if header is None:
        return None
    path, data = header
    write_durably(path, data)
    return path


def _first_header(spool: Spool, sources: list[Path]) -> tuple[Path, bytes] | None:
    for source in sources:
        try:
            ds = pydicom.dcmread(source, stop_before_pixels=True)
            path = spool.path_for(spool.headers, str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID),
                                  str(ds.SOPInstanceUID))
        except (OSError, ValueError, AttributeError, pydicom.errors.InvalidDicomError):
            continue  # gone, unreadable, or without the UIDs that name the copy: the next one may serve
        out = io.BytesIO()
        ds.save_as(out)
        return path, out.getvalue()
    return None


DAY_SECONDS = 86_400.0
ORPHAN_AGE_SECONDS = DAY_SECONDS  # far longer than any gap between a file's write and the journal row naming it
_ORPHAN_BATCH = 500  # SOP Instance UIDs looked up in the journal per query


@dataclass
class OrphanSweep:
    """What one sweep removed (or, dry run, would remove), and the files it could not remove, with why."""

    removed: list[Path] = field(default_factory=list)
    failed: dict[Path, str] = field(default_factory=dict)


def remove_orphans(journal: Journal, spool: Spool, older_than_seconds: float = ORPHAN_AGE_SECONDS,
                   now: float | None = None, dry_run: bool = False) -> OrphanSweep:
    """Remove (or, ``dry_run``, list) the spool's files that nothing refers to and whose inode changed last more
    than ``older_than_seconds`` ago: a temporary file of a write that was killed, a received instance whose journal
    row was never committed (killed in between: its sender was not told it was stored), a produced object whose job
    was killed and whose re-run failed, a file whose removal failed on a failing disk.

    A file is the spool's when it is a temporary ``.tmp-*`` (or ``.orphan-*``) file or a ``<SOP Instance UID>.dcm``
    in ``incoming`` or ``results``; one whose UID the journal knows there is never removed, whatever its path. The
    age is the inode's change time, which a write, a rename into place and a hard link (``analyze --enqueue`` links
    archive files whose contents are years old) all renew. Each file is looked at again just before it goes, and
    renamed aside first (:func:`_drop`): one that was written again since it was judged (a sender's resend, a new
    inode) stays. A file that cannot be removed is reported and the sweep goes on. The headers area (retention's
    own) is not looked at."""
    cutoff = (time.time() if now is None else now) - older_than_seconds
    out = OrphanSweep()
    for area, table in ((spool.incoming, "instances"), (spool.results, "results")):
        named: dict[str, list[tuple[Path, os.stat_result]]] = {}
        for path, st in _old_files(area, cutoff):
            if path.name.startswith((".tmp-", ".orphan-")):  # a killed write's, or a removal's that failed
                _drop(path, st, dry_run, out)
            elif path.suffix == ".dcm":
                named.setdefault(path.stem, []).append((path, st))
                if len(named) >= _ORPHAN_BATCH:
                    _drop_unknown(journal, table, named, dry_run, out)
        _drop_unknown(journal, table, named, dry_run, out)
    if out.removed:
        event(log, "orphan_files_listed" if dry_run else "orphan_files_removed", files=len(out.removed),
              older_than_hours=round(older_than_seconds / 3600, 1))
    if out.failed:
        event(log, "orphan_removal_failed", logging.WARNING, files=len(out.failed),
              reason=next(iter(out.failed.values())))
    return out


def _drop_unknown(journal: Journal, table: str, named: dict[str, list[tuple[Path, os.stat_result]]],
                  dry_run: bool, out: OrphanSweep) -> None:
    """The files of ``named`` whose UID ``table`` does not hold go; ``named`` is emptied."""
    known = journal.known_objects(table, sorted(named))
    for uid, files in named.items():
        if uid not in known:
            for path, st in files:
                _drop(path, st, dry_run, out)
    named.clear()


def _drop(path: Path, judged: os.stat_result, dry_run: bool, out: OrphanSweep) -> None:
    """Remove the file judged an orphan, and only that file: it is first renamed aside (atomic), so a writer that
    puts a new file at ``path`` meanwhile (a resend, by rename) cannot have that file removed instead; if what was
    renamed aside is not the judged inode, it is linked back (never over a newer one) and kept."""
    try:
        now = path.lstat()
        if (now.st_ino, now.st_ctime_ns) != (judged.st_ino, judged.st_ctime_ns):
            return  # written again since it was judged
        if dry_run:
            out.removed.append(path)
            return
        aside = path.with_name(f".orphan-{uuid.uuid4().hex}")
        os.rename(path, aside)
        if aside.lstat().st_ino != judged.st_ino:  # a new file arrived between the look and the rename
            try:
                os.link(aside, path)
            except FileExistsError:  # a newer one still: this one is superseded by it
                pass
            aside.unlink()
            return
        aside.unlink()
    except FileNotFoundError:
        return
    except OSError as exc:
        out.failed[path] = f"{type(exc).__name__}: {exc.strerror or exc}"
        return
    out.removed.append(path)


def _old_files(area: Path, cutoff: float) -> Iterator[tuple[Path, os.stat_result]]:
    for directory, _, names in os.walk(area):
        for name in names:
            path = Path(directory, name)
            try:
                st = path.lstat()
            except FileNotFoundError:  # removed meanwhile
                continue
            if st.st_ctime < cutoff and stat.S_ISREG(st.st_mode):
                yield path, st


def cutoff(journal: Journal, older_than_days: float) -> float:
    """The journal time before which a series is done with when it must be kept ``older_than_days``."""
    return journal.now() - older_than_days * DAY_SECONDS


@dataclass
class RetentionRun:
    """What one retention run removed, and the series whose files it could not remove (each its own transaction:
    one that fails leaves its rows, and the others go on)."""

    series: list[PurgedSeries] = field(default_factory=list)  # whose images went
    results: dict[str, int] = field(default_factory=dict)  # series uid -> result files removed
    failed: dict[str, str] = field(default_factory=dict)  # series uid -> why (the file system's error)


def run(journal: Journal, spool: Spool, cutoff: float, actor: str, keep_results: bool = False) -> RetentionRun:
    """Remove the images of every series done with before ``cutoff`` (journal time), then (unless ``keep_results``)
    the files of every produced object of a purged series that its destinations hold; each series in its own
    transaction, audited as ``actor``'s."""
    out = RetentionRun()
    for candidate in journal.purgeable(cutoff):
        uid = candidate.series_uid
        purged = _guarded(out, uid, lambda: journal.purge_series(uid, cutoff, lambda p: remove_images(spool, p), actor))
        if purged is not None:  # None: an instance arrived, or a job started, since the listing (or it failed)
            event(log, "series_purged", series_uid=purged.series_uid, instances=purged.instances,
                  bytes=purged.bytes)
            out.series.append(purged)
    if keep_results:
        return out
    for uid in journal.purgeable_results():
        n = _guarded(out, uid, lambda: journal.purge_results(uid, lambda paths: [spool.discard(p) for p in paths],
                                                             actor))
        if n:
            event(log, "results_purged", series_uid=uid, results=n)
            out.results[uid] = n
    return out


def _guarded(out: RetentionRun, series_uid: str, step):
    """``step()``, or None with the reason in ``out.failed`` when the file system refuses (a permission, a
    read-only mount): the series stays as it was and the run goes on with the next."""
    try:
        return step()
    except OSError as exc:
        out.failed[series_uid] = f"{type(exc).__name__}: {exc.strerror or exc}"
        event(log, "purge_failed", logging.WARNING, series_uid=series_uid, reason=out.failed[series_uid])
        return None

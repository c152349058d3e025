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
import time
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


def remove_orphans(journal: Journal, spool: Spool, older_than_seconds: float = ORPHAN_AGE_SECONDS,
                   now: float | None = None, dry_run: bool = False) -> list[Path]:
    """Remove (or, ``dry_run``, list) the spool's files that nothing refers to, last changed more than
    ``older_than_seconds`` ago: a temporary file of a write that was killed, a received instance whose journal row
    was never committed (killed in between: its sender was not told it was stored), a produced object whose job was
    killed and whose re-run failed, a file whose removal failed on a failing disk. A file is the spool's when it is a
    temporary ``.tmp-*`` file or a ``<SOP Instance UID>.dcm`` in ``incoming`` or ``results``; one whose UID the
    journal knows there is never removed, whatever its path. The headers area (retention's own) is not looked at."""
    cutoff = (time.time() if now is None else now) - older_than_seconds
    found: list[Path] = []
    for area, table in ((spool.incoming, "instances"), (spool.results, "results")):
        named: dict[str, list[Path]] = {}
        for path in _old_files(area, cutoff):
            if path.name.startswith(".tmp-"):
                found.append(path)
            elif path.suffix == ".dcm":
                named.setdefault(path.stem, []).append(path)
        uids = sorted(named)
        for i in range(0, len(uids), _ORPHAN_BATCH):
            batch = uids[i:i + _ORPHAN_BATCH]
            known = journal.known_objects(table, batch)
            found += [p for uid in batch if uid not in known for p in named[uid]]
    if not dry_run:
        for path in found:
            spool.discard(path)
    if found:
        event(log, "orphan_files_listed" if dry_run else "orphan_files_removed", files=len(found),
              older_than_hours=round(older_than_seconds / 3600, 1))
    return found


def _old_files(area: Path, cutoff: float) -> Iterator[Path]:
    for directory, _, names in os.walk(area):
        for name in names:
            path = Path(directory, name)
            try:
                if path.lstat().st_mtime < cutoff and not path.is_symlink():
                    yield path
            except FileNotFoundError:  # removed meanwhile
                continue


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

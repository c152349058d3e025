"""The spool: durable files named only from validated UIDs.

``incoming/<study>/<series>/<sop>.dcm`` holds received instances exactly as
received (Part 10, the negotiated transfer syntax); ``results/...`` holds
what svdmark produced; ``headers/...`` the header (no pixel data) of a series'
first instance once its images were purged (:mod:`svdmark.retention`).
Writes go to a temporary file, are fsynced, renamed into place and the
directory is fsynced, so a file either exists whole or not at all. :meth:`Spool.place` may hard-link an existing file instead of
copying it (``svdmark analyze --enqueue`` from an archive on the same filesystem).

The data directory holds patient data: :func:`make_private` makes it, the journal and the
spool readable by the service user only (0700 directories, 0600 files) whatever the umask.

Several processes may share one spool (``--spool PATH`` on a shared POSIX filesystem: docs/scaling.md
says what it must provide — atomic rename within a directory, fsync of files and directories honoured,
close-to-open consistency). Names come from UIDs and every write is a rename of a unique temporary
file, so two processes writing the same object leave one whole file. :class:`ObjectStore` is what the
rest of svdmark uses of a spool; :class:`Spool` is its POSIX form. An object store (S3) would be a second
implementation that keeps a local, fsynced cache for readers (the pipeline reads files by path) and
writes through to the bucket before :meth:`ObjectStore.write` returns.
"""
from __future__ import annotations

import functools
import os
import re
import tempfile
import uuid
from pathlib import Path
from typing import Protocol

_UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def valid_uid(uid: str | None) -> bool:
    return bool(uid) and len(uid) <= 64 and bool(_UID_RE.match(uid))  # type: ignore[arg-type]


def check_uid(uid: str | None, what: str) -> str:
    if not valid_uid(uid):
        raise ValueError(f"{what} {uid!r} is not a valid DICOM UID")
    return uid  # type: ignore[return-value]


@functools.lru_cache(maxsize=256)  # the receiver asks twice per instance (does it exist? place it)
def _object_path(area: Path, study_uid: str, series_uid: str, sop_uid: str) -> Path:
    """``area/<study>/<series>/<sop>.dcm`` from three validated UIDs."""
    parts = (check_uid(study_uid, "Study Instance UID"), check_uid(series_uid, "Series Instance UID"),
             check_uid(sop_uid, "SOP Instance UID"))
    return Path(os.path.join(area, parts[0], parts[1], f"{parts[2]}.dcm"))


class ObjectStore(Protocol):
    """Durable storage of received and produced objects, by area and UIDs; the journal records the path."""

    incoming: Path
    results: Path

    def path_for(self, area: Path, study_uid: str, series_uid: str, sop_uid: str) -> Path: ...

    def write(self, area: Path, study_uid: str, series_uid: str, sop_uid: str, data: bytes) -> Path: ...

    def place(self, area: Path, study_uid: str, series_uid: str, sop_uid: str, data: bytes,
              source: Path | None = None) -> Path: ...

    def discard(self, path: Path) -> None: ...


class Spool:
    """The spool as a directory tree on a POSIX filesystem (local, or shared by several processes)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.incoming = self.root / "incoming"
        self.results = self.root / "results"
        self.headers = self.root / "headers"  # header-only copies kept when a series' images are purged (retention)
        for d in (self.incoming, self.results, self.headers):
            d.mkdir(parents=True, exist_ok=True)

    def path_for(self, area: Path, study_uid: str, series_uid: str, sop_uid: str) -> Path:
        return _object_path(area, study_uid, series_uid, sop_uid)

    def write(self, area: Path, study_uid: str, series_uid: str, sop_uid: str, data: bytes) -> Path:
        """Durably write ``data``; returns the final path."""
        final = self.path_for(area, study_uid, series_uid, sop_uid)
        write_durably(final, data)
        return final

    def place(self, area: Path, study_uid: str, series_uid: str, sop_uid: str, data: bytes,
              source: Path | None = None) -> Path:
        """Like :meth:`write`; when ``source`` is a file holding exactly ``data``, it is hard-linked into place
        instead where it can be (the same filesystem, and ``source`` fsynced first), and ``data`` written where it
        cannot: another filesystem, or an fsync of ``source`` that failed (its pages may be lost while a second
        fsync reports success: Linux reports a writeback error once)."""
        final = self.path_for(area, study_uid, series_uid, sop_uid)
        if source is None or not link_durably(Path(source), final):
            write_durably(final, data)
        return final

    def discard(self, path: Path) -> None:
        """Remove a file written for an instance whose journal row could not be committed."""
        try:
            Path(path).unlink()
        except FileNotFoundError:
            pass


PRIVATE_UMASK = 0o077


def make_private(data_dir: Path, files: list[Path] = ()) -> None:
    """Everything under ``data_dir`` readable by the service user only, now and from now on.

    Sets the process umask to 0o077 (new files 0600, directories 0700; SQLite's -wal/-shm files
    copy the database file's mode), makes ``data_dir`` 0700, which alone closes everything below it
    to others, and tightens the entries at most two levels down (the journal and its -wal/-shm, the
    spool's areas, ``service.json``) to 0700/0600 without walking a large spool.
    """
    os.umask(PRIVATE_UMASK)
    root = Path(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    for path in [root, *_children(root), *(c for d in _children(root) if d.is_dir() for c in _children(d))]:
        if not path.is_symlink():
            os.chmod(path, 0o700 if path.is_dir() else 0o600)
    for f in files:
        for path in (Path(f), Path(f"{f}-wal"), Path(f"{f}-shm")):
            if path.exists():
                os.chmod(path, 0o600)


def _children(d: Path) -> list[Path]:
    try:
        return [p for p in d.iterdir() if not p.is_symlink()] if d.is_dir() else []
    except OSError:
        return []


def write_durably(final: Path, data: bytes) -> None:
    ensure_directory(final.parent)
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=".tmp-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        _unlink(tmp)
        raise
    _install(Path(tmp), final)


def link_durably(source: Path, final: Path) -> bool:
    """``final`` as a hard link to ``source``: ``source`` fsynced (its data may not be on disk yet: the
    listener's received file), linked into place (where ``final`` exists already: under a temporary name, then
    renamed over it), directory fsynced. Either way ``final`` names complete data or nothing.

    False, with ``final`` untouched, where ``source`` cannot be fsynced or linked (another filesystem, links
    not allowed, an I/O error): the caller writes the bytes instead. A failure after the link (the directory's
    fsync) raises: a second fsync could report success after the first reported the error.

    The file's data is ``source``'s, shared: it must not be changed in place afterwards (svdmark never does)."""
    directory = final.parent
    ensure_directory(directory)
    try:
        fd = os.open(source, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(source, final)
        except FileExistsError:  # a replaced instance
            tmp = directory / f".tmp-{uuid.uuid4().hex}.part"
            os.link(source, tmp)
            _rename(tmp, final)
    except OSError:
        return False
    _fsync_dir(directory)
    return True


def _install(tmp: Path, final: Path) -> None:
    """Rename a complete temporary file into place, then fsync the directory."""
    _rename(tmp, final)
    _fsync_dir(final.parent)


def _rename(tmp: Path, final: Path) -> None:
    """Rename a temporary name over ``final``, removing it if that fails."""
    try:
        os.replace(tmp, final)
    except BaseException:
        _unlink(tmp)
        raise


def _unlink(path: Path | str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def ensure_directory(directory: Path) -> None:
    """Create the missing directories of ``directory``, each new entry fsynced in its parent: a new study's
    or series' directory survives a crash as the files in it do."""
    if os.path.isdir(directory):
        return
    ensure_directory(directory.parent)
    try:
        directory.mkdir()
    except FileExistsError:  # another thread or process made it, and may not have synced its parent yet
        pass
    _fsync_dir(directory.parent)


def _fsync_dir(path: Path) -> None:
    dir_fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)

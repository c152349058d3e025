"""Keep one inspected instance: its file in the spool, then its journal row.

The receiver keeps each C-STORE this way, and ``svdmark analyze --enqueue`` each file of an archive, so both
leave the same spool path, digest and journal row. The digest (:func:`digest`, SHA-256 of the Part 10 bytes)
tells a resend from a change: the same bytes under a SOP Instance UID already journalled are a ``duplicate``
and change nothing in the journal; other bytes replace the instance (the journal reopens its series). A file is kept only
with its row: when the row cannot be committed, a file that was not there before is removed again. A replacement under
another Series (or Study) Instance UID has its file in another folder: once its row is committed, the file the row
named before (:attr:`svdmark.journal.Recorded.displaced`) is removed, so that an instance is stored once.

The journal is asked for the digest before anything is written only where the instance's spool file exists:
a journalled instance always has its file (the spool keeps a file only with its row, and nothing removes
one), so for a new instance, the common case, the lookup would only confirm that it is new. Its row is
written in the same transaction that checks the digest (``record_instances``), so an instance whose file was
missing after all (lost outside svdmark) is still a ``duplicate`` there, and its file is back at the spool
path (the path its row names, unless the spool was moved since).

One instance is kept at a time in this process (a lock per SOP Instance UID, striped): two associations sending
the same instance with different bytes at once would otherwise let the files be placed in one order and the rows
committed in the other, leaving the row's digest, size and geometry on the other version's file. (Receivers in
several processes on one shared spool are not ordered by it.)

Errors: an ``OSError`` is the spool's (the file could not be written); the journal's are its engine's
(:data:`svdmark.journal_engine.ERRORS`).
"""
from __future__ import annotations

import hashlib
import logging
import threading
import zlib
from pathlib import Path

from ..journal_api import ReceiveJournal
from ..logs import event
from ..spool import Spool
from .inspect import Inspected

log = logging.getLogger("svdmark.receive")
_LOCKS = tuple(threading.Lock() for _ in range(64))  # per SOP Instance UID, striped (module doc)


def digest(data: bytes) -> str:
    """An instance's identity for duplicates: the SHA-256 of its Part 10 bytes, as hex."""
    return hashlib.sha256(data).hexdigest()


def keep(journal: ReceiveJournal, spool: Spool, item: Inspected, data: bytes, *, transfer_syntax: str,
         calling_ae: str | None, source: Path | None = None) -> str:
    """Spool and journal one instance; the journal's outcome: "new", "replaced", "duplicate" or "conflict" (not kept:
    its Series Instance UID holds another study's instances).

    ``source``: a file holding exactly ``data``, hard-linked into the spool rather than copied where the
    filesystem allows (:meth:`Spool.place`)."""
    sha = digest(data)
    with _LOCKS[zlib.crc32(item.sop_uid.encode()) % len(_LOCKS)]:
        return _keep(journal, spool, item, data, sha, transfer_syntax=transfer_syntax, calling_ae=calling_ae,
                     source=source)


def _keep(journal: ReceiveJournal, spool: Spool, item: Inspected, data: bytes, sha: str, *, transfer_syntax: str,
          calling_ae: str | None, source: Path | None) -> str:
    existed = spool.path_for(spool.incoming, item.study_uid, item.series_uid, item.sop_uid).exists()
    if existed and journal.instance_digest(item.sop_uid) == sha:  # module doc: no lookup for a new instance
        return "duplicate"
    path = spool.place(spool.incoming, item.study_uid, item.series_uid, item.sop_uid, data, source)
    try:
        outcome = journal.record_instance(
            sop_uid=item.sop_uid, study_uid=item.study_uid, series_uid=item.series_uid, sop_class=item.sop_class,
            transfer_syntax=transfer_syntax, path=path, size=len(data), digest=sha, modality=item.modality,
            geometry=item.geometry, calling_ae=calling_ae,
        )
    except BaseException:
        if not existed and not _committed(journal, item.sop_uid, sha):  # no orphan: a file only with its row
            spool.discard(path)
        raise
    if outcome == "conflict":  # nothing recorded (another study's series UID): the file goes again
        if not existed:
            spool.discard(path)
        return outcome
    if outcome.displaced is not None:
        _discard_displaced(spool, outcome.displaced, item.sop_uid)
    return outcome


def _discard_displaced(spool: Spool, displaced: Path, sop_uid: str) -> None:
    """Remove the file an instance's row named before it moved to another series (module doc). The row is committed
    and the instance stored: a file that cannot be removed is logged and left, never a failed C-STORE; one outside
    this spool's ``incoming`` area (a spool moved since) is left alone."""
    if not Path(displaced).is_relative_to(spool.incoming):
        return
    try:
        spool.discard(displaced)
    except OSError as exc:
        event(log, "displaced_file_kept", logging.WARNING, sop_uid=sop_uid,
              reason=f"{type(exc).__name__}: {exc.strerror or exc}")


def _committed(journal: ReceiveJournal, sop_uid: str, sha: str) -> bool:
    """Whether the journal holds this instance's row after all (a commit whose answer was lost, or an
    interrupted batch): then its file stays. Where the journal cannot tell, as before: not committed."""
    try:
        return journal.instance_digest(sop_uid) == sha
    except Exception:
        return False

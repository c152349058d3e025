"""What kind of failure is this? Transient (the environment: a full disk, a journal refusing writes)
or not, and how to name it in a log line or the journal without patient data.

Shared by the worker (job outcomes) and the service's loops (back-off, /healthz problems).
"""
from __future__ import annotations

import errno
import re
import sqlite3
import traceback
from pathlib import Path

from .errors import RetryLater, SvdmarkError
from .journal_engine import OPERATIONAL_ERRORS

# errno values of an environment that may recover by itself: full disk or quota, I/O errors, a
# read-only remount, exhausted descriptors or memory, a busy or timed-out resource.
_TRANSIENT_ERRNOS = frozenset(
    getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "EIO", "EROFS", "EMFILE", "ENFILE", "ENOMEM", "EAGAIN",
                                      "EBUSY", "EINTR", "ETIMEDOUT", "ESTALE", "ENOBUFS") if hasattr(errno, name)
)


# SQLite result codes of the same kind: the journal's disk is full or failing, or it is busy.
_TRANSIENT_SQLITE = ("SQLITE_FULL", "SQLITE_IOERR", "SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_CANTOPEN",
                     "SQLITE_NOMEM", "SQLITE_PROTOCOL")
_TRANSIENT_SQLITE_TEXT = ("disk is full", "disk i/o error", "database is locked", "database table is locked",
                          "unable to open database", "out of memory")
# onnxruntime's own exceptions (RuntimeException, Fail) when the CPU's or the GPU's memory ran out (another job, a
# viewer on the same GPU): the series may be read once memory is free again
_TRANSIENT_RUNTIME_TEXT = ("failed to allocate memory", "out of memory", "cudaerrormemoryallocation")


def transient(exc: BaseException) -> bool:
    """Whether retrying later may succeed: the environment failed, not the input."""
    if isinstance(exc, RetryLater):
        return True
    if isinstance(exc, OSError):
        return exc.errno in _TRANSIENT_ERRNOS
    if isinstance(exc, sqlite3.OperationalError):  # the journal refused a read or write
        name = getattr(exc, "sqlite_errorname", None)
        if name:
            return name.startswith(_TRANSIENT_SQLITE)
        return any(t in str(exc).lower() for t in _TRANSIENT_SQLITE_TEXT)
    if isinstance(exc, OPERATIONAL_ERRORS):  # PostgreSQL: the server restarted, is unreachable or out of space
        return True
    if type(exc).__module__.startswith("onnxruntime"):
        return any(t in str(exc).lower() for t in _TRANSIENT_RUNTIME_TEXT)
    return isinstance(exc, MemoryError)


_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # a NUL is refused by PostgreSQL's text; the rest garbles a log


def reason_of(exc: BaseException) -> str:
    """A reason to journal and log: svdmark's own messages as they are (UIDs and counts only),
    other exceptions by type, ``strerror`` or message with quoted values removed (pydicom and
    highdicom quote the offending value, which may be a name, an ID or a birth date). Control characters are
    written as ``\\xNN``."""
    if isinstance(exc, SvdmarkError):
        text = str(exc)
    elif isinstance(exc, OSError) and exc.strerror:
        text = f"{type(exc).__name__}: [Errno {exc.errno}] {exc.strerror}"
    else:
        text = f"{type(exc).__name__}: " + _QUOTED.sub("'…'", str(exc))
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return text if len(text) <= 500 else text[:499] + "…"


def where(exc: BaseException, frames: int = 3) -> str:
    """The innermost ``frames`` frames of the traceback as file:line (no values)."""
    tb = traceback.extract_tb(exc.__traceback__)[-frames:]
    return " > ".join(f"{Path(f.filename).parent.name}/{Path(f.filename).name}:{f.lineno}" for f in tb)

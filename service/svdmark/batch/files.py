"""Output files of ``svdmark analyze`` / ``results export``: atomic, and readable as the user's umask says.

``spool.write_durably`` makes 0600 files (``mkstemp``), right for the service's patient-data
spool, wrong for a researcher's tables: ``write_file`` gives them the mode the umask allows
(umask 022: readable by group and others), as ``open()`` and ``mkdir`` do for the DICOM outputs
and folders. The pseudonymisation key is the exception (always 0600; ``state.resolve_key``).
"""
from __future__ import annotations

import os
from pathlib import Path

from ..spool import write_durably

_UMASK: int | None = None


def start_umask() -> int:
    """The process umask (read once; ``spool.make_private`` would later set 0077, which analyze never calls)."""
    global _UMASK
    if _UMASK is None:
        _UMASK = os.umask(0o022)
        os.umask(_UMASK)
    return _UMASK


def file_mode() -> int:
    return 0o666 & ~start_umask()


def write_file(path: Path, data: bytes) -> Path:
    """``data`` into ``path`` atomically (temporary file, fsync, rename), mode per ``start_umask``."""
    path = Path(path)
    write_durably(path, data)
    os.chmod(path, file_mode())
    return path

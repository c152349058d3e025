"""One `svdmark serve` per data directory: an exclusive lock on ``<data-dir>/serve.lock``.

A second service on the same journal and spool would race the first for jobs and
overwrite ``service.json``; it is refused, naming the first one's PID. The lock is
``fcntl.flock`` on a file kept open for the life of the process, so the kernel
releases it when the holder exits however it exits (no stale lock after a crash
or ``kill -9``). Standard library only: ``filelock`` would add a dependency and
does not record who holds the lock, which is what an operator needs to know.
"""
from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from .errors import ConfigError

LOCK_FILE = "serve.lock"


class DataDirInUse(ConfigError):
    """Another process holds the data directory's lock."""


@dataclass
class DataDirLock:
    path: Path
    _fh: IO[str] | None = None

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


def holder(data_dir: Path) -> int | None:
    """The PID written by the process that holds (or last held) the lock, if any."""
    try:
        text = (Path(data_dir) / LOCK_FILE).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def lock(data_dir: Path) -> DataDirLock:
    """Take the data directory for this process, or raise :class:`DataDirInUse`."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LOCK_FILE
    fh = open(path, "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        pid = holder(data_dir)
        who = f"PID {pid}" if pid else "another process"
        raise DataDirInUse(f"data directory {data_dir} is in use by another svdmark serve ({who}); "
                           "stop it first, or give this one its own --data-dir") from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"{os.getpid()}\n")
    fh.flush()
    return DataDirLock(path, fh)

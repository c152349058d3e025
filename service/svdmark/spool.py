"""The spool: durable files named only from validated UIDs.

``incoming/<study>/<series>/<sop>.dcm`` holds received instances exactly as
received (Part 10, the negotiated transfer syntax); ``results/...`` holds
what svdmark produced. Writes go to a temporary file, are fsynced, renamed
into place and the directory is fsynced, so a file either exists whole or
not at all.
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

_UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def valid_uid(uid: str | None) -> bool:
    return bool(uid) and len(uid) <= 64 and bool(_UID_RE.match(uid))  # type: ignore[arg-type]


def check_uid(uid: str | None, what: str) -> str:
    if not valid_uid(uid):
        raise ValueError(f"{what} {uid!r} is not a valid DICOM UID")
    return uid  # type: ignore[return-value]


class Spool:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.incoming = self.root / "incoming"
        self.results = self.root / "results"
        for d in (self.incoming, self.results):
            d.mkdir(parents=True, exist_ok=True)

    def path_for(self, area: Path, study_uid: str, series_uid: str, sop_uid: str) -> Path:
        parts = [check_uid(study_uid, "Study Instance UID"), check_uid(series_uid, "Series Instance UID"),
                 check_uid(sop_uid, "SOP Instance UID")]
        return area / parts[0] / parts[1] / f"{parts[2]}.dcm"

    def write(self, area: Path, study_uid: str, series_uid: str, sop_uid: str, data: bytes) -> Path:
        """Durably write ``data``; returns the final path."""
        final = self.path_for(area, study_uid, series_uid, sop_uid)
        write_durably(final, data)
        return final


def write_durably(final: Path, data: bytes) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=".tmp-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)

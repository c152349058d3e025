"""Run state of ``svdmark analyze`` under ``OUT/state/``: what is finished, so a re-run resumes.

* ``state/series/<series uid>.json`` — written (atomically) only after the series' DICOM
  outputs are in place: its results-table row and the key it was analysed under
  (model name, version, sha256, rule set version, the set of SOP Instance UIDs).
* ``state/scan.json`` — what each input file turned out to be, keyed by path, size and
  mtime, so a resumed run does not read unchanged files again.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

from ..config import PSEUDONYM_KEY_ENV, pseudonym_key_from_env
from ..errors import ConfigError
from .files import write_file

KEY_ENV = PSEUDONYM_KEY_ENV


def write_json(path: Path, data: Any) -> None:
    write_file(Path(path), json.dumps(data, indent=1, sort_keys=True, default=str).encode())


def read_json(path: Path) -> Any | None:
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def resolve_key(key_file: Path | None, default_path: Path, create: bool = True) -> tuple[bytes, str]:
    """The pseudonymisation key and where it came from: --key-file, $SVDMARK_PSEUDONYM_KEY, or a
    key generated once and kept (mode 0600) at ``default_path``."""
    if key_file is not None:
        try:
            key = Path(key_file).read_bytes().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read key file {key_file}: {exc.strerror or exc}") from None
        if not key:
            raise ConfigError(f"key file {key_file} is empty")
        return key, str(key_file)
    env = pseudonym_key_from_env()
    if env:
        return env, f"${KEY_ENV}"
    default_path = Path(default_path)
    if default_path.is_file():
        return default_path.read_bytes().strip(), str(default_path)
    if not create:
        raise ConfigError(f"no pseudonymisation key: give --key-file, set ${KEY_ENV}, or create {default_path}")
    default_path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32).encode()
    fd = os.open(default_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key + b"\n")
    return key, f"{default_path} (generated)"


def key_fingerprint(key: bytes) -> str:
    return hashlib.sha256(b"svdmark-key-id\0" + key).hexdigest()[:16]


SCAN_CACHE_VERSION = 3  # 2: instances carry their bytes' digest and geometry; invalid UIDs in error rows hashed;
#                        3: pseudonyms qualified by Issuer of Patient ID, files known by inode and change time too


class RunState:
    def __init__(self, out_dir: Path):
        self.out = Path(out_dir)
        self.dir = self.out / "state"
        self.series_dir = self.dir / "series"
        self.series_dir.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ series
    def series_file(self, series_uid: str) -> Path:
        return self.series_dir / f"{series_uid}.json"

    def done(self, series_uid: str) -> dict | None:
        return read_json(self.series_file(series_uid))

    def mark_done(self, series_uid: str, key: dict, row: dict) -> None:
        write_json(self.series_file(series_uid), {"key": key, "row": row})

    def finished(self) -> set[str]:
        """Every series finished into this output folder, by any run."""
        return {p.stem for p in self.series_dir.glob("*.json")}

    # ------------------------------------------------------------------ scan cache
    def load_scan_cache(self, key_id: str) -> dict:
        data = read_json(self.dir / "scan.json")
        # pseudonyms depend on the key; what a scan records (digests, hashed invalid UIDs) on the cache's version
        if not data or data.get("key_id") != key_id or data.get("version") != SCAN_CACHE_VERSION:
            return {}
        return data.get("files", {})

    def save_scan_cache(self, key_id: str, files: dict) -> None:
        write_json(self.dir / "scan.json", {"key_id": key_id, "version": SCAN_CACHE_VERSION, "files": files})

    # ------------------------------------------------------------------ leftovers
    def clean_staging(self) -> int:
        """Remove half-written output folders of an interrupted run."""
        n = 0
        root = self.out / "dicom"
        if not root.is_dir():
            return 0
        for p in root.glob("*/.staging-*"):
            shutil.rmtree(p, ignore_errors=True)
            n += 1
        for p in root.glob("*/.old-*"):
            shutil.rmtree(p, ignore_errors=True)
        return n

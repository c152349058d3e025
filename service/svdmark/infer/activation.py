"""The activation state of installed models: ``<data-dir>/models/state.json``, written atomically::

    {"active":  {"<name>": "<version>"},          # overrides ACTIVE files / highest version
     "history": {"<name>": ["<older>", ...]},     # previously active versions, newest last
     "shadow":  {"<name>": "<version>"}}           # candidate run beside the active one

:class:`~svdmark.infer.registry.ModelRegistry` reads it (which version runs, which runs in shadow);
``svdmark models`` (:mod:`svdmark.lifecycle`) changes it under :func:`locked`.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Iterator

from ..domain import iso_utc
from ..errors import ModelError
from ..spool import write_durably

STATE_FILE = "state.json"


def installed_dir(data_dir: Path) -> Path:
    """Where ``svdmark models install`` puts models, and where their state file lives."""
    return Path(data_dir) / "models"


def read_state(models_dir: Path) -> dict:
    try:
        data = json.loads((Path(models_dir) / STATE_FILE).read_text())
    except FileNotFoundError:
        data = {}
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"model state file {Path(models_dir) / STATE_FILE} is unreadable: {exc}") from None
    if not isinstance(data, dict):
        raise ModelError(f"model state file {Path(models_dir) / STATE_FILE} is not a JSON object")
    return {"active": dict(data.get("active", {})), "history": {k: list(v) for k, v in data.get("history", {}).items()},
            "shadow": dict(data.get("shadow", {}))}


def write_state(models_dir: Path, state: dict) -> None:
    state = dict(state, updated_at=iso_utc())
    write_durably(Path(models_dir) / STATE_FILE, json.dumps(state, indent=2, sort_keys=True).encode())


@contextlib.contextmanager
def locked(models_dir: Path) -> Iterator[None]:
    """Serialise read-modify-write of the state between concurrent `svdmark models` commands."""
    import fcntl

    Path(models_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(models_dir) / ".lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)

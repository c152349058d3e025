"""Model registry: ``<root>/<name>/<version>/{model.onnx, manifest.json}``.

The shipped models are package data (``svdmark/data/models/``, found through
:mod:`importlib.resources`, so a wheel install has them too);
``$SVDMARK_MODELS_DIR`` replaces them.
The active version of a model is named in ``<root>/<name>/ACTIVE`` (one
line, the version string); without that file the highest version wins.
Every spec handed out has had its sha256 checked against the manifest.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from importlib import resources
from pathlib import Path

from ..domain import ModelSpec, Task
from ..errors import ModelError

MANIFEST = "manifest.json"
MODEL_FILE = "model.onnx"
ACTIVE_FILE = "ACTIVE"
_REQUIRED = ("name", "version", "task", "modality", "sha256", "input", "output")


def packaged_data_dir(*parts: str) -> Path:
    """A directory of svdmark's package data (``svdmark/data/<parts>``) as a real path.

    Wheels and editable installs put package data on disk; a zipped install
    (zipimport) has no path to hand onnxruntime, so it is refused clearly.
    """
    where = resources.files("svdmark").joinpath("data", *parts)
    if not isinstance(where, Path):
        raise ModelError(f"svdmark's package data ({'/'.join(parts)}) is not on the file system ({where!r}); "
                         "install svdmark unzipped (pip install) or set SVDMARK_MODELS_DIR")
    return where


def default_models_dir() -> Path:
    """``$SVDMARK_MODELS_DIR`` or the models shipped in the package (``svdmark/data/models/``)."""
    env = os.environ.get("SVDMARK_MODELS_DIR")
    if env:
        return Path(env)
    return packaged_data_dir("models")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def version_key(version: str) -> tuple:
    """Sort key for versions like ``1.0.0``, ``1.2.0-rc1``: numeric parts numerically."""
    parts = re.split(r"[.\-+]", version)
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts)


class ModelRegistry:
    def __init__(self, root: Path | str | None = None):
        self.root = Path(root) if root is not None else default_models_dir()
        self._verified: dict[tuple[Path, float, int], str] = {}

    # ------------------------------------------------------------------ listing
    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def versions(self, name: str) -> list[str]:
        d = self.root / name
        if not d.is_dir():
            return []
        return sorted((p.name for p in d.iterdir() if (p / MANIFEST).is_file()), key=version_key)

    def all(self) -> list[ModelSpec]:
        """Every model version found (checksums verified); raises ModelError on a corrupt one."""
        return [self.get(name, v) for name in self.names() for v in self.versions(name)]

    def active_version(self, name: str) -> str:
        versions = self.versions(name)
        if not versions:
            raise ModelError(f"no versions of model {name!r} under {self.root}")
        marker = self.root / name / ACTIVE_FILE
        if marker.is_file():
            wanted = marker.read_text().strip()
            if wanted not in versions:
                raise ModelError(
                    f"{marker} names version {wanted!r}, which is not installed (have: {', '.join(versions)})"
                )
            return wanted
        return versions[-1]

    def active(self, task: Task) -> ModelSpec:
        """The active model for a task. Exactly one model name per task may be installed."""
        task = Task(task)
        candidates = []
        for name in self.names():
            versions = self.versions(name)
            if not versions:
                continue
            manifest = self._read_manifest(self.root / name / versions[-1])
            if manifest.get("task") == task.value:
                candidates.append(name)
        if not candidates:
            raise ModelError(f"no model for task {task.value!r} under {self.root}")
        if len(candidates) > 1:
            raise ModelError(
                f"several models for task {task.value!r} under {self.root}: {', '.join(candidates)};"
                " remove all but one"
            )
        name = candidates[0]
        return self.get(name, self.active_version(name))

    def get(self, name: str, version: str) -> ModelSpec:
        vdir = self.root / name / version
        manifest = self._read_manifest(vdir)
        for key in _REQUIRED:
            if key not in manifest:
                raise ModelError(f"{vdir / MANIFEST} lacks {key!r}")
        if manifest["name"] != name or manifest["version"] != version:
            raise ModelError(
                f"{vdir / MANIFEST} says {manifest['name']} {manifest['version']}, but lives in {name}/{version}"
            )
        try:
            task = Task(manifest["task"])
        except ValueError:
            raise ModelError(f"{vdir / MANIFEST}: unknown task {manifest['task']!r}") from None
        path = vdir / manifest.get("file", MODEL_FILE)
        if not path.is_file():
            raise ModelError(f"model file {path} is missing")
        actual = self._sha(path)
        if actual != manifest["sha256"]:
            raise ModelError(
                f"checksum mismatch for {path}: manifest says {manifest['sha256'][:12]}…, file is {actual[:12]}…;"
                " the file is corrupt or was replaced"
            )
        return ModelSpec(name=name, version=version, task=task, sha256=actual, path=path, manifest=manifest)

    # ------------------------------------------------------------------ helpers
    def _read_manifest(self, vdir: Path) -> dict:
        f = vdir / MANIFEST
        try:
            return json.loads(f.read_text())
        except FileNotFoundError:
            raise ModelError(f"no manifest at {f}") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelError(f"cannot read manifest {f}: {exc}") from None

    def _sha(self, path: Path) -> str:
        st = path.stat()
        key = (path, st.st_mtime, st.st_size)
        if key not in self._verified:
            self._verified[key] = sha256_file(path)
        return self._verified[key]

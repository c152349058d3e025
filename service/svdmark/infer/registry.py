"""Model registry: which model versions exist, and which one runs (and which runs in shadow).

Two roots, each ``<root>/<name>/<version>/{model.onnx, manifest.json}`` (and ``<root>/<name>/references/``, the
self-test references the versions share: :mod:`svdmark.infer.reference`; a folder without a manifest is no version):

* packaged models: package data (``svdmark/data/models/``, found through :mod:`importlib.resources`, so
  a wheel install has them too); ``$SVDMARK_MODELS_DIR`` replaces them;
* installed models (optional): ``<data-dir>/models/`` (``svdmark models install``), with the activation
  state file (:mod:`svdmark.infer.activation`).

The active version of a model is the one the state file names; else the packaged root's
``<name>/ACTIVE`` (one line, the version string); else the highest packaged version; else the highest
installed one. The state file is re-read on every call (a few hundred bytes, once per job): that is
how an activation reaches a running service at its next job. Every spec handed out has had its
sha256 checked against the manifest.
"""
from __future__ import annotations

import hashlib
import json
import re
from importlib import resources
from pathlib import Path

from ..domain import Manifest, ManifestFieldError, ModelSpec, Task
from ..errors import ModelError
from .activation import STATE_FILE, installed_dir, read_state

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
    from ..config import models_dir_from_env  # config imports nothing from infer; lazy keeps it that way

    return models_dir_from_env() or packaged_data_dir("models")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def version_key(version: str) -> tuple:
    """Sort key for versions like ``1.0.0``, ``1.2.0-rc1``, as semantic versioning orders them: numbers
    numerically (``rc10`` after ``rc2``), a pre-release (after ``-``) below its release, build metadata (after
    ``+``) last. Own code: ``packaging.version`` refuses the names a site may give (``1.2.0-site.a``)."""
    main, _, build = version.partition("+")
    release, dash, pre = main.partition("-")

    def parts(text: str) -> tuple:
        return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.findall(r"\d+|[^\d.\-]+", text))

    return parts(release), 0 if dash else 1, parts(pre), parts(build)


class ModelRegistry:
    def __init__(self, root: Path | str | None = None, installed: Path | str | None = None):
        self.root = Path(root) if root is not None else default_models_dir()
        self.installed = Path(installed) if installed is not None else None
        self._verified: dict[tuple[Path, float, int], str] = {}

    def with_installed(self, installed: Path) -> "ModelRegistry":
        """The same packaged models plus those installed under ``installed`` and their activation state."""
        return ModelRegistry(self.root, installed)

    # ------------------------------------------------------------------ listing
    def _roots(self) -> tuple[Path, ...]:
        return (self.root,) if self.installed is None else (self.root, self.installed)

    def _where(self) -> str:
        return " or ".join(str(r) for r in self._roots())

    @staticmethod
    def _names_under(root: Path) -> set[str]:
        if not root.is_dir():
            return set()
        return {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}

    @staticmethod
    def _versions_under(root: Path, name: str) -> list[str]:
        d = root / name
        if not d.is_dir():
            return []
        return sorted((p.name for p in d.iterdir() if (p / MANIFEST).is_file()), key=version_key)

    def names(self) -> list[str]:
        return sorted(set().union(*(self._names_under(r) for r in self._roots())))

    def versions(self, name: str) -> list[str]:
        return sorted(set().union(*(self._versions_under(r, name) for r in self._roots())), key=version_key)

    def source(self, name: str, version: str) -> str:
        """``installed`` or ``packaged`` (an installed copy wins)."""
        installed = self.installed is not None and version in self._versions_under(self.installed, name)
        return "installed" if installed else "packaged"

    def version_dir(self, name: str, version: str) -> Path:
        return (self.installed if self.source(name, version) == "installed" else self.root) / name / version

    def all(self) -> list[ModelSpec]:
        """Every model version found (checksums verified); raises ModelError on a corrupt one."""
        return [self.get(name, v) for name in self.names() for v in self.versions(name)]

    # ------------------------------------------------------------------ which runs
    def state(self) -> dict:
        """The activation state (active, history, shadow); empty without installed models."""
        if self.installed is None or not self.installed.is_dir():
            return {"active": {}, "history": {}, "shadow": {}}
        return read_state(self.installed)

    def active_version(self, name: str) -> str:
        versions = self.versions(name)
        if not versions:
            raise ModelError(f"no versions of model {name!r} under {self._where()}")
        wanted = self.state()["active"].get(name)
        if wanted:
            if wanted not in versions:
                raise ModelError(f"{self.installed / STATE_FILE} names {name} {wanted!r}, which is not installed"
                                 f" (have: {', '.join(versions)})")
            return wanted
        packaged = self._versions_under(self.root, name)
        if not packaged:
            return versions[-1]
        marker = self.root / name / ACTIVE_FILE
        if marker.is_file():
            wanted = marker.read_text().strip()
            if wanted not in packaged:
                raise ModelError(
                    f"{marker} names version {wanted!r}, which is not installed (have: {', '.join(packaged)})"
                )
            return wanted
        return packaged[-1]

    def shadow_version(self, name: str) -> str | None:
        """The candidate version set to run in shadow beside the active one, if any."""
        return self.state()["shadow"].get(name)

    def active(self, task: Task) -> ModelSpec:
        """The active model for a task. Exactly one model name per task may be installed."""
        task = Task(task)
        candidates = []
        for name in self.names():
            versions = self.versions(name)
            if versions and self.manifest(name, versions[-1]).get("task") == task.value:
                candidates.append(name)
        if not candidates:
            raise ModelError(f"no model for task {task.value!r} under {self._where()}")
        if len(candidates) > 1:
            raise ModelError(
                f"several models for task {task.value!r} under {self._where()}: {', '.join(candidates)};"
                " remove all but one"
            )
        name = candidates[0]
        return self.get(name, self.active_version(name))

    # ------------------------------------------------------------------ one version
    def manifest(self, name: str, version: str) -> dict:
        """The manifest as written (not checked; :meth:`get` checks it)."""
        return self._read_manifest(self.version_dir(name, version))

    def get(self, name: str, version: str) -> ModelSpec:
        vdir = self.version_dir(name, version)
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
        parsed = parse_manifest(manifest, vdir / MANIFEST)
        path = vdir / _file_in_folder(manifest.get("file", MODEL_FILE), vdir / MANIFEST)
        if not path.is_file():
            raise ModelError(f"model file {path} is missing")
        actual = self._sha(path)
        if actual != manifest["sha256"]:
            raise ModelError(
                f"checksum mismatch for {path}: manifest says {manifest['sha256'][:12]}…, file is {actual[:12]}…;"
                " the file is corrupt or was replaced"
            )
        return ModelSpec(name=name, version=version, task=task, sha256=actual, path=path, manifest=parsed)

    # ------------------------------------------------------------------ helpers
    def _read_manifest(self, vdir: Path) -> dict:
        f = vdir / MANIFEST
        try:
            data = json.loads(f.read_text())
        except FileNotFoundError:
            raise ModelError(f"no manifest at {f}") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelError(f"cannot read manifest {f}: {exc}") from None
        if not isinstance(data, dict):
            raise ModelError(f"manifest {f} must hold a JSON object, not a {type(data).__name__}")
        return data

    def _sha(self, path: Path) -> str:
        st = path.stat()
        key = (path, st.st_mtime, st.st_size)
        if key not in self._verified:
            self._verified[key] = sha256_file(path)
        return self._verified[key]


#: manifest text that changes no number the model reports (a site validation of the version stays valid when it is
#: added or reworded)
DESCRIPTIVE_KEYS = ("limitations",)


def manifest_digest(spec: ModelSpec) -> str:
    """SHA-256 of a version's manifest as read (its keys sorted, less ``DESCRIPTIVE_KEYS``): its thresholds,
    post-processing and quality limits change what the model reports, so a site validation and a reused analyze row
    hold for this manifest only."""
    raw = getattr(spec.manifest, "raw", spec.manifest)
    kept = {k: v for k, v in raw.items() if k not in DESCRIPTIVE_KEYS}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()


def managed(registry: ModelRegistry, data_dir: Path | None) -> ModelRegistry:
    """``registry`` (the packaged models) plus the models installed under ``data_dir`` and their
    activation state; what the service and ``analyze`` hand the pipeline."""
    if data_dir is None or registry.installed is not None:
        return registry
    return registry.with_installed(installed_dir(data_dir))


class Pinned:
    """A registry stand-in that hands out one fixed model for its task: a shadow version, or a version
    under site validation, run through the same pipeline as the active one."""

    def __init__(self, spec: ModelSpec):
        self.spec = spec

    def active(self, task: Task) -> ModelSpec:
        if Task(task) is not self.spec.task:
            raise ModelError(f"model {self.spec.label} is for {self.spec.task.value}, not {Task(task).value}")
        return self.spec


def _file_in_folder(name: object, source: Path) -> str:
    """The manifest's ``file``: a file name in the version's own folder (what install copies and the checksum
    covers), never a path out of it."""
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (".", ".."):
        raise ModelError(f"{source}: field 'file' must name a file in the version's folder, not {name!r}")
    return name


def parse_manifest(data: dict, source: Path) -> Manifest:
    """The typed manifest, or a ``ModelError`` naming the file and the field that is wrong."""
    try:
        manifest = Manifest.from_json(data)
    except ManifestFieldError as exc:
        raise ModelError(f"{source}: {exc}") from None
    if manifest.input is None:
        raise ModelError(f"{source}: field 'input' is missing (how the model's input is built)")
    if manifest.input.kind == "patch3d" and manifest.candidates is None:
        raise ModelError(f"{source}: field 'candidates' is missing (a patch3d model needs its candidate stage)")
    return manifest

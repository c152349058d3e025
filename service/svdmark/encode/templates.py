"""Codes, units and labels for svdmark's DICOM output, loaded from ``svdmark/data/sr_templates/``.

Nothing clinical or coded is spelled in Python: every concept name, unit and
label is looked up here by key, so a terminology fix is a data change.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from highdicom.sr import CodedConcept

from ..config import TEMPLATES_ENV, templates_dir_from_env
from ..domain import Task
from ..errors import ConfigError

FILES = {"common": "common.json", Task.WML: "wml_ncct.json", Task.CMB: "cmb_swi.json"}


def default_dir() -> Path:
    """``$SVDMARK_TEMPLATES`` or the templates shipped as package data (``svdmark/data/sr_templates/``)."""
    chosen = templates_dir_from_env()
    if chosen is not None:
        return chosen
    where = resources.files("svdmark").joinpath("data", "sr_templates")
    if not isinstance(where, Path):
        raise ConfigError(f"svdmark's SR templates are not on the file system ({where!r}); "
                          f"install svdmark unzipped (pip install) or set {TEMPLATES_ENV}")
    return where


def concept(entry: Any, where: str = "") -> CodedConcept:
    """``[value, scheme, meaning]`` → CodedConcept (with the scheme's version for private codes)."""
    if not (isinstance(entry, (list, tuple)) and len(entry) == 3 and all(isinstance(x, str) for x in entry)):
        raise ConfigError(f"template entry {where!r} must be [value, scheme, meaning], got {entry!r}")
    value, scheme, meaning = entry
    return CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


@dataclass(frozen=True)
class Templates:
    """The parsed contents of ``common.json`` plus one file per task."""

    common: dict
    tasks: dict = field(default_factory=dict)
    source: str = ""

    @classmethod
    def load(cls, path: str | Path | None = None) -> "Templates":
        root = Path(path) if path is not None else default_dir()
        data: dict[Any, dict] = {}
        for key, name in FILES.items():
            p = root / name
            try:
                data[key] = json.loads(p.read_text(encoding="utf-8"))
            except OSError as exc:
                raise ConfigError(f"cannot read SR template {p}: {exc}") from exc
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{p}: invalid JSON: {exc}") from exc
        tpl = cls(common=data.pop("common"), tasks=data, source=str(root))
        tpl.validate()
        return tpl

    def task(self, task: Task) -> dict:
        return self.tasks[task]

    def code(self, *keys: str, task: Task | None = None) -> CodedConcept:
        node: Any = self.tasks[task] if task is not None else self.common
        for k in keys:
            try:
                node = node[k]
            except (KeyError, TypeError) as exc:
                raise ConfigError(f"template key {'/'.join(keys)} missing in {self.source}") from exc
        return concept(node, "/".join(keys))

    def unit(self, key: str) -> CodedConcept:
        return self.code("units", key)

    def label(self, key: str) -> str:
        return self.common["labels"][key]

    @property
    def private_scheme(self) -> dict:
        return self.common["private_coding_scheme"]

    def validate(self) -> None:
        """Walk every code triple so a broken template fails at load time."""

        def walk(node: Any, where: str) -> None:
            if isinstance(node, dict):
                for k, v in node.items():
                    walk(v, f"{where}/{k}")
            elif isinstance(node, list) and len(node) == 3 and all(isinstance(x, str) for x in node) \
                    and node[1] in {"DCM", "SCT", "LN", "UCUM", "UMLS", "RFC5646", self.private_scheme["designator"]}:
                c = concept(node, where)
                if len(c.value) > 16 and c.scheme_designator != "UCUM":
                    raise ConfigError(f"{where}: code value {c.value!r} longer than 16 characters")
                if len(c.meaning) > 64:
                    raise ConfigError(f"{where}: code meaning {c.meaning!r} longer than 64 characters")

        for name in ("equipment", "report", "series", "concepts", "units", "labels"):
            if name not in self.common:
                raise ConfigError(f"{self.source}/common.json: missing {name!r}")
        walk(self.common, "common")
        for task, tpl in self.tasks.items():
            for name in ("procedure_reported", "finding_category", "finding_type", "finding_site",
                         "tracking_identifier", "measurements", "segment", "flags", "summary"):
                if name not in tpl:
                    raise ConfigError(f"{self.source}/{FILES[task]}: missing {name!r}")
            walk(tpl, FILES[task])

"""Library and layer boundaries of the ``svdmark`` package, checked by import analysis.

Every module under ``service/svdmark`` is parsed with :mod:`ast`; every import counts, at module level, inside
a function or under ``if TYPE_CHECKING``. Two declared tables say what may import what:

* :data:`LIBRARIES`: each third-party library (and ``sqlite3``) with the only modules or packages that may
  import it. A library in no table fails the test, so a new dependency is a decision, not an accident.
* :data:`LAYERS`: svdmark modules that one group of modules must never import (stages never import the
  drivers; batch never imports the service; ...).

ARCHITECTURE.md's section "Which module imports which library" is checked against the same tables.
"""
from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import svdmark

PACKAGE = Path(svdmark.__file__).resolve().parent
ARCHITECTURE = Path(__file__).resolve().parents[2] / "ARCHITECTURE.md"

# imported anywhere: the array and DICOM data model that every stage shares
EVERYWHERE = ("numpy", "pydicom")

# library → the modules ("journal") or packages ("receive", with everything in it) that alone may import it
LIBRARIES: dict[str, tuple[str, ...]] = {
    "pynetdicom": ("receive", "export"),
    "highdicom": ("encode", "validation.references"),
    "onnxruntime": ("infer", "cudacheck"),
    "scipy": ("infer.preprocess", "masks", "measure", "route.anatomy", "validation"),
    "PIL": ("encode.summary",),
    "requests": ("export.stow",),
    "urllib3": ("export.stow",),  # requests' transport: its exceptions tell a connection never made
    "pandas": ("batch",),
    "pyarrow": ("batch.table",),  # Parquet (pandas' engine); a date column's Arrow type
    "rich": ("batch.progress",),
    "matplotlib": ("validation.report",),
    "sqlite3": ("journal_engine",),
    "psycopg": ("journal_engine",),
    "structlog": ("logs",),
    "prometheus_client": ("metrics", "health"),
    "svdmark_phantom": ("cli.demo",),
}
# modules that name sqlite3 only for its exception classes (the engine's errors are journal_engine.ERRORS)
SQLITE_ERRORS_ONLY = ("failures",)
# imported only inside a function: the optional test-data package behind the `phantom` extra
FUNCTION_LEVEL_ONLY = ("svdmark_phantom",)
# never imported, so a library that is not declared above is reported anyway; named here for the message
NEVER = ("torch", "training", "nibabel", "nilearn", "stress")

# as ARCHITECTURE.md names them: the drivers claim work and call the stages; the stages analyse one series
DRIVERS = ("service", "worker", "batch", "enqueue", "cli", "shadow", "lifecycle")
STAGES = ("pipeline", "route", "volume", "infer", "measure", "rules", "encode")


@dataclass(frozen=True)
class Layer:
    rule: str
    modules: tuple[str, ...]  # who the rule is about
    never: tuple[str, ...]  # svdmark modules or packages they must not import
    except_: tuple[str, ...] = ()  # modules among ``modules`` the rule leaves out


LAYERS = (
    Layer("the stages never import a driver, the journal, receive/, assemble/ or export/", STAGES,
          DRIVERS + ("journal", "journal_api", "receive", "export", "assemble")),
    Layer("batch/ never imports the service's side (service, worker, shadow, lifecycle, the journal, assemble/, "
          "export/) or the CLI", ("batch",),
          ("service", "worker", "cli", "shadow", "lifecycle", "journal", "journal_api", "export", "assemble")),
    Layer("service.py and worker.py never import the CLI or batch/", ("worker", "service"), ("cli", "batch")),
    Layer("worker.py never imports service.py (the service wires the worker, not the reverse)", ("worker",),
          ("service",)),
    Layer("only cli/ imports cli/", ("",), ("cli",), except_=("cli",)),
    Layer("the journal imports no stage, driver or network layer", ("journal", "journal_api", "journal_engine"),
          DRIVERS + STAGES + ("receive", "export", "health")),
    Layer("domain.py, errors.py and geometry.py import no other svdmark module", ("domain", "errors", "geometry"),
          ("",)),
)


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, relative to svdmark ("receive.scp")
    target: str  # what it imports, absolute ("pynetdicom.sop_class", "svdmark.journal")
    line: int
    top_level: bool  # False inside a function


def _inside(name: str, scope: str) -> bool:
    """Whether module ``name`` is ``scope`` or inside package ``scope`` ("" is the whole package)."""
    return scope == "" or name == scope or name.startswith(scope + ".")


def imports_of(source: str, module: str, is_package: bool = False) -> list[Import]:
    """Every import in ``source``, the source of svdmark module ``module``, resolved to absolute names.

    ``from x import a`` counts as importing ``x`` and ``x.a`` (``a`` may be a submodule).
    """
    found: list[Import] = []
    here = ["svdmark"] + (module.split(".") if module else [])
    package = here if is_package else here[:-1]

    def visit(node: ast.AST, top_level: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = top_level and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend(Import(module, a.name, child.lineno, top_level) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = ".".join(package[:len(package) - (child.level - 1)] + ([child.module] if child.module else []))
                else:
                    base = child.module or ""
                found.append(Import(module, base, child.lineno, top_level))
                found.extend(Import(module, f"{base}.{a.name}", child.lineno, top_level)
                             for a in child.names if a.name != "*")
            visit(child, inner)

    visit(ast.parse(source), True)
    return found


def _sqlite_uses(source: str) -> set[str]:
    """The attributes of ``sqlite3`` that ``source`` names (``sqlite3.Error`` → ``Error``)."""
    return {n.attr for n in ast.walk(ast.parse(source))
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "sqlite3"}


def violations(source: str, module: str, is_package: bool = False) -> list[str]:
    """Every boundary that svdmark module ``module`` with ``source`` crosses, one line each."""
    problems: dict[tuple[int, str], str] = {}  # one line per import statement and boundary
    for imp in imports_of(source, module, is_package):
        top = imp.target.split(".")[0]
        where = f"{module or 'svdmark'}:{imp.line}"
        if top == "svdmark":
            target = imp.target.removeprefix("svdmark").removeprefix(".")
            if not target or target == "__version__":
                continue
            for layer in LAYERS:
                if (any(_inside(module, m) for m in layer.modules) and not any(_inside(module, m) for m in layer.except_)
                        and any(_inside(target, n) for n in layer.never) and not _inside(target, module.split(".")[0])):
                    problems.setdefault((imp.line, layer.rule), f"{where} imports svdmark.{target}: {layer.rule}")
            continue
        if top in EVERYWHERE or (top in sys.stdlib_module_names and top not in LIBRARIES):
            continue
        if top in NEVER or top not in LIBRARIES:
            problem = f"{where} imports {top}: not a declared dependency of svdmark"
        elif top == "sqlite3" and module in SQLITE_ERRORS_ONLY:
            names = sorted(n for n in _sqlite_uses(source) if not n.endswith(("Error", "Warning")))
            problem = f"{where} uses sqlite3.{names} beyond its exception classes" if names else ""
        elif not any(_inside(module, m) for m in LIBRARIES[top]):
            problem = f"{where} imports {top}: only {', '.join(LIBRARIES[top])} may"
        elif top in FUNCTION_LEVEL_ONLY and imp.top_level:
            problem = f"{where} imports {top} at module level: only inside a function"
        else:
            problem = ""
        if problem:
            problems.setdefault((imp.line, top), problem)
    return list(problems.values())


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        yield ".".join(parts[:-1] if is_package else parts), path, is_package


def test_the_package_keeps_its_boundaries():
    modules = list(_modules())
    assert len(modules) > 80
    problems = [p for name, path, pkg in modules for p in violations(path.read_text(encoding="utf-8"), name, pkg)]
    assert problems == []


def test_every_declared_importer_exists_and_imports_it():
    """The table is not stale: each allowed importer exists and at least one of them uses the library."""
    names = {name for name, _, _ in _modules()}
    used: dict[str, set[str]] = {}
    for name, path, pkg in _modules():
        for imp in imports_of(path.read_text(encoding="utf-8"), name, pkg):
            used.setdefault(imp.target.split(".")[0], set()).add(name)
    for library, allowed in LIBRARIES.items():
        assert all(any(_inside(n, m) for n in names) for m in allowed), library
        assert used.get(library), f"{library} is declared but nothing imports it"
    for name in SQLITE_ERRORS_ONLY:
        assert name in used["sqlite3"]


# a stage module that crosses boundaries on lines 3, 4, 7, 9 and 10
PLANTED = """
import numpy as np
import pynetdicom
from .. import worker
from ..domain import Series
if True:
    import torch
def f():
    import svdmark_phantom
    from svdmark.cli import main
"""


def test_a_planted_violation_is_flagged():
    """The check can fail: a stage that imports the worker, pynetdicom, torch and the phantom is reported."""
    found = violations(PLANTED, "measure.planted")
    assert [line.split(" ")[0] for line in found] == [
        "measure.planted:3", "measure.planted:4", "measure.planted:7", "measure.planted:9",
        "measure.planted:10", "measure.planted:10"]
    assert "only receive, export may" in found[0]
    assert "the stages never import a driver" in found[1]
    assert "not a declared dependency" in found[2]
    assert "only cli.demo may" in found[3] and "only cli/ imports cli/" in found[5]
    # the same imports where they belong: the phantom lazily in cli/demo.py, pynetdicom in receive/
    assert violations("def f():\n    import svdmark_phantom\n", "cli.demo") == []
    assert "at module level" in violations("import svdmark_phantom\n", "cli.demo")[0]
    assert violations("import pynetdicom\nfrom . import gate\n", "receive.planted") == []
    # sqlite3 outside the journal: its exception classes only
    assert violations("import sqlite3\nexcept_ = sqlite3.OperationalError\n", "failures") == []
    assert violations("import sqlite3\nsqlite3.connect('x')\n", "failures")
    assert violations("import sqlite3\n", "worker")


# ARCHITECTURE.md ----------------------------------------------------------------------------------------


def _shown(scope: str) -> str:
    """``receive`` → ``receive/``, ``encode.summary`` → ``encode/summary.py``, ``journal`` → ``journal.py``."""
    path = PACKAGE.joinpath(*scope.split("."))
    return f"`{scope.replace('.', '/')}/`" if path.is_dir() else f"`{scope.replace('.', '/')}.py`"


def documented_tables() -> tuple[dict[str, str], list[str]]:
    """The section's library rows (library → importers as written) and its layer rules (bullets)."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    section = text.split("## Which module imports which library", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `([\w.]+)` \| (.+?) \|$", section, re.M))
    rules = re.findall(r"^- (.+)$", section, re.M)
    return rows, rules


def test_architecture_shows_the_same_tables():
    rows, rules = documented_tables()
    expected = {lib: ", ".join(_shown(m) for m in allowed) for lib, allowed in LIBRARIES.items()}
    expected.update({lib: "everywhere" for lib in EVERYWHERE})
    expected.update({lib: "nothing" for lib in NEVER})
    expected["sqlite3"] += " (and, for its exception classes only, " + ", ".join(map(_shown, SQLITE_ERRORS_ONLY)) + ")"
    expected["svdmark_phantom"] += " (inside a function only)"
    assert rows == expected
    assert rules == [layer.rule for layer in LAYERS]

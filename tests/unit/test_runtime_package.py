"""The runtime package holds runtime code only: no module of ``svdmark`` imports the test-data generator
``svdmark_phantom`` when it is imported (only inside a function, as ``svdmark demo`` does)."""
from __future__ import annotations

import ast
from pathlib import Path

import svdmark

PACKAGE = Path(svdmark.__file__).parent


def _module_level_imports(tree: ast.Module):
    """Import nodes executed when the module is imported: everything outside function bodies."""
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        todo.extend(ast.iter_child_nodes(node))


def _names(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    return [node.module or ""] if node.level == 0 else []


def test_no_module_of_svdmark_imports_the_generator_at_module_level():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in _module_level_imports(ast.parse(path.read_text(), str(path))):
            if any(n == "svdmark_phantom" or n.startswith("svdmark_phantom.") for n in _names(node)):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert not offenders, offenders


def test_the_generator_is_not_inside_the_runtime_package():
    assert not list(PACKAGE.glob("phantom/*.py"))
    assert not [p for p in PACKAGE.rglob("*.py") if "phantom" in p.stem]

"""Only the journal module holds SQL: every other module of the package reads and writes state through it.

Each module under service/svdmark is parsed; a string literal (f-strings included) that reads as an SQL
statement, or a call that runs one (``.execute``, ``.executemany``, ``.executescript``,
``sqlite3.connect``), outside ``journal.py`` fails the test. Importing sqlite3 for its exception types
is allowed.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import svdmark

PACKAGE = Path(svdmark.__file__).resolve().parent
OWNER = PACKAGE / "journal.py"
ENGINE = PACKAGE / "journal_engine.py"  # the engine plumbing: connections, schema version, advisory locks

# upper-case SQL as this code base writes it; "SELECTED FROM IMAGE" (an SR concept name) is not a statement
STATEMENT = re.compile(
    r"\b(SELECT\s+(DISTINCT\s+)?[\w*.,() ]+\s+FROM\b|INSERT\s+(OR\s+[A-Z]+\s+)?INTO\b|UPDATE\s+\w+\s+SET\b"
    r"|DELETE\s+FROM\b|(CREATE|DROP)\s+(TABLE|INDEX|VIEW|TRIGGER)\b|ALTER\s+TABLE\b|PRAGMA\s+\w+"
    r"|BEGIN\s+(IMMEDIATE|EXCLUSIVE|DEFERRED)\b)")
RUNS_SQL = {"execute", "executemany", "executescript"}


def _strings(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value
        elif isinstance(node, ast.JoinedStr):  # an f-string: its literal parts with a gap for each value
            yield node.lineno, " x ".join(v.value for v in node.values
                                         if isinstance(v, ast.Constant) and isinstance(v.value, str))


def sql_in(source: str) -> list[tuple[int, str]]:
    """(line, what) for every SQL statement or SQL call in ``source``."""
    tree = ast.parse(source)
    found = [(line, m.group(0)) for line, text in _strings(tree) for m in [STATEMENT.search(text)] if m]
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            name = node.func.attr
            owner = node.func.value
            if name in RUNS_SQL or (name == "connect" and isinstance(owner, ast.Name) and owner.id == "sqlite3"):
                found.append((node.lineno, f".{name}("))
    return sorted(found)


def test_only_the_journal_contains_sql():
    modules = sorted(PACKAGE.rglob("*.py"))
    assert OWNER in modules and len(modules) > 50
    offenders = {str(p.relative_to(PACKAGE)): hits for p in modules if p not in (OWNER, ENGINE)
                 for hits in [sql_in(p.read_text(encoding="utf-8"))] if hits}
    assert offenders == {}


def test_the_check_finds_sql():
    """The check is able to fail: planted statements and calls are found, prose and SR concept names are not."""
    planted = '''
import sqlite3
QUERY = "SELECT id, state FROM jobs WHERE id=?"
def f(db, table, n):
    db.execute(f"UPDATE {table} SET state=? WHERE id={n}")
    sqlite3.connect("x").executemany("INSERT OR IGNORE INTO t VALUES (?)", [])
DOC = """the SCOORD is SELECTED FROM an image; select the rows from the table; an UPDATE of the model"""
'''
    hits = sql_in(planted)
    assert [line for line, _ in hits] == [3, 5, 5, 6, 6, 6]
    assert [what.split()[0] for _, what in hits if not what.startswith(".")] == ["SELECT", "UPDATE", "INSERT"]
    assert sql_in(OWNER.read_text(encoding="utf-8"))  # the journal's own SQL is seen by the same check

"""The journal that the svdmark processes of a test use, on the engine the suite runs on, and reading it.

By default every data dir has its SQLite journal (``<data-dir>/journal.sqlite``), as a site's embedded
install does. ``SVDMARK_TEST_JOURNAL=postgresql bash scripts/test.sh`` runs the same suite with every svdmark
the tests start, in a subprocess or in-process, on a PostgreSQL journal of the session's real server
(tests/pgserver.py): :func:`for_test` gives each test a fresh database through ``$SVDMARK_JOURNAL``, and
:func:`url_for` gives each further data dir of the test a database of its own (two services in one test are
two sites, not one cluster; tests/integration/test_scale_out.py is the cluster).

Tests read a journal with :func:`query`, which takes the data dir and goes through the product's own engine
(``svdmark.journal_engine``), so the same assertion runs on both engines.
"""
from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ENGINE = os.environ.get("SVDMARK_TEST_JOURNAL", "sqlite").strip().lower() or "sqlite"
if ENGINE not in ("sqlite", "postgresql"):
    raise RuntimeError(f"SVDMARK_TEST_JOURNAL must be sqlite or postgresql, not {ENGINE!r}")


class _Test:
    """The PostgreSQL databases of the running test: one per data dir, the first is the test's default."""

    def __init__(self, server, default_url: str):
        self.server = server
        self.default_url = default_url
        self.names: list[str] = []
        self.by_dir: dict[Path, str] = {}

    def url_for(self, data_dir: Path) -> str:
        key = Path(data_dir).resolve()
        if key not in self.by_dir:
            self.by_dir[key] = self.default_url if not self.by_dir else self.new_database()
        return self.by_dir[key]

    def new_database(self) -> str:
        name = f"test_{secrets.token_hex(6)}"
        self.names.append(name)
        return self.server.create_database(name)


_current: _Test | None = None


@contextmanager
def for_test(server) -> Iterator[str]:
    """A fresh database for one test (its URL); every database the test got is dropped afterwards."""
    global _current
    test = _Test(server, "")
    test.default_url = test.new_database()
    _current = test
    try:
        yield test.default_url
    finally:
        _current = None
        for name in test.names:
            try:
                server.drop_database(name)
            except Exception:  # noqa: BLE001 - the test may have stopped the server; the session removes it all
                pass


def url_for(data_dir: Path) -> str:
    """The journal URL of the svdmark that runs on ``data_dir`` in this test."""
    if _current is None:
        return f"sqlite:///{(Path(data_dir) / 'journal.sqlite').resolve()}"
    return _current.url_for(data_dir)


def env_for(data_dir: Path) -> dict[str, str]:
    """Environment for an svdmark process on ``data_dir``: its journal, where the suite runs on PostgreSQL."""
    return {"SVDMARK_JOURNAL": url_for(data_dir)} if _current is not None else {}


def query(data_dir: Path, sql: str, args: tuple[Any, ...] = ()) -> list[tuple]:
    """All rows of one read-only statement (``?`` parameters) on the journal of ``data_dir``."""
    from svdmark.journal_engine import Engine

    conn = Engine(url_for(data_dir)).read_only()
    try:
        return [tuple(row) for row in conn.execute(sql, args).fetchall()]
    finally:
        conn.close()


def value(data_dir: Path, sql: str, args: tuple[Any, ...] = ()) -> Any:
    """The first column of the first row of :func:`query`."""
    return query(data_dir, sql, args)[0][0]

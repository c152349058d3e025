"""The journal that the svdmark processes of a test use, on the engine the suite runs on, and reading it.

By default every data dir has its SQLite journal (``<data-dir>/journal.sqlite``), as a site's embedded
install does. ``SVDMARK_TEST_JOURNAL=postgresql bash scripts/test.sh`` runs the same suite with every svdmark
the tests start, in a subprocess or in-process, on a PostgreSQL journal of the session's real server
(tests/pgserver.py): :func:`for_test` gives each test a fresh database through ``$SVDMARK_JOURNAL``, the
first data dir a test starts svdmark on takes it, and each further data dir gets a database of its own (two
services in one test are two sites, not one cluster; tests/integration/test_scale_out.py is the cluster).
A data dir keeps its database for as long as it lives: a module's service outlives the test that started it.

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
    """The PostgreSQL databases of the running test: one per data dir, the first takes the test's default."""

    def __init__(self, tmp: Path | None):
        self.tmp = tmp.resolve() if tmp is not None else None
        self.default_url = _create()
        self.default_taken = False
        self.claimed: list[Path] = []

    def claim(self, key: Path) -> str:
        url = _create() if self.default_taken else self.default_url
        self.default_taken = True
        self.claimed.append(key)
        return url

    def finish(self) -> None:
        """Drop the databases of this test's own data dirs (under its tmp_path) and an unused default. A data
        dir elsewhere belongs to a fixture that outlives the test (a module's service): its database stays."""
        drop = [] if self.default_taken else [self.default_url]
        for key in self.claimed:
            if self.tmp is not None and key.is_relative_to(self.tmp):
                drop.append(_by_dir.pop(key))
        for url in drop:
            try:
                _server.drop_database(url.rsplit("/", 1)[1])
            except Exception:  # noqa: BLE001 - the test may have stopped the server; the session removes it all
                pass


_server = None  # the session's PostgresServer, under SVDMARK_TEST_JOURNAL=postgresql (tests/conftest.py)
_current: _Test | None = None
_by_dir: dict[Path, str] = {}  # data dir -> its database, for as long as the data dir is in use
_embedded = False  # a test marked embedded_journal is running: SQLite as by default


@contextmanager
def embedded() -> Iterator[None]:
    """For a test about the embedded SQLite default itself (marker ``embedded_journal``)."""
    global _embedded
    _embedded = True
    try:
        yield
    finally:
        _embedded = False


def _create() -> str:
    return _server.create_database(f"test_{secrets.token_hex(6)}")


def use_server(server) -> None:
    """The session's PostgreSQL server: from now on, svdmark processes of the tests get their journals there."""
    global _server
    _server = server


@contextmanager
def for_test(tmp: Path | None) -> Iterator[str]:
    """A fresh default database for one test (its URL, for ``$SVDMARK_JOURNAL``); see :meth:`_Test.finish`."""
    global _current
    _current = _Test(tmp)
    try:
        yield _current.default_url
    finally:
        test, _current = _current, None
        test.finish()


def url_for(data_dir: Path) -> str:
    """The journal URL of the svdmark that runs on ``data_dir``: its SQLite file, or its PostgreSQL database
    (a fixture wider than a test, such as a module's service, gets one of its own for the session)."""
    key = Path(data_dir).resolve()
    if _server is None or _embedded:
        return f"sqlite:///{key / 'journal.sqlite'}"
    if key not in _by_dir:
        _by_dir[key] = _current.claim(key) if _current is not None else _create()
    return _by_dir[key]


def env_for(data_dir: Path) -> dict[str, str]:
    """Environment for an svdmark process on ``data_dir``: its journal, where the suite runs on PostgreSQL."""
    url = url_for(data_dir)
    return {} if url.startswith("sqlite:") else {"SVDMARK_JOURNAL": url}


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

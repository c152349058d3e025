"""The database under the journal: SQLite (the embedded default) or PostgreSQL (several processes, several hosts).

:mod:`svdmark.journal` writes its statements once, in the SQL both engines speak (``?`` parameters,
``INSERT … ON CONFLICT``, ``RETURNING``); an :class:`Engine` opens connections, runs transactions and
supplies the few things that differ:

* **schema version**: SQLite's ``PRAGMA user_version``; on PostgreSQL the table ``svdmark_schema``;
* **DDL**: SQLite's ``INTEGER PRIMARY KEY AUTOINCREMENT`` / ``REAL`` become identity columns and
  ``DOUBLE PRECISION`` (PostgreSQL's ``REAL`` is 4 bytes: it would round epoch timestamps to minutes);
* **write transactions**: SQLite's ``BEGIN IMMEDIATE`` serialises every writer on the file. PostgreSQL runs them
  side by side (READ COMMITTED), so the journal names what a read-then-write transaction depends on:
  :meth:`Connection.lock` takes a transaction-scoped advisory lock on a key (a series UID), and
  ``connection.for_update`` / ``connection.skip_locked`` are row-lock clauses (empty on SQLite);
* **leadership**: :meth:`Engine.leader_lock` holds a session-level advisory lock on a connection of its own
  (PostgreSQL's own tool for "exactly one process does this"); on SQLite, one process owns the file and is
  always the leader;
* **errors**: :data:`ERRORS` are the exception types either driver raises, for callers that report a
  journal that refused a read or write.

A URL selects the engine: ``sqlite:///ABSOLUTE/PATH`` (or a plain path) and ``postgresql://USER@HOST:PORT/DB``.
psycopg 3 is imported only for PostgreSQL (the ``postgresql`` extra); a PostgreSQL connection that the server
dropped (a restart) is replaced on the next use.

Written here rather than with SQLAlchemy Core: the journal's ~60 statements are plain SQL that both engines
run unchanged; what differs is the handful of points above, which an ORM's dialect layer would not
decide for us (advisory locks, SKIP LOCKED, which transactions serialise).
"""
from __future__ import annotations

import sqlite3
import threading
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence
from urllib.parse import urlsplit

try:  # PostgreSQL is optional (the `postgresql` extra)
    import psycopg
    from psycopg import pq
except ImportError:  # pragma: no cover - exercised where the extra is not installed
    psycopg = None  # type: ignore[assignment]
    pq = None  # type: ignore[assignment]

ERRORS: tuple[type[BaseException], ...] = (sqlite3.Error,) + ((psycopg.Error,) if psycopg is not None else ())
OPERATIONAL_ERRORS: tuple[type[BaseException], ...] = (
    (sqlite3.OperationalError,) + ((psycopg.OperationalError,) if psycopg is not None else ()))


class EngineError(RuntimeError):
    """The journal URL names no engine this build can open."""


def parse_url(url: str | Path) -> tuple[str, str]:
    """(engine, target): ("sqlite", file path) or ("postgresql", the URL as given)."""
    text = str(url)
    if isinstance(url, Path) or "://" not in text:
        return "sqlite", text
    scheme = urlsplit(text).scheme
    if scheme == "sqlite":  # SQLAlchemy's form: sqlite:///relative/path, sqlite:////absolute/path
        return "sqlite", text[len("sqlite:///"):] if text.startswith("sqlite:///") else text[len("sqlite://"):]
    if scheme in ("postgresql", "postgres"):
        return "postgresql", text
    raise EngineError(f"journal URL scheme {scheme!r} is not supported: use sqlite:///PATH or postgresql://…")


def redact(url: str) -> str:
    """The URL without its password (for logs and status)."""
    parts = urlsplit(str(url))
    if parts.password is None:
        return str(url)
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()


# advisory-lock classes (the first of PostgreSQL's two int4 keys): one key space per kind of lock, so a series
# UID can never collide with a leadership or the schema lock
SERIES_LOCK, LEADER_LOCK, SCHEMA_LOCK = 0x5D401, 0x5D402, 0x5D403


def lock_key(name: str) -> int:
    """A stable int4 key for a name within its class (crc32, the same in every process)."""
    return zlib.crc32(name.encode()) - 2**31


class Connection:
    """One connection, with the engine's dialect: ``execute`` takes ``?`` parameters on both engines."""

    for_update = ""
    skip_locked = ""

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Any:
        raise NotImplementedError

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        raise NotImplementedError

    def lock(self, name: str) -> None:
        """Serialise this transaction with others that lock ``name`` (no-op where every writer is serialised)."""

    def try_lock(self, name: str) -> bool:
        """:meth:`lock` without waiting: False when another transaction holds ``name`` (a lock taken out of order
        must not wait, or two transactions can wait on each other)."""
        return True

    def close(self) -> None:
        raise NotImplementedError


class _SqliteConnection(Connection):
    def __init__(self, path: str, read_only: bool = False):
        if read_only:  # never creates the file, never changes its mode or schema
            self.raw = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
            return
        self.raw = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=True)
        self.raw.row_factory = sqlite3.Row
        self.raw.execute("PRAGMA journal_mode=WAL")
        self.raw.execute("PRAGMA synchronous=FULL")
        self.raw.execute("PRAGMA foreign_keys=ON")

    def execute(self, sql, args=()):
        return self.raw.execute(sql, args)

    def executemany(self, sql, rows):
        self.raw.executemany(sql, rows)

    def close(self):
        self.raw.close()


class Row(tuple):
    """A PostgreSQL row readable like ``sqlite3.Row``: by position and by column name; ``dict(row)`` works."""

    _names: tuple[str, ...] = ()

    def __getitem__(self, key):  # type: ignore[override]
        if isinstance(key, str):
            return tuple.__getitem__(self, self._names.index(key))
        return tuple.__getitem__(self, key)

    def keys(self) -> tuple[str, ...]:
        return self._names


def _row_factory(cursor):
    names = tuple(c.name for c in cursor.description or ())
    cls = type("Row", (Row,), {"_names": names})
    return lambda values: cls(values)


def _pg_sql(sql: str) -> str:
    return sql.replace("%", "%%").replace("?", "%s")


class _PostgresConnection(Connection):
    for_update = " FOR UPDATE"
    skip_locked = " FOR UPDATE SKIP LOCKED"

    def __init__(self, url: str):
        if psycopg is None:
            raise EngineError("a postgresql:// journal needs psycopg: pip install 'svdmark[postgresql]'")
        self.raw = psycopg.connect(url, autocommit=True, row_factory=_row_factory, connect_timeout=10)

    @property
    def usable(self) -> bool:
        return not self.raw.closed and not self.raw.broken

    def execute(self, sql, args=()):
        return self.raw.execute(_pg_sql(sql), tuple(args) or None)

    def executemany(self, sql, rows):
        with self.raw.cursor() as cur:
            cur.executemany(_pg_sql(sql), [tuple(r) for r in rows])

    def lock(self, name):
        self.raw.execute("SELECT pg_advisory_xact_lock(%s, %s)", (SERIES_LOCK, lock_key(name)))

    def try_lock(self, name):
        return bool(self.raw.execute("SELECT pg_try_advisory_xact_lock(%s, %s)",
                                     (SERIES_LOCK, lock_key(name))).fetchone()[0])

    def in_transaction(self) -> bool:
        return self.raw.info.transaction_status != pq.TransactionStatus.IDLE

    def close(self):
        self.raw.close()


class Engine:
    """Connections (one per thread), transactions and schema-version bookkeeping for one journal URL."""

    def __init__(self, url: str | Path):
        self.kind, self.target = parse_url(url)
        self.url = str(url)
        self._local = threading.local()
        self._leader: dict[str, Connection] = {}
        self._holding: set[str] = set()  # leaderships the connection in _leader holds
        self._leader_guard = threading.Lock()

    @property
    def shared(self) -> bool:
        """Several processes may use this journal at once (PostgreSQL)."""
        return self.kind == "postgresql"

    def describe(self) -> str:
        return self.target if self.kind == "sqlite" else redact(self.url)

    def _open(self) -> Connection:
        return _SqliteConnection(self.target) if self.kind == "sqlite" else _PostgresConnection(self.url)

    def conn(self) -> Connection:
        conn = getattr(self._local, "conn", None)
        if conn is not None and isinstance(conn, _PostgresConnection) and not conn.usable:
            conn = None  # the server dropped it (a restart): open a new one
        if conn is None:
            conn = self._open()
            self._local.conn = conn
        return conn

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        db = self.conn()
        db.execute("BEGIN IMMEDIATE" if self.kind == "sqlite" else "BEGIN")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            self._rollback(db)
            raise

    @staticmethod
    def _rollback(db: Connection) -> None:
        try:
            if isinstance(db, _SqliteConnection):
                if db.raw.in_transaction:  # also when COMMIT itself failed (a full disk): never leave it open
                    db.raw.execute("ROLLBACK")
            elif db.usable and db.in_transaction():
                db.execute("ROLLBACK")
        except ERRORS:
            pass  # the connection is gone; the server rolled the transaction back

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
        with self._leader_guard:
            for c in self._leader.values():
                c.close()
            self._leader.clear()
            self._holding.clear()

    # ------------------------------------------------------------ schema
    def ddl(self, script: str) -> str:
        if self.kind == "sqlite":
            return script
        return (script.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY")
                .replace(" REAL", " DOUBLE PRECISION").replace(" INTEGER", " BIGINT"))

    def run_script(self, db: Connection, script: str) -> None:
        if isinstance(db, _SqliteConnection):
            for statement in script.split(";"):  # executescript would commit an open transaction first
                if statement.strip():
                    db.raw.execute(statement)
        else:
            db.raw.execute(self.ddl(script))  # type: ignore[attr-defined]

    def schema_version(self, db: Connection) -> int:
        if self.kind == "sqlite":
            return int(db.execute("PRAGMA user_version").fetchone()[0])
        db.execute("CREATE TABLE IF NOT EXISTS svdmark_schema (version INTEGER NOT NULL)")
        row = db.execute("SELECT MAX(version) FROM svdmark_schema").fetchone()
        return int(row[0] or 0)

    def set_schema_version(self, db: Connection, version: int) -> None:
        if self.kind == "sqlite":
            db.execute(f"PRAGMA user_version = {int(version)}")
        else:
            db.execute("DELETE FROM svdmark_schema")
            db.execute("INSERT INTO svdmark_schema(version) VALUES (?)", (int(version),))

    def add_columns(self, db: Connection, table: str, columns: dict[str, str]) -> None:
        if self.kind == "sqlite":
            have = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
            for name, decl in columns.items():
                if name not in have:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")
        else:
            for name, decl in columns.items():
                db.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {name} {self.ddl(' ' + decl).strip()}")

    @contextmanager
    def schema_lock(self) -> Iterator[None]:
        """Only one process creates or migrates the schema at a time (PostgreSQL: a session advisory lock)."""
        if self.kind == "sqlite":
            yield
            return
        db = self.conn()
        db.execute("SELECT pg_advisory_lock(?, 0)", (SCHEMA_LOCK,))
        try:
            yield
        finally:
            if db.usable:  # type: ignore[attr-defined]
                db.execute("SELECT pg_advisory_unlock(?, 0)", (SCHEMA_LOCK,))

    def clock_offset(self, clock: Callable[[], float]) -> float:
        """The database server's clock minus ``clock`` (seconds), measured across one round trip; 0 for SQLite,
        whose file has no clock of its own (one host writes it)."""
        if self.kind == "sqlite":
            return 0.0
        db = self.conn()
        t0 = clock()
        server = float(db.execute("SELECT EXTRACT(EPOCH FROM clock_timestamp())").fetchone()[0])
        t1 = clock()
        return server - (t0 + t1) / 2

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
        """A read transaction that sees one consistent state of every table (a journal copy reads through it)."""
        db = self.conn()
        db.execute("BEGIN" if self.kind == "sqlite" else "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            yield db
        finally:
            self._rollback(db)

    def move_identity_past(self, db: Connection, table: str) -> None:
        """After rows were inserted with their ids: the next generated id of ``table`` follows the largest.
        SQLite's AUTOINCREMENT does this itself; a PostgreSQL identity sequence does not."""
        if self.kind == "postgresql":
            db.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE(MAX(id), 0) + 1, false)"
                       f" FROM {table}")

    # ------------------------------------------------------------ leadership
    def leader_lock(self, name: str) -> bool:
        """Hold (or take) the leadership of ``name``; False while another process holds it.

        PostgreSQL: a session-level advisory lock on a connection kept for it; the server releases it when
        the holder's session ends (the process died, or the server restarted), and the next caller takes it.
        """
        if self.kind == "sqlite":
            return True
        with self._leader_guard:
            for _ in range(2):  # a connection the server dropped (a restart) is replaced once, in this call
                conn = self._leader.get(name)  # the connection that holds the lock, or tries for it (standby)
                try:
                    if conn is None:
                        conn = self._leader[name] = self._open()
                    if name in self._holding:
                        conn.execute("SELECT 1")  # still connected: the server still holds the lock for us
                        return True
                    got = conn.execute("SELECT pg_try_advisory_lock(?, ?)",
                                       (LEADER_LOCK, lock_key(name))).fetchone()[0]
                except ERRORS:
                    self._holding.discard(name)
                    dropped = self._leader.pop(name, None)
                    if dropped is not None:
                        dropped.close()
                    continue
                if got:
                    self._holding.add(name)
                return bool(got)
            return False

    # ------------------------------------------------------------ health (connections of their own)
    def read_only(self) -> Connection:
        """A connection that never creates or migrates anything (SQLite: opened read-only)."""
        if self.kind == "sqlite":
            return _SqliteConnection(self.target, read_only=True)
        return _PostgresConnection(self.url)

    def probe_write(self) -> None:
        """Take the write lock and let it go at once (SQLite); a write transaction that commits nothing (PostgreSQL)."""
        if self.kind == "sqlite":
            raw = sqlite3.connect(self.target, timeout=5.0, isolation_level=None)
            try:
                raw.execute("BEGIN IMMEDIATE")
                raw.execute("ROLLBACK")
            finally:
                raw.close()
            return
        conn = _PostgresConnection(self.url)
        try:
            conn.execute("BEGIN")
            conn.execute("SELECT txid_current()")  # assigns a transaction id: fails on a read-only server
            conn.execute("ROLLBACK")
        finally:
            conn.close()

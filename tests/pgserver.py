"""A real PostgreSQL server for tests: Debian's binaries, a temporary directory, a free localhost port.

initdb and postgres refuse to run as root, so under root (CI) the server runs as ``nobody``. The server keeps
fsync on (crash tests restart it with ``-m immediate`` and expect committed rows back); only initdb skips it.
"""
from __future__ import annotations

import os
import pwd
import shlex
import shutil
import subprocess
import tempfile
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

from tests.peers import free_port

SUPERUSER = "svdmark"
PROGRAMS = ("initdb", "pg_ctl", "postgres")
DEBIAN_ROOT = Path("/usr/lib/postgresql")


class PostgresNotFound(RuntimeError):
    """The PostgreSQL server programs are not installed."""


class PostgresError(RuntimeError):
    """initdb or pg_ctl failed."""


def _has_programs(bindir: Path) -> bool:
    return all(os.access(bindir / p, os.X_OK) for p in PROGRAMS)


def find_bindir() -> Path:
    """The newest /usr/lib/postgresql/<N>/bin, else ``pg_config --bindir``, else initdb's directory on PATH."""
    versions = sorted((p for p in DEBIAN_ROOT.glob("*/bin") if p.parent.name.isdigit()),
                      key=lambda p: int(p.parent.name), reverse=True)
    candidates = list(versions)
    if pg_config := shutil.which("pg_config"):
        r = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if r.returncode == 0 and r.stdout.strip():
            candidates.append(Path(r.stdout.strip()))
    if initdb := shutil.which("initdb"):
        candidates.append(Path(initdb).resolve().parent)
    for bindir in candidates:
        if _has_programs(bindir):
            return bindir
    raise PostgresNotFound(
        f"PostgreSQL server programs ({', '.join(PROGRAMS)}) not found in {DEBIAN_ROOT}/<N>/bin, "
        "`pg_config --bindir` or PATH: install the Debian package `postgresql` (scripts/test.sh does)")


def _run_as() -> dict:
    """subprocess arguments that run the server as ``nobody`` when we are root; none otherwise."""
    if os.geteuid() != 0:
        return {}
    nobody = pwd.getpwnam("nobody")
    return {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}


@dataclass(frozen=True)
class _Cluster:
    """One temporary cluster's directory, programs and OS identity: all the finaliser needs (not the server)."""

    bindir: Path
    root: Path
    run_as: dict = field(default_factory=dict)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def sockets(self) -> Path:
        return self.root / "sock"

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    def prepare(self) -> None:
        """Create the socket directory; hand the tree to the server's user (the directory is its HOME too)."""
        self.sockets.mkdir()
        if self.run_as:
            for path in (self.root, self.sockets):
                os.chown(path, self.run_as["user"], self.run_as["group"])

    def run(self, program: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")} | {"HOME": str(self.root)}
        r = subprocess.run([str(self.bindir / program), *args], cwd=self.root, env=env, capture_output=True,
                           text=True, timeout=120, **self.run_as)
        if check and r.returncode != 0:
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else "(no server log)"
            raise PostgresError(f"{program} {' '.join(args[:1])} failed (exit {r.returncode}):\n"
                                f"{r.stdout}{r.stderr}\n--- {self.log} ---\n{log}")
        return r

    def shutdown(self) -> None:
        """Stop the postmaster if one runs (fast, then immediate) and remove the directory."""
        if (self.data / "postmaster.pid").exists():
            for mode in ("fast", "immediate"):
                if self.run("pg_ctl", "stop", "-D", str(self.data), "-m", mode, "-w", "-t", "60",
                            check=False).returncode == 0:
                    break
        shutil.rmtree(self.root, ignore_errors=True)


class PostgresServer:
    """A PostgreSQL server on 127.0.0.1:<free port>, superuser ``svdmark``, trust auth; removed on stop().

    Usable once: start(), any number of restart()s, stop(). A finaliser (also run at interpreter exit) stops a
    server nobody stopped.
    """

    def __init__(self, bindir: Path | None = None):
        self.bindir = bindir or find_bindir()
        self.port: int | None = None
        self._cluster: _Cluster | None = None
        self._finalizer: weakref.finalize | None = None

    @property
    def log_path(self) -> Path:
        return self._started().log

    @property
    def url(self) -> str:
        """The URL of the ``postgres`` maintenance database."""
        return self.url_for("postgres")

    def url_for(self, dbname: str) -> str:
        self._started()
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{quote(dbname, safe='')}"

    def start(self) -> PostgresServer:
        if self._cluster is not None:
            raise PostgresError("PostgresServer.start() called twice")
        self._cluster = _Cluster(self.bindir, Path(tempfile.mkdtemp(prefix="svdmark-pg-")), _run_as())
        self._finalizer = weakref.finalize(self, self._cluster.shutdown)
        try:
            self._cluster.prepare()
            self._cluster.run("initdb", "-D", str(self._cluster.data), "-U", SUPERUSER, "-E", "UTF8",
                              "--locale=C", "--auth=trust", "--no-sync")
            self.port = free_port()
            self._pg_ctl("start")
        except BaseException:
            self.stop()
            raise
        return self

    def restart(self, mode: str = "immediate") -> None:
        """Restart the server; ``immediate`` kills it without a checkpoint, so it starts with crash recovery."""
        self._pg_ctl("restart", "-m", mode)

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its directory; does nothing the second time."""
        if self._finalizer is not None:
            self._finalizer()

    def create_database(self, name: str) -> str:
        """Create database ``name``; returns its URL."""
        self._admin("CREATE DATABASE {}", name)
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name``, closing its connections."""
        self._admin("DROP DATABASE IF EXISTS {} WITH (FORCE)", name)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _started(self) -> _Cluster:
        if self._cluster is None:
            raise PostgresError("PostgresServer not started")
        return self._cluster

    def _pg_ctl(self, action: str, *args: str) -> None:
        cluster = self._started()
        options = (f"-p {self.port} -k {shlex.quote(str(cluster.sockets))} "
                   "-c listen_addresses=127.0.0.1 -c max_connections=200")
        cluster.run("pg_ctl", action, "-D", str(cluster.data), "-l", str(cluster.log), "-w", "-t", "60",
                    "-o", options, *args)

    def _admin(self, statement: str, name: str) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(sql.SQL(statement).format(sql.Identifier(name)))

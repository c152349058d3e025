"""The journal: instances, series, jobs, results and deliveries, in SQLite (one process) or PostgreSQL (many).

Every state transition is one transaction (SQLite: WAL, ``synchronous=FULL``; PostgreSQL: a committed
transaction), so a ``kill -9`` at any moment leaves a state from which a restart resumes:

* series:     receiving → queued → analysed  (:class:`SeriesState`; a late instance sends it back to
              receiving, with ``generation`` + 1, so the next analysis supersedes the last: the policy
              is :func:`svdmark.assemble.reanalysis.after_instance`, applied here in one transaction;
              an instance journalled again under another series leaves its series, which is judged again
              on what it still holds, or closed (analysed) with none: ``after_departure``)
* jobs:       pending → running → done | failed | ignored
              running → pending  (:meth:`Journal.retry_job_later`: a transient failure such as a
                                  full disk; ``attempts`` + 1, ``not_before`` = now + back-off,
                                  ``failed`` once ``attempts`` reaches the cap)
              running → pending  (:meth:`Journal.recover`, on restart: an interruption, not a failure;
                                  ``interruptions`` + 1, queued behind the jobs already waiting,
                                  ``failed`` (quarantined) once the job, not a crash loop, looks like
                                  the cause: see :meth:`Journal.recover`)
* deliveries: pending → sending → delivered | dead          (sending → pending on restart, recorded as an
                                                            ``interrupted`` try: it may have reached the destination,
                                                            so a supersession rejects it as if delivered; → dead at
                                                            the tenth such try in a row: see :meth:`Journal.recover`)
              pending → superseded  (:meth:`Journal.finish_job` with a :class:`Supersession`: newer
                                     results of the series are done before this object was sent)
              sending → superseded  (:meth:`Journal.mark_failed`: newer results rejected it while a try
                                     was in flight, and the try failed; never retried)
              dead → pending (:meth:`Journal.resend_dead`: the attempt count and history are kept;
                              the new round gets ``max_attempts`` tries of its own)

Several processes (PostgreSQL): a running job and a delivery in flight carry a lease (``owner``, ``lease_until``)
that the holder's :meth:`Journal.heartbeat` renews; :meth:`Journal.recover` returns only lapsed ones to the queue,
and a worker whose lease lapsed cannot record its result (:class:`LeaseLost`). Transactions that read and then
write a series lock it by name; jobs are claimed with ``FOR UPDATE SKIP LOCKED``; one process at a time leads
assembly (:meth:`Journal.lead`, an advisory lock). The engine differences are in :mod:`svdmark.journal_engine`.

Schema versions: the engine's schema version (SQLite: ``PRAGMA user_version``) names the schema a journal has; :data:`MIGRATIONS` brings
any older file (version 0 is the schema before versions existed) up to :data:`SCHEMA_VERSION`
when it is opened, one transaction per step. A file newer than this code is refused.

This is the only module with SQL (``tests/unit/test_sql_boundary.py`` checks): every other module
reads and writes state through named methods, and reads come back as frozen dataclasses
(a few older readers still get rows by column name: :meth:`Journal.jobs`, :meth:`Journal.deliveries`,
:meth:`Journal.delivery_attempts`).
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Collection, Mapping, Sequence

from .assemble.reanalysis import after_departure, after_instance, on_request
from .domain import DeliveryState, JobState, OutputKind, SendClaim, SeriesState
from .errors import RetryLater
from .failures import reason_of
from .geometry import SliceGeometry
from .journal_engine import ERRORS, OPERATIONAL_ERRORS, Connection, Engine
from .summary import ResultSummary

SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    sop_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL,
    series_uid TEXT NOT NULL,
    sop_class TEXT NOT NULL,
    transfer_syntax TEXT NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    digest TEXT NOT NULL,
    geometry TEXT NOT NULL,
    calling_ae TEXT,
    received_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_series ON instances(series_uid);
CREATE TABLE IF NOT EXISTS series (
    series_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL,
    modality TEXT,
    first_received REAL NOT NULL,
    last_received REAL NOT NULL,
    released INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'receiving',  -- SeriesState
    generation INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    series_uid TEXT NOT NULL,
    study_uid TEXT NOT NULL,
    generation INTEGER NOT NULL,
    state TEXT NOT NULL,
    completion TEXT NOT NULL,
    routing TEXT,
    rule_id TEXT,
    detail TEXT,
    model_name TEXT,
    model_version TEXT,
    model_sha TEXT,
    ruleset_version TEXT,
    summary TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    interruptions INTEGER NOT NULL DEFAULT 0,
    not_before REAL NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    UNIQUE(series_uid, generation)
);
CREATE TABLE IF NOT EXISTS results (
    sop_uid TEXT PRIMARY KEY,
    job_id INTEGER NOT NULL REFERENCES jobs(id),
    series_uid TEXT NOT NULL,
    kind TEXT NOT NULL,
    sop_class TEXT NOT NULL,
    path TEXT NOT NULL,
    supersedes TEXT,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sop_uid TEXT NOT NULL REFERENCES results(sop_uid),
    destination TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error TEXT,
    delivered_at REAL,
    UNIQUE(sop_uid, destination)
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class StoredInstance:
    sop_uid: str
    series_uid: str
    sop_class: str
    path: Path
    geometry: SliceGeometry


class Recorded(str):
    """:meth:`Journal.record_instance`'s outcome, "new", "replaced", "duplicate" or "conflict" (nothing recorded: a new
    SOP Instance UID under a Series Instance UID that holds another study's instances) (compares as that string), and
    ``displaced``: the spool file the instance's row named before, where a replacement named another (it came under
    another Series or Study Instance UID). No row names that file any more: the caller, which owns the spool's
    files, removes it once the row is committed."""

    displaced: Path | None

    def __new__(cls, outcome: str, displaced: Path | None = None) -> "Recorded":
        recorded = super().__new__(cls, outcome)
        recorded.displaced = displaced
        return recorded


@dataclass(frozen=True)
class SeriesRow:
    series_uid: str
    study_uid: str
    modality: str | None
    first_received: float
    last_received: float
    released: bool
    state: SeriesState
    generation: int
    # its images were purged then (svdmark purge), or its last instance was received again under another series
    # (the audit trail's series.emptied); None: they are in the spool
    purged_at: float | None = None


@dataclass(frozen=True)
class PurgedSeries:
    """A series whose images a retention run removes (or, in a dry run, would remove)."""

    series_uid: str
    study_uid: str
    modality: str | None
    last_received: float
    instances: int
    bytes: int


@dataclass(frozen=True)
class JobRow:
    id: int
    series_uid: str
    study_uid: str
    generation: int
    state: JobState
    completion: str
    attempts: int  # tries that ended in a transient failure (see retry_job_later); not interruptions
    routing: str | None = None
    detail: str | None = None
    interruptions: int = 0  # times a restart found this job running
    warning: str | None = None  # the assembler's "incomplete series: N of M images", carried into the result


def _v1(engine: Engine, db: Connection) -> None:
    """Restart interruptions counted apart from failures (journals from before they existed lack them)."""
    engine.add_columns(db, "jobs", {"interruptions": "INTEGER NOT NULL DEFAULT 0", "not_before": "REAL NOT NULL DEFAULT 0"})


def _v2(engine: Engine, db: Connection) -> None:
    """Incomplete-series warnings on jobs; delivery rounds (a resend keeps the history) and an attempt log."""
    engine.add_columns(db, "jobs", {"completion_warning": "TEXT"})
    engine.add_columns(db, "deliveries", {"round_start": "INTEGER NOT NULL DEFAULT 0",
                                          "resends": "INTEGER NOT NULL DEFAULT 0"})
    engine.run_script(db, 
        "CREATE TABLE IF NOT EXISTS delivery_attempts (id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " delivery_id INTEGER NOT NULL REFERENCES deliveries(id), at REAL NOT NULL, outcome TEXT NOT NULL,"
        " detail TEXT);"
        " CREATE INDEX IF NOT EXISTS delivery_attempts_delivery ON delivery_attempts(delivery_id);"
    )


def _v3(engine: Engine, db: Connection) -> None:
    """Interruptions that point at the job itself (other jobs completed in between), and when it was last interrupted."""
    engine.add_columns(db, "jobs", {"suspect_interruptions": "INTEGER NOT NULL DEFAULT 0",
                                    "interrupted_at": "REAL"})


def _v4(engine: Engine, db: Connection) -> None:
    """Which IOCM rejection note (KOS SOP Instance UID) rejected a delivered result at its destination."""
    engine.add_columns(db, "deliveries", {"rejected_by": "TEXT"})


def _v5(engine: Engine, db: Connection) -> None:
    """Shadow results (a candidate model version run beside the active one, never sent).

    Earlier code created this table itself, the first time a shadow ran: the columns are the same,
    so such a file keeps its rows."""
    engine.run_script(db, 
        "CREATE TABLE IF NOT EXISTS shadow_results (id INTEGER PRIMARY KEY AUTOINCREMENT, job_id INTEGER,"
        " series_uid TEXT NOT NULL, task TEXT NOT NULL,"
        " active_name TEXT, active_version TEXT, active_sha TEXT, active_summary TEXT,"
        " shadow_name TEXT NOT NULL, shadow_version TEXT NOT NULL, shadow_sha TEXT, shadow_summary TEXT,"
        " error TEXT, created_at REAL NOT NULL);"
    )


def _v6(engine: Engine, db: Connection) -> None:
    """Leases (which process holds a running job or a delivery in flight, until when) and the process table."""
    engine.add_columns(db, "jobs", {"owner": "TEXT", "lease_until": "REAL"})
    engine.add_columns(db, "deliveries", {"owner": "TEXT", "lease_until": "REAL"})
    engine.run_script(db, 
        "CREATE TABLE IF NOT EXISTS processes (id TEXT PRIMARY KEY, roles TEXT NOT NULL, host TEXT NOT NULL,"
        " pid INTEGER NOT NULL, started_at REAL NOT NULL, heartbeat_at REAL NOT NULL, current_job INTEGER,"
        " open_series TEXT, detail TEXT);"
    )


def _v7(engine: Engine, db: Connection) -> None:
    """Indexes for the queues: claiming the oldest due job and the due deliveries stay fast in a long history
    (measured with bench/bench_scale.py --history: without them a claim scans every finished job)."""
    engine.run_script(db, "CREATE INDEX IF NOT EXISTS jobs_queue ON jobs(state, not_before, id);"
                          " CREATE INDEX IF NOT EXISTS deliveries_queue ON deliveries(state, next_attempt_at);")


def _v8(engine: Engine, db: Connection) -> None:
    """Indexes for what grows with the history and is looked up all the time: a series' and a job's results (each job
    looks up its series' earlier results: the SR it supersedes, what a rejection note rejects; the outbox a note's own
    results) and the series still receiving (each assembler tick). Measured with bench/bench_scale.py --history:
    without them each look-up reads every result, or every series, the journal holds."""
    engine.run_script(db, "CREATE INDEX IF NOT EXISTS results_series ON results(series_uid);"
                          " CREATE INDEX IF NOT EXISTS results_job ON results(job_id);"
                          " CREATE INDEX IF NOT EXISTS series_state ON series(state, last_received);")


def _v9(engine: Engine, db: Connection) -> None:
    """Retention (``svdmark purge``): when a series' images were removed, how many, the header-only copy kept of
    its first one (for the listings and the research table), and the first generation whose results may supersede
    earlier ones (a series that receives an instance after a purge starts afresh)."""
    engine.add_columns(db, "series", {"purged_at": "REAL", "purged_instances": "INTEGER", "header_path": "TEXT",
                                      "base_generation": "INTEGER NOT NULL DEFAULT 1"})


def _v10(engine: Engine, db: Connection) -> None:
    """Retention of produced objects: when a result's file was removed from the spool (its series' images purged and
    every one of its deliveries settled at its destination); the row, its UIDs and its delivery history stay."""
    engine.add_columns(db, "results", {"file_removed_at": "REAL"})


def _v11(engine: Engine, db: Connection) -> None:
    """An index on when jobs finished: recovery asks, for each interrupted job, whether any other job finished since
    (whether the service could work); without it that reads every finished job of the history."""
    engine.run_script(db, "CREATE INDEX IF NOT EXISTS jobs_finished ON jobs(state, finished_at);")


# (version, what it brings, step): step N takes a file at version N-1 to N. Steps are idempotent,
# so a file that already has a column (an early build added them unversioned) migrates too.
MIGRATIONS: tuple[tuple[int, str, Callable[[Engine, Connection], None]], ...] = (
    (1, "jobs.interruptions, jobs.not_before", _v1),
    (2, "jobs.completion_warning, deliveries.round_start/resends, delivery_attempts", _v2),
    (3, "jobs.suspect_interruptions, jobs.interrupted_at", _v3),
    (4, "deliveries.rejected_by", _v4),
    (5, "shadow_results", _v5),
    (6, "jobs/deliveries owner + lease_until, processes", _v6),
    (7, "queue indexes on jobs and deliveries", _v7),
    (8, "indexes on results by series and by job, and on series by state", _v8),
    (9, "series.purged_at, purged_instances, header_path, base_generation", _v9),
    (10, "results.file_removed_at", _v10),
    (11, "index on jobs by state and finish time", _v11),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]


class JournalVersionError(RuntimeError):
    """The journal file was written by a newer svdmark than this one."""


class CopyRefused(RuntimeError):
    """A journal copy that would lose or mix data: the source is in use, or the target is not empty."""


# What a journal copy carries, in an order that satisfies the references between them. Not copied:
# svdmark_schema (the target's own) and processes (the source's processes, all stopped before a copy).
COPIED_TABLES = ("instances", "series", "jobs", "results", "deliveries", "delivery_attempts", "audit",
                 "shadow_results")
# the columns that name a file in the spool, by table (a copy with rebase_spool rewrites them)
SPOOL_PATHS = {"instances": "path", "results": "path", "series": "header_path"}


INTERRUPTION_CAP = 5  # restarts that find the job running, with other jobs completed in between, before quarantine
INTERRUPTION_HARD_CAP = 20  # restarts that find it running at all (a self-killing job alone in the queue)
DELIVERY_INTERRUPTION_CAP = 10  # tries of one delivery in a row cut off by a restart or a lapsed lease: dead letter


@dataclass(frozen=True)
class ResultObject:
    """A produced DICOM object waiting in the spool to be delivered."""

    sop_uid: str
    kind: str  # "sr" | "seg" | "summary"
    sop_class: str
    path: Path
    supersedes: str | None = None


@dataclass(frozen=True)
class Delivery:
    id: int
    sop_uid: str
    destination: str
    attempts: int  # tries in this round (since the last resend); the back-off and the dead-letter cap count these
    path: Path
    kind: str
    total_attempts: int = 0  # tries ever made


REJECTABLE_KINDS = tuple(OutputKind.profile_kinds())  # what a rejection note can reject (never a note itself)
INTERRUPTED_TRY = "interrupted"  # delivery_attempts.outcome of a try cut off by a restart or a lapsed lease
UNANSWERED_TRY = "unanswered"  # ... of a try that went out and got no answer (a timeout): maybe stored there


@dataclass(frozen=True)
class Rejection:
    """One IOCM rejection note (kind "rejection") and what it rejects: delivery id → destination."""

    note: ResultObject
    rejects: tuple[tuple[int, str], ...]


@dataclass(frozen=True)
class Supersession:
    """What a done job supersedes: results of earlier generations of its series.

    ``rejections`` must cover exactly the earlier results that :meth:`Journal.rejectable` finds for
    ``destinations``; otherwise :meth:`Journal.finish_job` raises :class:`StaleSupersession`.
    """

    destinations: frozenset[str]
    rejections: tuple[Rejection, ...] = ()


class StaleSupersession(RetryLater):
    """An earlier result was delivered (or picked up for sending) after the rejection notes were built: a race with
    the outbox, so the job is tried again later when the worker's own tries run out."""


class CommitOutcomeUnknown(RetryLater):
    """The connection broke during a job's commit and the journal could not be read to tell whether it went through:
    its outputs may be journalled (and queued for sending), so their files must stay."""


class _MovedMeanwhile(Exception):
    """An instance left a series that the recording transaction had not locked, and another transaction holds it."""


LOCK_RACE_TRIES = 4  # a batch looks again this often before its last try waits for the lock (PostgreSQL's deadlock
# detection is left to settle a race that kept recurring)


class LeaseLost(RuntimeError):
    """This process's lease on a job ran out (it stopped renewing, or was too slow); another process may have it."""


class JournalUnavailable(RuntimeError):
    """The journal file cannot be read (:meth:`Journal.read_counts`) or does not take writes."""


@dataclass(frozen=True)
class JobRecord:
    """Every column of one job (the operator's view of it); the summary parsed."""

    id: int
    series_uid: str
    study_uid: str
    generation: int
    state: JobState
    completion: str
    routing: str | None
    rule_id: str | None
    detail: str | None
    model_name: str | None
    model_version: str | None
    model_sha: str | None
    ruleset_version: str | None
    summary: ResultSummary | None
    attempts: int
    interruptions: int
    not_before: float
    created_at: float
    started_at: float | None
    finished_at: float | None
    completion_warning: str | None
    suspect_interruptions: int
    interrupted_at: float | None

    def columns(self) -> dict[str, Any]:
        """Column name → value as stored (the state as its string; the summary still parsed)."""
        return {f.name: (self.state.value if f.name == "state" else getattr(self, f.name)) for f in fields(self)}


@dataclass(frozen=True)
class StoredResult:
    """One produced object as journalled (a result of a job, or a rejection note)."""

    sop_uid: str
    job_id: int
    series_uid: str
    kind: str  # "sr" | "seg" | "summary" | "rejection"
    sop_class: str
    path: Path
    supersedes: str | None
    created_at: float
    file_removed_at: float | None = None  # retention removed the file (its destinations hold it): the path is gone


@dataclass(frozen=True)
class ShadowResult:
    """A shadow run: the candidate version's summary beside the active version's, on the same series."""

    series_uid: str
    task: str
    shadow_name: str
    shadow_version: str
    created_at: float
    job_id: int | None = None
    active_name: str | None = None
    active_version: str | None = None
    active_sha: str | None = None
    active_summary: ResultSummary | None = None
    shadow_sha: str | None = None
    shadow_summary: ResultSummary | None = None
    error: str | None = None  # the shadow run failed (the active result is unaffected)


@dataclass(frozen=True)
class AuditEntry:
    at: float
    actor: str
    action: str
    detail: dict


@dataclass(frozen=True)
class ProcessRecord:
    """One svdmark process using this journal, as its last heartbeat left it."""

    id: str
    roles: tuple[str, ...]
    host: str
    pid: int
    started_at: float
    heartbeat_at: float
    current_job: int | None = None
    open_series: tuple[str, ...] = ()
    detail: dict | None = None  # e.g. the listener's port


@dataclass(frozen=True)
class JournalCounts:
    """What /healthz and /metrics read: rows by state, jobs by routing decision and state, instances."""

    states: dict[str, dict[str, int]]  # "series" | "jobs" | "deliveries" → state → count
    routing: dict[tuple[str, str], int]  # (routing decision or "none", job state) → count
    instances: int


DEFAULT_LEASE_SECONDS = 60.0  # a running job or a delivery in flight belongs to its process this long per heartbeat
# SQLite: how fast the journal's time, run on the monotonic clock, follows a step of this host's clock (seconds per
# second), and the step beyond which it follows at once (a clock that was plain wrong: a VM resumed from a snapshot)
CLOCK_SLEW = 0.1
CLOCK_JUMP_SECONDS = 3600.0


def process_id() -> str:
    """This process's name in leases and the process table: host, PID and a random part (PIDs are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Journal:
    """Thread-safe access to the journal (one connection per thread) on SQLite or PostgreSQL.

    ``url``: ``sqlite:///PATH``, a plain path (SQLite) or ``postgresql://…`` (:mod:`svdmark.journal_engine`).
    ``owner`` names this process in the leases it takes (:func:`process_id` by default); a lease lasts
    ``lease_seconds`` and :meth:`heartbeat` renews it.
    """

    def __init__(self, url: str | Path, *, owner: str | None = None, lease_seconds: float = DEFAULT_LEASE_SECONDS,
                 clock: Callable[[], float] = time.time, steady: Callable[[], float] | None = None):
        self._engine = Engine(url)
        self._clock = clock  # this host's clock; :meth:`now` is the journal's
        # what a shared journal's time runs on between measurements of the offset: the monotonic clock beside the
        # real clock; a clock of one's own (a test's, a simulation's) alone unless given one too
        self._steady = steady if steady is not None else time.monotonic if clock is time.time else None
        self._time_base: tuple[float, tuple[float, float] | None] = (0.0, None)  # _measure_clock's
        self.path = Path(self._engine.target) if self._engine.kind == "sqlite" else None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.owner = owner or process_id()
        self.lease_seconds = float(lease_seconds)
        # the jobs and deliveries this object handed out (claim_job, start_sending) and not yet settled: the only
        # leases heartbeat renews. A claim whose commit reached the server but whose answer was lost (a connection
        # reset) is not here, so its lease lapses and recovery frees it instead of the heartbeat keeping it forever
        self._held: dict[str, set[int]] = {"jobs": set(), "deliveries": set()}
        self._held_guard = threading.Lock()
        with self._engine.schema_lock():
            db = self._conn()
            found = self._engine.schema_version(db)
            if found > SCHEMA_VERSION:  # before anything is created or changed in it
                raise JournalVersionError(
                    f"{self.describe()} has journal schema version {found}, newer than this svdmark's "
                    f"{SCHEMA_VERSION}: run the svdmark version that wrote it, or restore a backup")
            self._engine.run_script(db, SCHEMA)
            self.migrated_from = self._migrate()
        self._measure_clock()

    def _measure_clock(self) -> None:
        """:attr:`clock_offset` measured now, and where the journal's time and the monotonic clock stand, so that
        :meth:`now` runs on the monotonic clock until the next measurement: on a shared journal this host's clock
        (the server's, once corrected by the offset); on SQLite, where this host's clock is the only one, the
        journal's time so far, moved towards this host's clock by at most :data:`CLOCK_SLEW` of the time since
        (at once beyond :data:`CLOCK_JUMP_SECONDS`), so that an NTP step moves no settle timer by more than a
        tenth."""
        offset = self._engine.clock_offset(self._clock)
        synced = None
        if self._steady is not None:
            wall, mono = self._clock(), self._steady()
            synced = (wall, mono)
            before = self._time_base[1]
            if not self.shared and before is not None:
                elapsed = mono - before[1]
                journal = before[0] + elapsed
                if abs(wall - journal) <= CLOCK_JUMP_SECONDS:
                    limit = CLOCK_SLEW * elapsed
                    synced = (journal + max(-limit, min(limit, wall - journal)), mono)
        self._time_base = (offset, synced)  # one assignment: now() on another thread sees both or neither

    @property
    def clock_offset(self) -> float:
        """The database server's clock minus this host's, seconds (0 on SQLite), as last measured."""
        return self._time_base[0]

    def now(self) -> float:
        """The journal's time, epoch seconds: the database server's clock on a shared journal (this host's clock
        corrected by :attr:`clock_offset`, measured at open and at each heartbeat, and advanced in between by the
        monotonic clock, so that a step of the host's clock, an NTP correction, cannot move a lease or a timer
        before the next heartbeat), so that leases, settle timers and retry times mean the same on every host
        however far their clocks drift; this host's clock on SQLite, advanced by the monotonic clock and slewed
        towards a step of the host's clock at each heartbeat (:meth:`_measure_clock`). A clock of one's own (a
        test's) without ``steady`` is read as it is. Every time the journal stores or compares is on it."""
        offset, synced = self._time_base
        if synced is None:
            return self._clock() + offset
        wall, mono = synced
        return wall + (self._steady() - mono) + offset  # type: ignore[misc]

    @property
    def shared(self) -> bool:
        """Other processes may use this journal at the same time (PostgreSQL): leases, not restarts, free work."""
        return self._engine.shared

    def describe(self) -> str:
        """Where the journal is (a file path, or the PostgreSQL URL without its password)."""
        return self._engine.describe()

    def schema_version(self) -> int:
        return self._engine.schema_version(self._conn())

    def _migrate(self) -> int:
        """Bring the journal up to :data:`SCHEMA_VERSION`; returns the version it had."""
        found = self.schema_version()
        for version, _, step in MIGRATIONS:
            if version <= found:
                continue
            with self._tx() as tx:
                if self._engine.schema_version(tx) >= version:  # another process migrated meanwhile
                    continue
                step(self._engine, tx)
                self._engine.set_schema_version(tx, version)
        return found

    # ---------------------------------------------------------------- plumbing
    def _conn(self) -> Connection:
        return self._engine.conn()

    def _tx(self):
        return self._engine.transaction()

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        return self._conn().execute(sql, args).fetchall()

    def close(self) -> None:
        self._engine.close()

    # ---------------------------------------------------------------- recovery
    def recover(self, interruption_cap: int = INTERRUPTION_CAP, now: float | None = None,
                hard_cap: int = INTERRUPTION_HARD_CAP, expired_only: bool | None = None,
                dead_owners: Sequence[str] = (), delivery_cap: int = DELIVERY_INTERRUPTION_CAP,
                spare_held: bool = False) -> dict[str, Any]:
        """After a crash: running jobs go back to pending, sending deliveries to pending.

        ``spare_held``: not the jobs and deliveries this object handed out and still works on (a live SQLite
        process looking for its own tries that could not be settled: a lapsed lease there means its heartbeat was
        held up, not that it stopped).

        ``expired_only`` (the default on a shared journal): only those whose lease has run out, i.e. whose
        process stopped renewing it; others belong to live processes. On SQLite one process owns the file,
        so at its start everything running was interrupted. ``dead_owners``: processes known to be gone (a
        restarted process's earlier self on this host: :meth:`dead_processes_here`), whose leases need not lapse.

        An interrupted job did not fail: its ``attempts`` stay as they were. It counts an
        interruption and waits behind the jobs already queued, so that a restart does not begin
        with the same job again.

        Quarantine tells a job that kills the process from a crash loop that kills whatever runs
        (kill -9 from outside, a power cut, a watchdog): an interruption is *suspect* when other
        jobs completed since this job was last interrupted (or queued), i.e. the service could work,
        and this job is where it died again. At ``interruption_cap`` suspect interruptions, or at
        ``hard_cap`` interruptions of any kind (a self-killing job alone in the queue), the job is
        quarantined as ``failed``, alone, and ``svdmark jobs retry`` can run it again. A long job
        that a crash loop keeps interrupting once the rest of the queue is done is not suspect.

        A delivery in flight goes back to pending, its try recorded as ``interrupted``; at ``delivery_cap`` such
        tries in a row (no try that ended otherwise, nor an ``outbox resend``, in between) it is a dead letter
        instead, its reason saying so: an object whose sending kills the process (or outlasts every lease) must not
        hold its destination's queue. Such a dead letter may be in the destination: a supersession rejects it.

        Returns counts, ``quarantined``: (job id, series UID) of each job quarantined now, and
        ``quarantined_deliveries``: the ids of the deliveries made dead letters now.
        """
        now = self.now() if now is None else now
        expired_only = self.shared if expired_only is None else expired_only
        dead = tuple(dead_owners)
        lapsed = (f" AND (COALESCE(lease_until, 0)<? OR owner IN ({','.join('?' * len(dead))}))" if dead else
                  " AND COALESCE(lease_until, 0)<?") if expired_only else ""
        lease_args: tuple[Any, ...] = (now, *dead) if expired_only else ()
        with self._held_guard:
            held = {k: sorted(v) for k, v in self._held.items()} if spare_held else {"jobs": [], "deliveries": []}
        spared = {k: f" AND id NOT IN ({','.join('?' * len(v))})" if v else "" for k, v in held.items()}
        with self._tx() as db:
            within, series = "", []
            if self.shared:  # their series locked first, in order, as a receiver's batch and a job's finish lock
                # them (a quarantine settles its series' row: in job order it could wait on a batch waiting on it)
                series = sorted({r["series_uid"] for r in db.execute(
                    f"SELECT DISTINCT series_uid FROM jobs WHERE state=?{lapsed}",
                    (JobState.RUNNING.value, *lease_args)).fetchall()})
                for series_uid in series:
                    db.lock(series_uid)
                within = f" AND series_uid IN ({','.join('?' * len(series))})" if series else " AND 1=0"
            running = db.execute(
                "SELECT id, series_uid, generation, interruptions, suspect_interruptions, interrupted_at, created_at"
                f" FROM jobs WHERE state=?{lapsed}{within}{spared['jobs']} ORDER BY series_uid, id{db.skip_locked}",
                (JobState.RUNNING.value, *lease_args, *series, *held["jobs"]),
            ).fetchall()
            quarantined = []
            for row in running:
                n = row["interruptions"] + 1
                since = row["interrupted_at"] if row["interrupted_at"] is not None else row["created_at"]
                others_done = db.execute(  # any other job that finished since: the index on finished_at (v11)
                    "SELECT EXISTS(SELECT 1 FROM jobs WHERE finished_at>? AND id<>? AND state IN (?,?,?))",
                    (since, row["id"], JobState.DONE.value, JobState.FAILED.value, JobState.IGNORED.value),
                ).fetchone()[0]
                suspect = row["suspect_interruptions"] + (1 if others_done else 0)
                if suspect >= interruption_cap or n >= hard_cap:
                    db.execute(
                        "UPDATE jobs SET state=?, interruptions=?, suspect_interruptions=?, interrupted_at=?,"
                        " detail=?, finished_at=?, owner=NULL, lease_until=NULL WHERE id=?",
                        (JobState.FAILED.value, n, suspect, now,
                         f"quarantined: the service stopped {n} times while analysing this series ({suspect} of them "
                         "while other series completed); run `svdmark jobs retry` once the cause is found",
                         now, row["id"]),
                    )
                    self._settle_series(db, row["series_uid"], row["generation"])
                    quarantined.append((row["id"], row["series_uid"]))
                else:
                    db.execute(
                        "UPDATE jobs SET state=?, interruptions=?, suspect_interruptions=?, interrupted_at=?,"
                        " not_before=?, owner=NULL, lease_until=NULL WHERE id=?",
                        (JobState.PENDING.value, n, suspect, now, now, row["id"]),
                    )
            cut_off = db.execute(
                f"SELECT id, rejected_by FROM deliveries WHERE state=?{lapsed}{spared['deliveries']}"
                f" ORDER BY id{db.skip_locked}",
                (DeliveryState.SENDING.value, *lease_args, *held["deliveries"])).fetchall()
            requeued, dead = 0, []
            for row in cut_off:  # the try may have reached the destination: a later supersession rejects it
                delivery_id = row["id"]
                _record_try(db, delivery_id, now, INTERRUPTED_TRY, "the try was cut off (the sender stopped or its "
                            "lease lapsed); it may have reached the destination")
                state, why = DeliveryState.PENDING, None
                if row["rejected_by"] is not None:  # a newer result's note names it: never sent again (as mark_failed)
                    state = DeliveryState.SUPERSEDED
                else:
                    cuts = db.execute(  # in a row: since the last try that ended otherwise (an answer, a resend)
                        "SELECT COUNT(*) FROM delivery_attempts WHERE delivery_id=? AND outcome=? AND id>COALESCE("
                        "(SELECT MAX(id) FROM delivery_attempts WHERE delivery_id=? AND outcome NOT IN (?,?)), 0)",
                        (delivery_id, INTERRUPTED_TRY, delivery_id, INTERRUPTED_TRY, "lease-lost")).fetchone()[0]
                    if cuts >= delivery_cap:  # a crash loop around this object: a dead letter, the others go on
                        state = DeliveryState.DEAD
                        why = (f"quarantined: {cuts} tries in a row were cut off (the service stopped or lost its "
                               "lease while sending it); run `svdmark outbox resend` once the cause is found")
                db.execute("UPDATE deliveries SET state=?, last_error=COALESCE(?, last_error), owner=NULL,"
                           " lease_until=NULL WHERE id=?", (state.value, why, delivery_id))
                if state is DeliveryState.DEAD:
                    _record_try(db, delivery_id, now, state.value, why)
                    dead.append(delivery_id)
                requeued += state is DeliveryState.PENDING
        return {"jobs_requeued": len(running) - len(quarantined), "jobs_quarantined": len(quarantined),
                "deliveries_requeued": requeued, "deliveries_quarantined": len(dead),
                "quarantined": quarantined, "quarantined_deliveries": dead}

    def known_objects(self, table: str, sop_uids: Sequence[str]) -> set[str]:
        """Those of ``sop_uids`` that have a row in ``table`` (``instances`` or ``results``): the spool's files
        that something refers to (:func:`svdmark.retention.remove_orphans`)."""
        if table not in ("instances", "results"):
            raise ValueError(f"no spool objects in table {table!r}")
        if not sop_uids:
            return set()
        rows = self._query(f"SELECT sop_uid FROM {table} WHERE sop_uid IN ({','.join('?' * len(sop_uids))})",
                           list(sop_uids))
        return {r["sop_uid"] for r in rows}

    # ---------------------------------------------------------------- receive
    def instance_digest(self, sop_uid: str) -> str | None:
        rows = self._query("SELECT digest FROM instances WHERE sop_uid=?", (sop_uid,))
        return rows[0]["digest"] if rows else None

    def record_instance(
        self,
        *,
        sop_uid: str,
        study_uid: str,
        series_uid: str,
        sop_class: str,
        transfer_syntax: str,
        path: Path,
        size: int,
        digest: str,
        modality: str | None,
        geometry: SliceGeometry,
        calling_ae: str | None,
        now: float | None = None,
    ) -> Recorded:
        """Record a stored instance. Returns "new", "duplicate" or "replaced" (:class:`Recorded`).

        An instance arriving for a series whose current generation already has a job
        reopens the series with generation + 1 (a late arrival: re-analysis supersedes).
        An instance journalled under another series leaves that one (:func:`.reanalysis.after_departure`):
        judged again on the instances it still holds, or, with none left, closed (``series.emptied`` in
        the audit trail); the file its row named is :attr:`Recorded.displaced`.
        """
        return self.record_instances([dict(
            sop_uid=sop_uid, study_uid=study_uid, series_uid=series_uid, sop_class=sop_class,
            transfer_syntax=transfer_syntax, path=path, size=size, digest=digest, modality=modality,
            geometry=geometry, calling_ae=calling_ae)], now)[0]

    def record_instances(self, rows: Sequence[Mapping[str, Any]], now: float | None = None) -> list[Recorded]:
        """Several stored instances (each mapping holds :meth:`record_instance`'s keywords) in one transaction,
        so one commit: the receiver's group commit across associations (``receive.groupcommit``). Their
        outcomes in order; a row whose SOP Instance UID came earlier in ``rows`` sees that one."""
        now = self.now() if now is None else now
        # every lock in one order, series by series (advisory locks, then each series' rows): no deadlock with
        # another batch or with mark_released on PostgreSQL
        order = sorted(range(len(rows)), key=lambda k: rows[k]["series_uid"])
        outcomes: list[Recorded] = [Recorded("")] * len(rows)
        for attempt in range(LOCK_RACE_TRIES):
            try:
                with self._tx() as db:
                    series_uids = {r["series_uid"] for r in rows}
                    if self.shared:  # the series an instance may leave, locked in the same order (SQLite: one writer)
                        sops = sorted({r["sop_uid"] for r in rows})
                        series_uids |= {r["series_uid"] for r in db.execute(
                            f"SELECT DISTINCT series_uid FROM instances WHERE sop_uid IN ({','.join('?' * len(sops))})",
                            sops)}
                    for series_uid in sorted(series_uids):
                        db.lock(series_uid)  # receivers on other hosts may be adding to this series right now
                    last_try = attempt == LOCK_RACE_TRIES - 1
                    for k in order:
                        outcomes[k] = self._record_instance(db, now=now, wait_to_leave=last_try, **rows[k])
                break
            except _MovedMeanwhile:  # rolled back: look again which series the instances are in, and lock those
                continue
        last = {rows[k]["sop_uid"]: str(rows[k]["path"]) for k in order}  # the file each instance's row names now
        return [Recorded(o) if str(o.displaced) == last[r["sop_uid"]] else o for o, r in zip(outcomes, rows)]

    @staticmethod
    def _record_instance(db, *, sop_uid: str, study_uid: str, series_uid: str, sop_class: str, transfer_syntax: str,
                         path: Path, size: int, digest: str, modality: str | None, geometry: SliceGeometry,
                         calling_ae: str | None, now: float, wait_to_leave: bool = True) -> Recorded:
        old = db.execute(f"SELECT digest, series_uid, path FROM instances WHERE sop_uid=?{db.for_update}",
                         (sop_uid,)).fetchone()
        if old is not None and old["digest"] == digest:
            return Recorded("duplicate")
        if old is None and db.execute(  # the series row first: the instances are read only when its study differs
                "SELECT 1 FROM series s WHERE s.series_uid=? AND s.study_uid<>? AND EXISTS(SELECT 1 FROM instances i"
                " WHERE i.series_uid=s.series_uid AND i.study_uid<>?)", (series_uid, study_uid, study_uid)).fetchone():
            return Recorded("conflict")  # a sender's UID collision: the series must not mix two studies' images
        db.execute(
            "INSERT INTO instances (sop_uid, study_uid, series_uid, sop_class, transfer_syntax, path, size, digest,"
            " geometry, calling_ae, received_at) VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(sop_uid) DO UPDATE SET"
            " study_uid=excluded.study_uid, series_uid=excluded.series_uid, sop_class=excluded.sop_class,"
            " transfer_syntax=excluded.transfer_syntax, path=excluded.path, size=excluded.size,"
            " digest=excluded.digest, geometry=excluded.geometry, calling_ae=excluded.calling_ae,"
            " received_at=excluded.received_at",
            (sop_uid, study_uid, series_uid, sop_class, transfer_syntax, str(path), size, digest,
             json.dumps(geometry.to_json()), calling_ae, now),
        )
        # the series, whether its generation has a job, and whether a job waits, in one statement (the receiver
        # runs this for every instance)
        s = db.execute(
            "SELECT generation, base_generation, purged_at, EXISTS(SELECT 1 FROM jobs j WHERE j.series_uid=s.series_uid"
            " AND j.generation=s.generation) AS has_job, EXISTS(SELECT 1 FROM jobs j WHERE j.series_uid=s.series_uid"
            " AND j.state=?) AS has_pending FROM series s WHERE s.series_uid=?",
            (JobState.PENDING.value, series_uid),
        ).fetchone()
        plan = after_instance(s["generation"] if s is not None else None, s is not None and bool(s["has_job"]),
                              purged=s is not None and s["purged_at"] is not None)
        if plan.supersede_pending and s["has_pending"]:
            db.execute(
                "UPDATE jobs SET state=? WHERE series_uid=? AND state=?",
                (JobState.SUPERSEDED.value, series_uid, JobState.PENDING.value),
            )
        if s is None:
            db.execute(
                "INSERT INTO series(series_uid, study_uid, modality, first_received, last_received, state,"
                " generation) VALUES (?,?,?,?,?,?,?)",
                (series_uid, study_uid, modality, now, now, plan.state.value, plan.generation),
            )
        else:
            db.execute(
                "UPDATE series SET study_uid=?, last_received=?, released=0, state=?, generation=?, purged_at=NULL,"
                " purged_instances=NULL, base_generation=? WHERE series_uid=?",  # study_uid: a series moved (IOCM)
                (study_uid, now, plan.state.value, plan.generation,
                 plan.generation if plan.fresh else s["base_generation"], series_uid),
            )
        if old is None:
            return Recorded("new")
        if old["series_uid"] != series_uid:
            Journal._leave_series(db, old["series_uid"], series_uid, calling_ae, now, wait=wait_to_leave)
        return Recorded("replaced", Path(old["path"]) if old["path"] != str(path) else None)

    @staticmethod
    def _leave_series(db, series_uid: str, to_series_uid: str, calling_ae: str | None, now: float,
                      wait: bool = True) -> None:
        """An instance of ``series_uid`` was journalled under ``to_series_uid``: the series it left is judged
        again on the instances it still holds, or closed with none (:func:`.reanalysis.after_departure`).

        The series is locked already unless another process moved the instance since :meth:`record_instances`
        looked. Then its lock comes out of order: without ``wait`` a lock held elsewhere raises
        :class:`_MovedMeanwhile` (the caller rolls back and looks again) instead of waiting into a deadlock."""
        if wait:
            db.lock(series_uid)
        elif not db.try_lock(series_uid):
            raise _MovedMeanwhile(series_uid)
        s = db.execute(
            "SELECT study_uid, generation, EXISTS(SELECT 1 FROM jobs j WHERE j.series_uid=s.series_uid"
            " AND j.generation=s.generation) AS has_job, (SELECT COUNT(*) FROM instances i"
            " WHERE i.series_uid=s.series_uid) AS remaining FROM series s WHERE s.series_uid=?", (series_uid,),
        ).fetchone()
        if s is None:
            return
        plan = after_departure(s["generation"], bool(s["has_job"]), int(s["remaining"]))
        if plan.supersede_pending:
            db.execute("UPDATE jobs SET state=? WHERE series_uid=? AND state=?",
                       (JobState.SUPERSEDED.value, series_uid, JobState.PENDING.value))
        if not plan.emptied:
            db.execute("UPDATE series SET last_received=?, state=?, generation=? WHERE series_uid=?",
                       (now, plan.state.value, plan.generation, series_uid))
            return
        # closed: nothing to analyse; its images gone as after a purge (no re-analysis or retry of it, its result
        # files may go once delivered, an instance that comes for it again starts afresh)
        db.execute("UPDATE series SET state=?, generation=?, purged_at=?, purged_instances=0, header_path=NULL"
                   " WHERE series_uid=?", (plan.state.value, plan.generation, now, series_uid))
        _audit(db, now, calling_ae or "svdmark analyze --enqueue", "series.emptied",
               {"series_uid": series_uid, "study_uid": s["study_uid"], "to_series_uid": to_series_uid,
                "generation": plan.generation})

    def mark_released(self, series_uids: Sequence[str]) -> None:
        """An association that delivered instances of these series was released normally."""
        uids = sorted(series_uids)  # the same order and locks as record_instances: no deadlock with it
        with self._tx() as db:
            for u in uids:
                db.lock(u)
            db.executemany(
                "UPDATE series SET released=1 WHERE series_uid=? AND state=?",
                [(u, SeriesState.RECEIVING.value) for u in uids],
            )

    # ---------------------------------------------------------------- assemble
    def receiving_series(self) -> list[SeriesRow]:
        rows = self._query("SELECT * FROM series WHERE state=? ORDER BY last_received", (SeriesState.RECEIVING.value,))
        return [_series(r) for r in rows]

    def series_row(self, series_uid: str) -> SeriesRow | None:
        rows = self._query("SELECT * FROM series WHERE series_uid=?", (series_uid,))
        return _series(rows[0]) if rows else None

    def instances(self, series_uid: str) -> list[StoredInstance]:
        rows = self._query(
            "SELECT sop_uid, series_uid, sop_class, path, geometry FROM instances WHERE series_uid=?", (series_uid,)
        )
        return [
            StoredInstance(r["sop_uid"], r["series_uid"], r["sop_class"], Path(r["path"]),
                           SliceGeometry.from_json(json.loads(r["geometry"])))
            for r in rows
        ]

    def queue_job(self, series: SeriesRow, completion: str, now: float | None = None,
                  warning: str | None = None) -> int | None:
        """Series complete: create its job unless the series changed meanwhile.

        ``warning`` (an incomplete series analysed anyway) goes into the job and from there into the result."""
        now = self.now() if now is None else now
        with self._tx() as db:
            db.lock(series.series_uid)
            cur = db.execute(
                "UPDATE series SET state=? WHERE series_uid=? AND state=? AND generation=? AND last_received=?",
                (SeriesState.QUEUED.value, series.series_uid, SeriesState.RECEIVING.value, series.generation,
                 series.last_received),
            )
            if cur.rowcount != 1:
                return None
            return _insert_job(db, series.series_uid, series.study_uid, series.generation, completion, now, warning)

    def enqueue_series(self, series_uid: str, completion: str, now: float | None = None) -> int | None:
        """A series recorded whole by a batch (``svdmark analyze --enqueue``): queued, with its job, in one
        transaction; the job's id, or None when the series is not ``receiving`` (unknown, or already queued or
        analysed: by an earlier run, or by an assembler that judged it complete first)."""
        now = self.now() if now is None else now
        with self._tx() as db:
            db.lock(series_uid)
            s = db.execute("SELECT study_uid, generation FROM series WHERE series_uid=? AND state=?",
                           (series_uid, SeriesState.RECEIVING.value)).fetchone()
            if s is None:
                return None
            db.execute("UPDATE series SET state=? WHERE series_uid=?", (SeriesState.QUEUED.value, series_uid))
            return _insert_job(db, series_uid, s["study_uid"], s["generation"], completion, now)

    def reanalyse(self, series_uid: str, reason: str, now: float | None = None) -> int | str:
        """Queue a new analysis of an analysed series (generation + 1) with the models active now.

        Returns the new job's id, or a sentence saying why not (unknown series, still receiving,
        already queued). The worker then supersedes the last generation's results as for a late
        instance: destinations that hold them get a rejection note, unsent ones are never sent.
        """
        now = self.now() if now is None else now
        with self._tx() as db:
            db.lock(series_uid)
            s = db.execute("SELECT * FROM series WHERE series_uid=?", (series_uid,)).fetchone()
            if s is None:
                return "no such series in the journal"
            open_job = db.execute("SELECT 1 FROM jobs WHERE series_uid=? AND state IN (?,?)",
                                  (series_uid, JobState.PENDING.value, JobState.RUNNING.value)).fetchone()
            plan = on_request(SeriesState(s["state"]), s["generation"], open_job is not None,
                              purged=s["purged_at"] is not None)
            if isinstance(plan, str):
                return plan
            db.execute("UPDATE series SET state=?, generation=? WHERE series_uid=?",
                       (plan.state.value, plan.generation, series_uid))
            return _insert_job(db, series_uid, s["study_uid"], plan.generation, f"re-analysis: {reason}", now)

    def series_analysed_with(self, model_name: str, model_version: str | None = None) -> list[str]:
        """Series whose latest finished analysis used this model (and version, if given), oldest first."""
        sql = ("SELECT j.series_uid FROM jobs j JOIN series s ON s.series_uid=j.series_uid"
               " AND s.generation=j.generation WHERE j.state=? AND j.model_name=?")
        args: list[Any] = [JobState.DONE.value, model_name]
        if model_version is not None:
            sql += " AND j.model_version=?"
            args.append(model_version)
        return [r["series_uid"] for r in self._query(sql + " ORDER BY j.id", args)]

    # ---------------------------------------------------------------- jobs
    def claim_job(self, now: float | None = None) -> JobRow | None:
        """The pending job that is due and has waited longest (``not_before``, then id) → running, leased to
        this process for ``lease_seconds`` (:meth:`heartbeat` renews it; workers on other hosts skip the rows
        being claimed instead of waiting for them)."""
        now = self.now() if now is None else now
        with self._tx() as db:
            row = db.execute(
                f"SELECT * FROM jobs WHERE state=? AND not_before<=? ORDER BY not_before, id LIMIT 1{db.skip_locked}",
                (JobState.PENDING.value, now),
            ).fetchone()
            if row is None:
                return None
            db.execute("UPDATE jobs SET state=?, started_at=?, owner=?, lease_until=? WHERE id=?",
                       (JobState.RUNNING.value, now, self.owner, now + self.lease_seconds, row["id"]))
            job = JobRow(row["id"], row["series_uid"], row["study_uid"], row["generation"], JobState.RUNNING,
                         row["completion"], row["attempts"], row["routing"], row["detail"], row["interruptions"],
                         row["completion_warning"])
        self._hold("jobs", job.id)  # committed: the caller has it
        return job

    def _hold(self, kind: str, item: int) -> None:
        with self._held_guard:
            self._held[kind].add(item)

    def _release(self, kind: str, item: int) -> None:
        with self._held_guard:
            self._held[kind].discard(item)

    def retry_job_later(self, job: JobRow, reason: str, delay: float, max_attempts: int,
                        now: float | None = None) -> JobState | None:
        """A running job hit a transient failure: back to pending after ``delay`` seconds.

        Counts the attempt; the attempt that reaches ``max_attempts`` ends the job as failed
        instead. Returns the state the job is in now (pending or failed), or None (and changes
        nothing) if the job is no longer running.
        """
        now = self.now() if now is None else now
        state = self._retry_later(job, reason, delay, max_attempts, now)
        self._release("jobs", job.id)  # settled (or no longer this process's)
        return state

    def _retry_later(self, job: JobRow, reason: str, delay: float, max_attempts: int, now: float) -> JobState | None:
        with self._tx() as db:
            db.lock(job.series_uid)
            row = db.execute("SELECT attempts FROM jobs WHERE id=? AND state=? AND owner=?",
                             (job.id, JobState.RUNNING.value, self.owner)).fetchone()
            if row is None:
                return None
            attempts = row["attempts"] + 1
            if attempts >= max_attempts:
                db.execute(
                    "UPDATE jobs SET state=?, attempts=?, detail=?, finished_at=?, owner=NULL, lease_until=NULL"
                    " WHERE id=?",
                    (JobState.FAILED.value, attempts, f"gave up after {attempts} attempts: {reason}", now, job.id),
                )
                self._settle_series(db, job.series_uid, job.generation)
                return JobState.FAILED
            db.execute(
                "UPDATE jobs SET state=?, attempts=?, detail=?, not_before=?, owner=NULL, lease_until=NULL WHERE id=?",
                (JobState.PENDING.value, attempts, f"attempt {attempts} failed, will retry: {reason}", now + delay,
                 job.id),
            )
            return JobState.PENDING

    def previous_sr(self, series_uid: str, before_generation: int) -> ResultObject | None:
        """The SR of the latest earlier analysis of this series (to supersede)."""
        rows = self._query(
            "SELECT r.* FROM results r JOIN jobs j ON r.job_id=j.id WHERE r.series_uid=? AND r.kind='sr'"
            f" AND j.generation<?{_SINCE_BASE} ORDER BY j.generation DESC LIMIT 1",
            (series_uid, before_generation),
        )
        return _result(rows[0]) if rows else None

    def rejectable(self, series_uid: str, before_generation: int,
                   destinations: Sequence[str]) -> list[tuple[int, str, ResultObject]]:
        """Earlier generations' SR/SEG/summary objects that may have reached ``destinations`` and are not yet
        rejected there: delivered, being sent, or waiting again after a try that was cut off (a restart, a lapsed
        lease: the destination may have stored it without our hearing); (delivery id, destination, result), by
        delivery id. A try the destination refused, or that could not reach it, does not count; one that went out and
        got no answer (a timeout) does."""
        return self._rejectable(self._conn(), series_uid, before_generation, destinations)

    @staticmethod
    def _rejectable(db: Connection, series_uid: str, before_generation: int,
                    destinations: Sequence[str]) -> list[tuple[int, str, ResultObject]]:
        if not destinations:
            return []
        marks = ",".join("?" * len(destinations))
        kinds = ",".join("?" * len(REJECTABLE_KINDS))
        rows = db.execute(
            "SELECT d.id AS delivery_id, d.destination, r.* FROM deliveries d JOIN results r ON r.sop_uid=d.sop_uid"
            f" JOIN jobs j ON j.id=r.job_id WHERE r.series_uid=? AND j.generation<?{_SINCE_BASE}"
            f" AND r.kind IN ({kinds}) AND d.destination IN ({marks}) AND d.rejected_by IS NULL"
            f" AND {_MAY_HAVE_REACHED.format(delivery='d')} ORDER BY d.id",
            (series_uid, before_generation, *REJECTABLE_KINDS, *destinations, *_MAY_HAVE_REACHED_ARGS),
        ).fetchall()
        return [(r["delivery_id"], r["destination"], _result(r)) for r in rows]

    def finish_job(
        self,
        job: JobRow,
        state: JobState,
        *,
        routing: str | None = None,
        rule_id: str | None = None,
        detail: str | None = None,
        model: tuple[str, str, str] | None = None,
        ruleset_version: str | None = None,
        summary: ResultSummary | None = None,
        outputs: Sequence[ResultObject] = (),
        deliveries: Sequence[tuple[str, str]] = (),
        supersede: Supersession | None = None,
    ) -> None:
        """Close a job in one transaction: its result objects and their outbox rows.

        ``deliveries`` pairs (sop_uid, destination name). ``supersede`` (a done job): earlier generations'
        SR/SEG/summary deliveries still pending become ``superseded`` (never sent), and the rejection notes
        are queued after the new results to the destinations that hold the old ones.

        Raises :class:`LeaseLost` (and records nothing) when this process no longer holds the job: its lease
        ran out and the job went back to the queue, so another worker's run is the one that counts.

        A connection that broke during the commit leaves its outcome unknown to this process: the job's row is read
        again (on a new connection), and where this call's commit is there, the call returns as if nothing broke;
        else the error is raised (nothing was recorded, or the journal cannot be read to tell).
        """
        now = self.now()
        try:
            self._finish_job(job, state, now, routing=routing, rule_id=rule_id, detail=detail, model=model,
                             ruleset_version=ruleset_version, summary=summary, outputs=outputs,
                             deliveries=deliveries, supersede=supersede)
        except LeaseLost:
            self._release("jobs", job.id)
            raise
        except OPERATIONAL_ERRORS as exc:
            finished = self._finished_at(job.id, state, now)
            if finished is None:
                raise CommitOutcomeUnknown(f"job {job.id}: the journal's connection broke during the commit and "
                                           f"it cannot be read to tell whether it went through "
                                           f"({reason_of(exc)})") from exc
            if not finished:
                raise
        self._release("jobs", job.id)

    def _finished_at(self, job_id: int, state: JobState, now: float) -> bool | None:
        """Whether the journal holds this job as finished by the call stamped ``now`` (its commit went through);
        None when it cannot be read to tell."""
        try:
            rows = self._query("SELECT state, owner, finished_at FROM jobs WHERE id=?", (job_id,))
        except ERRORS:
            return None
        return bool(rows) and (rows[0]["state"], rows[0]["owner"], rows[0]["finished_at"]) == (state.value, None, now)

    def _finish_job(self, job: JobRow, state: JobState, now: float, *, routing: str | None,
                    rule_id: str | None, detail: str | None, model: tuple[str, str, str] | None,
                    ruleset_version: str | None, summary: ResultSummary | None, outputs: Sequence[ResultObject],
                    deliveries: Sequence[tuple[str, str]], supersede: Supersession | None) -> None:
        name, version, sha = model or (None, None, None)
        with self._tx() as db:
            db.lock(job.series_uid)
            cur = db.execute(
                "UPDATE jobs SET state=?, routing=?, rule_id=?, detail=?, model_name=?, model_version=?,"
                " model_sha=?, ruleset_version=?, summary=?, finished_at=?, owner=NULL, lease_until=NULL"
                " WHERE id=? AND state=? AND owner=?",
                (state.value, routing, rule_id, detail, name, version, sha, ruleset_version,
                 _summary_json(summary), now, job.id, JobState.RUNNING.value, self.owner),
            )
            if cur.rowcount != 1:
                raise LeaseLost(f"job {job.id} is no longer this process's (its lease ran out): nothing recorded")
            for obj in outputs:
                _insert_result(db, obj, job, now)
            for sop_uid, dest in deliveries:
                _queue_delivery(db, sop_uid, dest, now)
            if db.execute("SELECT 1 FROM jobs WHERE series_uid=? AND generation>? AND state=?",
                          (job.series_uid, job.generation, JobState.DONE.value)).fetchone() is not None:
                # a later generation (another worker's) is journalled already: these results are history, never
                # sent after it; the earlier ones it superseded itself (rejection notes built for them are kept as
                # results, for retention, and not sent)
                db.execute("UPDATE deliveries SET state=? WHERE state=? AND sop_uid IN"
                           " (SELECT sop_uid FROM results WHERE job_id=?)",
                           (DeliveryState.SUPERSEDED.value, DeliveryState.PENDING.value, job.id))
                for rej in supersede.rejections if supersede is not None else ():
                    _insert_result(db, rej.note, job, now)
            elif supersede is not None:
                self._supersede(db, job, supersede, now)
            self._settle_series(db, job.series_uid, job.generation)

    def _supersede(self, db: Connection, job: JobRow, supersede: Supersession, now: float) -> None:
        kinds = ",".join("?" * len(REJECTABLE_KINDS))
        db.execute(
            "UPDATE deliveries SET state=? WHERE state=? AND sop_uid IN (SELECT r.sop_uid FROM results r"
            f" JOIN jobs j ON j.id=r.job_id WHERE r.series_uid=? AND j.generation<?{_SINCE_BASE}"
            f" AND r.kind IN ({kinds}))",
            (DeliveryState.SUPERSEDED.value, DeliveryState.PENDING.value, job.series_uid, job.generation,
             *REJECTABLE_KINDS),
        )
        found = {(i, dest) for i, dest, _ in
                 self._rejectable(db, job.series_uid, job.generation, sorted(supersede.destinations))}
        covered = {pair for rej in supersede.rejections for pair in rej.rejects}
        if found != covered:
            raise StaleSupersession(f"series {job.series_uid}: earlier results changed state while the "
                                    "rejection notes were built")
        for rej in supersede.rejections:
            _insert_result(db, rej.note, job, now)
            for dest in sorted({dest for _, dest in rej.rejects}):
                _queue_delivery(db, rej.note.sop_uid, dest, now)
            db.executemany("UPDATE deliveries SET rejected_by=? WHERE id=?",
                           [(rej.note.sop_uid, i) for i, _ in rej.rejects])

    @staticmethod
    def _settle_series(db: Connection, series_uid: str, generation: int) -> None:
        db.execute(
            "UPDATE series SET state=? WHERE series_uid=? AND generation=? AND state=?",
            (SeriesState.ANALYSED.value, series_uid, generation, SeriesState.QUEUED.value),
        )

    def jobs(self, state: JobState | None = None, limit: int = 1000) -> list[Any]:
        if state is None:
            return self._query("SELECT * FROM jobs ORDER BY id DESC LIMIT ?", (limit,))
        return self._query("SELECT * FROM jobs WHERE state=? ORDER BY id DESC LIMIT ?", (state.value, limit))

    def retry_job(self, job_id: int) -> bool:
        """A failed job back to the queue; False (nothing changed) unless it failed, its images are still in the
        spool (not purged since, nor a purge behind the series' present generation) and the series has not moved
        on to a newer generation (more images arrived: that generation is analysed on its own, and this job
        would read its images, perhaps while they still arrive)."""
        with self._tx() as db:
            found = db.execute("SELECT series_uid FROM jobs WHERE id=?", (job_id,)).fetchone()
            if found is None:
                return False
            db.lock(found["series_uid"])  # a purge of the series in progress commits first; the check below sees it
            row = db.execute(f"SELECT series_uid, generation, state FROM jobs WHERE id=?{db.for_update}",
                             (job_id,)).fetchone()
            if row is None or row["state"] not in (JobState.FAILED.value,):
                return False
            series = db.execute(_SERIES_PURGE, (row["series_uid"],)).fetchone()
            if series is None or _purged_since(series, row["generation"]) or series["generation"] != row["generation"]:
                return False
            db.execute(
                "UPDATE jobs SET state=?, attempts=0, interruptions=0, suspect_interruptions=0, interrupted_at=NULL,"
                " detail=NULL, not_before=? WHERE id=?",
                (JobState.PENDING.value, self.now(), job_id),
            )
            db.execute(
                "UPDATE series SET state=? WHERE series_uid=? AND generation=?",
                (SeriesState.QUEUED.value, row["series_uid"], row["generation"]),
            )
            return True

    def images_purged(self, series_uid: str, generation: int) -> bool:
        """Whether the images a job of this generation of the series read were purged (``svdmark purge``)."""
        rows = self._query(_SERIES_PURGE, (series_uid,))
        return _purged_since(rows[0] if rows else None, generation)

    # ---------------------------------------------------------------- outbox
    def due_deliveries(self, now: float | None = None, destination: str | None = None,
                       in_order: bool = True) -> list[Delivery]:
        """Pending deliveries that are due, oldest first; of one destination if named. With ``in_order``, a
        rejection note whose own job's results to that destination are not settled is not due yet
        (:data:`_NOTE_WAITS`); without it (dead-lettering what waits for a destination no longer configured)
        every pending one is."""
        now = self.now() if now is None else now
        sql = ("SELECT d.id, d.sop_uid, d.destination, d.attempts, d.round_start, r.path, r.kind FROM deliveries d"
               " JOIN results r ON r.sop_uid=d.sop_uid WHERE d.state=? AND d.next_attempt_at<=?")
        args: list[Any] = [DeliveryState.PENDING.value, now]
        if in_order:
            sql += f" AND NOT {_NOTE_WAITS.format(delivery='d')}"
            args += _NOTE_WAITS_ARGS
        if destination is not None:
            sql += " AND d.destination=?"
            args.append(destination)
        rows = self._query(sql + " ORDER BY d.id", args)
        return [Delivery(r["id"], r["sop_uid"], r["destination"], r["attempts"] - r["round_start"], Path(r["path"]),
                         r["kind"], r["attempts"]) for r in rows]

    def pending_destinations(self) -> set[str]:
        """Destinations that have pending or sending deliveries."""
        rows = self._query("SELECT DISTINCT destination FROM deliveries WHERE state IN (?,?)",
                          (DeliveryState.PENDING.value, DeliveryState.SENDING.value))
        return {r["destination"] for r in rows}

    def start_sending(self, delivery_id: int, tried: int | None = None) -> SendClaim:
        """Pending → sending just before the object goes out (``started``, the only true answer). ``withdrawn``:
        no longer pending (newer results superseded it after the outbox read it), never to be sent. ``waiting``:
        a rejection note whose job's results to that destination are still pending or being sent (one failed
        earlier in the same batch, or another process is sending it): it stays pending until they settle.

        ``tried``: the delivery's tries ever made (:attr:`Delivery.total_attempts`) as the caller read them. When
        another process has tried it since, or is trying it now, the answer is ``stale``: the caller's reading is
        out of date (the delivery may be backing off, or have used its last try), so it reads it again later."""
        now = self.now()
        fresh = "" if tried is None else " AND attempts=?"
        with self._tx() as db:
            cur = db.execute("UPDATE deliveries SET state=?, owner=?, lease_until=? WHERE id=? AND state=?"
                             f"{fresh} AND NOT {_NOTE_WAITS.format(delivery='deliveries')}",
                             (DeliveryState.SENDING.value, self.owner, now + self.lease_seconds, delivery_id,
                              DeliveryState.PENDING.value, *(() if tried is None else (tried,)), *_NOTE_WAITS_ARGS))
            if cur.rowcount == 1:
                claim = SendClaim.STARTED
            else:
                row = db.execute("SELECT state, attempts FROM deliveries WHERE id=?", (delivery_id,)).fetchone()
                state = None if row is None else row["state"]
                if state not in (DeliveryState.PENDING.value, DeliveryState.SENDING.value):
                    claim = SendClaim.WITHDRAWN
                elif state == DeliveryState.SENDING.value or (tried is not None and row["attempts"] != tried):
                    claim = SendClaim.STALE
                else:
                    claim = SendClaim.WAITING
        if claim is SendClaim.STARTED:
            self._hold("deliveries", delivery_id)  # committed: the caller sends it
        return claim

    def mark_delivered(self, delivery_id: int, detail: str = "") -> None:
        """The destination confirmed this object: never sent again.

        Whether or not this call gets through, the heartbeat stops renewing the delivery's lease (the outbox does
        not call again): a confirmation the journal could not take lapses and the object is sent once more."""
        self._release("deliveries", delivery_id)
        now = self.now()
        with self._tx() as db:
            db.execute(
                "UPDATE deliveries SET state=?, attempts=attempts+1, delivered_at=?, last_error=NULL, owner=NULL,"
                " lease_until=NULL WHERE id=?",
                (DeliveryState.DELIVERED.value, now, delivery_id),
            )
            _record_try(db, delivery_id, now, DeliveryState.DELIVERED.value, detail)

    def mark_failed(self, delivery_id: int, error: str, next_attempt_at: float, dead: bool,
                    unanswered: bool = False) -> None:
        """A try that the destination did not confirm: retry later, or dead after the last attempt.
        ``unanswered``: the object went out and no answer came (a timeout, an abort), so the destination may hold
        it; the try is recorded as ``unanswered`` (followed by ``dead`` or ``superseded`` when the row became so),
        and a supersession rejects it.

        An object that newer results rejected while this try was in flight is never retried: it becomes
        ``superseded``, and when nothing that its rejection note names reached that destination, the note
        (not yet sent: a note waits for its job's results, :data:`_NOTE_WAITS`) is superseded too.
        A row that is neither pending nor sending (superseded while a try that never started was failing)
        keeps its state; the try is still recorded. So does a row that another process holds: this one's lease
        lapsed during the try and that process has taken the delivery over (``lease-lost``); requeueing it
        would let a third process send it beside that one. A delivered row is left as it is, nothing recorded:
        a confirmed object is never failed afterwards.
        """
        self._release("deliveries", delivery_id)  # as in mark_delivered: this try is over
        now = self.now()
        with self._tx() as db:
            row = db.execute(f"SELECT destination, rejected_by, state, owner FROM deliveries WHERE id=?"
                             f"{db.for_update}", (delivery_id,)).fetchone()
            if row is None or row["state"] == DeliveryState.DELIVERED.value:  # confirmed (this batch's own
                return  # confirmation, whose commit reported an error, or another process's): never failed after
            if row["owner"] not in (None, self.owner):
                _record_try(db, delivery_id, now, "lease-lost", error)
                return
            live = row["state"] in (DeliveryState.PENDING.value, DeliveryState.SENDING.value)
            rejected_by = row["rejected_by"] if live else None
            state = (DeliveryState(row["state"]) if not live else DeliveryState.SUPERSEDED if rejected_by
                     else DeliveryState.DEAD if dead else DeliveryState.PENDING)
            db.execute(
                "UPDATE deliveries SET state=?, attempts=attempts+1, last_error=?, next_attempt_at=?, owner=NULL,"
                " lease_until=NULL WHERE id=?",
                (state.value, error, next_attempt_at, delivery_id),
            )
            outcome = ("superseded" if state is DeliveryState.SUPERSEDED else "dead" if dead and live
                       else "retry" if live else state.value)
            recorded = [outcome] if not unanswered else [UNANSWERED_TRY] + ([] if outcome == "retry" else [outcome])
            for what in recorded:
                _record_try(db, delivery_id, now, what, error)
            if rejected_by:
                reached = db.execute(
                    "SELECT 1 FROM deliveries WHERE rejected_by=? AND destination=?"
                    f" AND {_MAY_HAVE_REACHED.format(delivery='deliveries')}",
                    (rejected_by, row["destination"], *_MAY_HAVE_REACHED_ARGS),
                ).fetchone()
                if reached is None:
                    db.execute("UPDATE deliveries SET state=? WHERE sop_uid=? AND destination=? AND state=?",
                               (DeliveryState.SUPERSEDED.value, rejected_by, row["destination"],
                                DeliveryState.PENDING.value))

    def delivery_attempts(self, delivery_id: int) -> list[Any]:
        """Every try of one delivery, oldest first: at, outcome (delivered | retry | dead | superseded | resend |
        lease-lost | interrupted | unanswered), detail."""
        return self._query("SELECT at, outcome, detail FROM delivery_attempts WHERE delivery_id=? ORDER BY id",
                          (delivery_id,))

    def resend_dead(self, delivery_ids: Sequence[int] | None = None) -> int:
        """Dead letters back to pending for a new round of tries; attempts, last error and history are kept. One that
        a rejection note names (a newer result superseded it after a cut-off try) is ``superseded`` instead: sent
        after the note, it would show the rejected result again. Returns how many went back to pending."""
        now = self.now()
        with self._tx() as db:
            if delivery_ids is None:
                rows = db.execute("SELECT id, rejected_by FROM deliveries WHERE state=?",
                                  (DeliveryState.DEAD.value,)).fetchall()
            else:
                rows = [r for r in (db.execute(f"SELECT id, rejected_by FROM deliveries WHERE id=? AND state=?"
                                               f"{db.for_update}", (i, DeliveryState.DEAD.value)).fetchone()
                                    for i in delivery_ids) if r is not None]
            ids = []
            for r in rows:
                if r["rejected_by"] is not None:
                    db.execute("UPDATE deliveries SET state=? WHERE id=?", (DeliveryState.SUPERSEDED.value, r["id"]))
                    _record_try(db, r["id"], now, DeliveryState.SUPERSEDED.value,
                                f"not sent again: rejection note {r['rejected_by']} names it")
                else:
                    ids.append(r["id"])
            for i in ids:
                db.execute(
                    "UPDATE deliveries SET state=?, round_start=attempts, resends=resends+1, next_attempt_at=?"
                    " WHERE id=?", (DeliveryState.PENDING.value, now, i))
                _record_try(db, i, now, "resend", "sent back to the outbox by an operator")
            return len(ids)

    def deliveries(self, state: DeliveryState | None = None, delivery_id: int | None = None) -> list[Any]:
        """Delivery rows by id: all, those in ``state``, or the one ``delivery_id`` (none if there is no such)."""
        if delivery_id is not None:
            return self._query("SELECT * FROM deliveries WHERE id=?", (delivery_id,))
        if state is None:
            return self._query("SELECT * FROM deliveries ORDER BY id")
        return self._query("SELECT * FROM deliveries WHERE state=? ORDER BY id", (state.value,))

    # ---------------------------------------------------------------- audit
    def audit(self, actor: str, action: str, detail: dict) -> None:
        with self._tx() as db:
            _audit(db, self.now(), actor, action, detail)

    def audit_entries(self, *, action: str | None = None, action_prefix: str | None = None,
                      limit: int | None = None) -> list[AuditEntry]:
        """Audit rows, newest first: of one ``action``, or of every action starting with ``action_prefix``."""
        sql, args = "SELECT at, actor, action, detail FROM audit", []
        if action is not None:
            sql += " WHERE action=?"
            args.append(action)
        elif action_prefix is not None:
            sql += " WHERE substr(action, 1, CAST(? AS INTEGER))=?"
            args += [len(action_prefix), action_prefix]
        sql += " ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [AuditEntry(r["at"], r["actor"], r["action"], json.loads(r["detail"])) for r in self._query(sql, args)]

    # ---------------------------------------------------------------- shadow runs
    def record_shadow(self, shadow: ShadowResult) -> None:
        row = {f.name: getattr(shadow, f.name) for f in fields(shadow)}
        for key in ("active_summary", "shadow_summary"):
            row[key] = _summary_json(row[key])
        with self._tx() as db:
            db.execute(f"INSERT INTO shadow_results ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                       list(row.values()))

    def shadow_results(self) -> list[ShadowResult]:
        """Every shadow run, oldest first."""
        names = [f.name for f in fields(ShadowResult)]
        out = []
        for r in self._query(f"SELECT {', '.join(names)} FROM shadow_results ORDER BY id"):
            row = dict(r)
            for key in ("active_summary", "shadow_summary"):
                row[key] = _summary(row[key])
            out.append(ShadowResult(**row))
        return out

    # ---------------------------------------------------------------- operator reads (CLI)
    def counts(self) -> dict[str, dict[str, int]]:
        """Series, jobs and deliveries by state; ``instances``: {"total": n}."""
        out: dict[str, dict[str, int]] = dict(_state_counts(self._conn()))
        out["instances"] = {"total": _instance_count(self._conn())}
        return out

    def job(self, job_id: int) -> JobRecord | None:
        rows = self._query("SELECT * FROM jobs WHERE id=?", (job_id,))
        return _job_record(rows[0]) if rows else None

    def job_records(self, state: JobState | None = None, limit: int = 1000) -> list[JobRecord]:
        """Like :meth:`jobs` (newest first), as :class:`JobRecord`."""
        return [_job_record(r) for r in self.jobs(state, limit)]

    def job_history(self) -> list[JobRecord]:
        """Every job, by series, generation and id (the last of a series is its latest analysis)."""
        return [_job_record(r) for r in self._query("SELECT * FROM jobs ORDER BY series_uid, generation, id")]

    def all_series(self) -> list[SeriesRow]:
        return [_series(r) for r in self._query("SELECT * FROM series ORDER BY series_uid")]

    # ---------------------------------------------------------------- retention
    def purgeable(self, cutoff: float) -> list[PurgedSeries]:
        """Series whose images a retention run may remove, least recently received first: analysed, nothing of
        theirs running or queued, no job finished and no instance received since ``cutoff`` (epoch seconds), and
        none of their results waiting to be sent or being sent."""
        return [_purged(r) for r in self._query(_PURGEABLE + _PURGEABLE_GROUP, _purgeable_args(cutoff))]

    def purge_series(self, series_uid: str, cutoff: float, remove: Callable[[list[Path]], Path | None],
                     actor: str) -> PurgedSeries | None:
        """Remove one series' images if it is still :meth:`purgeable`, in one transaction under the series' lock
        (an instance arriving meanwhile waits for it): ``remove`` gets its files in order of reception, removes
        them and returns the header-only copy it kept of one (or None), whose path is kept; its instance rows go,
        the series records when and how many, and the audit trail who (``actor``) and what (``spool.purge``).
        None if it no longer qualifies. An exception from ``remove`` records nothing; a crash before the commit
        leaves the rows, so the next run removes what is left of the files. The results stay."""
        with self._tx() as db:
            db.lock(series_uid)
            row = db.execute(_PURGEABLE + " AND s.series_uid=?" + _PURGEABLE_GROUP,
                             (*_purgeable_args(cutoff), series_uid)).fetchone()
            if row is None:
                return None
            paths = [Path(r["path"]) for r in db.execute(
                "SELECT path FROM instances WHERE series_uid=? ORDER BY received_at", (series_uid,))]
            header = remove(paths)
            db.execute("DELETE FROM instances WHERE series_uid=?", (series_uid,))
            now = self.now()
            db.execute("UPDATE series SET purged_at=?, purged_instances=?, header_path=? WHERE series_uid=?",
                       (now, len(paths), str(header) if header is not None else None, series_uid))
            purged = _purged(row)
            _audit(db, now, actor, "spool.purge", {"series_uid": series_uid, "study_uid": purged.study_uid,
                                                   "instances": purged.instances, "bytes": purged.bytes,
                                                   "done_before": cutoff})
            return purged

    def purgeable_results(self, as_if_purged: Collection[str] = ()) -> dict[str, int]:
        """Series uid → how many of its produced objects' files a retention run may remove: the series' images were
        purged (so nothing of it is analysed again and no later note reads them), the object was meant for at least
        one destination and every one of its deliveries is settled there (delivered, or superseded by a newer
        result before it was sent). A dead letter keeps its file for ``outbox resend``; an object meant for no
        destination is the only copy. A series that receives an image after its purge is no longer purged, so its
        earlier results wait for its next purge.
        ``as_if_purged``: series counted as if their images were purged already (what a dry run would purge)."""
        also = set(as_if_purged)
        purged = "" if also else " AND s.purged_at IS NOT NULL"  # a dry run's series are not purged yet
        return {r["series_uid"]: int(r["n"]) for r in self._query(
            f"SELECT r.series_uid, s.purged_at, COUNT(*) AS n FROM results r JOIN series s ON"
            f" s.series_uid=r.series_uid WHERE {_RESULT_FILE_SETTLED}{purged} GROUP BY r.series_uid, s.purged_at"
            " ORDER BY r.series_uid", _RESULT_FILE_SETTLED_ARGS)
            if r["purged_at"] is not None or r["series_uid"] in also}

    def purge_results(self, series_uid: str, remove: Callable[[list[Path]], None], actor: str) -> int:
        """Remove the files of the series' :meth:`purgeable_results`, in one transaction under the series' lock:
        ``remove`` gets their paths, the rows record when (their UIDs and delivery history stay), the audit trail who
        (``actor``) and what (``spool.purge_results``). How many; 0 if none qualifies any more. An exception from
        ``remove`` records nothing."""
        with self._tx() as db:
            db.lock(series_uid)
            rows = db.execute(f"SELECT r.sop_uid, r.path, s.study_uid FROM results r JOIN series s ON"
                              f" s.series_uid=r.series_uid WHERE {_RESULT_FILE_SETTLED} AND s.purged_at IS NOT NULL"
                              " AND r.series_uid=? ORDER BY r.created_at, r.sop_uid",
                              (*_RESULT_FILE_SETTLED_ARGS, series_uid)).fetchall()
            if not rows:
                return 0
            remove([Path(r["path"]) for r in rows])
            now = self.now()
            for r in rows:
                db.execute("UPDATE results SET file_removed_at=? WHERE sop_uid=?", (now, r["sop_uid"]))
            _audit(db, now, actor, "spool.purge_results", {"series_uid": series_uid, "study_uid": rows[0]["study_uid"],
                                                           "results": len(rows)})
            return len(rows)

    def instance_count(self, series_uid: str) -> int:
        """The series' instances: in the spool, or (its images purged since) as many as were removed."""
        return self._query("SELECT (SELECT COUNT(*) FROM instances WHERE series_uid=?) + COALESCE((SELECT"
                           " purged_instances FROM series WHERE series_uid=?), 0) AS n",
                           (series_uid, series_uid))[0]["n"]

    def first_instance_path(self, series_uid: str) -> Path | None:
        """The spool file of the series' first received instance; once its images were purged, the header-only copy
        of it (no pixels) that the purge kept, for the series' descriptive attributes."""
        rows = self._query("SELECT path FROM instances WHERE series_uid=? ORDER BY received_at LIMIT 1",
                           (series_uid,))
        if rows:
            return Path(rows[0]["path"])
        kept = self._query("SELECT header_path FROM series WHERE series_uid=?", (series_uid,))
        return Path(kept[0]["header_path"]) if kept and kept[0]["header_path"] else None

    def results(self, *, job_id: int | None = None, kind: str | None = None) -> list[StoredResult]:
        """Journalled objects (of one job, of one kind), in the order they were recorded."""
        sql, where, args = "SELECT * FROM results", [], []
        for column, value in (("job_id", job_id), ("kind", kind)):
            if value is not None:
                where.append(f"{column}=?")
                args.append(value)
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [StoredResult(r["sop_uid"], r["job_id"], r["series_uid"], r["kind"], r["sop_class"], Path(r["path"]),
                             r["supersedes"], r["created_at"], r["file_removed_at"])
                for r in self._query(sql + _RESULT_ORDER, args)]

    def delivery_states(self, delivery_ids: Sequence[int]) -> dict[int, DeliveryState]:
        """Delivery id → state, for those of ``delivery_ids`` that exist."""
        if not delivery_ids:
            return {}
        rows = self._query(f"SELECT id, state FROM deliveries WHERE id IN ({','.join('?' * len(delivery_ids))})",
                           list(delivery_ids))
        return {r["id"]: DeliveryState(r["state"]) for r in rows}

    # ---------------------------------------------------------------- processes, leases, leadership
    def heartbeat(self, roles: Sequence[str], *, current_job: int | None = None, open_series: Sequence[str] = (),
                  detail: dict | None = None, now: float | None = None) -> int:
        """This process is alive: its row in the process table, and the leases renewed of the jobs and deliveries
        it is working on (handed out by this object and not settled yet). Returns the number of those whose lease
        it still holds. Re-measures :attr:`clock_offset` (clocks drift)."""
        self._measure_clock()
        now = self.now() if now is None else now
        host, pid = socket.gethostname(), os.getpid()
        with self._tx() as db:
            db.execute(
                "INSERT INTO processes (id, roles, host, pid, started_at, heartbeat_at, current_job, open_series, detail)"
                " VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET heartbeat_at=excluded.heartbeat_at,"
                " roles=excluded.roles, current_job=excluded.current_job, open_series=excluded.open_series,"
                " detail=excluded.detail",
                (self.owner, ",".join(roles), host, pid, now, now, current_job, json.dumps(sorted(open_series)),
                 json.dumps({**(detail or {}), "clock_offset_s": round(self.clock_offset, 3)}, sort_keys=True)))
            with self._held_guard:
                jobs, sends = sorted(self._held["jobs"]), sorted(self._held["deliveries"])
            held = 0
            for table, ids, state in (("jobs", jobs, JobState.RUNNING), ("deliveries", sends, DeliveryState.SENDING)):
                if ids:
                    held += db.execute(f"UPDATE {table} SET lease_until=? WHERE owner=? AND state=?"
                                       f" AND id IN ({','.join('?' * len(ids))})",
                                       (now + self.lease_seconds, self.owner, state.value, *ids)).rowcount
            return held

    def leave(self) -> None:
        """This process stops: its row leaves the process table (a killed one ages out instead)."""
        with self._tx() as db:
            db.execute("DELETE FROM processes WHERE id=?", (self.owner,))

    def processes(self, max_age: float | None = None, now: float | None = None) -> list[ProcessRecord]:
        """Processes by host and start time; only those heard from within ``max_age`` seconds if given."""
        now = self.now() if now is None else now
        sql, args = "SELECT * FROM processes", []
        if max_age is not None:
            sql += " WHERE heartbeat_at>=?"
            args.append(now - max_age)
        out = []
        for r in self._query(sql + " ORDER BY host, started_at, id", args):
            out.append(ProcessRecord(r["id"], tuple(x for x in r["roles"].split(",") if x), r["host"], r["pid"],
                                     r["started_at"], r["heartbeat_at"], r["current_job"],
                                     tuple(json.loads(r["open_series"] or "[]")), json.loads(r["detail"] or "{}")))
        return out

    def dead_processes_here(self) -> list[str]:
        """Owners in the process table on this host whose PID is no longer running (killed, crashed).

        A PID reused by another program keeps its row alive: that owner's leases then lapse as usual."""
        host = socket.gethostname()
        return [p.id for p in self.processes() if p.host == host and p.id != self.owner and not _pid_alive(p.pid)]

    def forget_processes(self, older_than: float, now: float | None = None, ids: Sequence[str] = ()) -> int:
        """Drop process rows not heard from for ``older_than`` seconds, and those named in ``ids`` (killed)."""
        now = self.now() if now is None else now
        named = f" OR id IN ({','.join('?' * len(ids))})" if ids else ""
        with self._tx() as db:
            return db.execute(f"DELETE FROM processes WHERE heartbeat_at<?{named}", (now - older_than, *ids)).rowcount

    def lead(self, role: str) -> bool:
        """Whether this process is (or has just become) the one that performs ``role`` (e.g. assembly)."""
        return self._engine.leader_lock(role)

    # ---------------------------------------------------------------- copy to another journal (engine move)
    def copy_into(self, target: "Journal", *, live_within: float,
                  rebase_spool: tuple[str, str] | None = None) -> dict[str, int]:
        """Copy every row of this journal into the empty journal ``target`` (another engine, typically:
        SQLite → PostgreSQL when a site outgrows one machine); returns rows copied per table.

        Refused (:class:`CopyRefused`) while a process heartbeats into this journal within ``live_within``
        seconds, or when ``target`` holds any row. This journal is read in one snapshot, ``target`` written in
        one transaction: all of it lands or none. ``rebase_spool`` (old, new) rewrites the spool paths of
        instances and results whose spool moved (a shared filesystem). Leases are copied as lapsed (the processes
        that held them have stopped), so the first process on ``target`` recovers their work at once."""
        live = self.processes(max_age=live_within)
        if live:
            raise CopyRefused(f"{self.describe()} is in use by {len(live)} process(es) "
                              f"({', '.join(f'{p.host} pid {p.pid}' for p in live)}): stop them first")
        with target._tx() as out:
            held = {t: out.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in COPIED_TABLES}
            if any(held.values()):
                raise CopyRefused(f"{target.describe()} is not empty ("
                                  + ", ".join(f"{n} {t}" for t, n in held.items() if n) + "): copy into a new journal")
            copied: dict[str, int] = {}
            with self._engine.snapshot() as src:
                for table in COPIED_TABLES:
                    copied[table], columns = _copy_table(src, out, table, rebase_spool)
                    if "id" in columns:
                        target._engine.move_identity_past(out, table)
        return copied

    # ---------------------------------------------------------------- health (its own connections)
    @staticmethod
    def read_counts(url: str | Path) -> JournalCounts:
        """Counts through a read-only connection of their own: never creates, migrates or locks the journal.

        Raises :class:`JournalUnavailable` when it cannot be read."""
        try:
            conn = Engine(url).read_only()
            try:
                states = _state_counts(conn)
                routing = {(r[0] or "none", r[1]): r[2] for r in
                           conn.execute("SELECT routing, state, COUNT(*) FROM jobs GROUP BY routing, state")}
                return JournalCounts(states, routing, _instance_count(conn))
            finally:
                conn.close()
        except ERRORS as exc:
            raise JournalUnavailable(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None

    @staticmethod
    def check_writable(url: str | Path) -> None:
        """The journal accepts a write transaction now; else :class:`JournalUnavailable`."""
        try:
            Engine(url).probe_write()
        except ERRORS as exc:
            raise JournalUnavailable(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def _copy_table(src: Connection, out: Connection, table: str, rebase_spool: tuple[str, str] | None,
                batch: int = 1000) -> tuple[int, list[str]]:
    """Every row of ``table`` from ``src`` into ``out``, ids included; returns the number of rows, and the columns."""
    cursor = src.execute(f"SELECT * FROM {table} ORDER BY 1")
    names = [d[0] for d in cursor.description]
    insert = f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
    path_at = names.index(SPOOL_PATHS[table]) if table in SPOOL_PATHS and rebase_spool else None
    lease_at = names.index("lease_until") if "lease_until" in names else None
    n = 0
    while rows := cursor.fetchmany(batch):
        rows = [list(r) for r in rows]
        for r in rows:
            if path_at is not None and r[path_at] is not None:
                r[path_at] = _rebased(r[path_at], *rebase_spool)
            if lease_at is not None:
                r[lease_at] = None  # its holder has stopped (copy_into checks): lapsed, so recovery frees it at once
        out.executemany(insert, rows)
        n += len(rows)
    return n, names


def _rebased(path: str, old: str, new: str) -> str:
    """``path`` under ``new`` instead of ``old`` where it lies under ``old`` (whole path components only)."""
    rel = os.path.relpath(path, old)
    return path if rel == os.pardir or rel.startswith(os.pardir + os.sep) else os.path.join(new, rel)


def _insert_job(db: Connection, series_uid: str, study_uid: str, generation: int, completion: str,
                now: float, warning: str | None = None) -> int:
    """A pending job, due now; its id (queued by the assembler or by an operator's re-analysis)."""
    return db.execute(
        "INSERT INTO jobs(series_uid, study_uid, generation, state, completion, created_at, not_before,"
        " completion_warning) VALUES (?,?,?,?,?,?,?,?) RETURNING id",
        (series_uid, study_uid, generation, JobState.PENDING.value, completion, now, now, warning),
    ).fetchone()[0]


# what svdmark purge may remove (Journal.purgeable): its parameters from _purgeable_args(cutoff)
_PURGEABLE = (
    "SELECT s.series_uid, s.study_uid, s.modality, s.last_received, COUNT(*) AS instances,"
    " COALESCE(SUM(i.size), 0) AS bytes FROM series s JOIN instances i ON i.series_uid=s.series_uid"
    " WHERE s.state=? AND s.last_received<?"
    " AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.series_uid=s.series_uid AND (j.state IN (?,?) OR j.finished_at>=?))"
    " AND NOT EXISTS (SELECT 1 FROM results r JOIN deliveries d ON d.sop_uid=r.sop_uid"
    " WHERE r.series_uid=s.series_uid AND d.state IN (?,?))")
_PURGEABLE_GROUP = " GROUP BY s.series_uid, s.study_uid, s.modality, s.last_received ORDER BY s.last_received"
_SERIES_PURGE = "SELECT purged_at, base_generation, generation FROM series WHERE series_uid=?"


def _purged_since(series: Any, generation: int) -> bool:
    """Whether a generation's images are gone: the series is purged, or a purge lies behind its present generation
    (a series sent again after its purge starts at ``base_generation``)."""
    return series is not None and (series["purged_at"] is not None or generation < series["base_generation"])


# a produced object, its file still in the spool, that every destination has (Journal.purgeable_results)
_RESULT_FILE_SETTLED = (
    "r.file_removed_at IS NULL AND EXISTS (SELECT 1 FROM deliveries d WHERE d.sop_uid=r.sop_uid)"
    " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.sop_uid=r.sop_uid AND d.state NOT IN (?,?))")
_RESULT_FILE_SETTLED_ARGS = (DeliveryState.DELIVERED.value, DeliveryState.SUPERSEDED.value)


def _audit(db: Connection, at: float, actor: str, action: str, detail: dict) -> None:
    db.execute("INSERT INTO audit(at, actor, action, detail) VALUES (?,?,?,?)",
               (at, actor, action, json.dumps(detail, sort_keys=True)))


def _purgeable_args(cutoff: float) -> tuple:
    return (SeriesState.ANALYSED.value, cutoff, JobState.PENDING.value, JobState.RUNNING.value, cutoff,
            DeliveryState.PENDING.value, DeliveryState.SENDING.value)


def _purged(r: Any) -> PurgedSeries:
    return PurgedSeries(r["series_uid"], r["study_uid"], r["modality"], r["last_received"], int(r["instances"]),
                        int(r["bytes"]))


# earlier generations a series' new results supersede: none before the fresh start after a purge (reanalysis.py)
_SINCE_BASE = " AND j.generation>=(SELECT b.base_generation FROM series b WHERE b.series_uid=r.series_uid)"

# A rejection note waits for its own job's new results: IHE IOCM's order (the new objects, then the note that
# rejects the old ones), kept whatever happens to a send (a new result failing and retried later, another process
# sending it meanwhile). The condition on one delivery row, named {delivery} in the query that uses it; its
# parameters are _NOTE_WAITS_ARGS. A new result that is dead or superseded no longer holds the note back.
_NOTE_WAITS = ("EXISTS (SELECT 1 FROM results note JOIN results own ON own.job_id=note.job_id"
               " JOIN deliveries e ON e.sop_uid=own.sop_uid WHERE note.sop_uid={delivery}.sop_uid AND note.kind=?"
               " AND own.kind<>? AND e.destination={delivery}.destination AND e.state IN (?,?))")
_NOTE_WAITS_ARGS = (OutputKind.REJECTION.value, OutputKind.REJECTION.value, DeliveryState.PENDING.value,
                    DeliveryState.SENDING.value)

# A delivery whose object the destination may hold: delivered, being sent, or waiting again (superseded, or a dead
# letter) after a try that was cut off (Journal.recover records INTERRUPTED_TRY) or went out with no answer
# (Journal.mark_failed records UNANSWERED_TRY). The condition
# on one delivery row, named {delivery}; its parameters are _MAY_HAVE_REACHED_ARGS.
_MAY_HAVE_REACHED = ("({delivery}.state IN (?,?) OR ({delivery}.state IN (?,?,?) AND EXISTS (SELECT 1 FROM"
                     " delivery_attempts a WHERE a.delivery_id={delivery}.id AND a.outcome IN (?,?))))")
_MAY_HAVE_REACHED_ARGS = (DeliveryState.DELIVERED.value, DeliveryState.SENDING.value, DeliveryState.PENDING.value,
                          DeliveryState.SUPERSEDED.value, DeliveryState.DEAD.value, INTERRUPTED_TRY, UNANSWERED_TRY)

# the order results were recorded in: by time, then a job's objects as the worker lists them (SR, SEG, summary),
# then its rejection notes
_RESULT_ORDER = (" ORDER BY created_at, job_id, CASE kind WHEN 'sr' THEN 0 WHEN 'seg' THEN 1 WHEN 'summary' THEN 2"
                 " ELSE 3 END, sop_uid")


def _record_try(db: Connection, delivery_id: int, at: float, outcome: str, detail: str | None) -> None:
    """One row of a delivery's history (:meth:`Journal.delivery_attempts`)."""
    db.execute("INSERT INTO delivery_attempts(delivery_id, at, outcome, detail) VALUES (?,?,?,?)",
               (delivery_id, at, outcome, detail))


def _insert_result(db: Connection, obj: ResultObject, job: JobRow, now: float) -> None:
    db.execute(
        "INSERT INTO results (sop_uid, job_id, series_uid, kind, sop_class, path, supersedes, created_at)"
        " VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(sop_uid) DO UPDATE SET job_id=excluded.job_id,"
        " series_uid=excluded.series_uid, kind=excluded.kind, sop_class=excluded.sop_class, path=excluded.path,"
        " supersedes=excluded.supersedes, created_at=excluded.created_at, file_removed_at=NULL",  # written again
        (obj.sop_uid, job.id, job.series_uid, obj.kind, obj.sop_class, str(obj.path), obj.supersedes, now),
    )


def _queue_delivery(db: Connection, sop_uid: str, destination: str, now: float) -> None:
    db.execute("INSERT INTO deliveries(sop_uid, destination, state, next_attempt_at) VALUES (?,?,?,?)"
               " ON CONFLICT DO NOTHING", (sop_uid, destination, DeliveryState.PENDING.value, now))


def _state_counts(db: Connection) -> dict[str, dict[str, int]]:
    return {table: {r[0]: r[1] for r in db.execute(f"SELECT state, COUNT(*) FROM {table} GROUP BY state")}
            for table in ("series", "jobs", "deliveries")}


def _instance_count(db: Connection) -> int:
    return db.execute("SELECT COUNT(*) FROM instances").fetchone()[0]


def _job_record(r: Any) -> JobRecord:
    row = {f.name: r[f.name] for f in fields(JobRecord)}
    row["state"] = JobState(row["state"])
    row["summary"] = _summary(row["summary"])
    return JobRecord(**row)


def _summary_json(summary: ResultSummary | None) -> str | None:
    return json.dumps(summary.to_json()) if summary is not None else None


def _summary(text: str | None) -> ResultSummary | None:
    return ResultSummary.from_json(json.loads(text)) if text else None


def _series(r: Any) -> SeriesRow:
    return SeriesRow(r["series_uid"], r["study_uid"], r["modality"], r["first_received"], r["last_received"],
                     bool(r["released"]), SeriesState(r["state"]), r["generation"], r["purged_at"])


def _result(r: Any) -> ResultObject:
    return ResultObject(r["sop_uid"], r["kind"], r["sop_class"], Path(r["path"]), r["supersedes"])

"""What each layer asks of the journal: one small Protocol per caller, and :class:`JournalStore` for all of them.

:class:`svdmark.journal.Journal` is the one implementation, on SQLite or PostgreSQL (the engine is chosen
by URL: :mod:`svdmark.journal_engine`). Callers are annotated with the Protocol of their role;
``tests/unit/test_journal_api.py`` checks that ``Journal`` has every one with the same signature. The record
types (``SeriesRow``, ``JobRow``, ...) stay in ``journal.py`` and are named here for typing only.

Not in the interface yet: ``jobs()``, ``deliveries()`` and ``delivery_attempts()`` still return
``sqlite3.Row`` (the CLI calls them on the concrete ``Journal``), and the static ``read_counts`` /
``check_writable`` that ``health.py`` calls with a path, not an open journal.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Protocol, Sequence

if TYPE_CHECKING:
    from .domain import DeliveryState, JobState, SendClaim
    from .geometry import SliceGeometry
    from .summary import ResultSummary
    from .journal import (AuditEntry, Delivery, JobRecord, JobRow, ProcessRecord, Recorded, ResultObject, SeriesRow,
                          ShadowResult, StoredInstance, StoredResult, Supersession)


class ReceiveJournal(Protocol):
    """``receive/``: a stored instance is journalled before its C-STORE is answered."""

    def instance_digest(self, sop_uid: str) -> str | None: ...

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
    ) -> Recorded: ...

    def record_instances(self, rows: Sequence[Mapping[str, Any]], now: float | None = None) -> list[Recorded]: ...

    def mark_released(self, series_uids: Sequence[str]) -> None: ...


class AssemblyJournal(Protocol):
    """``assemble/``: which series are still receiving, their instances, and the job once one is complete."""

    def now(self) -> float: ...

    def receiving_series(self) -> list[SeriesRow]: ...

    def instances(self, series_uid: str) -> list[StoredInstance]: ...

    def queue_job(self, series: SeriesRow, completion: str, now: float | None = None,
                  warning: str | None = None) -> int | None: ...


class BatchJournal(ReceiveJournal, Protocol):
    """``enqueue.py`` (``svdmark analyze --enqueue``): instances kept as the receiver keeps them
    (``receive/store.py``), then each whole series queued at once, without an assembler."""

    def series_row(self, series_uid: str) -> SeriesRow | None: ...

    def enqueue_series(self, series_uid: str, completion: str, now: float | None = None) -> int | None: ...

    def describe(self) -> str: ...


class ShadowJournal(Protocol):
    """``shadow.py``: the candidate's result, stored beside the active one."""

    def record_shadow(self, shadow: ShadowResult) -> None: ...


class WorkJournal(ShadowJournal, Protocol):
    """``worker.py``: claim a job, read its instances and earlier results, record its outcome."""

    def claim_job(self, now: float | None = None) -> JobRow | None: ...

    def instances(self, series_uid: str) -> list[StoredInstance]: ...

    def previous_sr(self, series_uid: str, before_generation: int) -> ResultObject | None: ...

    def rejectable(self, series_uid: str, before_generation: int,
                   destinations: Sequence[str]) -> list[tuple[int, str, ResultObject]]: ...

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
    ) -> None: ...

    def retry_job_later(self, job: JobRow, reason: str, delay: float, max_attempts: int,
                        now: float | None = None) -> JobState | None: ...


class OutboxJournal(Protocol):
    """``export/outbox.py``: deliveries that are due, and each try's outcome."""

    def now(self) -> float: ...

    def due_deliveries(self, now: float | None = None, destination: str | None = None,
                       in_order: bool = True) -> list[Delivery]: ...

    def pending_destinations(self) -> set[str]: ...

    def start_sending(self, delivery_id: int, tried: int | None = None) -> SendClaim: ...

    def mark_delivered(self, delivery_id: int, detail: str = "") -> None: ...

    def mark_failed(self, delivery_id: int, error: str, next_attempt_at: float, dead: bool,
                    unanswered: bool = False) -> None: ...


class AuditJournal(Protocol):
    """``lifecycle.py``: the audit trail of model administration, and the stored shadow results."""

    def audit(self, actor: str, action: str, detail: dict) -> None: ...

    def audit_entries(self, *, action: str | None = None, action_prefix: str | None = None,
                      limit: int | None = None) -> list[AuditEntry]: ...

    def shadow_results(self) -> list[ShadowResult]: ...


class ReadJournal(Protocol):
    """``cli/`` readers (views, results, status): series, jobs, results and counts."""

    def all_series(self) -> list[SeriesRow]: ...

    def series_row(self, series_uid: str) -> SeriesRow | None: ...

    def instances(self, series_uid: str) -> list[StoredInstance]: ...

    def instance_count(self, series_uid: str) -> int: ...

    def first_instance_path(self, series_uid: str) -> Path | None: ...

    def job(self, job_id: int) -> JobRecord | None: ...

    def job_records(self, state: JobState | None = None, limit: int = 1000) -> list[JobRecord]: ...

    def job_history(self) -> list[JobRecord]: ...

    def results(self, *, job_id: int | None = None, kind: str | None = None) -> list[StoredResult]: ...

    def delivery_states(self, delivery_ids: Sequence[int]) -> dict[int, DeliveryState]: ...

    def counts(self) -> dict[str, dict[str, int]]: ...


class AdminJournal(ReadJournal, Protocol):
    """``cli/ops.py``: the operator's re-analysis, retry and resend commands."""

    def reanalyse(self, series_uid: str, reason: str, now: float | None = None) -> int | str: ...

    def series_analysed_with(self, model_name: str, model_version: str | None = None) -> list[str]: ...

    def retry_job(self, job_id: int) -> bool: ...

    def resend_dead(self, delivery_ids: Sequence[int] | None = None) -> int: ...


class ProcessJournal(Protocol):
    """``processes.py``: this process's heartbeat (which renews its leases), the live processes, leadership."""

    shared: bool

    def heartbeat(self, roles: Sequence[str], *, current_job: int | None = None, open_series: Sequence[str] = (),
                  detail: dict | None = None, now: float | None = None) -> int: ...

    def leave(self) -> None: ...

    def processes(self, max_age: float | None = None, now: float | None = None) -> list[ProcessRecord]: ...

    def forget_processes(self, older_than: float, now: float | None = None, ids: Sequence[str] = ()) -> int: ...

    def lead(self, role: str) -> bool: ...

    def dead_processes_here(self) -> list[str]: ...


class JournalStore(BatchJournal, AssemblyJournal, WorkJournal, OutboxJournal, AuditJournal, AdminJournal,
                   ProcessJournal, Protocol):
    """Everything ``service.py`` hands out, plus what it calls itself at start and stop."""

    def recover(self, interruption_cap: int = ..., now: float | None = None,
                hard_cap: int = ..., expired_only: bool | None = None,
                dead_owners: Sequence[str] = (), delivery_cap: int = ...,
                spare_held: bool = False) -> dict[str, Any]: ...

    def close(self) -> None: ...

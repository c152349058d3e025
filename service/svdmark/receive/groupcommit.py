"""Group commit: the journal rows of instances stored at the same moment on several associations, in one transaction.

Each C-STORE is answered only once its journal row is committed. One commit per instance meant, under several
associations, one transaction (and one flush of SQLite's write-ahead log) per instance, each association's
thread queueing for the single writer. Here a thread that finds no commit under way commits its row together
with every row that arrived while the one before was under way (the classic leader/follower group commit of
database logs); the others wait on a condition and are answered with their own outcome. Nothing is answered
before its row is committed: durability per instance is unchanged, only the commits are shared.

A batch that fails is retried row by row, each row by its own thread (side by side, as without batching), so
one row the journal refuses (or a bug) fails only its own instance. Works over any journal with
``record_instances`` (SQLite and PostgreSQL alike).
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ..journal_api import ReceiveJournal

if TYPE_CHECKING:  # pragma: no cover
    from ..journal import Recorded


class CommitInterrupted(RuntimeError):
    """The thread committing this row's batch was interrupted; whether the row was committed is not known."""


class _Row:
    __slots__ = ("kwargs", "outcome", "error", "done", "alone")

    def __init__(self, kwargs: dict[str, Any]):
        self.kwargs, self.outcome, self.error, self.done, self.alone = kwargs, None, None, False, False

    def result(self) -> "Recorded":
        if self.error is not None:
            raise self.error
        return self.outcome


class GroupCommit:
    """:class:`ReceiveJournal` with ``record_instance`` shared across threads (module doc); the other calls,
    and a row with its own ``now``, go straight to the journal."""

    def __init__(self, journal: ReceiveJournal):
        self.journal = journal
        self._cv = threading.Condition(threading.Lock())
        self._pending: list[_Row] = []
        self._committing = False

    def instance_digest(self, sop_uid: str) -> str | None:
        return self.journal.instance_digest(sop_uid)

    def record_instances(self, rows: Sequence[Mapping[str, Any]], now: float | None = None) -> list["Recorded"]:
        return self.journal.record_instances(rows, now)

    def mark_released(self, series_uids: Sequence[str]) -> None:
        self.journal.mark_released(series_uids)

    def record_instance(self, *, now: float | None = None, **kwargs: Any) -> "Recorded":
        if now is not None:
            return self.journal.record_instance(now=now, **kwargs)
        row = _Row(kwargs)
        with self._cv:
            self._pending.append(row)
            while self._committing and not row.done:
                self._cv.wait()
            lead = not row.done  # nobody committed it: this thread commits it, with every row waiting now
            if lead:
                self._committing, batch, self._pending = True, self._pending, []
        if lead:
            try:
                self._commit(batch)
            finally:
                with self._cv:
                    for r in batch:
                        if not r.done:  # the leader was interrupted (BaseException): never leave a follower waiting
                            r.error, r.done = CommitInterrupted("the journal commit was interrupted"), True
                    self._committing = False
                    self._cv.notify_all()
        if row.alone:  # the shared commit failed: each row again on its own, each in its own thread
            return self.journal.record_instances([row.kwargs])[0]
        return row.result()

    def _commit(self, batch: list[_Row]) -> None:
        try:
            outcomes = self.journal.record_instances([r.kwargs for r in batch])
        except Exception as exc:
            if len(batch) == 1:
                batch[0].error = exc
            else:  # one row's failure must not fail the others; nor a slow retry hold them all up
                for r in batch:
                    r.alone = True
            for r in batch:
                r.done = True
            return
        for r, outcome in zip(batch, outcomes):
            r.outcome, r.done = outcome, True

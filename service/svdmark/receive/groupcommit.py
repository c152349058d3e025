"""Group commit: the journal rows of instances stored at the same moment on several associations, in one transaction.

Each C-STORE is answered only once its journal row is committed. One commit per instance meant, under several
associations, one transaction (and one flush of SQLite's write-ahead log) per instance, each association's
thread queueing for the single writer. Here the first thread to arrive commits its row together with every row
that arrives while a commit is under way (the classic leader/follower group commit of database logs); the
others wait on a condition and are answered with their own outcome. Nothing is answered before its row is
committed: durability per instance is unchanged, only the commits are shared.

A batch that fails is retried row by row, so one row the journal refuses (or a bug) fails only its own
instance. Implements the receiver's side of :class:`svdmark.journal_api.ReceiveJournal` over any journal
that has ``record_instances`` (SQLite and PostgreSQL alike).
"""
from __future__ import annotations

import threading
from typing import Any, Sequence

from ..journal_api import ReceiveJournal


class _Row:
    __slots__ = ("kwargs", "outcome", "error", "done")

    def __init__(self, kwargs: dict[str, Any]):
        self.kwargs, self.outcome, self.error, self.done = kwargs, None, None, False

    def result(self) -> str:
        if self.error is not None:
            raise self.error
        return self.outcome


class GroupCommit:
    """``record_instance`` shared across threads (module doc); the other journal calls pass through."""

    def __init__(self, journal: ReceiveJournal):
        self.journal = journal
        self._cv = threading.Condition(threading.Lock())
        self._pending: list[_Row] = []
        self._committing = False

    def instance_digest(self, sop_uid: str) -> str | None:
        return self.journal.instance_digest(sop_uid)

    def mark_released(self, series_uids: Sequence[str]) -> None:
        self.journal.mark_released(series_uids)

    def record_instance(self, **kwargs: Any) -> str:
        row = _Row(kwargs)
        with self._cv:
            self._pending.append(row)
            while self._committing and not row.done:
                self._cv.wait()
            if row.done:  # a leader committed it
                return row.result()
            self._committing, batch, self._pending = True, self._pending, []
        try:
            self._commit(batch)
        finally:
            with self._cv:
                for r in batch:
                    if not r.done:  # the leader was interrupted (BaseException): never leave a follower waiting
                        r.error, r.done = RuntimeError("the journal commit was interrupted"), True
                self._committing = False
                self._cv.notify_all()
        return row.result()

    def _commit(self, batch: list[_Row]) -> None:
        try:
            outcomes = self.journal.record_instances([r.kwargs for r in batch])
        except Exception as exc:
            if len(batch) == 1:
                batch[0].error, batch[0].done = exc, True
                return
            for r in batch:  # one row's failure must not fail the others
                try:
                    r.outcome = self.journal.record_instances([r.kwargs])[0]
                except Exception as one:
                    r.error = one
                r.done = True
            return
        for r, outcome in zip(batch, outcomes):
            r.outcome, r.done = outcome, True

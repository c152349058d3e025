"""Many processes on one PostgreSQL journal take series locks in one order: an instance moved by another process while
a batch waited, and a recovery that quarantines several jobs, must not deadlock with a receiver's batch; recovery's
"did other jobs finish since" question is answered from an index, not a scan of the history."""
from __future__ import annotations

import sqlite3
import threading
import time

import psycopg

from svdmark.journal import Journal
from svdmark.journal_engine import SERIES_LOCK, lock_key

from .test_journal import _queue, record


def _lock(conn, series_uid: str) -> None:
    conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (SERIES_LOCK, lock_key(series_uid)))


def _in_thread(out: dict, key: str, work) -> threading.Thread:
    def run():
        try:
            out[key] = work()
        except Exception as exc:  # noqa: BLE001 - the test reports what happened
            out[key] = exc

    t = threading.Thread(target=run)
    t.start()
    return t


def test_an_instance_moved_while_a_batch_waited_does_not_deadlock(postgres_url):
    a, b, c = "1.9.1", "1.9.2", "1.9.3"  # the order every batch locks them in
    j = Journal(postgres_url)
    record(j, "9.1", series=a)
    mover = psycopg.connect(postgres_url, autocommit=True)  # another receiver, moving 9.1 from a to b
    other = psycopg.connect(postgres_url, autocommit=True)  # a batch over b and c, in order
    mover.execute("BEGIN")
    _lock(mover, a)
    _lock(mover, b)
    out: dict = {}
    this = _in_thread(out, "this", lambda: record(j, "9.1", series=c, digest="other"))  # looked: 9.1 in a; waits on a
    time.sleep(0.5)

    def batch():
        other.execute("BEGIN")
        _lock(other, b)
        time.sleep(0.3)
        _lock(other, c)
        other.execute("COMMIT")
        return "ok"

    then = _in_thread(out, "other", batch)
    time.sleep(0.3)
    mover.execute("UPDATE instances SET series_uid=%s WHERE sop_uid=%s", (b, "9.1"))
    mover.execute("COMMIT")
    this.join(20)
    then.join(20)
    assert out == {"this": "replaced", "other": "ok"}, out
    assert [r["series_uid"] for r in j._query("SELECT series_uid FROM instances WHERE sop_uid='9.1'")] == [c]


def test_recovery_quarantining_two_jobs_does_not_deadlock_with_a_batch(postgres_url):
    a, b = "1.8.1", "1.8.2"
    j = Journal(postgres_url)
    _queue(j, b, now=100.0)  # b's job has the lower id
    _queue(j, a, now=101.0)
    assert {j.claim_job().series_uid, j.claim_job().series_uid} == {a, b}
    batch = psycopg.connect(postgres_url, autocommit=True)  # a receiver's batch over a and b, as record_instances
    batch.execute("BEGIN")
    _lock(batch, a)
    _lock(batch, b)
    batch.execute("UPDATE series SET last_received=200 WHERE series_uid=%s", (a,))
    out: dict = {}
    t = _in_thread(out, "recover", lambda: j.recover(expired_only=False, hard_cap=1, now=300.0))  # both quarantined
    time.sleep(0.5)
    batch.execute("UPDATE series SET last_received=200 WHERE series_uid=%s", (b,))
    batch.execute("COMMIT")
    t.join(20)
    assert not isinstance(out["recover"], Exception), out
    assert out["recover"]["jobs_quarantined"] == 2


def test_recovery_asks_whether_other_jobs_finished_through_an_index(tmp_path):
    j = Journal(tmp_path / "j.sqlite")
    _queue(j, "1.7.1", now=100.0)
    assert j.claim_job() is not None
    statements: list[str] = []
    j._conn().raw.set_trace_callback(statements.append)
    j.recover(expired_only=False, now=300.0)
    (asked,) = [s for s in statements if "finished_at>" in s and "EXISTS" in s]
    raw = sqlite3.connect(tmp_path / "j.sqlite")
    plan = " ".join(str(r[-1]) for r in raw.execute("EXPLAIN QUERY PLAN " + asked))
    assert "INDEX jobs_finished" in plan, plan

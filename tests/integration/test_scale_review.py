"""The shared journal when connections break at the worst moment, and two processes meet on one row.

Real PostgreSQL only (``postgres_url``: a fresh database on tests/pgserver.py's server). A connection is broken
in two ways: ``pg_terminate_backend`` (the server ends one session, as a restart does to all), and
:class:`CommitCutter`, a TCP relay between the journal and the server that passes a COMMIT on to the server and
then cuts the client off before the answer comes back: the transaction is committed, the client sees a reset.
"""
from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from svdmark.domain import DeliveryState, JobState, SeriesState
from svdmark.journal import Journal, LeaseLost, Rejection, ResultObject, Supersession
from tests.unit.test_journal import _queue, record

LEASE = 0.3  # seconds: short enough to lapse within a test


def _sr(sop_uid: str) -> ResultObject:
    return ResultObject(sop_uid, "sr", "1.2.840.10008.5.1.4.1.1.88.34", Path(f"/r/{sop_uid}"))


class CommitCutter:
    """A TCP relay to the server. Once :meth:`arm`-ed, the next client message that holds ``COMMIT`` goes to the
    server, and the client's side is closed without the answer (the server commits, the client cannot know)."""

    def __init__(self, url: str):
        parts = urlsplit(url)
        self._target = (parts.hostname, parts.port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        port = self._listener.getsockname()[1]
        self.url = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{port}"))
        self._armed = threading.Event()
        self.cuts = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self) -> None:
        self._armed.set()

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self._target)
            cut = threading.Event()
            threading.Thread(target=self._up, args=(client, server, cut), daemon=True).start()
            threading.Thread(target=self._down, args=(server, client, cut), daemon=True).start()

    def _up(self, client: socket.socket, server: socket.socket, cut: threading.Event) -> None:
        try:
            while data := client.recv(65536):
                if self._armed.is_set() and b"COMMIT" in data:
                    self._armed.clear()
                    cut.set()  # nothing more goes back to the client
                    server.sendall(data)
                    self.cuts += 1
                    client.settimeout(0.3)  # the rest of the COMMIT's messages (libpq may send them apart)
                    try:
                        while more := client.recv(65536):
                            server.sendall(more)
                    except socket.timeout:
                        pass
                    client.shutdown(socket.SHUT_RDWR)
                    client.close()
                    time.sleep(0.5)  # the server reads the COMMIT before it sees the end of the stream
                    server.close()
                    return
                server.sendall(data)
        except OSError:
            pass
        for s in (client, server):
            s.close()

    @staticmethod
    def _down(server: socket.socket, client: socket.socket, cut: threading.Event) -> None:
        try:
            while (data := server.recv(65536)) and not cut.is_set():
                client.sendall(data)
        except OSError:
            pass


@pytest.fixture
def cutter(postgres_url):
    relay = CommitCutter(postgres_url)
    yield relay
    relay.close()


def _terminate(j: Journal, admin_url: str) -> None:
    """End the server session of this thread's journal connection (what a server restart does to every one)."""
    pid = j._conn().raw.info.backend_pid
    deadline = time.monotonic() + 10
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        while conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid=%s", (pid,)).fetchone():
            assert time.monotonic() < deadline
            time.sleep(0.02)


def _beat_for(j: Journal, seconds: float) -> None:
    """``j``'s heartbeat, as the service runs it, for ``seconds``."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        j.heartbeat(["work", "export"])
        time.sleep(LEASE / 4)


# ------------------------------------------------------------------------------------------ jobs
def test_a_claim_whose_commit_answer_was_lost_is_not_kept_running_by_the_heartbeat(postgres_url, cutter):
    """The worker's claim committed but its answer was lost: the worker never ran the job. Its process's heartbeat
    must not keep that job's lease alive, or the series is never analysed while the process lives."""
    worker = Journal(cutter.url, owner="worker", lease_seconds=LEASE)
    reaper = Journal(postgres_url, owner="leader")
    (job_id,) = [_queue(reaper, "1.2.9.1", now=100.0)]
    cutter.arm()
    with pytest.raises(psycopg.OperationalError):
        worker.claim_job()
    assert cutter.cuts == 1
    row = reaper.job(job_id)
    assert row.state is JobState.RUNNING  # committed: the job is the worker's, which does not know it
    _beat_for(worker, 3 * LEASE)  # the worker process lives on (its heartbeat reconnects)
    assert reaper.recover()["jobs_requeued"] == 1  # the lease of a job nobody runs lapsed
    job = reaper.claim_job()
    assert job.id == job_id
    reaper.finish_job(job, JobState.DONE, outputs=[_sr("9.1")], deliveries=[("9.1", "PACS")])
    assert reaper.series_row("1.2.9.1").state is SeriesState.ANALYSED


def test_a_heartbeat_renews_what_the_process_works_on(postgres_url):
    """The fix above must not cost a running job or a delivery in flight its lease."""
    a = Journal(postgres_url, owner="A", lease_seconds=LEASE)
    b = Journal(postgres_url, owner="B")
    _queue(a, "1.2.9.1", now=100.0)
    _queue(a, "1.2.9.2", now=101.0)
    a.finish_job(a.claim_job(), JobState.DONE, outputs=[_sr("9.1")], deliveries=[("9.1", "PACS")])
    (d,) = a.due_deliveries()
    assert a.start_sending(d.id)
    job = a.claim_job()
    _beat_for(a, 3 * LEASE)
    assert b.recover()["jobs_requeued"] == 0 and b.job(job.id).state is JobState.RUNNING
    a.mark_delivered(d.id)
    a.finish_job(job, JobState.DONE)
    assert a.heartbeat(["work", "export"]) == 0  # nothing held any more


def test_a_finish_whose_commit_answer_was_lost_reports_success(postgres_url, cutter):
    """finish_job committed, the answer was lost. Raising would tell the worker that nothing was recorded (it then
    removes the result files the committed rows name); the journal looks the outcome up instead."""
    seeder = Journal(postgres_url, owner="seeder")
    (job_id,) = [_queue(seeder, "1.2.9.1", now=100.0)]
    worker = Journal(cutter.url, owner="worker", lease_seconds=LEASE)
    job = worker.claim_job()
    cutter.arm()
    worker.finish_job(job, JobState.DONE, outputs=[_sr("9.1")], deliveries=[("9.1", "PACS")])
    assert cutter.cuts == 1
    assert seeder.job(job_id).state is JobState.DONE
    assert [r.sop_uid for r in seeder.results()] == ["9.1"]
    assert worker.heartbeat(["work"]) == 0


def test_a_finish_that_did_not_commit_still_raises(postgres_url):
    seeder = Journal(postgres_url, owner="seeder")
    (job_id,) = [_queue(seeder, "1.2.9.1", now=100.0)]
    worker = Journal(postgres_url, owner="worker")
    job = worker.claim_job()
    _terminate(worker, postgres_url)
    with pytest.raises(psycopg.OperationalError):
        worker.finish_job(job, JobState.DONE, outputs=[_sr("9.1")], deliveries=[("9.1", "PACS")])
    assert seeder.job(job_id).state is JobState.RUNNING
    worker.finish_job(job, JobState.DONE, outputs=[_sr("9.1")], deliveries=[("9.1", "PACS")])  # reconnected
    assert seeder.job(job_id).state is JobState.DONE


def test_a_lapsed_worker_records_nothing_and_its_rerun_records_once(postgres_url):
    """Worker A stalls past its lease, B re-runs the job and records it; A's late outcome changes nothing."""
    a = Journal(postgres_url, owner="A", lease_seconds=LEASE)
    b = Journal(postgres_url, owner="B")
    (job_id,) = [_queue(b, "1.2.9.1", now=100.0)]
    job_a = a.claim_job()
    time.sleep(LEASE + 0.1)
    assert b.recover()["jobs_requeued"] == 1
    job_b = b.claim_job()
    b.finish_job(job_b, JobState.DONE, outputs=[_sr("9.1")], deliveries=[("9.1", "PACS")])
    with pytest.raises(LeaseLost):
        a.finish_job(job_a, JobState.DONE, outputs=[_sr("9.1")], deliveries=[("9.1", "PACS")])
    assert a.retry_job_later(job_a, "late", 1.0, 3) is None
    assert [(r.sop_uid, r.job_id) for r in b.results()] == [("9.1", job_id)]
    assert len(b.deliveries()) == 1 and b.job(job_id).state is JobState.DONE


# ------------------------------------------------------------------------------------------ deliveries
def _delivered_job(postgres_url: str) -> Journal:
    """A worker's journal with one finished job whose SR waits for destination PACS."""
    worker = Journal(postgres_url, owner="worker")
    _queue(worker, "1.2.9.1", now=100.0)
    worker.finish_job(worker.claim_job(), JobState.DONE, outputs=[_sr("9.1")], deliveries=[("9.1", "PACS")])
    return worker


def test_a_delivery_whose_confirmation_could_not_be_journalled_is_not_left_sending(postgres_url):
    """The destination confirmed; mark_delivered failed on a broken connection (the outbox does not call again).
    The heartbeat must not keep that delivery 'sending' for the life of the process: it lapses and is sent
    once more (same SOP Instance UID, the documented at-least-once of the DICOM boundary)."""
    worker = _delivered_job(postgres_url)
    exporter = Journal(postgres_url, owner="exporter", lease_seconds=LEASE)
    (d,) = exporter.due_deliveries()
    assert exporter.start_sending(d.id)
    _terminate(exporter, postgres_url)
    with pytest.raises(psycopg.OperationalError):
        exporter.mark_delivered(d.id)
    _beat_for(exporter, 3 * LEASE)
    assert worker.recover()["deliveries_requeued"] == 1
    assert [x.id for x in worker.due_deliveries()] == [d.id]


def test_two_outboxes_never_both_start_a_delivery_requeued_after_a_lapse(postgres_url):
    worker = _delivered_job(postgres_url)
    a = Journal(postgres_url, owner="A", lease_seconds=LEASE)
    (d,) = a.due_deliveries()
    assert a.start_sending(d.id)
    time.sleep(LEASE + 0.1)
    assert worker.recover()["deliveries_requeued"] == 1
    outboxes = [Journal(postgres_url, owner=f"X{i}") for i in range(4)]
    barrier = threading.Barrier(4)
    started: list[bool] = [False] * 4

    def go(i: int) -> None:
        barrier.wait()
        started[i] = bool(outboxes[i].start_sending(d.id))

    threads = [threading.Thread(target=go, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(started) == 1
    a.mark_failed(d.id, "late", next_attempt_at=0.0, dead=False)  # A's late failure leaves it with its new holder
    assert worker.deliveries()[0]["state"] == DeliveryState.SENDING.value


# ------------------------------------------------------------------------------------------ retention
def test_an_operator_retry_waits_for_a_purge_of_the_series_in_progress(postgres_url):
    """svdmark jobs retry on a failed job while the retention run purges its series: the retry must see the purge
    (and refuse), not queue a job whose images are being removed."""
    j = Journal(postgres_url, owner="leader")
    (job_id,) = [_queue(j, "1.2.9.1", now=100.0)]
    j.finish_job(j.claim_job(), JobState.FAILED, detail="bad input")
    operator = Journal(postgres_url, owner="operator")
    answer: list[bool] = []

    def remove(paths):
        t = threading.Thread(target=lambda: answer.append(operator.retry_job(job_id)))
        t.start()
        t.join(1.0)  # finished within a second unless it waits for this purge's lock
        remove.thread = t
        return None

    purged = j.purge_series("1.2.9.1", cutoff=j.now() + 3600, remove=remove, actor="test")
    assert purged is not None
    remove.thread.join(10)
    assert answer == [False]
    assert j.job(job_id).state is JobState.FAILED


# ------------------------------------------------------------------------------------------ a try cut off
def test_an_object_in_flight_when_its_lease_lapsed_is_rejected_when_superseded(postgres_url):
    """Its try may have reached the destination: once superseded, a rejection note names it (and it is never sent
    again); the stalled exporter's late confirmation does not undo the rejection."""
    j = Journal(postgres_url, owner="leader")
    _queue(j, "1.2.9.1", now=100.0)
    j.finish_job(j.claim_job(), JobState.DONE, outputs=[_sr("9.1")], deliveries=[("9.1", "PACS")])
    exporter = Journal(postgres_url, owner="exporter", lease_seconds=LEASE)
    (d,) = exporter.due_deliveries()
    assert exporter.start_sending(d.id)  # the SR goes out; the exporter stalls past its lease
    time.sleep(LEASE + 0.1)
    assert j.recover()["deliveries_requeued"] == 1
    record(j, "1.2.9.1.2", series="1.2.9.1")  # a late instance: generation 2 supersedes the SR
    j.queue_job(j.series_row("1.2.9.1"), "test")
    job2 = j.claim_job()
    found = j.rejectable("1.2.9.1", job2.generation, ["PACS"])
    assert [(i, dest) for i, dest, _ in found] == [(d.id, "PACS")]
    note = ResultObject("9.2.9", "rejection", "1.2.840.10008.5.1.4.1.1.88.59", Path("/r/9.2.9"))
    j.finish_job(job2, JobState.DONE, outputs=[_sr("9.2")], deliveries=[("9.2", "PACS")],
                 supersede=Supersession(frozenset({"PACS"}), (Rejection(note, ((d.id, "PACS"),)),)))
    assert [a["outcome"] for a in j.delivery_attempts(d.id)] == ["interrupted"]
    assert all(x.sop_uid != "9.1" for x in j.due_deliveries())  # superseded: never sent again
    exporter.mark_delivered(d.id)  # the first try did reach PACS
    row = next(r for r in j.deliveries() if r["id"] == d.id)
    assert row["state"] == DeliveryState.DELIVERED.value
    assert row["rejected_by"] is not None  # PACS holds a superseded SR: a rejection note must name it

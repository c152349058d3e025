"""The journal's state machine: each transition survives a reopen (as after kill -9)."""
from pathlib import Path

import pytest

from svdmark.config import Destination
from svdmark.domain import DeliveryState, JobState, SeriesState
from svdmark.export import Outbox, SendOutcome, backoff
from svdmark.geometry import SliceGeometry
from svdmark.journal import Journal, JournalUnavailable, ResultObject
from svdmark.summary import ResultSummary

GEOM = SliceGeometry.from_json({"ipp": [0, 0, 0], "iop": [1, 0, 0, 0, 1, 0], "frames": None, "images_in_acquisition": None, "acquisition": 1})


def record(j: Journal, sop: str, series: str = "1.2.3", digest: str = "d", now: float = 100.0) -> str:
    return j.record_instance(sop_uid=sop, study_uid="1.2", series_uid=series, sop_class="1.2.840.10008.5.1.4.1.1.2",
                             transfer_syntax="1.2.840.10008.1.2.1", path=Path(f"/x/{sop}"), size=1, digest=digest,
                             modality="CT", geometry=GEOM, calling_ae="SCU", now=now)


def test_duplicate_and_replaced_instances(tmp_path, journal_url):
    j = Journal(journal_url)
    assert record(j, "1.1") == "new"
    assert record(j, "1.1") == "duplicate"
    assert record(j, "1.1", digest="other") == "replaced"
    assert len(j.instances("1.2.3")) == 1


def test_late_instance_reopens_series_with_next_generation(tmp_path, journal_url):
    j = Journal(journal_url)
    record(j, "1.1")
    s = j.receiving_series()[0]
    job_id = j.queue_job(s, "test")
    assert job_id and j.receiving_series() == []
    job = j.claim_job()
    j.finish_job(job, JobState.DONE, outputs=[ResultObject("9.1", "sr", "1.2.840.10008.5.1.4.1.1.88.34", Path("/r"))])
    assert j.series_row("1.2.3").state == "analysed"
    assert record(j, "1.2", now=200.0) == "new"
    s2 = j.series_row("1.2.3")
    assert (s2.state, s2.generation) == ("receiving", 2)
    assert j.previous_sr("1.2.3", 2).sop_uid == "9.1"


def test_queue_job_refuses_a_series_that_changed_meanwhile(tmp_path, journal_url):
    j = Journal(journal_url)
    record(j, "1.1")
    stale = j.receiving_series()[0]
    record(j, "1.2", now=101.0)
    assert j.queue_job(stale, "test") is None


def test_running_job_and_sending_delivery_recover_after_crash(journal_url):
    j = Journal(journal_url)
    record(j, "1.1")
    j.queue_job(j.receiving_series()[0], "test")
    job = j.claim_job()
    j.finish_job(job, JobState.DONE, outputs=[ResultObject("9.1", "sr", "x", Path("/r"))],
                 deliveries=[("9.1", "PACS@h:1")])
    [j.start_sending(d.id) for d in j.due_deliveries()]
    # a second job left running by a "crash"
    record(j, "2.1", series="1.2.4")
    j.queue_job(j.series_row("1.2.4"), "test")
    assert j.claim_job() is not None
    j.close()
    j2 = Journal(journal_url)  # restart: the one process that used the journal is gone
    assert j2.recover(expired_only=False) == {"jobs_requeued": 1, "jobs_quarantined": 0, "deliveries_requeued": 1,
                                              "deliveries_quarantined": 0, "quarantined": [],
                                              "quarantined_deliveries": []}
    job = j2.claim_job()
    assert (job.series_uid, job.attempts, job.interruptions) == ("1.2.4", 0, 1)  # an interruption is no failure
    assert len(j2.due_deliveries()) == 1


def _queue(j: Journal, series: str, now: float) -> int:
    record(j, f"{series}.1", series=series)
    return j.queue_job(j.series_row(series), "test", now=now)


def test_interrupted_job_waits_behind_the_queue_and_is_quarantined_only_after_the_cap(tmp_path, journal_url):
    j = Journal(journal_url)
    crashing = _queue(j, "1.2.3", now=100.0)
    _queue(j, "1.2.4", now=101.0)
    _queue(j, "1.2.5", now=102.0)
    assert j.claim_job().id == crashing
    j.recover(expired_only=False, interruption_cap=3)  # kill -9 while it ran: behind the two that were waiting
    assert [j.claim_job().series_uid for _ in range(2)] == ["1.2.4", "1.2.5"]
    j.recover(expired_only=False, interruption_cap=3)  # those two were interrupted too: nobody fails for it
    first, *others = [j.claim_job() for _ in range(3)]
    assert first.id == crashing  # it has waited longest now
    assert {(job.attempts, job.interruptions) for job in (first, *others)} == {(0, 1)}
    for job in others:
        j.finish_job(job, JobState.DONE)
    # it dies again, and again, each time after another series was analysed: the job is the cause
    for k, series in enumerate(("1.2.6", "1.2.7")):
        report = j.recover(expired_only=False, interruption_cap=3)
        assert (report["jobs_requeued"], report["jobs_quarantined"]) == (1, 0)
        _queue(j, series, now=200.0 + k)
        other = j.claim_job()
        assert other.series_uid == series  # the interrupted job waits behind the new one
        j.finish_job(other, JobState.DONE)
        assert j.claim_job().id == crashing
    report = j.recover(expired_only=False, interruption_cap=3)  # third suspect interruption: quarantined, alone
    assert report["quarantined"] == [(crashing, "1.2.3")] and report["jobs_requeued"] == 0
    failed = j.jobs(JobState.FAILED)
    assert [r["id"] for r in failed] == [crashing] and failed[0]["detail"].startswith("quarantined:")
    assert "(3 of them while other series completed)" in failed[0]["detail"]
    assert j.series_row("1.2.3").state == "analysed"
    assert j.claim_job() is None
    assert j.retry_job(crashing)  # an admin runs it again, with a clean count
    job = j.claim_job()
    assert (job.id, job.attempts, job.interruptions) == (crashing, 0, 0)


def test_a_crash_loop_on_the_last_job_is_not_the_job_s_fault_until_the_hard_cap(tmp_path, journal_url):
    """kill -9 from outside, again and again, while one long job is all that is left: nothing else completes
    between its interruptions, so none is suspect; only the hard cap (a self-killing job alone) quarantines it."""
    j = Journal(journal_url)
    done = _queue(j, "1.2.4", now=100.0)
    long_job = _queue(j, "1.2.3", now=101.0)
    j.finish_job(j.claim_job(), JobState.DONE)
    for _ in range(12):  # the crash loop of the integration test
        assert j.claim_job().id == long_job
        assert j.recover(expired_only=False, interruption_cap=5, hard_cap=20)["jobs_quarantined"] == 0
    row = next(r for r in j.jobs() if r["id"] == long_job)
    assert (row["state"], row["interruptions"], row["suspect_interruptions"]) == ("pending", 12, 1)
    for _ in range(7):  # interruptions 13..19
        assert j.claim_job().id == long_job
        assert j.recover(expired_only=False, interruption_cap=5, hard_cap=20)["jobs_quarantined"] == 0
    j.claim_job()
    assert j.recover(expired_only=False, interruption_cap=5, hard_cap=20)["quarantined"] == [(long_job, "1.2.3")]
    assert done != long_job


def test_retry_later_backs_off_and_fails_at_the_attempts_cap(tmp_path, journal_url):
    j = Journal(journal_url)
    job_id = _queue(j, "1.2.3", now=100.0)
    job = j.claim_job(now=1000.0)
    assert j.retry_job_later(job, "write: OSError: [Errno 28] No space left on device", 30.0, 3, now=1000.0) \
        is JobState.PENDING
    row = j.jobs()[0]
    assert (row["state"], row["attempts"], row["not_before"]) == ("pending", 1, 1030.0)
    assert "No space left" in row["detail"]
    assert j.claim_job(now=1029.0) is None  # backing off
    job = j.claim_job(now=1030.0)
    assert job.attempts == 1
    assert j.retry_job_later(job, "x", 60.0, 3, now=1030.0) is JobState.PENDING
    job = j.claim_job(now=1090.0)
    assert j.retry_job_later(job, "write: disk full", 120.0, 3, now=1090.0) is JobState.FAILED
    row = j.jobs()[0]
    assert (row["id"], row["state"], row["attempts"]) == (job_id, "failed", 3)
    assert row["detail"] == "gave up after 3 attempts: write: disk full"
    assert j.series_row("1.2.3").state == "analysed"
    assert j.retry_job_later(job, "again", 1.0, 3) is None  # not running: nothing changes


def test_an_older_journal_gains_the_new_job_columns(tmp_path):
    import sqlite3

    path = tmp_path / "j.sqlite"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, series_uid TEXT NOT NULL, study_uid TEXT NOT NULL,"
        " generation INTEGER NOT NULL, state TEXT NOT NULL, completion TEXT NOT NULL, routing TEXT, rule_id TEXT,"
        " detail TEXT, model_name TEXT, model_version TEXT, model_sha TEXT, ruleset_version TEXT, summary TEXT,"
        " attempts INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL, started_at REAL, finished_at REAL,"
        " UNIQUE(series_uid, generation));"
        "INSERT INTO jobs(series_uid, study_uid, generation, state, completion, attempts, created_at)"
        " VALUES ('1.2.3', '1.2', 1, 'running', 'test', 2, 1.0);")
    old.commit()
    old.close()
    j = Journal(path)
    assert j.recover(expired_only=False)["jobs_requeued"] == 1
    job = j.claim_job()
    assert (job.attempts, job.interruptions) == (2, 1)


class FlakyExporter:
    """Fails the first ``failures`` sends, then succeeds; counts every send."""

    def __init__(self, failures: int):
        self.failures = failures
        self.sent = 0

    def send(self, destination, paths, on_outcome=None, on_start=None):
        self.sent += len(paths)
        ok = self.failures <= 0
        self.failures -= 1
        out = [SendOutcome(p, ok, "0x0000" if ok else "status 0xA700") for p in paths]
        for o in out:
            on_outcome(o)
        return out


def _one_delivery(journal_url) -> Journal:
    j = Journal(journal_url)
    record(j, "1.1")
    j.queue_job(j.receiving_series()[0], "test")
    j.finish_job(j.claim_job(), JobState.DONE, outputs=[ResultObject("9.1", "sr", "x", Path("/r"))],
                 deliveries=[("9.1", "PACS@127.0.0.1:104")])
    return j


def test_outbox_retries_with_backoff_then_delivers_once(journal_url):
    j = _one_delivery(journal_url)
    exporter = FlakyExporter(failures=2)
    box = Outbox(j, exporter, (Destination("PACS", "127.0.0.1", 104),), 5, 0.0, 0.0)
    assert box.flush() == 0 and box.flush() == 0 and box.flush() == 1
    assert box.flush() == 0  # delivered: never again
    assert exporter.sent == 3
    row = j.deliveries()[0]
    assert (row["state"], row["attempts"]) == (DeliveryState.DELIVERED.value, 3)


def test_outbox_gives_up_into_dead_letters_and_resends_on_request(journal_url):
    j = _one_delivery(journal_url)
    box = Outbox(j, FlakyExporter(failures=10), (Destination("PACS", "127.0.0.1", 104),), 3, 0.0, 0.0)
    for _ in range(5):
        box.flush()
    assert j.deliveries(DeliveryState.DEAD)[0]["attempts"] == 3
    assert j.resend_dead() == 1 and len(j.due_deliveries()) == 1
    # a new round of 3 tries, the history kept: 3 + 3 attempts, dead again, last error kept
    for _ in range(5):
        box.flush()
    row = j.deliveries(DeliveryState.DEAD)[0]
    assert (row["attempts"], row["resends"], row["last_error"]) == (6, 1, "status 0xA700")
    assert [a["outcome"] for a in j.delivery_attempts(row["id"])] == ["retry", "retry", "dead", "resend",
                                                                       "retry", "retry", "dead"]


def test_backoff_is_capped_and_jittered_into_its_upper_half():
    import random

    rng = random.Random(7)
    for attempts, full in zip((1, 2, 3, 4, 5, 6), (2, 4, 8, 16, 30, 30)):
        delays = [backoff(attempts, 2.0, 30.0, rng) for _ in range(200)]
        assert full / 2 <= min(delays) and max(delays) <= full
        assert max(delays) - min(delays) > full / 4  # spread, not one value


def test_pending_jobs_of_a_reopened_series_are_superseded(tmp_path, journal_url):
    """The re-analysis policy as the journal applies it: a queued job that has not run yet is superseded by a
    late instance, and the series stays at its generation (no analysis of it exists)."""
    j = Journal(journal_url)
    record(j, "1.1")
    job_id = j.queue_job(j.receiving_series()[0], "test")
    record(j, "1.2", now=200.0)
    s = j.series_row("1.2.3")
    assert (s.state, s.generation) == (SeriesState.RECEIVING, 2)  # the queued job was of generation 1
    assert j.job(job_id).state is JobState.SUPERSEDED
    assert j.queue_job(s, "test") and j.claim_job().generation == 2
    record(j, "1.3", now=300.0)  # its job is running, not pending: it runs on; the series opens generation 3
    assert [r.state for r in j.job_records()] == [JobState.RUNNING, JobState.SUPERSEDED]
    assert j.series_row("1.2.3").generation == 3


def test_typed_reads_for_operators(tmp_path, journal_url):
    j = Journal(journal_url)
    record(j, "1.1", now=100.0)
    record(j, "1.0", now=50.0)
    j.queue_job(j.receiving_series()[0], "test")
    job = j.claim_job()
    j.finish_job(job, JobState.DONE, summary=ResultSummary.from_json({"task": "wml", "wml_ml": 1.5}),
                 outputs=[ResultObject("9.1", "sr", "x", Path("/r/sr")), ResultObject("9.2", "seg", "y", Path("/r/seg"))],
                 deliveries=[("9.1", "A"), ("9.2", "A")])
    rec = j.job(job.id)
    assert (rec.state, rec.summary.to_json(), rec.columns()["state"]) == (JobState.DONE, {"task": "wml", "wml_ml": 1.5},
                                                                         "done")
    assert j.job(job.id + 1) is None and j.job_history() == [rec]
    assert [(r.kind, r.path, r.job_id) for r in j.results(job_id=job.id)] == [("sr", Path("/r/sr"), job.id),
                                                                             ("seg", Path("/r/seg"), job.id)]
    assert [r.sop_uid for r in j.results(kind="seg")] == ["9.2"] and j.results(job_id=job.id + 1) == []
    assert (j.instance_count("1.2.3"), j.first_instance_path("1.2.3"), j.first_instance_path("9")) == (2, Path("/x/1.0"), None)
    assert [s.state for s in j.all_series()] == [SeriesState.ANALYSED]
    ids = [d.id for d in j.due_deliveries()]
    assert j.delivery_states(ids + [999]) == {ids[0]: DeliveryState.PENDING, ids[1]: DeliveryState.PENDING}
    j.audit("me", "model.activate", {"name": "m", "version": "2"})
    j.audit("me", "modelXactivate", {"name": "m"})
    j.audit("me", "model.validate", {"name": "m", "version": "1"})
    assert [a.action for a in j.audit_entries(action_prefix="model.")] == ["model.validate", "model.activate"]
    assert [a.detail for a in j.audit_entries(action="model.validate")] == [{"name": "m", "version": "1"}]
    assert len(j.audit_entries(limit=2)) == 2


def test_health_counts_read_only(tmp_path):
    from svdmark import health

    path = tmp_path / "j.sqlite"
    with pytest.raises(JournalUnavailable):
        Journal.read_counts(path)
    assert not path.exists()  # a scrape never creates the journal
    j = Journal(path)
    record(j, "1.1")
    record(j, "2.1", series="1.2.4")
    j.queue_job(j.series_row("1.2.4"), "test")
    job = j.claim_job()
    j.finish_job(job, JobState.IGNORED, routing="ignored")
    counts = Journal.read_counts(path)
    assert counts.states["series"] == {"receiving": 1, "analysed": 1} and counts.instances == 2
    assert counts.routing == {("ignored", "ignored"): 1}
    assert {k: v for k, v in j.counts().items() if k != "instances"} == counts.states
    Journal.check_writable(path)
    state = health._journal_state(path)
    assert state["queues"] == {"series_receiving": 1, "jobs_pending": 0, "deliveries_pending": 0}


def test_reanalyse_reopens_an_analysed_series_once(tmp_path, journal_url):
    """An operator's re-analysis (a model change): generation + 1, queued at once; refused while the
    series is still arriving, or while its analysis is queued or running."""
    j = Journal(journal_url)
    record(j, "1.1")
    assert j.reanalyse("1.2.3", "x") == "its instances are still arriving; it is analysed once complete"
    assert j.reanalyse("9.9.9", "x") == "no such series in the journal"
    j.queue_job(j.receiving_series()[0], "test")
    assert j.reanalyse("1.2.3", "x") == "its analysis is already queued or running"
    job = j.claim_job()
    j.finish_job(job, JobState.DONE, model=("wml-ncct", "1.2.0", "sha-a"))
    assert j.series_analysed_with("wml-ncct", "1.2.0") == ["1.2.3"]
    assert j.series_analysed_with("wml-ncct", "1.3.0") == []
    job_id = j.reanalyse("1.2.3", "model 1.3.0 activated", now=300.0)
    assert isinstance(job_id, int)
    s = j.series_row("1.2.3")
    assert (s.state, s.generation) == (SeriesState.QUEUED.value, 2)
    assert j.reanalyse("1.2.3", "again") == "its analysis is already queued or running"
    again = j.claim_job(now=301.0)
    assert (again.id, again.generation) == (job_id, 2)
    j.finish_job(again, JobState.DONE, model=("wml-ncct", "1.3.0", "sha-b"))
    assert j.series_analysed_with("wml-ncct", "1.2.0") == []  # its latest analysis is 1.3.0's
    assert j.series_analysed_with("wml-ncct") == ["1.2.3"]
    assert j.series_row("1.2.3").state == SeriesState.ANALYSED.value


def test_the_default_retries_outlast_a_pacs_restart_or_maintenance_window():
    """With the default [export] settings a transient failure is retried for at least 3.5 hours (every jitter at its
    low end) and at most 8 (every jitter at its high end), before the delivery becomes a dead letter."""
    import random

    from svdmark.config import Config

    class Edge(random.Random):
        def __init__(self, high: bool):
            super().__init__(0)
            self.high = high

        def uniform(self, a, b):
            return b if self.high else a

    cfg = Config()
    spans = [sum(backoff(a, cfg.export_backoff_seconds, cfg.export_backoff_cap_seconds, Edge(high))
                 for a in range(1, cfg.export_max_attempts)) for high in (False, True)]
    assert 3.5 * 3600 <= spans[0] < spans[1] <= 8 * 3600


def test_an_sr_whose_send_a_kill_cut_off_is_rejected_once_superseded_one_that_was_refused_is_not(journal_url):
    """kill -9 during a C-STORE: the PACS may hold the SR without our hearing. When a newer analysis supersedes it
    before it is sent again, a rejection note must name it; an SR whose only try was refused never reached it."""
    from svdmark.journal import ResultObject

    j = Journal(journal_url)
    _queue(j, "1.2.7", now=100.0)
    _queue(j, "1.2.8", now=101.0)
    for n in (7, 8):
        sr = ResultObject(f"7.{n}", "sr", "1.2.840.10008.5.1.4.1.1.88.34", Path(f"/r/7.{n}"))
        j.finish_job(j.claim_job(), JobState.DONE, outputs=[sr], deliveries=[(f"7.{n}", "PACS")])
    cut, refused = sorted(j.due_deliveries(), key=lambda d: d.sop_uid)
    assert j.start_sending(cut.id) and j.start_sending(refused.id)
    j.mark_failed(refused.id, "C-STORE refused: 0xA700", next_attempt_at=j.now() + 60, dead=False)
    assert j.recover(expired_only=False)["deliveries_requeued"] == 1  # the restart after the kill
    assert [a["outcome"] for a in j.delivery_attempts(cut.id)] == ["interrupted"]
    for series in ("1.2.7", "1.2.8"):
        record(j, f"{series}.2", series=series)  # a late image: generation 2 of each
        j.queue_job(j.series_row(series), "test")
    job = j.claim_job()
    assert [i for i, _, _ in j.rejectable("1.2.7", job.generation, ["PACS"])] == [cut.id]
    assert j.rejectable("1.2.8", job.generation, ["PACS"]) == []


def test_a_delivery_cut_off_at_every_try_becomes_a_dead_letter_at_the_cap_and_resend_starts_a_new_count(
        journal_url):
    """An object whose sending kills the service (or outlasts every lease) must not hold its destination's queue
    for ever: the cap's cut-off try makes it a dead letter, saying why; `outbox resend` gives it a fresh count."""
    from svdmark.journal import DELIVERY_INTERRUPTION_CAP as CAP

    j = Journal(journal_url)
    _queue(j, "1.2.7", now=100.0)
    sr = ResultObject("7.1", "sr", "1.2.840.10008.5.1.4.1.1.88.34", Path("/r/7.1"))
    j.finish_job(j.claim_job(), JobState.DONE, outputs=[sr], deliveries=[("7.1", "PACS")])
    (d,) = j.due_deliveries()

    def cut_off(times):
        found = []
        for _ in range(times):
            assert j.start_sending(d.id)
            found.append(j.recover(expired_only=False))
        return found

    *before, last = cut_off(CAP)
    assert all(r["deliveries_requeued"] == 1 and r["quarantined_deliveries"] == [] for r in before)
    assert (last["deliveries_requeued"], last["deliveries_quarantined"], last["quarantined_deliveries"]) == (
        0, 1, [d.id])
    (row,) = j.deliveries()
    assert row["state"] == DeliveryState.DEAD.value
    assert row["last_error"].startswith(f"quarantined: {CAP} tries in a row were cut off")
    assert j.resend_dead([d.id]) == 1
    assert all(r["deliveries_requeued"] == 1 for r in cut_off(CAP - 1))  # a new round, a new count
    assert j.deliveries()[0]["state"] == DeliveryState.PENDING.value


def _one_sr_delivery(j: Journal, series: str = "1.2.7"):
    _queue(j, series, now=100.0)
    sr = ResultObject(f"{series}.9", "sr", "1.2.840.10008.5.1.4.1.1.88.34", Path(f"/r/{series}.9"))
    j.finish_job(j.claim_job(), JobState.DONE, outputs=[sr], deliveries=[(sr.sop_uid, "PACS")])
    (d,) = j.due_deliveries()
    return d


def test_cut_off_tries_count_in_a_row_a_try_that_got_an_answer_starts_again(journal_url):
    from svdmark.journal import DELIVERY_INTERRUPTION_CAP as CAP

    j = Journal(journal_url)
    d = _one_sr_delivery(j)
    for _ in range(CAP):  # cut off, then refused: never CAP cut-offs in a row
        assert j.start_sending(d.id)
        assert j.recover(expired_only=False)["deliveries_quarantined"] == 0
        assert j.start_sending(d.id)
        j.mark_failed(d.id, "C-STORE refused: 0xA700", next_attempt_at=0.0, dead=False)
    assert j.deliveries()[0]["state"] == DeliveryState.PENDING.value


def test_a_dead_letter_of_cut_off_tries_is_rejected_when_superseded_and_never_sent_after_its_note(journal_url):
    """After CAP cut-off tries the PACS may well hold the object: a newer result rejects it, and `outbox resend`
    does not send it after the note that rejects it."""
    from svdmark.journal import DELIVERY_INTERRUPTION_CAP as CAP, Rejection, Supersession

    j = Journal(journal_url)
    d = _one_sr_delivery(j)
    for _ in range(CAP):
        assert j.start_sending(d.id)
        j.recover(expired_only=False)
    assert j.deliveries()[0]["state"] == DeliveryState.DEAD.value
    record(j, "1.2.7.2", series="1.2.7")  # a late image: generation 2
    j.queue_job(j.series_row("1.2.7"), "test")
    job = j.claim_job()
    assert [i for i, _, _ in j.rejectable("1.2.7", job.generation, ["PACS"])] == [d.id]
    note = ResultObject("7.2.9", "rejection", "1.2.840.10008.5.1.4.1.1.88.59", Path("/r/7.2.9"))
    sr = ResultObject("7.2.1", "sr", "1.2.840.10008.5.1.4.1.1.88.34", Path("/r/7.2.1"))
    j.finish_job(job, JobState.DONE, outputs=[sr], deliveries=[("7.2.1", "PACS")],
                 supersede=Supersession(frozenset({"PACS"}), (Rejection(note, ((d.id, "PACS"),)),)))
    assert j.resend_dead() == 0
    row = j.deliveries(delivery_id=d.id)[0]
    assert (row["state"], row["rejected_by"]) == (DeliveryState.SUPERSEDED.value, "7.2.9")
    assert j.delivery_attempts(d.id)[-1]["detail"] == "not sent again: rejection note 7.2.9 names it"


def test_a_delivery_rejected_while_in_flight_and_then_cut_off_is_never_sent_again(journal_url):
    """A newer result's note names the SR being sent; the sender is killed. The note goes out; the SR, sent after
    it, would show the rejected result again: recover makes it superseded (as a failed try would)."""
    from svdmark.journal import Rejection, Supersession

    j = Journal(journal_url)
    d = _one_sr_delivery(j)
    assert j.start_sending(d.id)
    record(j, "1.2.7.2", series="1.2.7")
    j.queue_job(j.series_row("1.2.7"), "test")
    job = j.claim_job()
    note = ResultObject("7.2.9", "rejection", "1.2.840.10008.5.1.4.1.1.88.59", Path("/r/7.2.9"))
    sr = ResultObject("7.2.1", "sr", "1.2.840.10008.5.1.4.1.1.88.34", Path("/r/7.2.1"))
    j.finish_job(job, JobState.DONE, outputs=[sr], deliveries=[("7.2.1", "PACS")],
                 supersede=Supersession(frozenset({"PACS"}), (Rejection(note, ((d.id, "PACS"),)),)))
    found = j.recover(expired_only=False)
    assert (found["deliveries_requeued"], found["deliveries_quarantined"]) == (0, 0)
    assert j.deliveries(delivery_id=d.id)[0]["state"] == DeliveryState.SUPERSEDED.value
    assert d.id not in [x.id for x in j.due_deliveries(now=10**12)]

"""Every try settles: a batch read before another process tried an object does not send it (back-off, last try),
an outcome the journal refused is failed rather than left 'sending', a try that cannot be settled at all lapses and is
returned on SQLite too, and a delivery returned for a destination no longer configured becomes a dead letter."""
from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from types import SimpleNamespace

import svdmark.journal as journal_mod
from svdmark import service as service_mod
from svdmark.config import Config, Destination
from svdmark.domain import SendClaim
from svdmark.export import FolderExporter, Outbox, SendOutcome
from svdmark.guarded import GuardedLoop
from svdmark.journal import Journal
from svdmark.service import Service
from tests.peers import free_port

from .test_journal import record
from .test_outbox import A, OK, journal_with_results, states

FAIL = SendOutcome(Path(), False, "status 0xA700")  # out of resources: retried


class Scripted:
    """The scripted outcome per file stem; ``before`` runs a callable just before that stem's claim."""

    def __init__(self, script, before=None):
        self.script, self.before, self.sent = script, dict(before or {}), []

    def send(self, destination, paths, on_outcome=None, on_start=None):
        for p in paths:
            if p.stem in self.before:
                self.before.pop(p.stem)()
            if on_start is not None and on_start(p) is False:
                continue
            self.sent.append(p.stem)
            o = self.script[p.stem]
            on_outcome(SendOutcome(p, o.ok, o.detail, o.permanent, unanswered=o.unanswered))


def test_a_batch_does_not_send_what_another_process_tried_since_it_read_it(tmp_path, journal_url):
    j = journal_with_results(tmp_path, journal_url)
    other = Journal(journal_url, owner="other-exporter")
    b = Scripted({"sr": FAIL, "seg": FAIL, "summary": FAIL})
    box_b = Outbox(other, b, (A,), 2, 3600.0, 3600.0)  # back-off of at least half an hour; two tries
    a = Scripted({"sr": OK, "seg": FAIL, "summary": FAIL}, before={"seg": box_b.flush})
    Outbox(j, a, (A,), 2, 3600.0, 3600.0).flush()  # its batch was read before B tried seg and summary
    assert a.sent == ["sr"] and b.sent == ["seg", "summary"]
    rows = {r["sop_uid"]: r for r in j.deliveries()}
    assert rows["9.1"]["attempts"] == 1 and rows["9.1"]["state"] == "pending"  # backing off after B's one try
    assert j.start_sending(rows["9.1"]["id"], tried=0) is SendClaim.STALE


def test_an_outcome_the_journal_refused_is_failed_not_left_sending(tmp_path, monkeypatch):
    j = journal_with_results(tmp_path, tmp_path / "j.sqlite")
    real, calls = journal_mod._record_try, []

    def full_once(db, *args):  # the first outcome's write hits a full disk
        calls.append(args)
        if len(calls) == 1:
            raise sqlite3.OperationalError("database or disk is full")
        return real(db, *args)

    monkeypatch.setattr(journal_mod, "_record_try", full_once)
    Outbox(j, Scripted({"sr": OK, "seg": OK, "summary": OK}), (A,), 5, 0.0, 0.0).flush()
    assert "sending" not in states(j).values(), states(j)
    assert states(j)["9.0"] == "pending"  # its confirmation was lost: sent once more, with the same UID


def _service(tmp_path, monkeypatch, **config) -> tuple[Service, list[GuardedLoop]]:
    captured: list[GuardedLoop] = []

    class Recording(GuardedLoop):
        def run(self):  # no threads: the test drives the loops
            captured.append(self)

    monkeypatch.setattr(service_mod, "GuardedLoop", Recording)
    cfg = Config(host="127.0.0.1", port=free_port(), data_dir=tmp_path / "d", **config)
    svc = Service(cfg, exporter=FolderExporter(tmp_path / "out"), context=SimpleNamespace()).start()
    return svc, captured


def test_on_sqlite_a_try_that_could_not_be_settled_lapses_and_comes_back(tmp_path, monkeypatch):
    svc, _ = _service(tmp_path, monkeypatch, roles=("assemble",))
    try:
        url = str(svc.config.data_dir / "journal.sqlite")
        journal_with_results(tmp_path, url)
        lost = Journal(url, owner="unsettled", lease_seconds=0.05)  # its outcome was never written
        live = Journal(url, owner="in-flight", lease_seconds=3600.0)
        first, second = lost.due_deliveries()[:2]
        assert lost.start_sending(first.id) and live.start_sending(second.id)
        time.sleep(0.2)
        svc._reaped_at = float("-inf")
        svc._assemble_step()
        assert states(svc.journal)[first.sop_uid] == "pending"
        assert states(svc.journal)[second.sop_uid] == "sending"  # a lease still held is not taken
    finally:
        svc.stop()


def test_a_delivery_returned_for_a_removed_destination_becomes_a_dead_letter(tmp_path, monkeypatch):
    b = Destination("PACSB", "127.0.0.1", 105)
    svc, loops = _service(tmp_path, monkeypatch, roles=("export",), destinations=(b,))
    try:
        j = journal_with_results(tmp_path, str(svc.config.data_dir / "journal.sqlite"))  # after the start's sweep
        (sweep,) = [loop for loop in loops if loop.name == "outbox-unconfigured"]
        sweep.step()
        assert set(states(j).values()) == {"dead"}
        assert "no longer configured" in j.deliveries()[0]["last_error"]
    finally:
        svc.stop()


def test_on_sqlite_the_reap_spares_what_this_live_process_still_works_on(tmp_path, monkeypatch):
    """A lapsed lease on SQLite means this process's heartbeat was held up (a long write elsewhere), not that it
    stopped: its running job and the object it is sending stay its own."""
    svc, _ = _service(tmp_path, monkeypatch, roles=("assemble",), lease_seconds=2.0)
    try:
        j = svc.journal
        journal_with_results(tmp_path, str(svc.config.data_dir / "journal.sqlite"))
        d = j.due_deliveries()[0]
        assert j.start_sending(d.id)
        record(j, "2.1", series="2.2")
        j.queue_job(j.series_row("2.2"), "test")
        job = j.claim_job()
        time.sleep(2.2)  # no heartbeat got through for a whole lease
        svc._reaped_at = float("-inf")
        svc._assemble_step()
        assert states(j)[d.sop_uid] == "sending"
        assert {r["id"]: r["state"] for r in j.jobs()}[job.id] == "running"
    finally:
        svc.stop()


def test_a_confirmation_whose_commit_reported_an_error_is_not_failed_afterwards(tmp_path, journal_url):
    j = journal_with_results(tmp_path, journal_url)

    class CommitAnswerLost:  # the confirmation is committed, then the journal reports an error
        def __getattr__(self, name):
            return getattr(j, name)

        def mark_delivered(self, delivery_id, detail=""):
            j.mark_delivered(delivery_id, detail)
            raise sqlite3.OperationalError("connection lost during COMMIT")

    Outbox(CommitAnswerLost(), Scripted({"sr": OK, "seg": OK, "summary": OK}), (A,), 5, 0.0, 0.0).flush()
    row = {r["sop_uid"]: r for r in j.deliveries()}["9.0"]
    assert row["state"] == "delivered" and row["attempts"] == 1
    assert [t["outcome"] for t in j.delivery_attempts(row["id"])] == ["delivered"]

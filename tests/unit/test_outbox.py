"""The outbox marks each object as its C-STORE is confirmed, dead-letters what a destination refuses
and never leaves a delivery 'sending'; one destination's flush touches only its own deliveries."""
from pathlib import Path

import pytest

from svdmark.config import Destination
from svdmark.domain import DeliveryState, JobState
from svdmark.export import Outbox, SendOutcome
from svdmark.journal import Journal, ResultObject

from .test_journal import record

A = Destination("PACSA", "127.0.0.1", 104)
B = Destination("PACSB", "127.0.0.1", 105)


def journal_with_results(tmp_path, journal_url, destinations=(A,)) -> Journal:
    j = Journal(journal_url)
    record(j, "1.1")
    j.queue_job(j.receiving_series()[0], "test")
    outs = [ResultObject(f"9.{k}", kind, "x", tmp_path / f"{kind}.dcm") for k, kind in enumerate(("sr", "seg", "summary"))]
    j.finish_job(j.claim_job(), JobState.DONE, outputs=outs,
                 deliveries=[(o.sop_uid, d.name) for o in outs for d in destinations])
    return j


class ScriptedExporter:
    """Reports the scripted outcome per file stem, skipping what ``on_start`` withholds as the real exporters do,
    then optionally raises (a crash mid-batch); ``sent`` lists the stems it sent, in order, over all batches."""

    def __init__(self, script: dict[str, SendOutcome | None], raise_after: int | None = None):
        self.script = script
        self.raise_after = raise_after
        self.seen_states: list[dict] = []
        self.sent: list[str] = []
        self.journal: Journal | None = None

    def send(self, destination, paths, on_outcome=None, on_start=None):
        out = []
        for k, p in enumerate(paths):
            if self.raise_after is not None and k == self.raise_after:
                raise RuntimeError("exporter bug")
            if on_start is not None and on_start(p) is False:
                continue
            self.sent.append(p.stem)
            o = self.script[p.stem]
            o = SendOutcome(p, o.ok, o.detail, o.permanent, unanswered=o.unanswered)
            out.append(o)
            on_outcome(o)
            if self.journal is not None:  # what the journal says right after this object's confirmation
                self.seen_states.append({r["sop_uid"]: r["state"] for r in self.journal.deliveries()})
        return out


OK = SendOutcome(Path(), True, "0x0000")


def states(j: Journal) -> dict[str, str]:
    return {r["sop_uid"]: r["state"] for r in j.deliveries()}


def test_each_object_is_marked_delivered_as_soon_as_it_is_confirmed(tmp_path, journal_url):
    j = journal_with_results(tmp_path, journal_url)
    exporter = ScriptedExporter({"sr": OK, "seg": OK, "summary": OK})
    exporter.journal = j
    assert Outbox(j, exporter, (A,), 5, 0.0, 0.0).flush() == 3
    first = exporter.seen_states[0]
    assert first == {"9.0": "delivered", "9.1": "pending", "9.2": "pending"}  # only what is in flight is 'sending'
    assert exporter.seen_states[1] == {"9.0": "delivered", "9.1": "delivered", "9.2": "pending"}


def test_refused_sop_class_is_a_dead_letter_at_once_and_the_rest_is_delivered(tmp_path, journal_url):
    j = journal_with_results(tmp_path, journal_url)
    refused = SendOutcome(Path(), False, "destination does not accept SOP class 1.2.840.10008.5.1.4.1.1.66.4",
                          permanent=True)
    box = Outbox(j, ScriptedExporter({"sr": OK, "seg": refused, "summary": OK}), (A,), 5, 0.0, 0.0)
    assert box.flush() == 2
    assert states(j) == {"9.0": "delivered", "9.1": "dead", "9.2": "delivered"}
    dead = j.deliveries(DeliveryState.DEAD)[0]
    assert dead["attempts"] == 1 and "does not accept SOP class" in dead["last_error"]


def test_an_exporter_crash_mid_batch_leaves_nothing_sending(tmp_path, journal_url):
    j = journal_with_results(tmp_path, journal_url)
    box = Outbox(j, ScriptedExporter({"sr": OK, "seg": OK, "summary": OK}, raise_after=1), (A,), 5, 60.0, 60.0)
    assert box.flush() == 1
    rows = {r["sop_uid"]: r for r in j.deliveries()}
    assert rows["9.0"]["state"] == "delivered"
    assert [rows[u]["state"] for u in ("9.1", "9.2")] == ["pending", "pending"]
    assert rows["9.1"]["last_error"] == "send failed: RuntimeError" and rows["9.1"]["attempts"] == 1


def test_a_destination_flush_sends_only_its_own_deliveries(tmp_path, journal_url):
    j = journal_with_results(tmp_path, journal_url, destinations=(A, B))
    box = Outbox(j, ScriptedExporter({"sr": OK, "seg": OK, "summary": OK}), (A, B), 5, 0.0, 0.0)
    assert box.flush(destination=B.name) == 3
    by = {(r["sop_uid"], r["destination"]): r["state"] for r in j.deliveries()}
    assert {s for (u, d), s in by.items() if d == B.name} == {"delivered"}
    assert {s for (u, d), s in by.items() if d == A.name} == {"pending"}


def test_deliveries_to_a_destination_no_longer_configured_become_dead_letters(tmp_path, journal_url):
    j = journal_with_results(tmp_path, journal_url, destinations=(A, B))
    box = Outbox(j, ScriptedExporter({}), (A,), 5, 0.0, 0.0)
    assert box.drop_unconfigured() == 3
    assert {r["state"] for r in j.deliveries() if r["destination"] == B.name} == {"dead"}


@pytest.mark.parametrize("code, permanent", [(0x0122, True), (0xA900, True), (0xC000, True), (0xA700, False),
                                             (0xA801, False)])
def test_store_status_classes(code, permanent):
    from svdmark.export.cstore import _permanent

    assert _permanent(code) is permanent


def test_a_try_that_went_out_unanswered_may_be_in_the_pacs_a_refused_one_is_not(tmp_path, journal_url):
    """A C-STORE with no response (a timeout, an abort) may have been stored: once superseded it is rejected with a
    note. One the PACS refused was not stored; one never sent was not either."""
    j = journal_with_results(tmp_path, journal_url)
    unanswered = SendOutcome(Path(), False, "no response (timeout or aborted)", unanswered=True)
    refused = SendOutcome(Path(), False, "status 0xA700")
    box = Outbox(j, ScriptedExporter({"sr": unanswered, "seg": refused, "summary": OK}), (A,), 5, 60.0, 60.0)
    assert box.flush() == 1
    ids = {r["sop_uid"]: r["id"] for r in j.deliveries()}
    assert [a["outcome"] for a in j.delivery_attempts(ids["9.0"])] == ["unanswered"]
    assert [a["outcome"] for a in j.delivery_attempts(ids["9.1"])] == ["retry"]
    record(j, "1.2", series="1.2.3")  # a late image: generation 2
    j.queue_job(j.series_row("1.2.3"), "test")
    job = j.claim_job()
    assert sorted(i for i, _, _ in j.rejectable("1.2.3", job.generation, [A.name])) == sorted(
        [ids["9.0"], ids["9.2"]])  # the unanswered SR and the delivered summary, not the refused SEG


def test_an_unanswered_last_try_is_recorded_and_so_is_the_dead_letter(tmp_path, journal_url):
    j = journal_with_results(tmp_path, journal_url)
    unanswered = SendOutcome(Path(), False, "no response (timeout or aborted)", unanswered=True)
    box = Outbox(j, ScriptedExporter({"sr": unanswered, "seg": OK, "summary": OK}), (A,), 1, 0.0, 0.0)
    box.flush()
    sr = next(r for r in j.deliveries() if r["sop_uid"] == "9.0")
    assert sr["state"] == "dead"
    assert [a["outcome"] for a in j.delivery_attempts(sr["id"])] == ["unanswered", "dead"]

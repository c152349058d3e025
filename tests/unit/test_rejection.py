"""IHE IOCM rejection notes: the KOS content (encode/rejection.py) and the journal's supersession of
earlier results (pending ones cancelled, delivered ones rejected once per destination)."""
from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import pydicom
import pytest

from svdmark.domain import DeliveryState, JobState, SendClaim
from svdmark.encode import results
from svdmark.encode.rejection import rejected_uids, rejection_note
from svdmark.export import Outbox, SendOutcome
from svdmark.geometry import SliceGeometry
from svdmark.journal import Journal, Rejection, ResultObject, StaleSupersession, Supersession
from tests.unit.test_encode_support import ct_series, wml_mask, wml_result
from tests.unit.test_journal import record
from tests.unit.test_outbox import A, ScriptedExporter
from tests.unit.test_worker import analysed, env, queue, stages  # noqa: F401  (the worker harness: fixtures)

KOS = "1.2.840.10008.5.1.4.1.1.88.59"


@pytest.fixture(scope="module")
def old():
    series, vol = ct_series()
    return results(wml_result(series, vol, wml_mask(vol)), uid_seed="first analysis")


def test_note_is_an_iocm_rejection_of_every_old_object(old):
    note = rejection_note(old.as_list(), uid_seed="second analysis")
    assert note.SOPClassUID == KOS
    (title,) = note.ConceptNameCodeSequence
    assert (title.CodeValue, title.CodingSchemeDesignator, title.CodeMeaning) == (
        "113001", "DCM", "Rejected for Quality Reasons")
    # the evidence names each old object with its SOP Class, in its own series, in the old study
    (study,) = note.CurrentRequestedProcedureEvidenceSequence
    assert study.StudyInstanceUID == old.sr.StudyInstanceUID
    found = {(str(s.SeriesInstanceUID), str(r.ReferencedSOPClassUID), str(r.ReferencedSOPInstanceUID))
             for s in study.ReferencedSeriesSequence for r in s.ReferencedSOPSequence}
    assert found == {(str(d.SeriesInstanceUID), str(d.SOPClassUID), str(d.SOPInstanceUID)) for d in old.as_list()}
    # the content tree names the same objects
    content = {str(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID) for item in note.ContentSequence}
    assert content == rejected_uids(note) == {str(d.SOPInstanceUID) for d in old.as_list()}
    # Patient and Study modules come from the old SR; the note is a series of its own
    for attr in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
                 "StudyTime", "AccessionNumber", "StudyID", "ReferringPhysicianName"):
        assert str(note.get(attr)) == str(old.sr.get(attr)) and attr in old.sr, attr
    assert note.SeriesInstanceUID not in {d.SeriesInstanceUID for d in old.as_list()}
    assert hd.ko.KeyObjectSelectionDocument.from_dataset(note).SOPInstanceUID == note.SOPInstanceUID


def test_note_uids_are_deterministic(old):
    a = rejection_note(old.as_list(), uid_seed="second analysis")
    b = rejection_note(list(reversed(old.as_list())), uid_seed="second analysis")
    assert (a.SOPInstanceUID, a.SeriesInstanceUID) == (b.SOPInstanceUID, b.SeriesInstanceUID)
    assert rejection_note([old.sr], uid_seed="second analysis").SOPInstanceUID != a.SOPInstanceUID
    assert rejection_note(old.as_list(), uid_seed="third analysis").SOPInstanceUID != a.SOPInstanceUID


def test_note_refuses_nothing_or_two_studies(old):
    with pytest.raises(ValueError, match="at least one"):
        rejection_note([], uid_seed="s")
    alien = copy.deepcopy(old.sr)
    alien.StudyInstanceUID = "1.2.3.4.5"
    with pytest.raises(ValueError, match="one study, got 2"):
        rejection_note([old.sr, alien], uid_seed="s")


def test_dciodvfy_finds_no_error(old, tmp_path):
    dciodvfy = shutil.which("dciodvfy")
    if dciodvfy is None:
        pytest.skip("dciodvfy (dicom3tools) is not installed")
    path = tmp_path / "kos.dcm"
    rejection_note(old.as_list(), uid_seed="second analysis").save_as(path, enforce_file_format=True)
    out = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True)
    text = out.stdout + out.stderr
    assert "KeyObjectSelectionDocument" in text
    assert [line for line in text.splitlines() if line.startswith("Error")] == []


# ---------------------------------------------------------------- journal
def _done(j: Journal, sop: str, outputs: list[str], dests: list[str], **kw) -> tuple:
    now = 100.0 if sop == "1.1" else 200.0
    record(j, sop, now=now)
    s = j.series_row("1.2.3")
    j.queue_job(s, "test", now=now)
    job = j.claim_job(now=now + 1)
    objs = [ResultObject(u, k, "1.2.840.10008.5.1.4.1.1.88.34", Path(f"/r/{u}")) for u, k in
            zip(outputs, ("seg", "sr", "summary"))]
    j.finish_job(job, JobState.DONE, outputs=objs, deliveries=[(o.sop_uid, d) for o in objs for d in dests], **kw)
    return job, objs


def _state(j: Journal) -> dict[tuple[str, str], tuple[str, str | None]]:
    return {(r["sop_uid"], r["destination"]): (r["state"], r["rejected_by"]) for r in j.deliveries()}


def test_supersession_cancels_pending_and_rejects_delivered(tmp_path, journal_url):
    j = Journal(journal_url)
    _done(j, "1.1", ["g1.seg", "g1.sr", "g1.sum"], ["A", "B"])
    for d in j.due_deliveries():
        if d.destination == "A":
            j.mark_delivered(d.id)
    record(j, "1.2", now=200.0)  # a late instance: generation 2
    j.queue_job(j.series_row("1.2.3"), "test", now=200.0)
    job2 = j.claim_job(now=201.0)
    found = j.rejectable("1.2.3", job2.generation, ["A", "B"])
    assert {(dest, o.sop_uid) for _, dest, o in found} == {("A", "g1.seg"), ("A", "g1.sr"), ("A", "g1.sum")}

    # built before one more old object went out: refused, nothing recorded
    stale = Supersession(frozenset({"A", "B"}), ())
    with pytest.raises(StaleSupersession):
        j.finish_job(job2, JobState.DONE, supersede=stale)
    assert j.jobs()[0]["state"] == JobState.RUNNING.value

    note = ResultObject("kos.1", "rejection", KOS, Path("/r/kos.1"))
    sup = Supersession(frozenset({"A", "B"}), (Rejection(note, tuple((i, dest) for i, dest, _ in found)),))
    new = [ResultObject("g2.sr", "sr", "x", Path("/r/g2.sr"))]
    j.finish_job(job2, JobState.DONE, outputs=new, deliveries=[("g2.sr", "A"), ("g2.sr", "B")], supersede=sup)
    state = _state(j)
    assert {k: v for k, v in state.items() if k[1] == "B" and k[0].startswith("g1")} == {
        (u, "B"): (DeliveryState.SUPERSEDED.value, None) for u in ("g1.seg", "g1.sr", "g1.sum")}
    assert {k: v for k, v in state.items() if k[1] == "A" and k[0].startswith("g1")} == {
        (u, "A"): (DeliveryState.DELIVERED.value, "kos.1") for u in ("g1.seg", "g1.sr", "g1.sum")}
    assert ("kos.1", "B") not in state  # B never received the old objects
    due = [(d.sop_uid, d.destination) for d in j.due_deliveries()]
    assert due == [("g2.sr", "A"), ("g2.sr", "B")]  # the note goes after the new results
    assert j.rejectable("1.2.3", 3, ["A", "B"]) == []  # rejected once: a later generation does not repeat it
    j.mark_delivered(j.due_deliveries(destination="A")[0].id)
    assert [(d.sop_uid, d.destination) for d in j.due_deliveries()] == [("g2.sr", "B"), ("kos.1", "A")]



def test_an_object_rejected_while_its_try_was_in_flight_is_never_retried(tmp_path, journal_url):
    """B is down: its try of the old objects is in flight when the new results arrive. The failed try
    supersedes them (never retried), and the note to B goes too, since nothing it names reached B."""
    j = Journal(journal_url)
    _done(j, "1.1", ["g1.seg", "g1.sr", "g1.sum"], ["A", "B"])
    for d in j.due_deliveries():
        if d.destination == "A":
            j.mark_delivered(d.id)
    in_flight = [d for d in j.due_deliveries() if d.destination == "B"]
    [j.start_sending(d.id) for d in in_flight]
    record(j, "1.2", now=200.0)
    j.queue_job(j.series_row("1.2.3"), "test", now=200.0)
    job2 = j.claim_job(now=201.0)
    found = j.rejectable("1.2.3", job2.generation, ["A", "B"])
    assert {dest for _, dest, _ in found} == {"A", "B"}  # B may have them: the note goes there too
    note = ResultObject("kos.1", "rejection", KOS, Path("/r/kos.1"))
    sup = Supersession(frozenset({"A", "B"}), (Rejection(note, tuple((i, dest) for i, dest, _ in found)),))
    j.finish_job(job2, JobState.DONE, supersede=sup)
    assert _state(j)[("kos.1", "B")] == (DeliveryState.PENDING.value, None)

    j.mark_failed(in_flight[0].id, "connection refused", next_attempt_at=0.0, dead=False)
    state = _state(j)
    assert state[(in_flight[0].sop_uid, "B")] == (DeliveryState.SUPERSEDED.value, "kos.1")
    assert state[("kos.1", "B")] == (DeliveryState.PENDING.value, None)  # two more are still in flight
    for d in in_flight[1:]:
        j.mark_failed(d.id, "connection refused", next_attempt_at=0.0, dead=False)
    state = _state(j)
    assert {state[(d.sop_uid, "B")][0] for d in in_flight} == {DeliveryState.SUPERSEDED.value}
    assert state[("kos.1", "B")] == (DeliveryState.SUPERSEDED.value, None)  # nothing it names reached B
    assert state[("kos.1", "A")] == (DeliveryState.PENDING.value, None)
    assert [a["outcome"] for a in j.delivery_attempts(in_flight[0].id)] == ["superseded"]



def test_objects_read_by_the_outbox_then_superseded_are_never_sent_nor_revived(tmp_path, journal_url):
    """The outbox read B's old objects as due; newer results superseded them before their turn: the send
    is refused, and a try that failed meanwhile (no association) does not make them pending again."""
    j = Journal(journal_url)
    _done(j, "1.1", ["g1.seg", "g1.sr", "g1.sum"], ["B"])
    read = j.due_deliveries()
    record(j, "1.2", now=200.0)
    j.queue_job(j.series_row("1.2.3"), "test", now=200.0)
    job2 = j.claim_job(now=201.0)
    j.finish_job(job2, JobState.DONE, supersede=Supersession(frozenset({"B"}), ()))
    assert j.start_sending(read[0].id) is SendClaim.WITHDRAWN
    for d in read[1:]:
        j.mark_failed(d.id, "no association", next_attempt_at=0.0, dead=False)
    assert {s for s, _ in _state(j).values()} == {DeliveryState.SUPERSEDED.value}
    assert j.due_deliveries(now=1e12) == []


def _reanalysed(j: Journal, tmp_path: Path, dest: str = "A") -> dict[str, int]:
    """Generation 1 delivered to ``dest``; generation 2's SEG, SR and summary and its note queued to it: delivery
    id by UID. Each new object's file is named for its UID (the scripted exporter's key)."""
    _done(j, "1.1", ["g1.seg", "g1.sr", "g1.sum"], [dest])
    for d in j.due_deliveries():
        j.mark_delivered(d.id)
    record(j, "1.2", now=200.0)
    j.queue_job(j.series_row("1.2.3"), "test", now=200.0)
    job2 = j.claim_job(now=201.0)
    found = j.rejectable("1.2.3", job2.generation, [dest])
    note = ResultObject("kos", "rejection", KOS, tmp_path / "kos.dcm")
    new = [ResultObject(u, k, "x", tmp_path / f"{u}.dcm")
           for u, k in (("seg", "seg"), ("sr", "sr"), ("sum", "summary"))]
    j.finish_job(job2, JobState.DONE, outputs=new, deliveries=[(o.sop_uid, dest) for o in new],
                 supersede=Supersession(frozenset({dest}), (Rejection(note, tuple((i, d) for i, d, _ in found)),)))
    return {r["sop_uid"]: r["id"] for r in j.deliveries() if not r["sop_uid"].startswith("g1")}


@pytest.mark.parametrize("settled", ["delivered", "dead"])
def test_a_note_waits_until_its_jobs_new_results_at_that_destination_are_settled(tmp_path, journal_url, settled):
    """IOCM's order (the new objects, then the note) holds when a new result's try fails in the note's batch
    and while another process sends one: the note stays pending, untried, until they are delivered, or dead
    (then nothing it could wait for will arrive)."""
    j = Journal(journal_url)
    ids = _reanalysed(j, tmp_path)
    assert [d.sop_uid for d in j.due_deliveries()] == ["seg", "sr", "sum"]
    read = j.due_deliveries(in_order=False)  # a batch read as if the note were due with them
    assert [d.sop_uid for d in read] == ["seg", "sr", "sum", "kos"]
    assert j.start_sending(ids["seg"]) and j.start_sending(ids["sr"])
    j.mark_delivered(ids["seg"])
    j.mark_failed(ids["sr"], "status 0xA700", next_attempt_at=1e9, dead=False)  # retried later
    other = Journal(journal_url, owner="other-process")
    assert other.start_sending(ids["sum"])  # in flight elsewhere
    assert j.start_sending(ids["kos"]) is SendClaim.WAITING
    other.mark_delivered(ids["sum"])
    assert j.start_sending(ids["kos"]) is SendClaim.WAITING  # the SR still waits for its retry
    assert [d.sop_uid for d in j.due_deliveries(now=2e9)] == ["sr"]
    assert j.start_sending(ids["sr"])
    if settled == "delivered":
        j.mark_delivered(ids["sr"])
    else:
        j.mark_failed(ids["sr"], "status 0xA700", next_attempt_at=1e9, dead=True)
    assert [d.sop_uid for d in j.due_deliveries(now=2e9)] == ["kos"]
    assert j.delivery_attempts(ids["kos"]) == []  # waiting was never a try
    assert j.start_sending(ids["kos"]) is SendClaim.STARTED


def test_the_outbox_holds_a_note_back_when_a_new_result_fails_in_its_batch(tmp_path, journal_url):
    j = Journal(journal_url)
    _reanalysed(j, tmp_path, A.name)
    failed, ok = SendOutcome(Path(), False, "status 0xA700"), SendOutcome(Path(), True, "0x0000")
    exporter = ScriptedExporter({"seg": ok, "sr": failed, "sum": ok, "kos": ok})
    box = Outbox(j, exporter, (A,), 5, 0.0, 0.0)
    real = j.due_deliveries
    j.due_deliveries = lambda *a, **kw: real(*a, **{**kw, "in_order": False})  # the note read in the same batch
    assert box.flush() == 2
    j.due_deliveries = real
    assert exporter.sent == ["seg", "sr", "sum"]  # the note was not sent behind the failed SR
    assert _state(j)[("kos", A.name)] == (DeliveryState.PENDING.value, None)
    exporter.script["sr"] = ok
    assert box.flush(now=1e12) == 1  # the SR's retry; the note was not due beside it
    assert box.flush(now=1e12) == 1
    assert exporter.sent == ["seg", "sr", "sum", "sr", "kos"]


# ---------------------------------------------------------------- worker


def _late_instance(journal: Journal, sop: str = "1.2.3.late") -> int:
    journal.record_instance(sop_uid=sop, study_uid="1.2", series_uid="1.2.3", sop_class="1.2.840.10008.5.1.4.1.1.2",
                            transfer_syntax="1.2.840.10008.1.2.1", path=Path("/x"), size=1, digest="d2",
                            modality="CT", geometry=SliceGeometry(), calling_ae="SCU")
    return journal.queue_job(journal.series_row("1.2.3"), "test")


def _notes(journal: Journal) -> list:
    return journal.results(kind="rejection")


def test_worker_rebuilds_the_note_when_an_old_object_is_delivered_meanwhile(env, stages, monkeypatch):
    worker, journal = env
    queue(journal)
    assert worker.run_one()
    first = {d.sop_uid: d for d in journal.due_deliveries()}
    summary_delivery = next(d for d in first.values() if d.kind == "summary")
    for d in first.values():
        if d is not summary_delivery:
            journal.mark_delivered(d.id)
    _late_instance(journal)
    series2, vol2 = ct_series(seed=9)  # other instances: new results with new UIDs
    stages.series, stages.result = series2, wml_result(series2, vol2, wml_mask(vol2))
    real = journal.rejectable
    calls = []

    def outbox_delivers_meanwhile(*args):
        found = real(*args)
        if not calls:  # the outbox sends the old summary between the worker's look and its commit
            journal.mark_delivered(summary_delivery.id)
        calls.append(found)
        return found

    monkeypatch.setattr(journal, "rejectable", outbox_delivers_meanwhile)
    assert worker.run_one()
    assert len(calls) == 2 and len(calls[0]) == 2 and len(calls[1]) == 3
    (note_row,) = _notes(journal)  # one note, naming all three, and no leftover file of the stale one
    assert rejected_uids(pydicom.dcmread(note_row.path)) == set(first)
    assert [p.name for p in Path(worker.spool.results).rglob("*") if p.is_file()].count(
        note_row.path.name) == 1
    assert sum(1 for p in Path(worker.spool.results).rglob("*") if p.is_file()) == 7
    assert [(d.sop_uid, d.kind) for d in journal.due_deliveries(in_order=False)][-1] == (note_row.sop_uid,
                                                                                        "rejection")


def test_worker_never_rejects_what_it_produced_again(env):
    """Same instances and pixels (a header-only correction): the same UIDs, so nothing is rejected."""
    worker, journal = env
    queue(journal)
    assert worker.run_one()
    for d in journal.due_deliveries():
        journal.mark_delivered(d.id)
    _late_instance(journal, sop="1.2.3.1")  # the same instance again with another digest
    assert worker.run_one()
    assert _notes(journal) == []
    assert [r["state"] for r in journal.jobs()] == [JobState.DONE.value, JobState.DONE.value]


def test_reanalysis_after_a_model_change_rejects_what_the_pacs_holds(env, stages):
    """`svdmark jobs reanalyse` after a model change: new results (new UIDs: another model) and one note
    naming every delivered old object; the same model again would produce the same UIDs and no note."""
    import dataclasses

    worker, journal = env
    queue(journal)
    assert worker.run_one()
    first = {d.sop_uid for d in journal.due_deliveries()}
    for d in journal.due_deliveries():
        journal.mark_delivered(d.id)
    result = stages.result
    stages.result = dataclasses.replace(result, model=dataclasses.replace(result.model, version="9.9.9",
                                                                          sha256="f" * 64))
    assert isinstance(journal.reanalyse("1.2.3", "model 9.9.9 activated"), int)
    assert worker.run_one()
    (note_row,) = _notes(journal)
    assert rejected_uids(pydicom.dcmread(note_row.path)) == first
    due = [(d.sop_uid, d.kind) for d in journal.due_deliveries(in_order=False)]
    assert len(due) == 4 and due[-1] == (note_row.sop_uid, "rejection")
    assert not {u for u, _ in due} & first

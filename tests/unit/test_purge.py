"""Retention (`svdmark purge`) in the journal: which series' images may go, what goes with them and what stays,
and what a purged series does when an instance arrives for it or an operator asks for a re-analysis."""
from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from svdmark import retention
from svdmark.domain import DeliveryState, JobState, SeriesState
from svdmark.geometry import SliceGeometry
from svdmark.journal import Journal, ResultObject, Supersession
from svdmark.spool import Spool

DAY = 86_400.0
SERIES = "1.2.3"


class Clock:
    """The journal's clock, moved by the test (days pass without waiting)."""

    def __init__(self):
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


def _no_header(paths: list[Path]) -> None:
    for p in paths:
        p.unlink()


def _instance(j: Journal, folder: Path, sop: str) -> Path:
    path = folder / f"{sop}.dcm"
    path.write_bytes(b"\0" * 100)
    j.record_instance(sop_uid=sop, study_uid="1.2", series_uid=SERIES, sop_class="1.2.840.10008.5.1.4.1.1.2",
                      transfer_syntax="1.2.840.10008.1.2.1", path=path, size=100, digest=f"d{sop}", modality="CT",
                      geometry=SliceGeometry(), calling_ae="SCU")
    return path


def _analyse(j: Journal, sr: str, tmp_path: Path, deliver: bool = True, supersede: Supersession | None = None):
    j.queue_job(j.series_row(SERIES), "complete")
    job = j.claim_job()
    out = ResultObject(sr, "sr", "1.2.840.10008.5.1.4.1.1.88.34", tmp_path / f"{sr}.dcm")
    j.finish_job(job, JobState.DONE, outputs=[out], deliveries=[(sr, "A")], supersede=supersede)
    if deliver:
        for d in j.due_deliveries():
            j.mark_delivered(d.id)
    return job


@pytest.fixture
def done(tmp_path, journal_url):
    """A series of two instances, analysed and its SR delivered; then ten days pass."""
    clock = Clock()
    j = Journal(journal_url, clock=clock)
    files = [_instance(j, tmp_path, f"1.2.3.{k}") for k in (1, 2)]
    _analyse(j, "9.1", tmp_path)
    clock.t += 10 * DAY
    return j, clock, files


def test_a_series_done_with_loses_its_images_and_keeps_its_results(done):
    j, _, files = done
    (found,) = j.purgeable(j.now() - 5 * DAY)
    assert (found.series_uid, found.instances, found.bytes) == (SERIES, 2, 200)
    removed, header = [], files[0].with_suffix(".header")

    def remove(paths):
        for p in paths:
            removed.append(p)
            p.unlink()
        return header

    assert j.purge_series(SERIES, j.now() - 5 * DAY, remove, "admin") == found
    (audit,) = j.audit_entries(action="spool.purge")
    assert (audit.actor, audit.detail["series_uid"], audit.detail["instances"]) == ("admin", SERIES, 2)
    assert removed == files and not any(f.exists() for f in files)
    assert j.instances(SERIES) == [] and j.series_row(SERIES).purged_at == pytest.approx(j.now())
    assert j.first_instance_path(SERIES) == header and j.instance_count(SERIES) == 2  # what the listings show
    assert [r.sop_uid for r in j.results()] == ["9.1"]
    assert [r["state"] for r in j.deliveries()] == [DeliveryState.DELIVERED.value]
    assert j.purgeable(j.now()) == []  # once
    assert j.purge_series(SERIES, j.now(), _no_header, "test") is None


def test_a_failing_removal_records_nothing(done):
    j, _, files = done

    def broken(paths):
        raise OSError("no space left on device")

    with pytest.raises(OSError):
        j.purge_series(SERIES, j.now(), broken, "test")
    assert all(f.exists() for f in files) and len(j.instances(SERIES)) == 2 and j.purgeable(j.now())
    assert j.audit_entries(action="spool.purge") == []


def test_what_is_not_done_with_keeps_its_images(done, tmp_path):
    j, clock, files = done
    assert j.purgeable(j.now() - 11 * DAY) == []  # analysed within the period
    _instance(j, tmp_path, "1.2.3.3")  # a late instance: receiving again
    assert j.purgeable(j.now() + 1) == []
    j.queue_job(j.series_row(SERIES), "complete")
    assert j.purgeable(j.now() + 1) == []  # queued
    job = j.claim_job()
    assert j.purgeable(j.now() + 1) == []  # running
    out = ResultObject("9.2", "sr", "x", tmp_path / "9.2.dcm")
    j.finish_job(job, JobState.DONE, outputs=[out], deliveries=[("9.2", "A")])
    clock.t += 10 * DAY
    assert j.purgeable(j.now()) == []  # a result still waits to be sent
    (d,) = j.due_deliveries()
    j.mark_failed(d.id, "no association", next_attempt_at=0.0, dead=True)
    assert [s.instances for s in j.purgeable(j.now())] == [3]  # a dead letter does not need the images


def test_an_instance_arriving_meanwhile_keeps_the_series(done, tmp_path):
    j, _, files = done
    cutoff = j.now() + 1
    assert j.purgeable(cutoff)
    _instance(j, tmp_path, "1.2.3.3")  # between the listing and the purge
    assert j.purge_series(SERIES, cutoff, _no_header, "test") is None and all(f.exists() for f in files)


def test_a_purged_series_starts_afresh_beside_its_earlier_results(done, tmp_path):
    j, _, _ = done
    j.purge_series(SERIES, j.now(), _no_header, "test")
    assert "purged" in j.reanalyse(SERIES, "model changed")  # nothing left to analyse again
    _instance(j, tmp_path, "1.2.3.1")  # the PACS sends the series again
    s = j.series_row(SERIES)
    assert (s.state, s.generation, s.purged_at) == (SeriesState.RECEIVING, 2, None)
    assert j.previous_sr(SERIES, 2) is None and j.rejectable(SERIES, 2, ["A"]) == []
    _analyse(j, "9.2", tmp_path, supersede=Supersession(frozenset({"A"}), ()))
    states = {r["sop_uid"]: (r["state"], r["rejected_by"]) for r in j.deliveries()}
    assert states == {"9.1": (DeliveryState.DELIVERED.value, None), "9.2": (DeliveryState.DELIVERED.value, None)}
    _instance(j, tmp_path, "1.2.3.2")  # a late instance after that: supersedes generation 2, not 1
    j.queue_job(j.series_row(SERIES), "complete")
    assert j.previous_sr(SERIES, 3).sop_uid == "9.2"
    assert [o.sop_uid for _, _, o in j.rejectable(SERIES, 3, ["A"])] == ["9.2"]


def test_the_retention_run_keeps_each_series_header_without_its_pixels(tmp_path, journal_url, monkeypatch):
    """svdmark.retention over a real spool: the images go, a header-only copy of the first one that reads stays
    (the listings and the research table read the series' description and patient from it), written only once
    the images are gone (a run on a full disk frees the space it writes into)."""
    from tests.integration.test_tls import tiny_ct

    clock = Clock()
    j, spool = Journal(journal_url, clock=clock), Spool(tmp_path / "spool")
    placed, sops = [], []
    for k, src in enumerate(tiny_ct(tmp_path / "in", 3, size=32)):
        ds = pydicom.dcmread(src)
        path = spool.write(spool.incoming, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID,
                           src.read_bytes())
        j.record_instance(sop_uid=ds.SOPInstanceUID, study_uid=ds.StudyInstanceUID, series_uid=ds.SeriesInstanceUID,
                          sop_class=ds.SOPClassUID, transfer_syntax=str(ds.file_meta.TransferSyntaxUID), path=path,
                          size=path.stat().st_size, digest=f"d{k}", modality="CT", geometry=SliceGeometry(),
                          calling_ae="SCU")
        placed.append(path)
        sops.append(str(ds.SOPInstanceUID))
        clock.t += 1
    series = str(ds.SeriesInstanceUID)
    j.queue_job(j.series_row(series), "complete")
    j.finish_job(j.claim_job(), JobState.DONE)
    placed[0].unlink()  # the first file already gone (a purge that crashed before its commit): the next one serves
    clock.t += DAY
    write = retention.write_durably

    def after_the_images(path, data):
        assert not any(p.exists() for p in placed)
        write(path, data)

    monkeypatch.setattr(retention, "write_durably", after_the_images)
    (done,) = retention.run(j, spool, j.now(), "test").series
    assert (done.series_uid, done.instances) == (series, 3) and not any(p.exists() for p in placed)
    header = j.first_instance_path(series)
    assert header.is_relative_to(spool.headers) and j.instances(series) == []
    kept = pydicom.dcmread(header)
    assert "PixelData" not in kept and kept.SOPInstanceUID == sops[1]  # the first that still read
    assert (kept.SeriesDescription, kept.PatientID, str(kept.SeriesInstanceUID)) == ("tls test", "TLS1", series)
    assert retention.run(j, spool, j.now(), "test").series == []


def _result_file(tmp_path: Path, sop: str) -> Path:
    path = tmp_path / f"{sop}.dcm"  # where _analyse journals it
    path.write_bytes(b"result")
    return path


def test_a_purged_series_loses_the_files_of_results_its_destinations_hold(done, tmp_path):
    j, _, _ = done
    sr = _result_file(tmp_path, "9.1")
    assert j.purgeable_results() == {}  # its images are still there: a re-analysis may read the SR
    assert j.purgeable_results(as_if_purged={SERIES}) == {SERIES: 1}  # what a dry run reports
    j.purge_series(SERIES, j.now(), _no_header, "test")
    assert j.purgeable_results() == {SERIES: 1}
    removed = []

    def remove(paths):
        removed.extend(paths)
        for p in paths:
            p.unlink()

    assert j.purge_results(SERIES, remove, "admin") == 1
    assert removed == [sr] and not sr.exists()
    (r,) = j.results()
    assert (r.sop_uid, r.path, r.file_removed_at) == ("9.1", sr, pytest.approx(j.now()))  # the row and its UIDs stay
    assert [d["state"] for d in j.deliveries()] == [DeliveryState.DELIVERED.value]
    (audit,) = j.audit_entries(action="spool.purge_results")
    assert (audit.actor, audit.detail) == ("admin", {"series_uid": SERIES, "study_uid": "1.2", "results": 1})
    assert j.purgeable_results() == {} and j.purge_results(SERIES, remove, "admin") == 0  # once


def test_a_dead_letter_and_a_result_sent_nowhere_keep_their_files(tmp_path, journal_url):
    clock = Clock()
    j = Journal(journal_url, clock=clock)
    _instance(j, tmp_path, "1.2.3.1")
    j.queue_job(j.series_row(SERIES), "complete")
    outputs = [ResultObject(sop, "sr", "x", tmp_path / f"{sop}.dcm") for sop in ("9.1", "9.2")]
    j.finish_job(j.claim_job(), JobState.DONE, outputs=outputs, deliveries=[("9.1", "A")])  # 9.2 to no one
    (d,) = j.due_deliveries()
    j.mark_failed(d.id, "association rejected", next_attempt_at=0.0, dead=True)
    clock.t += 10 * DAY
    assert [s.series_uid for s in retention.run(j, Spool(tmp_path / "spool"), j.now(), "test").series] == [SERIES]
    assert j.purgeable_results() == {}  # 9.1 went dead (outbox resend needs it), 9.2 is the only copy
    assert j.resend_dead() == 1
    (d,) = j.due_deliveries()
    j.mark_delivered(d.id)
    assert j.purgeable_results() == {SERIES: 1}  # resent and received: the next run removes it


def test_a_failing_result_removal_records_nothing(done, tmp_path):
    j, _, _ = done
    sr = _result_file(tmp_path, "9.1")
    j.purge_series(SERIES, j.now(), _no_header, "test")

    def broken(paths):
        raise OSError("read-only file system")

    with pytest.raises(OSError):
        j.purge_results(SERIES, broken, "test")
    assert sr.exists() and j.results()[0].file_removed_at is None and j.purgeable_results() == {SERIES: 1}
    assert j.audit_entries(action="spool.purge_results") == []


def test_the_retention_run_removes_delivered_result_files_from_the_spool(done, tmp_path):
    j, _, _ = done
    spool = Spool(tmp_path / "spool")
    j.purge_series(SERIES, j.now(), _no_header, "test")
    with j._tx() as db:  # the result where a worker writes it, in the spool's results area
        path = spool.write(spool.results, "1.2", SERIES, "9.1", b"result")
        db.execute("UPDATE results SET path=? WHERE sop_uid=?", (str(path), "9.1"))
    assert retention.run(j, spool, j.now(), "test", keep_results=True).results == {} and path.exists()
    assert retention.run(j, spool, j.now(), "test").results == {SERIES: 1} and not path.exists()
    assert retention.run(j, spool, j.now(), "test").results == {}


def test_a_result_superseded_unsent_goes_with_the_one_delivered_in_its_place(tmp_path, journal_url):
    clock = Clock()
    j = Journal(journal_url, clock=clock)
    _instance(j, tmp_path, "1.2.3.1")
    _analyse(j, "9.1", tmp_path, deliver=False)  # still pending when a late image re-opens the series
    _instance(j, tmp_path, "1.2.3.2")
    _analyse(j, "9.2", tmp_path, supersede=Supersession(frozenset({"A"}), ()))
    assert {r["sop_uid"]: r["state"] for r in j.deliveries()} == {"9.1": DeliveryState.SUPERSEDED.value,
                                                                  "9.2": DeliveryState.DELIVERED.value}
    clock.t += 10 * DAY
    retention.run(j, Spool(tmp_path / "spool"), j.now(), "test", keep_results=True)
    assert j.purgeable_results() == {SERIES: 2}


def test_a_series_sent_again_keeps_its_result_files_until_purged_again_and_a_rewritten_file_counts(done, tmp_path):
    j, clock, _ = done
    sr = _result_file(tmp_path, "9.1")
    j.purge_series(SERIES, j.now(), _no_header, "test")
    assert j.purge_results(SERIES, _no_header, "test") == 1 and not sr.exists()
    _instance(j, tmp_path, "1.2.3.1")  # the PACS sends the series again: no longer purged
    assert j.purgeable_results(as_if_purged=()) == {}
    # the same images and model give the same SOP UIDs: the worker writes the same file again
    _result_file(tmp_path, "9.1")
    _analyse(j, "9.1", tmp_path, supersede=Supersession(frozenset({"A"}), ()))
    (r,) = j.results()
    assert r.file_removed_at is None  # the row says the file is there again, so retention can find it
    clock.t += 10 * DAY
    j.purge_series(SERIES, j.now(), _no_header, "test")
    assert j.purgeable_results() == {SERIES: 1}


def test_the_services_retention_step_runs_only_in_the_assembly_leader_and_retries_soon_otherwise(tmp_path):
    from svdmark.config import Config
    from svdmark.service import RETENTION_ACTOR, Service

    cfg = Config(data_dir=tmp_path / "data", roles=("assemble",), retention_days=0.0, retention_every_hours=24.0)
    svc = Service(cfg)
    try:
        clock = Clock()
        svc.journal.now = clock  # days pass without waiting
        _instance(svc.journal, tmp_path, "1.2.3.1")
        _analyse(svc.journal, "9.1", tmp_path)
        clock.t += DAY
        svc._stop.set()  # its wait returns at once
        svc._leading = False
        assert svc._retention_step() is True  # not the leader: look again in seconds, not in 24 hours
        assert svc.journal.instances(SERIES) and svc.journal.audit_entries(action="spool.purge") == []
        svc._leading = True
        assert svc._retention_step() is False  # done: the next run in every_hours
        assert svc.journal.instances(SERIES) == []
        assert [a.actor for a in svc.journal.audit_entries(action="spool.purge")] == [RETENTION_ACTOR]
    finally:
        svc.journal.close()


def test_a_series_whose_files_the_file_system_refuses_stays_and_the_run_goes_on(tmp_path, journal_url, monkeypatch):
    clock = Clock()
    j, spool = Journal(journal_url, clock=clock), Spool(tmp_path / "spool")
    kept = _instance(j, tmp_path, "1.2.3.1")
    _analyse(j, "9.1", tmp_path)
    other = "1.2.4"
    path = tmp_path / "other.dcm"
    path.write_bytes(b"\0" * 10)
    j.record_instance(sop_uid="1.2.4.1", study_uid="1.2", series_uid=other, sop_class="1.2.840.10008.5.1.4.1.1.2",
                      transfer_syntax="1.2.840.10008.1.2.1", path=path, size=10, digest="d2", modality="CT",
                      geometry=SliceGeometry(), calling_ae="SCU")
    j.queue_job(j.series_row(other), "complete")
    j.finish_job(j.claim_job(), JobState.DONE)
    clock.t += 10 * DAY
    discard = spool.discard

    def refuse(p):
        if p == kept:
            raise PermissionError(13, "Permission denied")
        discard(p)

    monkeypatch.setattr(spool, "discard", refuse)
    ran = retention.run(j, spool, j.now(), "test")
    assert ran.failed == {SERIES: "PermissionError: Permission denied"}
    assert [s.series_uid for s in ran.series] == [other] and not path.exists()  # the next series went
    assert kept.exists() and j.instances(SERIES) and j.purgeable(j.now())  # the refused one stays, whole


def test_a_failed_job_of_a_purged_series_is_not_retried(tmp_path, journal_url):
    clock = Clock()
    j = Journal(journal_url, clock=clock)
    _instance(j, tmp_path, "1.2.3.1")
    j.queue_job(j.series_row(SERIES), "complete")
    job = j.claim_job()
    j.finish_job(job, JobState.FAILED, detail="unreadable pixel data")
    clock.t += 10 * DAY
    assert not j.images_purged(SERIES, job.generation)
    j.purge_series(SERIES, j.now(), _no_header, "test")
    assert j.images_purged(SERIES, job.generation) and j.retry_job(job.id) is False
    _instance(j, tmp_path, "1.2.3.1")  # sent again: a new generation; the old job's images are still gone
    assert j.images_purged(SERIES, job.generation) and not j.images_purged(SERIES, job.generation + 1)
    assert j.retry_job(job.id) is False and j.job(job.id).state is JobState.FAILED


def test_svdmark_purge_lists_a_series_it_could_not_remove_and_exits_1(tmp_path, monkeypatch, capsys):
    import json

    from svdmark.cli.main import main
    from svdmark.config import Config

    data = tmp_path / "data"
    j = Journal(Config(data_dir=data).journal_url)
    spool = Spool(data / "spool")
    _instance(j, spool.root, "1.2.3.1")
    _analyse(j, "9.1", tmp_path)
    j.close()

    def refuse(self, path):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Spool, "discard", refuse)
    capsys.readouterr()
    assert main(["purge", "--older-than-days", "0", "--data-dir", str(data), "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["series"] == [] and doc["failed"] == [{"series_uid": SERIES, "reason": "PermissionError: Permission "
                                                                                       "denied"}]
    assert main(["purge", "--older-than-days", "0", "--data-dir", str(data)]) == 1
    assert f"could not remove the files of series {SERIES}: PermissionError" in capsys.readouterr().out

"""Where a review of the series' assembly found the product wrong: a failed job retried after its series moved on
to a newer generation, and one Series Instance UID used by two studies (a sender's UID collision)."""
from __future__ import annotations

from pathlib import Path

from svdmark.assemble import Assembler
from svdmark.domain import JobState, SeriesState
from svdmark.geometry import SliceGeometry
from svdmark.journal import Journal
from svdmark.receive.inspect import CT_IMAGE, Inspected
from svdmark.receive.store import keep
from svdmark.spool import Spool


def _record(j: Journal, series: str, k: int, now: float, study: str = "1.2", sop: str | None = None,
            digest: str | None = None) -> str:
    return j.record_instance(sop_uid=sop or f"{series}.{k}", study_uid=study, series_uid=series, sop_class=CT_IMAGE,
                             transfer_syntax="1.2.840.10008.1.2.1", path=Path(f"/x/{study}/{series}/{k}"), size=1,
                             digest=digest or f"d{k}", modality="CT", calling_ae="SCU", now=now,
                             geometry=SliceGeometry(ipp=(0, 0, 5.0 * k), iop=(1, 0, 0, 0, 1, 0)))


def _analysed(j: Journal, series: str, n: int, t: float, study: str = "1.2", state=JobState.DONE) -> int:
    for k in range(n):
        _record(j, series, k, t, study)
    j.mark_released([series])
    (job_id,) = Assembler(j, set, 2, 60, 600).tick(now=t + 3)
    j.finish_job(j.claim_job(), state, detail="GPU out of memory" if state is JobState.FAILED else None)
    return job_id


def test_a_failed_job_of_a_generation_the_series_left_is_not_retried(journal_url):
    j = Journal(journal_url)
    t = j.now()
    job1 = _analysed(j, "1.2.3", 12, t - 100, state=JobState.FAILED)
    _record(j, "1.2.3", 12, t)  # a late slice: generation 2, still arriving
    assert (j.series_row("1.2.3").state, j.series_row("1.2.3").generation) == (SeriesState.RECEIVING, 2)
    assert j.retry_job(job1) is False and j.claim_job() is None
    assert j.job(job1).state is JobState.FAILED


def test_a_series_uid_that_another_study_uses_is_refused_and_nothing_is_lost(tmp_path, journal_url):
    j = Journal(journal_url)
    t = j.now()
    _analysed(j, "1.2.3", 12, t - 1000, study="1.1.1")
    # study B (another patient), the same Series Instance UID, its own SOP Instance UIDs
    assert _record(j, "1.2.3", 0, t, study="1.1.2", sop="9.9.0") == "conflict"
    assert {i.sop_uid for i in j.instances("1.2.3")} == {f"1.2.3.{k}" for k in range(12)}
    s = j.series_row("1.2.3")
    assert (s.state, s.generation, s.study_uid) == (SeriesState.ANALYSED, 1, "1.1.1")
    # the receiver's keep: the refused instance's file goes again, the study's stay
    spool = Spool(tmp_path / "spool")
    item = Inspected(sop_uid="9.9.1", sop_class=CT_IMAGE, study_uid="1.1.2", series_uid="1.2.3", modality="CT",
                     geometry=SliceGeometry(ipp=(0, 0, 0), iop=(1, 0, 0, 0, 1, 0)))
    assert keep(j, spool, item, b"DICM-b", transfer_syntax="1.2.840.10008.1.2.1", calling_ae="SCU") == "conflict"
    assert not spool.path_for(spool.incoming, "1.1.2", "1.2.3", "9.9.1").exists()


def test_a_series_moved_to_another_study_is_its_series_there(journal_url):
    """A PACS that reconciles a study re-sends the same instances under the new Study Instance UID: a move, not a
    collision; the series (and its next analysis) belongs to the new study."""
    j = Journal(journal_url)
    t = j.now()
    _analysed(j, "1.2.3", 4, t - 1000, study="1.1.1")
    for k in range(4):
        assert _record(j, "1.2.3", k, t, study="1.1.2", digest=f"moved{k}") == "replaced"
    s = j.series_row("1.2.3")
    assert (s.study_uid, s.generation, s.state) == ("1.1.2", 2, SeriesState.RECEIVING)
    assert {str(i.path).split("/")[2] for i in j.instances("1.2.3")} == {"1.1.2"}


def test_analyze_lists_the_files_of_a_series_uid_another_study_uses():
    from svdmark.batch.discover import Instance, Source, group

    def inst(study: str, sop: str) -> Instance:
        return Instance(source=Source(f"/in/{study}/{sop}.dcm"), sop_uid=sop, study_uid=study, series_uid="1.2.3",
                        modality="CT", sop_class=CT_IMAGE, patient_pseudonym="", series_number="2",
                        series_description="", digest=sop,
                        geometry=SliceGeometry(ipp=(0, 0, 0), iop=(1, 0, 0, 0, 1, 0)))

    groups, errors = group([inst("1.1.1", "5.1"), inst("1.1.1", "5.2"), inst("1.1.2", "9.1")])
    assert [(g.study_uid, [i.sop_uid for i in g.instances]) for g in groups] == [("1.1.1", ["5.1", "5.2"])]
    assert [(e.file, e.sop_uid) for e in errors] == [("/in/1.1.2/9.1.dcm", "9.1")]
    assert "names a series of another study" in errors[0].reason


def test_svdmark_jobs_retry_says_why_a_left_generation_is_not_retried(tmp_path):
    from tests import journaldb
    from tests.cli.conftest import run_cli

    j = Journal(journaldb.url_for(tmp_path / "data"))
    t = j.now()
    job1 = _analysed(j, "1.2.3", 3, t - 100, state=JobState.FAILED)
    _record(j, "1.2.3", 3, t)
    j.close()
    r = run_cli("jobs", "retry", job1, "--data-dir", tmp_path / "data", check_rc=1)
    assert "received more images since (generation 2, this job's 1)" in r.stderr and "Traceback" not in r.stderr


def test_analyze_enqueue_does_not_queue_a_series_uid_another_study_holds(tmp_path):
    import pydicom
    from svdmark_phantom import write_study

    from svdmark.enqueue import Enqueuer

    write_study(tmp_path / "s", seed=5, kind="ncct", vendor="ge", matrix=64, distractors=False, slice_thickness=5.0)
    files = sorted((tmp_path / "s").rglob("*.dcm"))
    series_uid = pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID
    j = Journal(tmp_path / "j.sqlite")
    _record(j, series_uid, 0, j.now(), study="1.1.1", sop="9.9.1")  # the service holds another study's series
    report = Enqueuer(j, tmp_path / "spool", tmp_path / "out", progress=False).run([tmp_path / "s"])
    assert report.counts["queued"] == 0 and report.counts["not_queued"] == 1
    assert report.counts["instances_conflict"] == len(files)
    assert len([e for e in report.errors if "another study's instances" in e["reason"]]) == len(files)
    assert [i.sop_uid for i in j.instances(series_uid)] == ["9.9.1"] and j.jobs() == []
    assert not any((tmp_path / "spool").rglob("*.dcm"))


class _Clocks:
    """This host's clock, which NTP may step, and its monotonic clock, which nothing steps."""

    def __init__(self):
        self.wall, self.mono = 1_700_000_000.0, 5000.0

    def elapse(self, seconds: float, step: float = 0.0) -> None:
        self.mono += seconds
        self.wall += seconds + step


def _stepped_journal(tmp_path) -> tuple[Journal, _Clocks]:
    c = _Clocks()
    return Journal(tmp_path / "j.sqlite", clock=lambda: c.wall, steady=lambda: c.mono), c


def test_a_clock_stepped_back_does_not_hold_a_complete_series_on_sqlite(tmp_path):
    j, c = _stepped_journal(tmp_path)
    for k in range(12):
        _record(j, "1.2.3", k, j.now())
    j.mark_released(["1.2.3"])
    c.elapse(5, step=-600)  # NTP steps the host's clock back 10 minutes; 5 s pass
    j.heartbeat(["assemble"])
    assert Assembler(j, set, 2, 60, 600).tick(), "a released whole stack 5 s quiet waited out the step"


def test_a_clock_stepped_forward_does_not_complete_a_series_still_arriving_on_sqlite(tmp_path):
    j, c = _stepped_journal(tmp_path)
    for k in range(12):
        _record(j, "1.2.3", k, j.now())
    c.elapse(3, step=120)
    j.heartbeat(["assemble"])
    assert Assembler(j, lambda: {"1.2.3"}, 2, 60, 600).tick() == []  # its association open, an image 3 s ago


def test_the_sqlite_journal_follows_a_step_slowly_and_a_wrong_clock_at_once(tmp_path):
    from svdmark.journal import CLOCK_JUMP_SECONDS, CLOCK_SLEW

    j, c = _stepped_journal(tmp_path)
    start = j.now()
    c.elapse(10, step=-600)
    j.heartbeat(["assemble"])
    assert j.now() == start + 10 - 10 * CLOCK_SLEW  # a tenth of the 10 s towards the step
    seen = [j.now()]
    for _ in range(700):  # 10 s heartbeats: the step is taken up in about 6000 s, time never runs back
        c.elapse(10)
        j.heartbeat(["assemble"])
        seen.append(j.now())
    assert j.now() == c.wall and all(b > a for a, b in zip(seen, seen[1:]))
    c.elapse(10, step=CLOCK_JUMP_SECONDS + 1)  # a clock that was wrong (a VM resumed): followed at once
    j.heartbeat(["assemble"])
    assert j.now() == c.wall

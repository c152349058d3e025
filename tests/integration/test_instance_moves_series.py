"""An instance received again under another Series Instance UID (a PACS that re-split or corrected a series, a
modality that re-sends with new series UIDs): dcmtk storescu against the listener started in-process, phantom
series from svdmark_phantom, the assembler ticked at chosen times (journal clock) and the retention run called
as ``svdmark purge`` calls it.

The journal row moves to the new series; the file under the old series' folder goes (it was left behind, with no
row naming it, and no retention run ever removed it); the old series is judged again on what it still holds, or,
holding nothing, closed with the reason in the audit trail (it stayed receiving, and the assembler queued a job on
zero instances: "association released; not a single stack (only 0 slice(s))")."""
from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from svdmark import retention
from svdmark.assemble import Assembler
from svdmark.config import Config
from svdmark.domain import JobState, SeriesState
from svdmark.geometry import SliceGeometry
from svdmark.journal import Journal
from svdmark.receive import AssociationTracker, Receiver, build_ae
from svdmark.spool import Spool
from svdmark_phantom import write_study

from tests import journaldb
from tests.peers import storescu, wait_until

pytestmark = pytest.mark.interop

SETTLE, FALLBACK, MAX_WAIT = 2.0, 60.0, 600.0
DAY = 86_400.0


class Listener:
    def __init__(self, tmp_path: Path):
        cfg = Config(host="127.0.0.1", port=0, data_dir=tmp_path / "data").validate()
        self.journal = Journal(journaldb.url_for(cfg.data_dir))
        self.spool = Spool(cfg.spool_dir)
        self.tracker = AssociationTracker()
        receiver = Receiver(cfg, self.journal, self.spool, self.tracker)
        self.server = build_ae(cfg).start_server(("127.0.0.1", 0), block=False, evt_handlers=receiver.handlers())
        self.port = self.server.server_address[1]
        self.assembler = Assembler(self.journal, self.tracker.open_series, SETTLE, FALLBACK, MAX_WAIT)

    def send(self, files: list[Path], series_uid: str) -> None:
        """storescu, then wait for the association's release in the journal (the assembler's evidence)."""
        storescu(files, self.port)
        wait_until(lambda: (lambda s: s is not None and s.released)(self.journal.series_row(series_uid)), 20,
                   "the association release in the journal", interval=0.05)
        wait_until(lambda: not self.tracker.open_series(), 20, "the association to end", interval=0.05)

    def tick(self) -> list[int]:
        """The assembler's check once the settle time has passed (journal clock)."""
        return self.assembler.tick(now=self.journal.now() + SETTLE + 1)

    def run_jobs(self) -> list[tuple[str, int, int]]:
        """Every pending job claimed and finished as a worker would (ignored: no model needed here); for each,
        (series, generation, instances it would have read)."""
        ran = []
        while (job := self.journal.claim_job()) is not None:
            ran.append((job.series_uid, job.generation, len(self.journal.instances(job.series_uid))))
            self.journal.finish_job(job, JobState.IGNORED, detail="test: not analysed")
        return ran

    def spooled(self) -> list[Path]:
        return sorted(self.spool.incoming.rglob("*.dcm"))


@pytest.fixture
def listener(tmp_path):
    lst = Listener(tmp_path)
    yield lst
    lst.server.shutdown()


def series(tmp_path: Path, seed: int, n_slices: int = 8) -> tuple[str, list[Path]]:
    """A phantom NCCT series (nothing declared: Philips-styled), its UID and its files in slice order."""
    study = write_study(tmp_path / f"in-{seed}", seed=seed, kind="ncct", vendor="philips", distractors=False, matrix=32,
                        n_slices=n_slices)
    files = sorted(Path(study.out_dir).rglob("*.dcm"))
    return str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID), files


def under_new_series(files: list[Path], out: Path) -> tuple[str, list[Path]]:
    """The same instances (same SOP Instance UIDs) as a PACS sends them after re-splitting: a new series UID."""
    uid = generate_uid()
    out.mkdir(parents=True)
    moved = []
    for f in files:
        ds = pydicom.dcmread(f)
        ds.SeriesInstanceUID = uid
        ds.save_as(out / f.name)
        moved.append(out / f.name)
    return uid, moved


def sop_uids(files: list[Path]) -> set[str]:
    return {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}


def assert_each_instance_once(lst: Listener, series_uids: list[str], n: int) -> None:
    """One spool file per SOP Instance UID, the one its journal row names."""
    rows = [i for uid in series_uids for i in lst.journal.instances(uid)]
    assert len(rows) == n
    assert sorted(lst.spooled()) == sorted(i.path for i in rows)


def test_a_series_sent_again_under_a_new_uid_is_stored_once_and_the_old_one_closed(tmp_path, listener):
    old, files = series(tmp_path, seed=71)
    listener.send(files, old)
    new, moved = under_new_series(files, tmp_path / "moved")
    listener.send(moved, new)

    assert {i.sop_uid for i in listener.journal.instances(new)} == sop_uids(files)
    assert listener.journal.instances(old) == []
    assert_each_instance_once(listener, [old, new], len(files))

    closed = listener.journal.series_row(old)
    assert closed.state is SeriesState.ANALYSED  # nothing left to wait for
    (why,) = listener.journal.audit_entries(action="series.emptied")
    assert why.detail["series_uid"] == old and why.detail["to_series_uid"] == new

    listener.tick()  # no job on zero instances: only the new series is queued
    assert listener.run_jobs() == [(new, 1, len(files))]
    assert listener.journal.reanalyse(old, "test") == ("its images were purged (svdmark purge) or sent again under "
                                                       "another series: send the series again to analyse it")


def test_a_series_split_in_two_after_its_analysis_is_analysed_again_on_what_it_still_holds(tmp_path, listener):
    old, files = series(tmp_path, seed=72)
    listener.send(files, old)
    listener.tick()
    assert listener.run_jobs() == [(old, 1, len(files))]

    keep, split = files[:4], files[4:]
    new, moved = under_new_series(split, tmp_path / "moved")
    listener.send(moved, new)
    assert_each_instance_once(listener, [old, new], len(files))
    assert {i.sop_uid for i in listener.journal.instances(old)} == sop_uids(keep)

    reopened = listener.journal.series_row(old)
    assert (reopened.state, reopened.generation) == (SeriesState.RECEIVING, 2)  # as after a late instance
    listener.tick()
    assert sorted(listener.run_jobs()) == sorted([(old, 2, len(keep)), (new, 1, len(split))])
    assert listener.journal.audit_entries(action="series.emptied") == []


def test_retention_after_a_move_leaves_no_file_of_the_moved_instances(tmp_path, listener):
    old, files = series(tmp_path, seed=73)
    listener.send(files, old)
    listener.tick()
    assert listener.run_jobs() == [(old, 1, len(files))]  # analysed before the PACS re-sent it under a new UID

    new, moved = under_new_series(files, tmp_path / "moved")
    listener.send(moved, new)
    assert listener.journal.series_row(old).state is SeriesState.ANALYSED
    listener.tick()
    assert listener.run_jobs() == [(new, 1, len(files))]

    ran = retention.run(listener.journal, listener.spool, listener.journal.now() + DAY, "test")
    assert [(p.series_uid, p.instances) for p in ran.series] == [(new, len(files))] and ran.failed == {}
    assert listener.spooled() == []  # no orphan under the old series' folder


def test_a_batch_that_moves_an_instance_and_back_displaces_only_the_file_no_row_names(tmp_path, journal_url):
    """The receiver's group commit (one transaction for several associations' rows; recorded series by series):
    the same instance moves from series 7.3 to 7.1 and back to 7.3 in one batch. Only 7.1's file is displaced:
    7.3's is the one the row names at the end."""
    journal, spool = Journal(journal_url), Spool(tmp_path / "spool")
    geometry = SliceGeometry(ipp=(0, 0, 0), iop=(1, 0, 0, 0, 1, 0))

    def row(series_uid: str, digest: str) -> dict:
        path = spool.path_for(spool.incoming, "1.2", series_uid, "9.1")
        return dict(sop_uid="9.1", study_uid="1.2", series_uid=series_uid, sop_class="1.2.840.10008.5.1.4.1.1.2",
                    transfer_syntax="1.2.840.10008.1.2.1", path=path, size=1, digest=digest,
                    modality="CT", geometry=geometry, calling_ae="SCU")

    assert journal.record_instances([row("7.3", "a")]) == ["new"]
    away, back = journal.record_instances([row("7.1", "b"), row("7.3", "c")])
    assert (away, away.displaced) == ("replaced", None)
    assert (back, back.displaced) == ("replaced", spool.path_for(spool.incoming, "1.2", "7.1", "9.1"))
    assert [i.series_uid for i in journal.instances("7.3")] == ["7.3"] and journal.instances("7.1") == []
    assert {s.series_uid: s.state for s in journal.all_series()} == {"7.1": SeriesState.ANALYSED,
                                                                     "7.3": SeriesState.RECEIVING}
    assert [e.detail["series_uid"] for e in journal.audit_entries(action="series.emptied")] == ["7.1", "7.3"]

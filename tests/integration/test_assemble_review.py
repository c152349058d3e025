"""Series completion against what senders do: dcmtk storescu (and a pynetdicom SCU where an association must stay
open while the assembler looks) against the listener started in-process, phantom series from svdmark_phantom,
the assembler ticked at chosen times (journal clock) so that the quiet timers need no waiting."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage
from pydicom.uid import ExplicitVRLittleEndian

from svdmark.assemble import Assembler
from svdmark.config import Config
from svdmark.journal import Journal
from svdmark.receive import AssociationTracker, Receiver, build_ae
from svdmark.spool import Spool
from svdmark_phantom import write_study

from tests import journaldb
from tests.peers import associate, storescu, wait_until

SETTLE, FALLBACK, MAX_WAIT = 2.0, 60.0, 600.0


class Listener:
    def __init__(self, tmp_path: Path):
        cfg = Config(host="127.0.0.1", port=0, data_dir=tmp_path / "data").validate()
        self.journal = Journal(journaldb.url_for(cfg.data_dir))
        self.tracker = AssociationTracker()
        receiver = Receiver(cfg, self.journal, Spool(cfg.spool_dir), self.tracker)
        self.server = build_ae(cfg).start_server(("127.0.0.1", 0), block=False, evt_handlers=receiver.handlers())
        self.port = self.server.server_address[1]
        self.assembler = Assembler(self.journal, self.tracker.open_series, SETTLE, FALLBACK, MAX_WAIT)

    def tick(self, after: float) -> list[int]:
        """The assembler's check ``after`` seconds from now (journal clock)."""
        return self.assembler.tick(now=self.journal.now() + after)

    def jobs(self) -> list[tuple]:
        return [(r["series_uid"], r["generation"], r["completion"], r["completion_warning"])
                for r in reversed(self.journal.jobs())]

    def wait_released(self, series_uid: str) -> None:
        wait_until(lambda: (lambda s: s is not None and s.released)(self.journal.series_row(series_uid)), 20,
                   "the association release in the journal", interval=0.05)

    def wait_closed(self) -> None:
        wait_until(lambda: not self.tracker.open_series(), 20, "the association to end", interval=0.05)


@pytest.fixture
def listener(tmp_path):
    lst = Listener(tmp_path)
    yield lst
    lst.server.shutdown()


def ncct_series(tmp_path: Path, vendor: str, seed: int, n_slices: int = 8) -> list[Path]:
    """The target NCCT series of a phantom study (no distractors), its files in slice order."""
    study = write_study(tmp_path / f"in-{seed}", seed=seed, kind="ncct", vendor=vendor, distractors=False, matrix=32,
                        n_slices=n_slices)
    return sorted(Path(study.out_dir).rglob("*.dcm"))


def uid_of(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID)


def test_one_instance_with_a_malformed_position_does_not_stop_the_assembly_of_every_series(tmp_path, listener):
    """ImagePositionPatient with two values is stored (the listener checks presence, not multiplicity); the
    stack check then raised on the ragged positions, every tick, so no series behind it was ever queued."""
    bad = ncct_series(tmp_path, "philips", seed=61, n_slices=6)
    ds = pydicom.dcmread(bad[2])
    ds.ImagePositionPatient = list(ds.ImagePositionPatient)[:2]
    ds.save_as(bad[2])
    good = ncct_series(tmp_path, "philips", seed=62, n_slices=6)
    storescu(bad, listener.port)
    storescu(good, listener.port)
    listener.wait_released(uid_of(good[0]))
    listener.wait_released(uid_of(bad[0]))
    queued = listener.tick(SETTLE + 1)
    assert len(queued) == 2
    assert {(uid, reason) for uid, _, reason, _ in listener.jobs()} == {
        (uid_of(bad[0]), "association released; not a single stack (slices without position or orientation)"),
        (uid_of(good[0]), "association released and stack geometrically complete (6 slices)"),
    }


@pytest.mark.parametrize("retry_after", [SETTLE + 1, SETTLE + 20])
def test_a_retry_resending_the_received_part_does_not_let_the_timer_complete_an_aborted_series(tmp_path, listener,
                                                                                             caplog, retry_after):
    """The sender dies half-way (no release); soon or minutes later it retries the whole series, first the instances
    svdmark already holds (duplicates: they change nothing in the journal). While that retry is open, the quiet
    timer took the half as the whole ("nothing against it": an association is open), without a warning. (One
    process: the assembler sees every association at once, so a retry after the settle time is told apart.)"""
    files = ncct_series(tmp_path, "philips", seed=63, n_slices=8)
    series_uid = uid_of(files[0])
    half = files[:4]
    storescu(half, listener.port, extra=("--abort",))
    listener.wait_closed()
    assert listener.tick(retry_after) == []  # ended without release: held
    ae = AE(ae_title="STORESCU")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = associate(ae, listener.port)
    assert assoc.is_established
    try:
        for f in half:  # the retry: the part already received comes first
            assert assoc.send_c_store(pydicom.dcmread(f)).Status == 0x0000
        assert listener.tracker.open_series() == {series_uid}
        caplog.set_level(logging.INFO, logger="svdmark.assemble")
        assert listener.tick(FALLBACK + 60) == []  # quiet past the timer, but the evidence says a part is missing
        assert [r.fields["reason"] for r in caplog.records if r.getMessage() == "series_incomplete_waiting"] == [
            "incomplete series: 4 images, number expected unknown (the sending association ended without a normal "
            "release)"]
        for f in files[4:]:
            assert assoc.send_c_store(pydicom.dcmread(f)).Status == 0x0000
    finally:
        assoc.release()
    listener.wait_released(series_uid)
    (job,) = listener.tick(SETTLE + 1)
    assert listener.jobs() == [(series_uid, 1, "association released and stack geometrically complete (8 slices)",
                                None)]
    assert len(listener.journal.instances(series_uid)) == 8


def test_a_single_image_declaring_one_image_in_acquisition_is_not_called_multi_frame(tmp_path, listener):
    """A one-image series (a single topogram) whose Images in Acquisition is 1: the job's reason named a
    multi-frame instance."""
    (f,) = ncct_series(tmp_path, "siemens", seed=64, n_slices=6)[:1]
    ds = pydicom.dcmread(f)
    ds.ImagesInAcquisition = 1
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(f)
    storescu([f], listener.port)
    listener.wait_released(str(ds.SeriesInstanceUID))
    assert len(listener.tick(SETTLE + 1)) == 1
    assert listener.jobs() == [(str(ds.SeriesInstanceUID), 1, "declared count reached (1 image in acquisition)", None)]


def test_two_zone_spacing_is_a_whole_stack(tmp_path, listener):
    """A head CT in two zones, 5 mm through the posterior fossa (10 slices) and 10 mm above (8), no declared count:
    complete at release, with no warning (it had been held for the longest wait as "incomplete series: 18 of 26
    images (gap ...)" and then refused by volume.load as missing slices); the load measures each zone by its own
    spacing."""
    files = ncct_series(tmp_path, "philips", seed=65, n_slices=18)
    z0 = float(pydicom.dcmread(files[0]).ImagePositionPatient[2])
    for f, z in zip(files, [z0 + 5.0 * k for k in range(10)] + [z0 + 45.0 + 10.0 * k for k in range(1, 9)]):
        ds = pydicom.dcmread(f)
        ds.ImagePositionPatient = [*list(ds.ImagePositionPatient)[:2], z]
        ds.SliceLocation = z
        ds.save_as(f)
    storescu(files, listener.port)
    listener.wait_released(uid_of(files[0]))
    assert len(listener.tick(SETTLE + 1)) == 1
    assert listener.jobs()[0][2:] == ("association released and stack geometrically complete (18 slices)", None)
    from svdmark.domain import Series
    from svdmark.volume import load

    first = pydicom.dcmread(files[0])
    vol = load(Series(str(first.StudyInstanceUID), uid_of(files[0]), tuple(pydicom.dcmread(f) for f in files)))
    assert np.allclose(vol.slice_heights_mm[1:9], 5.0) and np.allclose(vol.slice_heights_mm[11:], 10.0)
    assert any("uneven slice spacing (5.00 to 10.00 mm)" in w for w in vol.warnings)


def split_multiframe(path: Path, parts: int) -> list[Path]:
    """One Enhanced MR instance as ``parts`` instances of the same series, each with its share of the frames."""
    ds = pydicom.dcmread(path)
    n, size = int(ds.NumberOfFrames), len(ds.PixelData) // int(ds.NumberOfFrames)
    frames = list(ds.PerFrameFunctionalGroupsSequence)
    out = []
    for k in range(parts):
        lo, hi = k * n // parts, (k + 1) * n // parts
        part = pydicom.dcmread(path)
        part.SOPInstanceUID = part.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
        part.InstanceNumber = k + 1
        part.NumberOfFrames = hi - lo
        part.PerFrameFunctionalGroupsSequence = frames[lo:hi]
        part.PixelData = ds.PixelData[lo * size:hi * size]
        out.append(path.with_name(f"part{k}.dcm"))
        part.save_as(out[-1])
    return out


def test_the_first_of_two_multiframe_instances_is_not_analysed_alone(tmp_path, listener):
    """An enhanced series in two multi-frame instances (frames split, or magnitude and phase), the second a large
    object still in transfer after the settle time: the first was queued alone, and the second opened
    generation 2; now a lone multi-frame object waits while its association is open."""
    study = write_study(tmp_path / "in", seed=66, kind="swi", vendor="philips", matrix=32, n_slices=8, enhanced=True,
                        distractors=False)
    (whole,) = sorted(Path(study.out_dir).rglob("*.dcm"))
    first, second = split_multiframe(whole, 2)
    ae = AE(ae_title="STORESCU")
    ae.add_requested_context(str(pydicom.dcmread(first).SOPClassUID), ExplicitVRLittleEndian)
    assoc = associate(ae, listener.port)
    assert assoc.is_established
    try:
        assert assoc.send_c_store(pydicom.dcmread(first)).Status == 0x0000
        queued_alone = listener.tick(SETTLE + 1)  # the second instance is still on its way
        assert assoc.send_c_store(pydicom.dcmread(second)).Status == 0x0000
    finally:
        assoc.release()
    listener.wait_released(uid_of(first))
    assert queued_alone == []
    assert len(listener.tick(SETTLE + 1)) == 1
    assert [(gen, reason) for _, gen, reason, _ in listener.jobs()] == [
        (1, "association released; not a single stack (only 2 slice(s))")]

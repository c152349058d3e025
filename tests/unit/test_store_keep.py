"""store.keep: new, duplicate and replaced instances; the journal is asked for a digest only where the file exists."""
from __future__ import annotations

from svdmark.geometry import SliceGeometry
from svdmark.journal import Journal
from svdmark.receive.inspect import CT_IMAGE, Inspected
from svdmark.receive.store import digest, keep
from svdmark.spool import Spool

ITEM = Inspected(sop_uid="8.1", sop_class=CT_IMAGE, study_uid="1.2", series_uid="8", modality="CT",
                 geometry=SliceGeometry(ipp=(0, 0, 0), iop=(1, 0, 0, 0, 1, 0)))


class _CountingLookups(Journal):
    def __init__(self, url):
        super().__init__(url)
        self.lookups = 0

    def instance_digest(self, sop_uid):
        self.lookups += 1
        return super().instance_digest(sop_uid)


def _keep(journal, spool, data: bytes) -> str:
    return keep(journal, spool, ITEM, data, transfer_syntax="1.2.840.10008.1.2.1", calling_ae="SCU")


def test_outcomes_and_the_lookups_they_need(tmp_path, journal_url):
    journal, spool = _CountingLookups(journal_url), Spool(tmp_path / "spool")
    path = spool.path_for(spool.incoming, "1.2", "8", "8.1")
    assert _keep(journal, spool, b"DICM-a") == "new"
    assert journal.lookups == 0  # no file yet: nothing journalled to compare with
    assert path.read_bytes() == b"DICM-a"
    assert _keep(journal, spool, b"DICM-a") == "duplicate"
    assert journal.lookups == 1
    assert _keep(journal, spool, b"DICM-b") == "replaced"
    assert path.read_bytes() == b"DICM-b" and journal.instance_digest("8.1") == digest(b"DICM-b")


def test_a_journalled_instance_whose_file_was_lost_is_a_duplicate_with_its_file_back(tmp_path, journal_url):
    journal, spool = Journal(journal_url), Spool(tmp_path / "spool")
    assert _keep(journal, spool, b"DICM-a") == "new"
    path = spool.path_for(spool.incoming, "1.2", "8", "8.1")
    path.unlink()  # lost outside svdmark
    generation = journal.series_row("8").generation
    assert _keep(journal, spool, b"DICM-a") == "duplicate"
    assert path.read_bytes() == b"DICM-a" and journal.series_row("8").generation == generation


def test_two_versions_sent_at_once_leave_the_row_on_its_own_file(tmp_path, journal_url):
    """Two associations send the instance with other bytes at once: B's file must not be placed while A's row is
    still to be committed (the row would carry A's digest, size and geometry on B's file)."""
    import threading

    a_placed, b_placed = threading.Event(), threading.Event()

    class Stalled(Journal):  # A's row is committed only after B placed its file, if B can
        def record_instance(self, **kw):
            if kw["digest"] == digest(b"DICM-a"):
                a_placed.set()
                b_placed.wait(1.0)
            return super().record_instance(**kw)

    class Watched(Spool):
        def place(self, *args, **kwargs):
            path = super().place(*args, **kwargs)
            if args[4] == b"DICM-b":
                b_placed.set()
            return path

    journal, spool = Stalled(journal_url), Watched(tmp_path / "spool")
    a = threading.Thread(target=_keep, args=(journal, spool, b"DICM-a"))
    a.start()
    assert a_placed.wait(5.0)
    _keep(journal, spool, b"DICM-b")
    a.join(5.0)
    path = spool.path_for(spool.incoming, "1.2", "8", "8.1")
    assert journal.instance_digest("8.1") == digest(path.read_bytes())

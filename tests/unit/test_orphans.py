"""The spool's orphan sweep (retention.remove_orphans): what nothing refers to goes once its inode is a day old; what
the journal names, anything written or linked since, what is not the spool's, stay; a file that cannot go is reported
and the sweep goes on.

The age is the inode's change time, which a test cannot set back: "a day later" is the sweep's ``now``."""
from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import pytest

from svdmark import retention
from svdmark.geometry import SliceGeometry
from svdmark.journal import Journal
from svdmark.receive.inspect import Inspected
from svdmark.receive.store import keep
from svdmark.spool import Spool

LATER = retention.DAY_SECONDS + 60  # seconds: "a day later", as the sweep's now
GEOM = SliceGeometry(ipp=(0, 0, 0), iop=(1, 0, 0, 0, 1, 0))


@pytest.fixture
def spooled(tmp_path):
    journal = Journal(tmp_path / "journal.sqlite")
    spool = Spool(tmp_path / "spool")
    yield journal, spool
    journal.close()


def _later() -> float:
    return time.time() + LATER


def _record(journal, spool, sop_uid, data=b"DICM"):
    path = spool.write(spool.incoming, "1.2", "1.2.3", sop_uid, data)
    journal.record_instance(sop_uid=sop_uid, study_uid="1.2", series_uid="1.2.3", sop_class="1.2.840.10008.5.1.4.1.1.2",
                            transfer_syntax="1.2.840.10008.1.2.1", path=path, size=4, digest="d" + sop_uid,
                            modality="CT", geometry=GEOM, calling_ae=None)
    return path


def test_only_files_that_nothing_refers_to_go_and_only_once_a_day_old(spooled):
    journal, spool = spooled
    known = _record(journal, spool, "1.2.3.1")
    moved = spool.write(spool.incoming, "1.2", "1.2.9", "1.2.3.1", b"DICM")  # a known UID: never removed
    unjournalled = spool.write(spool.incoming, "1.2", "1.2.3", "1.2.3.2", b"DICM")
    result = spool.write(spool.results, "1.2", "1.2.4", "1.2.4.1", b"DICM")
    partial = spool.incoming / "1.2" / "1.2.3" / ".tmp-abc.part"
    partial.write_bytes(b"DI")
    foreign = spool.incoming / "1.2" / "README"
    foreign.write_text("not the spool's")
    link = spool.incoming / "1.2" / "1.2.3" / "1.2.3.5.dcm"
    link.symlink_to(unjournalled)
    assert retention.remove_orphans(journal, spool).removed == []  # all written just now
    listed = retention.remove_orphans(journal, spool, now=_later(), dry_run=True).removed
    assert sorted(listed) == sorted([unjournalled, result, partial])
    assert all(p.exists() for p in listed)  # a dry run removes nothing
    swept = retention.remove_orphans(journal, spool, now=_later())
    assert sorted(swept.removed) == sorted(listed) and swept.failed == {}
    assert not any(p.exists() for p in listed)
    assert all(p.exists() for p in (known, moved, foreign)) and link.is_symlink()


def test_journal_lookups_refuse_other_tables(spooled):
    journal, _ = spooled
    assert journal.known_objects("results", ["1.2.5.1"]) == set() and journal.known_objects("results", []) == set()
    with pytest.raises(ValueError, match="no spool objects"):
        journal.known_objects("jobs", ["1"])


def test_many_files_are_looked_up_in_batches(spooled):
    journal, spool = spooled
    kept = [_record(journal, spool, f"1.2.3.{i}") for i in range(1, 1200, 2)]
    gone = [spool.write(spool.incoming, "1.2", "1.2.3", f"1.2.3.{i}", b"DICM") for i in range(2, 1201, 2)]
    assert sorted(retention.remove_orphans(journal, spool, now=_later()).removed) == sorted(gone)
    assert all(p.exists() for p in kept)


def test_an_orphan_sent_again_while_the_sweep_runs_stays(spooled):
    """The sender of an instance that was never journalled sends it again: a new file (a new inode) at the same
    path, and its row. The sweep judged the old file, and must not remove the new one."""
    journal, spool = spooled
    orphan = spool.write(spool.incoming, "1.2", "1.2.3", "1.2.3.1", b"DICM")
    real = journal.known_objects

    def known_objects(table, uids):
        found = real(table, uids)
        if table == "instances":  # the resend lands after the lookup, before the removal
            _record(journal, spool, "1.2.3.1", b"DICM-again")
        return found

    journal.known_objects = known_objects
    assert retention.remove_orphans(journal, spool, now=_later()).removed == []
    assert orphan.read_bytes() == b"DICM-again"


def test_an_archive_file_linked_in_by_enqueue_is_new_however_old_its_contents(spooled, tmp_path):
    """`svdmark analyze --enqueue` hard-links archive files (years old) into the spool before their rows commit."""
    journal, spool = spooled
    archive = tmp_path / "archive" / "img.dcm"
    archive.parent.mkdir()
    archive.write_bytes(b"DICM")
    then = time.time() - 400 * retention.DAY_SECONDS
    os.utime(archive, (then, then))
    item = Inspected(sop_uid="1.2.3.7", sop_class="1.2.840.10008.5.1.4.1.1.2", study_uid="1.2", series_uid="1.2.3",
                     modality="CT", geometry=GEOM)
    real = journal.record_instance
    swept = []

    def record_instance(**kw):  # the assembly leader's sweep runs between the link and the commit
        swept.append(retention.remove_orphans(journal, spool).removed)
        return real(**kw)

    journal.record_instance = record_instance
    keep(journal, spool, item, b"DICM", transfer_syntax="1.2.840.10008.1.2.1", calling_ae=None, source=archive)
    path = spool.path_for(spool.incoming, "1.2", "1.2.3", "1.2.3.7")
    assert swept == [[]] and path.exists() and os.path.samefile(path, archive)


def test_a_file_that_cannot_be_removed_is_reported_and_the_sweep_goes_on(spooled, monkeypatch):
    journal, spool = spooled
    bad = spool.write(spool.incoming, "1.2", "1.2.3", "1.2.3.1", b"DICM")
    good = spool.write(spool.incoming, "1.2", "1.2.3", "1.2.3.2", b"DICM")
    real_rename = os.rename

    def rename(src, dst, *a, **k):
        if Path(src) == bad:
            raise OSError(errno.EIO, "Input/output error", str(src))
        return real_rename(src, dst, *a, **k)

    monkeypatch.setattr(os, "rename", rename)
    swept = retention.remove_orphans(journal, spool, now=_later())
    assert swept.removed == [good] and not good.exists()
    assert swept.failed == {bad: "OSError: Input/output error"} and bad.exists()


def test_a_file_put_in_place_between_the_look_and_the_removal_stays(spooled, monkeypatch):
    """The judged orphan is renamed aside before it goes: a resend renamed into place just before that is what
    gets renamed aside, and it is linked back, never removed."""
    journal, spool = spooled
    orphan = spool.write(spool.incoming, "1.2", "1.2.3", "1.2.3.1", b"DICM")
    real_rename = os.rename

    def rename(src, dst, *a, **k):
        if Path(src) == orphan and ".orphan-" in str(dst):  # the resend lands in the gap
            spool.write(spool.incoming, "1.2", "1.2.3", "1.2.3.1", b"DICM-again")
        return real_rename(src, dst, *a, **k)

    monkeypatch.setattr(os, "rename", rename)
    assert retention.remove_orphans(journal, spool, now=_later()).removed == []
    assert orphan.read_bytes() == b"DICM-again"
    assert [p.name for p in orphan.parent.iterdir()] == [orphan.name]  # nothing left aside

"""The spool's orphan sweep (retention.remove_orphans): what nothing refers to goes once it is a day old; what the
journal names, anything recent, and what is not the spool's stay."""
from __future__ import annotations

import os
import time

import pytest

from svdmark import retention
from svdmark.geometry import SliceGeometry
from svdmark.journal import Journal
from svdmark.spool import Spool

DAY = retention.DAY_SECONDS


@pytest.fixture
def spooled(tmp_path):
    journal = Journal(tmp_path / "journal.sqlite")
    spool = Spool(tmp_path / "spool")
    yield journal, spool
    journal.close()


def _aged(path, seconds=2 * DAY):
    then = time.time() - seconds
    os.utime(path, (then, then))
    return path


def _record(journal, spool, sop_uid):
    path = spool.write(spool.incoming, "1.2", "1.2.3", sop_uid, b"DICM")
    journal.record_instance(sop_uid=sop_uid, study_uid="1.2", series_uid="1.2.3", sop_class="1.2.840.10008.5.1.4.1.1.2",
                            transfer_syntax="1.2.840.10008.1.2.1", path=path, size=4, digest="d" + sop_uid,
                            modality="CT", geometry=SliceGeometry(ipp=(0, 0, 0), iop=(1, 0, 0, 0, 1, 0)),
                            calling_ae=None)
    return path


def test_only_old_files_that_nothing_refers_to_go(spooled):
    journal, spool = spooled
    known = _aged(_record(journal, spool, "1.2.3.1"))
    moved = _aged(spool.write(spool.incoming, "1.2", "1.2.9", "1.2.3.1", b"DICM"))  # a known UID: never removed
    unjournalled = _aged(spool.write(spool.incoming, "1.2", "1.2.3", "1.2.3.2", b"DICM"))
    fresh = spool.write(spool.incoming, "1.2", "1.2.3", "1.2.3.3", b"DICM")
    result = _aged(spool.write(spool.results, "1.2", "1.2.4", "1.2.4.1", b"DICM"))
    partial = spool.incoming / "1.2" / "1.2.3" / ".tmp-abc.part"
    partial.write_bytes(b"DI")
    _aged(partial)
    foreign = spool.incoming / "1.2" / "README"
    foreign.write_text("not the spool's")
    _aged(foreign)
    listed = retention.remove_orphans(journal, spool, dry_run=True)
    assert sorted(listed) == sorted([unjournalled, result, partial])
    assert all(p.exists() for p in listed)  # a dry run removes nothing
    assert sorted(retention.remove_orphans(journal, spool)) == sorted(listed)
    assert not any(p.exists() for p in listed)
    assert all(p.exists() for p in (known, moved, fresh, foreign))


def test_a_result_the_journal_names_stays(spooled, tmp_path):
    journal, spool = spooled
    path = _aged(spool.write(spool.results, "1.2", "1.2.5", "1.2.5.1", b"DICM"))
    assert retention.remove_orphans(journal, spool, dry_run=True) == [path]
    assert journal.known_objects("results", ["1.2.5.1"]) == set()
    with pytest.raises(ValueError, match="no spool objects"):
        journal.known_objects("jobs", ["1"])


def test_many_files_are_looked_up_in_batches(spooled):
    journal, spool = spooled
    kept = [_aged(_record(journal, spool, f"1.2.3.{i}")) for i in range(1, 1200, 2)]
    gone = [_aged(spool.write(spool.incoming, "1.2", "1.2.3", f"1.2.3.{i}", b"DICM")) for i in range(2, 1201, 2)]
    assert sorted(retention.remove_orphans(journal, spool)) == sorted(gone)
    assert all(p.exists() for p in kept)

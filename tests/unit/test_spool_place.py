"""The spool taking the listener's received file: linked where it can be, copied where it cannot, durable either way."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from svdmark import spool as spool_mod
from svdmark.spool import Spool


@pytest.fixture
def synced(monkeypatch) -> list[str]:
    """The paths the spool fsyncs, in order."""
    paths: list[str] = []
    real_fsync = os.fsync
    monkeypatch.setattr(spool_mod.os, "fsync", lambda fd: paths.append(os.readlink(f"/proc/self/fd/{fd}"))
                        or real_fsync(fd))
    return paths


def test_a_received_file_on_the_spools_filesystem_is_fsynced_and_linked(tmp_path, synced):
    spool = Spool(tmp_path / "spool")
    received = tmp_path / "received.dcm"
    received.write_bytes(b"DICM-bytes")
    path = spool.place(spool.incoming, "1.2", "1.2.3", "1.2.3.4", b"DICM-bytes", source=received)
    assert path.read_bytes() == b"DICM-bytes" and os.path.samefile(path, received)  # linked, not copied
    assert str(received) in synced  # its data on disk before the name in the spool is
    # the new study and series directories, each in its parent, and the series directory with the file
    assert synced[-1] == str(path.parent)
    assert {str(spool.incoming), str(spool.incoming / "1.2"), str(path.parent)} <= set(synced)
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp-")]


def test_a_received_file_on_another_filesystem_is_copied(tmp_path):
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("no second filesystem to receive from")
    spool = Spool(tmp_path / "spool")
    other = shm / f"svdmark-test-{os.getpid()}.dcm"
    other.write_bytes(b"other")
    try:
        path = spool.place(spool.incoming, "1.2", "1.2.3", "1.2.3.5", b"other", source=other)
        assert path.read_bytes() == b"other" and not os.path.samefile(path, other)
    finally:
        other.unlink()


def test_a_received_file_whose_fsync_fails_is_not_linked_its_bytes_are_written(tmp_path, monkeypatch):
    """Its pages may be lost while a second fsync reports success (Linux reports a writeback error once)."""
    spool = Spool(tmp_path / "spool")
    received = tmp_path / "received.dcm"
    received.write_bytes(b"DICM-bytes")
    real_fsync = os.fsync

    def failing_for_the_received_file(fd):
        if os.readlink(f"/proc/self/fd/{fd}") == str(received):
            raise OSError(5, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(spool_mod.os, "fsync", failing_for_the_received_file)
    path = spool.place(spool.incoming, "1.2", "1.2.3", "1.2.3.4", b"DICM-bytes", source=received)
    assert path.read_bytes() == b"DICM-bytes" and not os.path.samefile(path, received)  # written, not linked


def test_a_failed_directory_fsync_after_the_link_is_reported_not_retried(tmp_path, monkeypatch):
    """A second fsync could report success after the first reported the error: the spool fails instead."""
    spool = Spool(tmp_path / "spool")
    received = tmp_path / "received.dcm"
    received.write_bytes(b"DICM-bytes")
    spool.place(spool.incoming, "1.2", "1.2.3", "1.2.3.3", b"x", source=tmp_path / "received.dcm")  # dirs exist

    def failing(path):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(spool_mod, "_fsync_dir", failing)
    with pytest.raises(OSError):
        spool.place(spool.incoming, "1.2", "1.2.3", "1.2.3.4", b"DICM-bytes", source=received)


def test_an_instance_sent_again_with_other_bytes_replaces_the_linked_file(tmp_path):
    spool = Spool(tmp_path / "spool")
    first, second = tmp_path / "first.dcm", tmp_path / "second.dcm"
    first.write_bytes(b"one")
    second.write_bytes(b"two")
    path = spool.place(spool.incoming, "1.2", "1.2.3", "1.2.3.4", b"one", source=first)
    again = spool.place(spool.incoming, "1.2", "1.2.3", "1.2.3.4", b"two", source=second)
    assert again == path and path.read_bytes() == b"two" and os.path.samefile(path, second)
    assert first.read_bytes() == b"one"  # the first received file untouched
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp-")]


def test_the_received_file_is_read_and_left_for_the_spool_to_sync(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from svdmark.receive import scp

    received = tmp_path / "received.dcm"
    received.write_bytes(b"\0" * 128 + b"DICM" + b"x" * 70_000)
    ev = SimpleNamespace(dataset_path=str(received))
    monkeypatch.setattr(scp.os, "fsync", lambda fd: pytest.fail("fsynced before inspection"))
    assert scp._received_bytes(ev, 1 << 20) == (received.read_bytes(), received)
    with pytest.raises(scp.Rejected):
        scp._received_bytes(ev, 1000)  # over the cap: refused from the size, before reading

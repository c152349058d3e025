"""The spool taking the listener's received file: linked where it can be, copied where it cannot, durable either way."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from svdmark import spool as spool_mod
from svdmark.spool import Spool


def test_a_received_file_on_the_spools_filesystem_is_fsynced_and_linked(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(spool_mod.os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}"))
                        or real_fsync(fd))
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

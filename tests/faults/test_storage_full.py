"""A full disk under `svdmark serve`, on real (small tmpfs) filesystems: the spool's, then the journal's.

Each time: 0xA700 (out of resources) to the sender, nothing left behind in the spool, one log line
when writes start failing and one when they succeed again; the resend then succeeds. Needs to
mount tmpfs (root, or a user namespace that allows it); skipped otherwise.
"""
from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from tests.peers import Svdmark, associate
from tests.integration.test_tls import tiny_ct


def _mount(path: Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({r.stderr.strip() or r.returncode}); needs root")


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _fill(path: Path) -> Path:
    """Write a filler file until the filesystem under ``path`` is full (unbuffered, down to 512 bytes)."""
    filler = path / "filler.bin"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (65536, 4096, 512):
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)
    return filler


def _store(port: int, path: Path) -> int:
    from pynetdicom import AE

    ae = AE(ae_title="STORESCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = associate(ae, port)
    assert assoc.is_established
    try:
        return int(assoc.send_c_store(pydicom.dcmread(path)).Status)
    finally:
        assoc.release()


@pytest.fixture
def small_disks(tmp_path):
    data = tmp_path / "data"
    _mount(data, "2m")  # the journal's filesystem
    spool = data / "spool"
    try:
        _mount(spool, "8m")  # the spool's
    except BaseException:
        _umount(data)
        raise
    yield data, spool
    _umount(spool)
    _umount(data)


@pytest.mark.embedded_journal  # the SQLite journal fills the data dir
def test_full_spool_then_full_journal(small_disks, tmp_path):
    data, spool = small_disks
    svc = Svdmark(data, [], extra=("--settle-seconds", "1", "--fallback-seconds", "600")).start()
    try:
        first, second = tiny_ct(tmp_path / "ct", 2, size=256)  # 128 KiB of pixels each
        sop = lambda p: str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)  # noqa: E731

        # 1. the spool's disk is full
        filler = _fill(spool)
        assert _store(svc.port, first) == 0xA700
        assert not [p for p in spool.rglob("*") if p.is_file() and p != filler], "spool debris after ENOSPC"
        filler.unlink()
        assert _store(svc.port, first) == 0x0000
        assert list(spool.rglob(f"{sop(first)}.dcm"))

        # 2. the journal's disk is full, the spool's is not
        filler = _fill(data)
        assert _store(svc.port, second) == 0xA700
        assert _store(svc.port, second) == 0xA700  # still failing: no second log line
        assert not list(spool.rglob(f"{sop(second)}.dcm")), "orphan spool file without a journal row"
        filler.unlink()
        assert _store(svc.port, second) == 0x0000
        assert list(spool.rglob(f"{sop(second)}.dcm"))
        r = svc.cli("jobs", "list", "--json")
        assert r.returncode == 0, r.stderr
    finally:
        svc.stop()
    log = svc.log_text().splitlines()
    changes = [ln for ln in log if "storage_unavailable" in ln or "storage_available" in ln]
    assert len(changes) == 4, "\n".join(changes)
    assert 'where="spool"' in changes[0] and "ENOSPC" in changes[0] and "storage_unavailable" in changes[0]
    assert "storage_available" in changes[1] and "refused_while_unavailable=1" in changes[1]
    assert 'where="journal"' in changes[2] and "storage_unavailable" in changes[2]
    assert "storage_available" in changes[3] and "refused_while_unavailable=2" in changes[3]
    assert not any("0xC211" in ln or "Traceback" in ln for ln in log)

"""The received data set's temporary file holds exactly what pynetdicom writes, where tempfile would put it."""
from __future__ import annotations

import os
import stat
import tempfile

import pytest

from svdmark.receive import datasetfile


def _pynetdicom_writes(f, pieces) -> None:
    """The calls pynetdicom's decode_msg makes: preamble, 'DICM', File Meta, then each fragment + file.flush()."""
    f.write(b"\x00" * 128)
    f.write(b"DICM")
    f.write(b"\x02\x00" * 100)
    for piece in pieces:
        f.write(piece)
        f.file.flush()


@pytest.mark.parametrize("pieces", [
    [b"x" * 131_060, memoryview(b"y" * 200_000)[1:], b"z" * 1586],  # large fragments, a view, a small tail
    [b"a" * 10],  # a tiny data set
    [],  # none (a zero-length data set)
])
def test_same_bytes_as_named_temporary_file(pieces, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    ours = datasetfile.named_temporary_file(delete=False, mode="wb", suffix=".dcm")
    theirs = tempfile.NamedTemporaryFile(delete=False, mode="wb", suffix=".dcm")
    for f in (ours, theirs):
        _pynetdicom_writes(f, pieces)
    # the data set is on file before close: the handler reads it while pynetdicom still holds it open
    assert open(ours.name, "rb").read() == open(theirs.name, "rb").read()
    for f in (ours, theirs):
        f.close()
    assert open(ours.name, "rb").read() == open(theirs.name, "rb").read()
    assert os.path.dirname(ours.name) == str(tmp_path) and ours.name.endswith(".dcm")
    assert stat.S_IMODE(os.stat(ours.name).st_mode) == 0o600


def test_names_are_never_reused(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    taken = datasetfile.named_temporary_file(delete=False, mode="wb", suffix=".dcm")
    taken.close()
    monkeypatch.setattr(datasetfile, "_counter", iter([int(taken.name.rsplit("-", 1)[1][:-4]), 10**9]))
    again = datasetfile.named_temporary_file(delete=False, mode="wb", suffix=".dcm")  # first name exists: next
    again.close()
    assert again.name != taken.name and again.name.endswith("-1000000000.dcm")


def test_any_other_call_is_the_standard_librarys():
    with datasetfile.named_temporary_file() as f:  # delete=True, mode w+b
        assert not isinstance(f, datasetfile.DatasetFile)
        f.write(b"abc")


def test_a_file_dropped_unclosed_closes_its_descriptor(tmp_path, monkeypatch):
    """pynetdicom drops the file of an aborted transfer without closing it."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    f = datasetfile.named_temporary_file(delete=False, mode="wb", suffix=".dcm")
    f.write(b"\x00" * 10_000)
    fd, name = f.fd, f.name
    assert os.readlink(f"/proc/self/fd/{fd}") == name
    del f
    assert not os.path.exists(f"/proc/self/fd/{fd}") or os.readlink(f"/proc/self/fd/{fd}") != name


def test_closing_starts_the_files_write_back(tmp_path, monkeypatch):
    """The spool fsyncs the file later (Spool.place); its write-out starts when pynetdicom closes it."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    started = []
    real = datasetfile.start_writeback
    monkeypatch.setattr(datasetfile, "start_writeback",
                        lambda fd: started.append((os.readlink(f"/proc/self/fd/{fd}"), os.fstat(fd).st_size))
                        or real(fd))
    f = datasetfile.named_temporary_file(delete=False, mode="wb", suffix=".dcm")
    _pynetdicom_writes(f, [b"p" * 300_000])
    f.close()
    assert started == [(f.name, 128 + 4 + 200 + 300_000)]  # every byte written, the file still open
    assert open(f.name, "rb").read()[-300_000:] == b"p" * 300_000


def test_the_write_back_call_is_accepted_by_the_kernel(tmp_path):
    if datasetfile._sync_file_range is None:
        pytest.skip("no sync_file_range in this C library")
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"x" * 100_000)
        assert datasetfile._sync_file_range(fd, 0, 0, datasetfile._SYNC_FILE_RANGE_WRITE) == 0  # not EINVAL/EBADF
    finally:
        os.close(fd)


def test_without_the_call_closing_still_works(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(datasetfile, "_sync_file_range", None)
    f = datasetfile.named_temporary_file(delete=False, mode="wb", suffix=".dcm")
    _pynetdicom_writes(f, [b"q" * 5000])
    f.close()
    assert f.fd == -1 and os.path.getsize(f.name) == 128 + 4 + 200 + 5000

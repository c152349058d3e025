"""The temporary file pynetdicom receives each C-STORE data set into, with one syscall where it took six.

pynetdicom 3.0 (``STORE_RECV_CHUNKED_DATASET``) opens ``tempfile.NamedTemporaryFile(delete=False, mode="wb",
suffix=".dcm")`` per instance: ``getpid``, ``open``, two ``ioctl``, ``fstat`` and ``lseek`` before the first
byte, and the buffered writer sends the 132-byte preamble and the File Meta in a write of their own. Under
several associations each syscall from Python is a hand-over of the GIL (bench/README.md). It uses only the
file's ``name``, ``write``, ``file.flush`` and ``close`` (``dimse_messages.DIMSEMessage.decode_msg``,
``service_class.StorageServiceClass.SCP``, which closes and unlinks it after the handler has run), so
:func:`named_temporary_file` gives it :class:`DatasetFile`: one ``open`` (``O_EXCL``, mode 0600, in
``tempfile.gettempdir()`` as before: ``TMPDIR`` decides, which is how the spool can hard-link it), small
writes held until the next large one and sent with it in one ``writev``. Any other use of
``NamedTemporaryFile`` goes to the standard library's.

On close the file's write-back to disk is started (Linux ``sync_file_range(SYNC_FILE_RANGE_WRITE)``, which
Python's ``os`` does not offer: called through ``ctypes``, a hint that is skipped where it is missing or
fails): the spool fsyncs the file before its journal row, after inspection and the duplicate check, and
then mostly finds the pages written (bench/README.md, fifth session: 1.05x in 4 paired runs alone; no gain
measurable in 12 paired runs together with that session's other changes).

A data set must keep arriving at :data:`MIN_RATE` on average once it has taken :data:`GRACE_SECONDS` (the listener
sets the network timeout): pynetdicom's network timeout restarts with every PDU, so a peer that sends a few bytes
now and then held its association, and a slot of the listener's few, for as long as it liked; enough of them
locked every scanner out. A slower data set is refused by an error from :meth:`DatasetFile.write`, which ends the
association with an A-ABORT (its partial file is removed, as for any aborted transfer).
"""
from __future__ import annotations

import ctypes
import itertools
import os
import secrets
import tempfile
import time

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
_SMALL = 4096  # bytes: a write below this waits for the next one (the preamble, 'DICM', the File Meta)
_counter = itertools.count()
_token = secrets.token_hex(6)
_SYNC_FILE_RANGE_WRITE = 2  # <linux/fs.h>: start write-out of the range's dirty pages, do not wait
MIN_RATE = 16_384  # bytes per second on average, once GRACE_SECONDS have passed (a 128 kbit/s line)
GRACE_SECONDS = 60.0  # the listener sets its network timeout (receive.scp.build_ae)


class DatasetTooSlow(OSError):
    """A data set that arrives more slowly than :data:`MIN_RATE` (module doc)."""


def _start_writeback_function():
    try:
        function = ctypes.CDLL(None).sync_file_range
    except Exception:  # not Linux (glibc or musl): no such function, or no C library to load this way
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_sync_file_range = _start_writeback_function()


def start_writeback(fd: int) -> None:
    """Start writing a file's dirty pages to disk without waiting (module doc); a hint, never an error."""
    if _sync_file_range is not None:
        _sync_file_range(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)  # ctypes releases the GIL during the call


def _new_token() -> None:
    global _token
    _token = secrets.token_hex(6)


os.register_at_fork(after_in_child=_new_token)  # a forked child never reuses its parent's names


class DatasetFile:
    """An unbuffered file that gathers small writes (module doc); ``file`` is itself, for ``file.flush()``."""

    __slots__ = ("name", "fd", "held", "opened", "written")

    def __init__(self, name: str, fd: int):
        self.name, self.fd, self.held = name, fd, []
        self.opened, self.written = time.monotonic(), 0

    @property
    def file(self) -> "DatasetFile":
        return self

    def write(self, data) -> int:
        n = len(data)
        self.written += n
        elapsed = time.monotonic() - self.opened
        if elapsed > GRACE_SECONDS and self.written < MIN_RATE * elapsed:
            self._discard()  # the abort that follows does not find this file: the partial data set goes here
            raise DatasetTooSlow(f"the data set arrived at {self.written / elapsed:.0f} bytes/s after {elapsed:.0f} s "
                                 f"(at least {MIN_RATE} bytes/s needed)")
        if n < _SMALL:
            self.held.append(bytes(data))
        else:
            self._send([*self.held, data])
            self.held = []
        return n

    def flush(self) -> None:
        if self.held:
            self._send(self.held)
            self.held = []

    def _send(self, parts: list) -> None:
        total = sum(len(p) for p in parts)
        done = os.writev(self.fd, parts)
        if done < total:  # a short write (rare on a regular file): the rest one buffer at a time
            rest = memoryview(b"".join(bytes(p) for p in parts))[done:]
            while rest:
                rest = rest[os.write(self.fd, rest):]

    def close(self) -> None:
        if self.fd >= 0:
            try:
                self.flush()
                start_writeback(self.fd)
            finally:
                os.close(self.fd)
                self.fd = -1

    def _discard(self) -> None:
        self.held = []
        self._drop_fd()
        try:
            os.unlink(self.name)
        except OSError:
            pass

    def __del__(self) -> None:
        # pynetdicom closes the file only once the request is served: an aborted or dropped transfer just drops it
        # (NamedTemporaryFile's file object closed itself then too)
        self._drop_fd()

    def _drop_fd(self) -> None:
        if self.fd >= 0:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = -1

    def __enter__(self) -> "DatasetFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def named_temporary_file(*args, **kwargs):
    """``tempfile.NamedTemporaryFile`` as ``pynetdicom.dimse_messages`` calls it: a :class:`DatasetFile` for
    its one call (``delete=False, mode="wb", suffix=".dcm"``), the standard library's for any other."""
    if args or set(kwargs) - {"delete", "mode", "suffix"} or kwargs.get("delete", True) or \
            kwargs.get("mode", "w+b") != "wb":
        return tempfile.NamedTemporaryFile(*args, **kwargs)
    directory, suffix = tempfile.gettempdir(), kwargs.get("suffix") or ""
    while True:
        name = os.path.join(directory, f"svdmark-rx-{_token}-{next(_counter)}{suffix}")
        try:
            return DatasetFile(name, os.open(name, _FLAGS, 0o600))
        except FileExistsError:  # left by a process that had this token (vanishingly unlikely): the next name
            continue

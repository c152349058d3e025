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
"""
from __future__ import annotations

import ctypes
import itertools
import os
import secrets
import tempfile

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
_SMALL = 4096  # bytes: a write below this waits for the next one (the preamble, 'DICM', the File Meta)
_counter = itertools.count()
_token = secrets.token_hex(6)
_SYNC_FILE_RANGE_WRITE = 2  # <linux/fs.h>: start write-out of the range's dirty pages, do not wait


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

    __slots__ = ("name", "fd", "held")

    def __init__(self, name: str, fd: int):
        self.name, self.fd, self.held = name, fd, []

    @property
    def file(self) -> "DatasetFile":
        return self

    def write(self, data) -> int:
        n = len(data)
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

    def __del__(self) -> None:
        # pynetdicom closes the file only once the request is served: an aborted or dropped transfer just drops it
        # (NamedTemporaryFile's file object closed itself then too)
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

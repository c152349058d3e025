"""pynetdicom's per-message costs on the C-STORE path, cut where the result is the same.

For every instance received, pynetdicom 3.0 builds two pydicom datasets only to encode them (the File Meta
Information ahead of the dataset in its temporary file, ``STORE_RECV_CHUNKED_DATASET``, and the C-STORE-RSP
command set, encoded twice for its group length), reads the PDUs 4 KiB per syscall, and has two threads per
association poll at fixed intervals. Cutting these took the receiver's CPU per 512x512 CT instance from
4.1 to about 2.7 ms at one association (bench/README.md). :func:`install` replaces:

* the File Meta: ``create_file_meta`` / ``write_file_meta_info`` as ``pynetdicom.dimse_messages`` calls
  them (that module's names only) become :func:`file_meta_bytes`, the same bytes;
* the C-STORE-RSP: ``DIMSEServiceProvider.send_msg`` encodes a plain response (status, message ID, the
  two UIDs; no error comment or offending element) with :func:`store_rsp_command`, the same bytes, when
  nothing is bound to ``EVT_DIMSE_SENT`` (which would want pynetdicom's message object);
  everything else goes to pynetdicom's own ``send_msg``;
* the reads and the PDUs (:mod:`.pdata`): pynetdicom reads each PDU from its socket 4 KiB at a time (a
  syscall, and a release and re-take of the GIL, per 4 KiB: 130 per 512 KiB image, each a futex handover
  when other associations' threads are waiting); ``DULServiceProvider._read_pdu_data`` instead reads what the
  socket holds into one buffer per association, and hands a P-DATA-TF PDU of an association given to
  :func:`wake_on_requests` straight to DIMSE;
* the polls: pynetdicom runs two threads per association that sleep a fixed time whenever they find
  nothing to do (the DUL, which reads PDUs and sends the answers, svdmark's :mod:`.pace` budget; the
  association's reactor, which serves decoded requests, 1 ms). For an association given to
  :func:`wake_on_requests`, the DUL instead waits in ``select`` until its socket is readable or a
  P-DATA answer is queued to send, and the reactor on its request queue's condition, each for at most
  :data:`IDLE_WAIT`: work starts as soon as there is some, and an idle association's two threads wake
  400 times a second instead of up to 6000.
  TLS connections keep the DUL's sleep (a TLS socket may hold decrypted data ``select`` cannot see).
  ``AssociationSocket.ready`` answers from the buffer, or from that wait where it has just seen the socket
  readable, instead of another ``select`` (each one a release and re-take of the GIL);
* the received data set's temporary file: :mod:`.datasetfile`;
* the received command set: :mod:`.command` (pydicom's reader, its hooks and its regular expressions for
  seven plain elements);
* the UIDs: the DIMSE primitives' ``set_uid`` builds and validates a UID with two regular expressions each
  time a C-STORE's UIDs are set, on its request and again on its response; :func:`_set_uid` remembers the
  last 1024 (a UID that fails is refused every time, as before).

These are private seams of one pynetdicom version, so :func:`install` changes nothing on another
(:data:`SUPPORTED`) and says so in the log; tests/unit/test_fastpath.py checks each replacement
against pynetdicom's own output, byte for byte. The encodings are PS3.7 §9.3.1.2 (C-STORE-RSP,
Implicit VR Little Endian command set) and PS3.10 §7.1 (File Meta, Explicit VR Little Endian).
"""
from __future__ import annotations

import functools
import logging
import os
import select
import ssl
import struct
import threading
import time as _time
import types
import weakref

import pynetdicom
from pynetdicom import association as _association, dimse as _dimse, dimse_messages as _messages, dul as _dul, evt
from pynetdicom import dimse_primitives as _primitives
from pynetdicom import transport as _transport
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import P_DATA
from pydicom.uid import UID

from ..logs import event
from . import command, datasetfile, pdata

log = logging.getLogger("svdmark.receive")

SUPPORTED = ("3.0.",)  # pynetdicom versions whose private seams these replacements match
_REACTOR_POLL = 0.001  # seconds: the fixed sleep in pynetdicom's Association._run_reactor
IDLE_WAIT = 0.005  # seconds: the longest an event-driven wait lasts (timers, release and kill are checked then)
_installed = False
_lock = threading.Lock()
# kept on the thread objects themselves (an Association and its DUL are threads), never in a table keyed by thread
# id: an id is reused by a later thread, and an association can end without the events that would remove it
_REQUESTS = "_svdmark_requests"  # on an association's reactor thread: its DIMSE request queue
_WAKE = "_svdmark_wake"  # on a DUL thread: its wait


# ------------------------------------------------------------------ encodings
def _even(value: str, pad: bytes) -> bytes:
    raw = value.encode("ascii")
    return raw + pad if len(raw) % 2 else raw


def _implicit(tag: int, value: bytes) -> bytes:
    return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(value)) + value


def store_rsp_command(message_id: int, status: int, sop_class: str | None, sop_instance: str | None) -> bytes:
    """The C-STORE-RSP command set (Implicit VR Little Endian, group length first) as pynetdicom encodes it."""
    body = b"".join((
        _implicit(0x00000002, _even(sop_class, b"\0")) if sop_class is not None else b"",
        _implicit(0x00000100, struct.pack("<H", 0x8001)),  # Command Field: C-STORE-RSP
        _implicit(0x00000120, struct.pack("<H", message_id)),
        _implicit(0x00000800, struct.pack("<H", 0x0101)),  # Command Data Set Type: no data set
        _implicit(0x00000900, struct.pack("<H", status)),
        _implicit(0x00001000, _even(sop_instance, b"\0")) if sop_instance is not None else b"",
    ))
    return _implicit(0x00000000, struct.pack("<I", len(body))) + body


def _explicit(tag: int, vr: bytes, value: bytes) -> bytes:
    group, element = tag >> 16, tag & 0xFFFF
    if vr in (b"OB", b"UN", b"OW", b"SQ", b"UT", b"UC", b"UR"):
        return struct.pack("<HH2s2xI", group, element, vr, len(value)) + value
    return struct.pack("<HH2sH", group, element, vr, len(value)) + value


def file_meta_bytes(sop_class: str, sop_instance: str, transfer_syntax: str,
                    implementation_uid: str = pynetdicom.PYNETDICOM_IMPLEMENTATION_UID,
                    implementation_version: str = pynetdicom.PYNETDICOM_IMPLEMENTATION_VERSION) -> bytes:
    """The File Meta Information group (after the preamble and 'DICM') that pynetdicom writes, as pydicom
    encodes it."""
    body = b"".join((
        _explicit(0x00020001, b"OB", b"\x00\x01"),
        _explicit(0x00020002, b"UI", _even(sop_class, b"\0")),
        _explicit(0x00020003, b"UI", _even(sop_instance, b"\0")),
        _explicit(0x00020010, b"UI", _even(transfer_syntax, b"\0")),
        _explicit(0x00020012, b"UI", _even(implementation_uid, b"\0")),
        _explicit(0x00020013, b"SH", _even(implementation_version, b" ")),
    ))
    return _explicit(0x00020000, b"UL", struct.pack("<I", len(body))) + body


# ------------------------------------------------------------------ the replacements
def _create_file_meta(*, sop_class_uid, sop_instance_uid, transfer_syntax, **kwargs):
    """The File Meta as its encoded bytes; pydicom's FileMetaDataset where a value is not plain ASCII."""
    try:
        return file_meta_bytes(str(sop_class_uid), str(sop_instance_uid), str(transfer_syntax),
                               **{k: str(v) for k, v in kwargs.items()})
    except (UnicodeEncodeError, struct.error):  # pydicom writes what it writes
        return _ORIGINAL["create_file_meta"](sop_class_uid=sop_class_uid, sop_instance_uid=sop_instance_uid,
                                             transfer_syntax=transfer_syntax, **kwargs)


def _write_file_meta(fp, file_meta, *args, **kwargs) -> None:
    if isinstance(file_meta, bytes):
        fp.write(file_meta)
    else:
        _ORIGINAL["write_file_meta_info"](fp, file_meta, *args, **kwargs)


def _send_msg(self, primitive, context_id: int) -> None:
    command = _plain_store_rsp(primitive)
    max_pdu = self.maximum_pdu_size  # the peer's; 0 is unlimited
    if command is not None and (not max_pdu or len(command) <= max_pdu - 6) \
            and not self.assoc.get_handlers(evt.EVT_DIMSE_SENT):  # one PDV, as pynetdicom would send it
        pdata = P_DATA()
        pdata.presentation_data_value_list.append((context_id, b"\x03" + command))  # last command fragment
        self.dul.send_pdu(pdata)
        return
    _ORIGINAL["send_msg"](self, primitive, context_id)


def _plain_store_rsp(primitive) -> bytes | None:
    if type(primitive) is not C_STORE or primitive.MessageIDBeingRespondedTo is None or primitive.Status is None:
        return None
    if primitive.ErrorComment is not None or primitive.OffendingElement is not None:
        return None
    try:
        return store_rsp_command(primitive.MessageIDBeingRespondedTo, primitive.Status, primitive.AffectedSOPClassUID,
                                 primitive.AffectedSOPInstanceUID)
    except (UnicodeEncodeError, struct.error):  # not ASCII, a status out of range: pynetdicom's own path
        return None


class _Wake:
    """A DUL thread's idle wait: until its socket is readable, an answer is queued to send (a byte on a
    pipe, written by the queue's ``put``), or :data:`IDLE_WAIT` has passed; none while bytes read ahead wait
    in the association socket's inbox (``assoc_socket``, :mod:`.pdata`)."""

    def __init__(self, sock, to_provider_queue, assoc_socket=None):
        self.sock, self.assoc_socket = sock, assoc_socket
        self.r, self.w = os.pipe()
        self.readable = False  # the last wait saw the socket readable, and nothing has read from it since
        os.set_blocking(self.r, False)
        os.set_blocking(self.w, False)
        # closed with the queue, whose put writes to the pipe: never before the last write, so a closed and
        # reused descriptor (a spool file's, the journal's) can never get that byte
        weakref.finalize(to_provider_queue, _close, self.r, self.w)
        put, w = to_provider_queue.put, self.w

        def put_and_wake(item, *args, **kwargs):
            put(item, *args, **kwargs)
            if type(item) is not P_DATA:
                # A release or abort answer waits for the next wake-up, as with pynetdicom's poll: sent at
                # once, the peer's close could reach svdmark (EVT_CONN_CLOSE, from this thread) before the
                # association's thread has marked itself released (EVT_RELEASED).
                return
            try:
                os.write(w, b"\0")
            except OSError:  # the pipe is full: a wake-up is pending already
                pass

        to_provider_queue.put = put_and_wake

    def wait(self) -> None:
        self.readable = False
        if self.assoc_socket is not None and pdata.pending(self.assoc_socket):
            return  # the next PDU, or its start, is here already
        try:
            ready, _, _ = select.select([self.sock, self.r], [], [], IDLE_WAIT)
        except (OSError, ValueError):  # the socket is closed: the DUL finds out on its next loop
            _time.sleep(_REACTOR_POLL)
            return
        self.readable = self.sock in ready
        if self.r in ready:
            try:
                os.read(self.r, 4096)
            except OSError:
                pass


@functools.lru_cache(maxsize=1024)
def _checked_uid(value, name: str, allow_empty: bool, allow_none: bool, validate: bool):
    return _ORIGINAL["set_uid"](value, name, allow_empty, allow_none, validate)


def _set_uid(value, name: str, allow_empty: bool = True, allow_none: bool = True, validate: bool = True):
    """``set_uid`` as the DIMSE primitives call it, remembered for the last 1024 UIDs: a C-STORE's two UIDs
    are set on its request and again on its response, each time a ``UID`` built and validated by two regular
    expressions (pydicom's, pynetdicom's); a UID that fails raises each time, as before (nothing cached)."""
    if type(value) is str or type(value) is UID:
        return _checked_uid(value, name, allow_empty, allow_none, validate)
    return _ORIGINAL["set_uid"](value, name, allow_empty, allow_none, validate)


def _ready(self) -> bool:
    """``AssociationSocket.ready``: True without a ``select`` where bytes read ahead are waiting in the
    socket's :class:`.pdata.Inbox`, or the DUL's wait has just seen the socket readable (the DUL thread is its
    only reader); otherwise pynetdicom's."""
    if self.socket is None or self._is_connected is False:
        return False
    if pdata.pending(self):
        return True
    wake = getattr(threading.current_thread(), _WAKE, None)
    if wake is not None and wake.readable and wake.assoc_socket is self:
        wake.readable = False
        return True
    return _ORIGINAL["ready"].fget(self)


def _close(*fds: int) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


class _Time(types.ModuleType):
    """``time`` as pynetdicom's association and DUL modules see it: the fixed idle sleeps of the registered
    threads become the event-driven waits of the module doc; everything else is ``time``."""

    def __getattr__(self, name):
        return getattr(_time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        thread = threading.current_thread()
        wake = getattr(thread, _WAKE, None)
        if wake is not None:
            wake.wait()
            return
        queue = getattr(thread, _REQUESTS, None) if seconds == _REACTOR_POLL else None
        if queue is None:
            _time.sleep(seconds)
            return
        with queue.not_empty:  # queue.Queue's own condition, notified by each put
            if not queue.queue:
                queue.not_empty.wait(IDLE_WAIT)


# pynetdicom's own, as imported (before any replacement): the fallbacks, and what uninstall() puts back
_ORIGINAL: dict = dict(send_msg=_dimse.DIMSEServiceProvider.send_msg, create_file_meta=_messages.create_file_meta,
                       write_file_meta_info=_messages.write_file_meta_info, time=_association.time,
                       dul_time=_dul.time, read_pdu_data=_dul.DULServiceProvider._read_pdu_data,
                       ready=_transport.AssociationSocket.ready, set_uid=_primitives.set_uid,
                       named_temporary_file=_messages.NamedTemporaryFile, decode=_messages.decode)


def install() -> bool:
    """Put the replacements in place (once); False, changing nothing, on an unsupported pynetdicom."""
    global _installed
    with _lock:
        if _installed:
            return True
        if not pynetdicom.__version__.startswith(SUPPORTED):
            event(log, "receive_fast_path_off", logging.WARNING, pynetdicom=pynetdicom.__version__,
                  supported=", ".join(f"{v}x" for v in SUPPORTED), detail="pynetdicom is used as it is")
            return False
        _messages.create_file_meta = _create_file_meta
        _messages.write_file_meta_info = _write_file_meta
        _dimse.DIMSEServiceProvider.send_msg = _send_msg
        _association.time = _dul.time = _Time("time")
        _dul.DULServiceProvider._read_pdu_data = pdata.read_pdu_data
        _transport.AssociationSocket.ready = property(_ready)
        _primitives.set_uid = _set_uid
        _messages.NamedTemporaryFile = datasetfile.named_temporary_file
        _messages.decode = command.decode
        _installed = True
        return True


def uninstall() -> None:
    """Put pynetdicom back as it was (tests compare both)."""
    global _installed
    with _lock:
        if not _installed:
            return
        _messages.create_file_meta = _ORIGINAL["create_file_meta"]
        _messages.write_file_meta_info = _ORIGINAL["write_file_meta_info"]
        _dimse.DIMSEServiceProvider.send_msg = _ORIGINAL["send_msg"]
        _association.time, _dul.time = _ORIGINAL["time"], _ORIGINAL["dul_time"]
        _dul.DULServiceProvider._read_pdu_data = _ORIGINAL["read_pdu_data"]
        _transport.AssociationSocket.ready = _ORIGINAL["ready"]
        _primitives.set_uid = _ORIGINAL["set_uid"]
        _messages.NamedTemporaryFile = _ORIGINAL["named_temporary_file"]
        _messages.decode = _ORIGINAL["decode"]
        _installed = False


def wake_on_requests(assoc) -> None:
    """An accepted association: its reactor (the association's own thread) and its DUL wait for work, not a
    fixed time (module doc). Each wait is kept on its thread object, which is how ``_Time.sleep`` finds it."""
    dimse = getattr(assoc, "dimse", None)
    if dimse is not None:
        setattr(assoc, _REQUESTS, dimse.msg_queue)
    dul = assoc.dul
    raw = getattr(dul.socket, "socket", None)
    if raw is not None and not isinstance(raw, ssl.SSLSocket):
        setattr(dul, _WAKE, _Wake(raw, dul.to_provider_queue, dul.socket))
        pdata.direct(dul)


def forget(assoc) -> None:
    """The association has ended (any thread): its threads sleep as pynetdicom's do until they stop."""
    setattr(assoc, _REQUESTS, None)
    setattr(assoc.dul, _WAKE, None)

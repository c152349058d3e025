"""P-DATA-TF PDUs of an established association handed straight to pynetdicom's DIMSE message.

pynetdicom 3.0 turns each P-DATA-TF PDU it reads into a ``bytes`` copy, a PDU object with an item object per
presentation data value (PDV), each value copied again, an event on the DUL's event queue, a state machine
action (Sta6 + Evt10: DT-2, which stays in Sta6), a queue hand-over of the PDU and a P-DATA primitive, before
``DIMSEServiceProvider.receive_primitive`` gets the values. For a 512x512 CT image that is five PDUs and
about a third of the Python time a received instance costs (bench/README.md). :func:`read_pdu_data` replaces
``DULServiceProvider._read_pdu_data``: a P-DATA-TF PDU read in Sta6 is split into its PDVs where it lies (PS3.8
§9.3.5: item length, presentation context ID, the value whose first byte is the message control header) and
given to ``receive_primitive`` as one P-DATA primitive; nothing else changes.

Every other case is pynetdicom's own, byte for byte the same handling (the code below it mirrors
``_read_pdu_data``): another PDU type, another state, an event already queued, an association whose DUL does
not wait on its socket (:func:`direct`; the TLS ones, which poll), anything bound to the events the direct way
would skip (``EVT_DATA_RECV``, ``EVT_PDU_RECV``, ``EVT_FSM_TRANSITION``), and a PDU whose items do not add up
to its length (pynetdicom decodes it and answers as it does: Evt19, an abort). An exception from the DIMSE
layer (a temporary file that cannot be written) ends the association with an A-ABORT from pynetdicom's reactor.

PDUs are read through an :class:`Inbox` per socket: each ``recv`` takes what the socket holds (up to
:data:`CHUNK`), so a PDU's header and body, and often the next PDU, come in one syscall instead of pynetdicom's
two or more per PDU, and ``ready`` answers True without a ``select`` while bytes are waiting in it. Under
several associations every syscall from Python is a hand-over of the GIL (bench/README.md).
"""
from __future__ import annotations

import logging
import struct

from pynetdicom import evt
from pynetdicom.pdu_primitives import P_DATA

LOGGER = logging.getLogger("pynetdicom.dul")  # where pynetdicom logs these errors, so they read the same
_HEADER = struct.Struct(">BBL")  # PDU type, reserved, PDU length
_ITEM = struct.Struct(">LB")  # PDV item length, presentation context ID
_SKIPPED = (evt.EVT_DATA_RECV, evt.EVT_PDU_RECV, evt.EVT_FSM_TRANSITION)
_ATTR = "_svdmark_direct_pdata"
_INBOX = "_svdmark_inbox"
CHUNK = 262_144  # bytes asked of the socket per recv: svdmark's largest receive PDU (config.max_pdu)


class Inbox:
    """Bytes read from one association's socket and not yet taken as PDUs (only its DUL thread reads)."""

    __slots__ = ("buf", "start", "end")

    def __init__(self) -> None:
        self.buf, self.start, self.end = bytearray(CHUNK), 0, 0

    def pending(self) -> int:
        return self.end - self.start

    def take(self, sock, n: int) -> memoryview:
        """The next ``n`` bytes, as a view valid until the next ``take``; fewer only when the peer closed the
        connection first. ``OSError`` as the socket raises it."""
        while self.end - self.start < n:
            missing = n - (self.end - self.start)
            if len(self.buf) - self.end < min(missing, CHUNK):  # too little room after the data: make some
                pending = self.end - self.start
                need = pending + min(missing, CHUNK)
                if need <= len(self.buf):
                    self.buf[:pending] = self.buf[self.start:self.end]
                else:  # grown as bytes arrive, never to a length a peer merely declares (a PDU of 4 GiB)
                    new = bytearray(min(pending + missing, max(need, 2 * len(self.buf))))
                    new[:pending] = self.buf[self.start:self.end]
                    self.buf = new
                self.start, self.end = 0, pending
            got = sock.recv_into(memoryview(self.buf)[self.end:])
            if not got:
                break
            self.end += got
        n = min(n, self.end - self.start)
        view = memoryview(self.buf)[self.start:self.start + n]
        self.start += n
        if self.start == self.end:
            self.start = self.end = 0
            if len(self.buf) > 4 * CHUNK:  # after an outsized PDU (the view keeps the old buffer while it is used)
                self.buf = bytearray(CHUNK)
        return view


def inbox(assoc_socket) -> Inbox:
    """The :class:`Inbox` of a pynetdicom ``AssociationSocket`` (made on first use)."""
    box = getattr(assoc_socket, _INBOX, None)
    if box is None:
        box = Inbox()
        setattr(assoc_socket, _INBOX, box)
    return box


def pending(assoc_socket) -> int:
    """Bytes read from ``assoc_socket`` and not yet taken."""
    box = getattr(assoc_socket, _INBOX, None)
    return box.pending() if box is not None else 0


def direct(dul) -> None:
    """Let ``dul`` (an association's DUL, whose idle wait returns as soon as its socket is readable) hand
    P-DATA straight to DIMSE."""
    setattr(dul, _ATTR, True)


def split_pdvs(body) -> list | None:
    """The ``[context ID, value]`` pairs of a P-DATA-TF PDU's body (after its 6-byte header), each value a
    memoryview into ``body``; None where the items do not add up to the body or an item is too short to hold
    its context ID and message control header."""
    view, offset, end, pdvs = memoryview(body), 0, len(body), []
    while offset < end:
        if offset + 6 > end:
            return None
        length, context_id = _ITEM.unpack_from(view, offset)
        if length < 2 or offset + 4 + length > end:
            return None
        pdvs.append([context_id, view[offset + 5:offset + 4 + length]])
        offset += 4 + length
    return pdvs or None


def _takes_direct(dul) -> bool:
    if not getattr(dul, _ATTR, False) or dul.event_queue.queue or dul.state_machine.current_state != "Sta6":
        return False
    assoc = dul.assoc
    return not any(assoc.get_handlers(e) for e in _SKIPPED)


def _broken(dul, exc: BaseException) -> None:
    LOGGER.error("Connection closed before the entire PDU was received")
    LOGGER.exception(exc)
    dul.event_queue.put("Evt17")  # transport connection closed


def read_pdu_data(self) -> None:
    """``DULServiceProvider._read_pdu_data`` (module doc)."""
    box, sock = inbox(self.socket), self.socket.socket
    try:
        head = bytes(box.take(sock, 6))
    except (OSError, TimeoutError) as exc:
        _broken(self, exc)
        return
    try:
        pdu_type, _, pdu_length = _HEADER.unpack(head)
    except struct.error:
        self.event_queue.put("Evt17")
        return
    if pdu_type not in (0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07):
        LOGGER.error(f"Unknown PDU type received '0x{pdu_type:02X}'")
        self.event_queue.put("Evt19")
        return
    try:
        body = box.take(sock, pdu_length)
    except (OSError, TimeoutError) as exc:
        _broken(self, exc)
        return
    if len(body) != pdu_length:
        LOGGER.error(f"The received PDU is shorter than expected ({6 + len(body)} of "
                     f"{6 + pdu_length} bytes received)")
        self.event_queue.put("Evt17")
        return
    pdvs = split_pdvs(body) if pdu_type == 0x04 and _takes_direct(self) else None
    if pdvs is not None:
        primitive = P_DATA()
        primitive._presentation_data_value_list = pdvs  # views into the inbox: DIMSE copies what it keeps
        self.assoc.dimse.receive_primitive(primitive)
        return
    try:
        pdu, event = self._decode_pdu(bytearray(head) + body)
        self.event_queue.put(event)
    except Exception as exc:
        LOGGER.error("Unable to decode the received PDU data")
        LOGGER.exception(exc)
        self.event_queue.put("Evt19")
        return
    self._recv_pdu.put(pdu)

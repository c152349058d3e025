"""Connection hygiene for the listener: no caller can lock the others out before it has associated.

pynetdicom counts every live acceptor thread against ``maximum_associations``, including a
connection that has not sent its A-ASSOCIATE-RQ yet, and its DUL blocks in ``recv`` on a
half-sent PDU until ``network_timeout`` (the ARTIM wait, ``acse_timeout``, cannot interrupt that
``recv``). So eight port scans, TCP health probes or stalled clients fill every slot. pynetdicom
has no hook for a pre-association policy, so :class:`ConnectionGate` adds one with its events:

* ``EVT_CONN_OPEN`` (the connection's own thread): refuse at once when the host already holds
  ``max_connections_per_host`` connections; otherwise arm a timer of ``request_timeout`` seconds
  (under TLS once the handshake, which has the same timeout of its own, has succeeded).
* timer expiry before ``EVT_REQUESTED``: shut the socket down (which wakes the blocked ``recv``),
  and log ``association_request_timeout`` once.
* ``EVT_REQUESTED``: the A-ASSOCIATE-RQ is complete; disarm. A slot is taken only now, and only
  by an association that proposes more than Verification: ``max_associations`` counts these
  negotiated associations, while an echo-only association from an allowed caller always passes.

pynetdicom's own limit is set far above ours (:data:`THREAD_CEILING`) so that it only guards
against runaway thread counts.
"""
from __future__ import annotations

import logging
import socket
import threading
from dataclasses import dataclass, field

from pydicom.uid import UID

from .. import health
from ..logs import event

log = logging.getLogger("svdmark.receive")

VERIFICATION = "1.2.840.10008.1.1"
THREAD_CEILING = 1000  # pynetdicom's maximum_associations: live acceptor threads of any kind


@dataclass
class _Conn:
    assoc: object  # the pynetdicom Association (a thread)
    address: str
    port: int
    timer: threading.Timer | None = None
    requested: bool = False
    slot: bool = False
    closed: bool = False


@dataclass
class ConnectionGate:
    max_associations: int
    max_connections_per_host: int
    request_timeout: float
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _conns: dict[int, _Conn] = field(default_factory=dict)  # id(assoc) -> connection

    # ------------------------------------------------------------------ events
    def opened(self, ev, arm: bool = True) -> bool:
        """EVT_CONN_OPEN. Returns False when the connection was refused (and closed). With ``arm``
        False the request timer waits for :meth:`arm` (after a TLS handshake with its own timeout)."""
        address, port = _peer(ev)
        assoc = ev.assoc
        with self._lock:
            self._prune()
            held = sum(1 for c in self._conns.values() if c.address == address)
            if held >= self.max_connections_per_host:
                refuse = True
            else:
                refuse = False
                conn = _Conn(assoc, address, port)
                self._conns[id(assoc)] = conn
        if refuse:
            health.association_refused("per_host_limit")
            event(log, "connection_refused", logging.WARNING, address=address, port=port,
                  reason=f"host already holds {held} connections (max_connections_per_host "
                         f"{self.max_connections_per_host})")
            _drop(assoc)
            return False
        if arm:
            self.arm(assoc)
        return True

    def arm(self, assoc) -> None:
        """Start the request timer of an opened connection."""
        with self._lock:
            conn = self._conns.get(id(assoc))
            if conn is None or conn.requested or conn.timer is not None:
                return
            conn.timer = threading.Timer(self.request_timeout, self._expire, args=(assoc,))
            conn.timer.daemon = True
            conn.timer.start()

    def requested(self, ev) -> bool:
        """EVT_REQUESTED. Whether to admit the association (the caller rejects it otherwise)."""
        assoc = ev.assoc
        with self._lock:
            self._prune()
            conn = self._conns.get(id(assoc))
            if conn is None:  # opened before this gate existed, or already pruned: count it from here
                conn = self._conns[id(assoc)] = _Conn(assoc, *_peer(ev))
            conn.requested = True
            if conn.timer is not None:
                conn.timer.cancel()
            if echo_only(assoc):
                return True
            if sum(1 for c in self._conns.values() if c.slot and not c.closed) >= self.max_associations:
                return False
            conn.slot = True
            return True

    def closed(self, ev) -> None:
        """EVT_CONN_CLOSE, EVT_RELEASED, EVT_ABORTED: the slot is free again."""
        with self._lock:
            conn = self._conns.pop(id(ev.assoc), None)
        if conn is not None:
            conn.closed = True
            if conn.timer is not None:
                conn.timer.cancel()

    # ------------------------------------------------------------------ internals
    def _expire(self, assoc) -> None:
        with self._lock:
            conn = self._conns.get(id(assoc))
            if conn is None or conn.requested:
                return
            conn.closed = True
            self._conns.pop(id(assoc), None)
        health.association_refused("request_timeout")
        event(log, "association_request_timeout", logging.WARNING, address=conn.address, port=conn.port,
              reason=f"no complete A-ASSOCIATE-RQ within {self.request_timeout:g} s; connection closed")
        _drop(assoc)

    def _prune(self) -> None:
        """Forget connections whose association thread has ended, whichever events it fired."""
        for key in [k for k, c in self._conns.items() if _ended(c.assoc)]:
            self._conns.pop(key, None)


def _ended(assoc) -> bool:
    return getattr(assoc, "ident", None) is not None and not assoc.is_alive()


def echo_only(assoc) -> bool:
    """The A-ASSOCIATE-RQ proposes Verification and nothing else."""
    try:
        contexts = assoc.requestor.primitive.presentation_context_definition_list
    except AttributeError:
        return False
    return bool(contexts) and all(UID(str(cx.abstract_syntax)) == VERIFICATION for cx in contexts)


def _peer(ev) -> tuple[str, int]:
    address = getattr(ev, "address", None)
    if isinstance(address, tuple) and len(address) >= 2:
        return str(address[0]), int(address[1])
    rq = ev.assoc.requestor
    return str(rq.address or ""), int(rq.port or 0)


def _drop(assoc) -> None:
    """Close a connection that has no association yet: the blocked recv returns and the threads end.

    The acceptor waits ``acse_timeout`` for an A-ASSOCIATE-RQ that will not come; zero makes it stop now.
    """
    assoc.acse_timeout = 0.01
    assoc._svdmark_dropped = True  # noqa: SLF001 - read by DroppedConnectionFilter
    sock = getattr(assoc.dul, "socket", None)
    raw = getattr(sock, "socket", None)
    if raw is None:
        return
    try:
        raw.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class DroppedConnectionFilter(logging.Filter):
    """pynetdicom's own lines about a connection the gate closed ("The received PDU is shorter than
    expected") repeat the gate's one line: drop them. They are logged in that connection's DUL or
    association thread, which leads to its Association."""

    def filter(self, record: logging.LogRecord) -> bool:
        thread = threading.current_thread()
        assoc = getattr(thread, "assoc", thread)
        return not getattr(assoc, "_svdmark_dropped", False)


_DROPPED_FILTER = DroppedConnectionFilter()


def quiet_dropped_connections() -> None:
    """Idempotent: put :class:`DroppedConnectionFilter` on pynetdicom's loggers."""
    for name in [n for n in logging.root.manager.loggerDict if n.split(".")[0] == "pynetdicom"] + ["pynetdicom"]:
        lg = logging.getLogger(name)
        if _DROPPED_FILTER not in lg.filters:
            lg.addFilter(_DROPPED_FILTER)

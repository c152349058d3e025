"""TCP_NODELAY on an association's socket, for the listener's answers and the exporter's requests alike.

pynetdicom leaves Nagle's algorithm on, so a PDU's last small segment waits for the peer's delayed ACK:
measured 88 ms per C-STORE against a dcmtk storescp on localhost (371 instances took 33 s to send). dcmtk
turns it off when ``TCP_NODELAY`` is set in its environment; svdmark turns it off on every association.
Kept here because pynetdicom has no option for it: the socket is reached through ``assoc.dul.socket.socket``
(an ``ssl.SSLSocket`` under TLS, which takes the option on the same descriptor).
"""
from __future__ import annotations

import socket


def no_delay(assoc) -> None:
    """Send on ``assoc`` without waiting for ACKs; a socket that is gone or not TCP is left as it is."""
    raw = getattr(getattr(assoc.dul, "socket", None), "socket", None)
    if raw is not None:
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # the peer has gone already, or not a TCP socket: the sends still work, only slower
            pass

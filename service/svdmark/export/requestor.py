"""svdmark's own requests: every DIMSE response goes to the send that waits for it, never to the reactor.

pynetdicom 3.0 runs a reactor thread beside each association it requests. ``send_c_store`` (and the other
``send_*``) pause it by clearing a checkpoint and waiting for ``_is_paused``, but the reactor sets
``_is_paused`` just before it waits at the checkpoint: a reactor that has passed the checkpoint and not yet
polled its message queue counts as paused. Descheduled there (a loaded machine; all threads share the GIL)
until the response has arrived, it takes the response, logs "Received unexpected C-STORE service message"
and drops it; the send then waits out its DIMSE timeout and the association is aborted (pynetdicom issue
875; seen as a flaky ``svdmark demo`` under a loaded CI). pynetdicom has no option for it, so
:func:`responses_to_sender` closes the window on one association: its reactor no longer takes messages.

An association svdmark requests carries only its own C-STORE and C-ECHO requests: the peer answers them
and sends no requests of its own (no C-GET or C-MOVE sub-operations), so the reactor has nothing to serve;
it still watches for a release request, an abort and the network timeout as before.
"""
from __future__ import annotations

import threading


def responses_to_sender(assoc) -> None:
    """On the established requestor ``assoc``, messages are taken only by the ``send_*`` waiting for them."""
    dimse = assoc.dimse
    get_msg = dimse.get_msg

    def get_msg_unless_reactor(block: bool = False):
        if threading.current_thread() is assoc:  # the association's own thread is its reactor
            return None, None
        return get_msg(block)

    dimse.get_msg = get_msg_unless_reactor

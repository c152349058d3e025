"""Per-association costs of pynetdicom that its settings do not reach, cut for the receive rate.

* pynetdicom deep-copies every supported presentation context for each association: svdmark
  supports ~200 (every storage class, most in any transfer syntax), whose UIDs took 35–65 ms of
  CPU to copy per association. :func:`shared_contexts` gives contexts whose copy shares the UIDs,
  which are immutable strings, and copies the rest (under 1 ms).
* pynetdicom's DUL thread (one per association) sleeps ``_run_loop_delay`` (1 ms) whenever a loop
  finds nothing to do, so each C-STORE waits up to twice for it: before its request is read and
  before its response is sent. Alone, an association loses up to a quarter of its rate so; with several,
  the waits overlap the others' work and the wake-ups cost CPU instead. :class:`Pace` shares one
  budget of wake-ups among the open associations: one polls every 0.2 ms, n every n × 0.2 ms,
  never slower than pynetdicom's 1 ms. Connections that never associate keep the default. Where
  :mod:`.fastpath` is installed, an association's DUL and reactor wait for work instead (this budget then
  paces only TLS connections, whose sockets ``select`` cannot see into). It also sends with TCP_NODELAY,
  as dcmtk does with ``TCP_NODELAY`` set.

bench/README.md has the measurements.
"""
from __future__ import annotations

import copy
import threading

from pynetdicom.presentation import PresentationContext

from ..nodelay import no_delay
from . import fastpath

DUL_IDLE_SLEEP = 0.0002  # seconds, for one open association; n share n times this
DUL_DEFAULT_SLEEP = 0.001  # pynetdicom's own
_IMMUTABLE = (str, int, float, bool, type(None))


class Pace:
    """The DUL idle sleep of the open associations, shared as one budget (module doc)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[int, object] = {}  # id(assoc) -> its DUL

    def opened(self, assoc) -> None:
        """A negotiated association (from its own thread): pace it with the others, serve its requests as
        soon as they are decoded (:func:`fastpath.wake_on_requests`) and send its answers with TCP_NODELAY."""
        fastpath.wake_on_requests(assoc)
        no_delay(assoc)
        dul = assoc.dul
        if hasattr(dul, "_run_loop_delay"):  # a private attribute: leave pynetdicom's default if it is renamed
            with self._lock:
                self._open[id(assoc)] = dul
                self._retune()

    def closed(self, assoc) -> None:
        fastpath.forget(assoc)
        with self._lock:
            if self._open.pop(id(assoc), None) is not None:
                self._retune()

    def _retune(self) -> None:
        delay = min(DUL_DEFAULT_SLEEP, DUL_IDLE_SLEEP * len(self._open))
        for dul in self._open.values():
            dul._run_loop_delay = delay


class SharedContext(PresentationContext):
    """A supported context whose deep copy shares its immutable values and copies only its lists."""

    def __deepcopy__(self, memo: dict) -> "SharedContext":
        new = object.__new__(type(self))
        new.__dict__ = {k: _copy(v, memo) for k, v in vars(self).items()}
        return new


def _copy(value, memo: dict):
    if isinstance(value, _IMMUTABLE):
        return value
    if isinstance(value, list) and all(isinstance(v, _IMMUTABLE) for v in value):
        return list(value)
    return copy.deepcopy(value, memo)


def shared_contexts(contexts: list[PresentationContext]) -> list[PresentationContext]:
    """The same contexts as :class:`SharedContext` (for ``AE.start_server(contexts=...)``)."""
    out = []
    for cx in contexts:
        new = object.__new__(SharedContext)
        new.__dict__ = copy.deepcopy(vars(cx))
        out.append(new)
    return out

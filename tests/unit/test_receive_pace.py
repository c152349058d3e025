"""What svdmark.receive.pace changes in pynetdicom's per-association costs."""
from __future__ import annotations

import copy
from types import SimpleNamespace

from svdmark.config import Config
from svdmark.receive import build_ae
from svdmark.receive.pace import DUL_DEFAULT_SLEEP, DUL_IDLE_SLEEP, Pace, shared_contexts


def test_per_association_copies_are_equal_and_independent():
    supported = build_ae(Config()).supported_contexts
    shared = shared_contexts(supported)
    assoc = copy.deepcopy(shared)  # what pynetdicom does for every association
    assert [(c.abstract_syntax, c.transfer_syntax, c.scu_role, c.scp_role) for c in assoc] == \
        [(c.abstract_syntax, c.transfer_syntax, c.scu_role, c.scp_role) for c in supported]
    del assoc[0].transfer_syntax[1:]  # negotiation narrows an association's copy, in place ...
    assoc[0].context_id, assoc[0].result = 1, 0
    assert len(shared[0].transfer_syntax) > 1 and shared[0].context_id is None and shared[0].result is None
    assert len(supported[0].transfer_syntax) == len(shared[0].transfer_syntax)  # ... never the listener's own


def _assoc():
    return SimpleNamespace(dul=SimpleNamespace(_run_loop_delay=DUL_DEFAULT_SLEEP, socket=None, ident=None))


def test_open_associations_share_one_budget_of_wakeups():
    pace, a, b = Pace(), _assoc(), _assoc()
    pace.opened(a)
    assert a.dul._run_loop_delay == DUL_IDLE_SLEEP  # alone: quick
    pace.opened(b)
    assert a.dul._run_loop_delay == b.dul._run_loop_delay == 2 * DUL_IDLE_SLEEP
    many = [_assoc() for _ in range(10)]
    for x in many:
        pace.opened(x)
    assert {x.dul._run_loop_delay for x in [a, b, *many]} == {DUL_DEFAULT_SLEEP}  # never slower than pynetdicom
    for x in [b, *many]:
        pace.closed(x)
    pace.closed(b)  # released, then its connection closed: once is enough
    assert a.dul._run_loop_delay == DUL_IDLE_SLEEP

"""``svdmark.journal.Journal`` implements every journal Protocol: each method is there, with the same signature.

The signatures are compared through :func:`inspect.signature` (names, kinds, defaults and the annotation
text); a Protocol default written ``...`` only asks that the implementation has one.
"""
from __future__ import annotations

import inspect

import pytest

from svdmark import journal_api
from svdmark.domain import SendClaim
from svdmark.journal import Journal

PROTOCOLS = [journal_api.ReceiveJournal, journal_api.AssemblyJournal, journal_api.BatchJournal,
             journal_api.ShadowJournal,
             journal_api.WorkJournal, journal_api.OutboxJournal, journal_api.AuditJournal,
             journal_api.ReadJournal, journal_api.AdminJournal, journal_api.ProcessJournal, journal_api.JournalStore]


def members(protocol: type) -> dict[str, object]:
    """The methods a Protocol declares, its own and those of the Protocols it extends."""
    found: dict[str, object] = {}
    for cls in reversed(protocol.__mro__):
        if getattr(cls, "_is_protocol", False) and cls.__module__ == journal_api.__name__:
            found.update({k: v for k, v in vars(cls).items() 
                          if inspect.isfunction(v) and not k.startswith("_")})
    return found


def mismatches(protocol: type, implementation: type) -> list[str]:
    """What ``implementation`` lacks or declares differently, one line each (empty: it satisfies ``protocol``)."""
    problems = []
    for name, declared in members(protocol).items():
        given = getattr(implementation, name, None)
        if not callable(given):
            problems.append(f"{name}: missing")
            continue
        want, have = inspect.signature(declared), inspect.signature(given)
        if want.return_annotation != have.return_annotation:
            problems.append(f"{name}: returns {have.return_annotation}, not {want.return_annotation}")
        if list(want.parameters) != list(have.parameters):
            problems.append(f"{name}: parameters {list(have.parameters)}, not {list(want.parameters)}")
            continue
        for p, q in zip(want.parameters.values(), have.parameters.values()):
            default_ok = (p.default == q.default or
                          (p.default is Ellipsis and q.default is not inspect.Parameter.empty))
            if p.kind != q.kind or p.annotation != q.annotation or not default_ok:
                problems.append(f"{name}: {q}, not {p}")
    return problems


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=lambda p: p.__name__)
def test_journal_satisfies(protocol):
    assert members(protocol)
    assert mismatches(protocol, Journal) == []


def test_the_store_is_every_role():
    union = set(members(journal_api.JournalStore))
    assert set().union(*(members(p) for p in PROTOCOLS)) == union
    assert {"recover", "close", "claim_job", "record_instance", "due_deliveries", "audit"} <= union


def test_the_check_can_fail():
    """A backend with a method missing, a parameter renamed or a default dropped is reported."""

    class Partial:
        def now(self) -> float: ...
        def due_deliveries(self, now: float | None = None, dest: str | None = None) -> list[Delivery]: ...
        def pending_destinations(self) -> set[str]: ...
        def start_sending(self, delivery_id: int, tried: int | None = None) -> SendClaim: ...
        def mark_delivered(self, delivery_id: int, detail: str) -> None: ...

    found = mismatches(journal_api.OutboxJournal, Partial)
    assert [line.split(":")[0] for line in found] == ["due_deliveries", "mark_delivered", "mark_failed"]
    assert found[-1] == "mark_failed: missing"

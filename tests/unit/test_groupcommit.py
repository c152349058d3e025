"""Group commit: concurrent associations share journal commits, and each still gets its own outcome."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from svdmark.geometry import SliceGeometry
from svdmark.journal import Journal
from svdmark.receive.groupcommit import GroupCommit

GEOM = SliceGeometry.from_json({"ipp": [0, 0, 0], "iop": [1, 0, 0, 0, 1, 0], "frames": None,
                                "images_in_acquisition": None, "acquisition": 1})


def row(sop: str, series: str = "1.2.3", digest: str = "d") -> dict:
    return dict(sop_uid=sop, study_uid="1.2", series_uid=series, sop_class="1.2.840.10008.5.1.4.1.1.2",
                transfer_syntax="1.2.840.10008.1.2.1", path=Path(f"/x/{sop}"), size=1, digest=digest,
                modality="CT", geometry=GEOM, calling_ae="SCU")


class SlowJournal(Journal):
    """A journal whose commits take a while (as a flush does), counting them; the first may wait for ``gate``."""

    def __init__(self, url, refuse: str | None = None, gate: threading.Event | None = None):
        super().__init__(url)
        self.batches: list[int] = []
        self.refuse, self.gate = refuse, gate

    def record_instances(self, rows, now=None):
        self.batches.append(len(rows))
        if self.gate is not None and len(self.batches) == 1:
            assert self.gate.wait(10)
        time.sleep(0.02)
        if any(r["sop_uid"] == self.refuse for r in rows):
            raise ValueError("refused")
        return super().record_instances(rows, now)


def _until(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def _in_threads(target, args_list) -> list:
    results: list = [None] * len(args_list)

    def run(i, args):
        try:
            results[i] = target(*args)
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i, a)) for i, a in enumerate(args_list)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def test_rows_in_one_transaction_have_their_outcomes_in_order(journal_url):
    j = Journal(journal_url)
    assert j.record_instances([row("1.1"), row("1.1"), row("1.1", digest="e"), row("2.1", series="2.2")]) == \
        ["new", "duplicate", "replaced", "new"]
    assert [i.sop_uid for i in j.instances("1.2.3")] == ["1.1"]
    assert j.instance_digest("1.1") == "e" and j.series_row("2.2") is not None


def test_concurrent_instances_share_commits_and_each_gets_its_outcome(journal_url):
    j = SlowJournal(journal_url)
    gc = GroupCommit(j)
    rows = [(f"{t}.{k}", f"9.{t}") for t in range(8) for k in range(4)]
    by_thread = [[r for r in rows if r[1] == f"9.{t}"] for t in range(8)]
    outcomes = _in_threads(lambda mine: [gc.record_instance(**row(sop, series)) for sop, series in mine],
                           [(m,) for m in by_thread])
    assert outcomes == [["new"] * 4] * 8
    assert sum(j.batches) == 32 and len(j.batches) < 32 and max(j.batches) > 1  # commits were shared
    assert sorted(i.sop_uid for t in range(8) for i in j.instances(f"9.{t}")) == sorted(s for s, _ in rows)
    assert gc.record_instance(**row("0.0", "9.0")) == "duplicate"  # one thread alone: its own commit


def test_a_row_the_journal_refuses_fails_only_its_own_instance(journal_url):
    gate = threading.Event()
    j = SlowJournal(journal_url, refuse="6.6", gate=gate)
    gc = GroupCommit(j)
    first = threading.Thread(target=gc.record_instance, kwargs=row("5.5", "5"))
    first.start()
    _until(lambda: j.batches)  # its commit is under way: the next three wait and then share one
    results: list = []
    waiting = threading.Thread(target=lambda: results.extend(
        _in_threads(lambda sop: gc.record_instance(**row(sop, "6")), [("6.5",), ("6.6",), ("6.7",)])))
    waiting.start()
    _until(lambda: len(gc._pending) == 3)
    gate.set()
    first.join(10)
    waiting.join(10)
    assert j.batches[:2] == [1, 3] and sorted(j.batches[2:]) == [1, 1, 1]  # the shared commit, then each alone
    assert results[0] == "new" and results[2] == "new"
    assert isinstance(results[1], ValueError)
    assert {i.sop_uid for i in j.instances("6")} == {"6.5", "6.7"}


def test_a_row_with_its_own_time_is_recorded_alone(journal_url):
    j = SlowJournal(journal_url)
    assert GroupCommit(j).record_instance(now=123.0, **row("7.1", "7")) == "new"
    assert j.series_row("7").first_received == 123.0


class _Gated:
    """A journal whose first commit waits for a signal and whose second is interrupted (Ctrl-C in the leader)."""

    def __init__(self):
        self.release = threading.Event()
        self.calls = 0

    def record_instances(self, rows, now=None):
        self.calls += 1
        if self.calls == 1:
            self.release.wait(10)
            return ["new"]
        raise KeyboardInterrupt


def test_an_interrupted_leader_never_leaves_a_follower_waiting():
    journal = _Gated()
    gc = GroupCommit(journal)
    results = {}

    def record(name):
        try:
            results[name] = gc.record_instance(sop_uid=name)
        except BaseException as exc:  # noqa: BLE001
            results[name] = exc

    leader = threading.Thread(target=record, args=("a",))
    leader.start()
    _until(lambda: journal.calls)
    others = [threading.Thread(target=record, args=(n,)) for n in ("b", "c")]
    for t in others:
        t.start()
    _until(lambda: len(gc._pending) == 2)  # both wait behind the first commit
    journal.release.set()
    for t in (leader, *others):
        t.join(10)
        assert not t.is_alive()
    assert results["a"] == "new"
    kinds = sorted(type(results[n]).__name__ for n in ("b", "c"))
    assert kinds == ["CommitInterrupted", "KeyboardInterrupt"]  # the next leader's follower's, and its own


def test_other_journal_calls_pass_through(journal_url):
    j = Journal(journal_url)
    gc = GroupCommit(j)
    assert gc.record_instance(**row("3.1", "3")) == "new"
    assert gc.instance_digest("3.1") == "d" and gc.instance_digest("3.2") is None
    gc.mark_released(["3"])
    assert j.series_row("3").released


class _LostAnswer(Journal):
    """Commits, then fails (a connection lost while COMMIT's answer was on its way)."""

    def __init__(self, url, commit: bool):
        super().__init__(url)
        self.commit = commit

    def record_instances(self, rows, now=None):
        if self.commit:
            super().record_instances(rows, now)
        raise ConnectionError("lost")


@pytest.mark.parametrize("committed", [True, False])
def test_a_file_stays_exactly_when_its_row_was_committed(tmp_path, journal_url, committed):
    from svdmark.receive.inspect import CT_IMAGE, Inspected
    from svdmark.receive.store import keep
    from svdmark.spool import Spool

    spool = Spool(tmp_path / "spool")
    item = Inspected(sop_uid="8.1", sop_class=CT_IMAGE, study_uid="1.2", series_uid="8", modality="CT", geometry=GEOM)
    with pytest.raises(ConnectionError):
        keep(_LostAnswer(journal_url, committed), spool, item, b"DICM-8", transfer_syntax="1.2.840.10008.1.2.1",
             calling_ae="SCU")
    assert spool.path_for(spool.incoming, "1.2", "8", "8.1").exists() == committed  # never a row without a file


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__])

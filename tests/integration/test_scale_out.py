"""Past one machine: receivers, workers and an exporter as separate processes on one PostgreSQL journal and
one spool directory, with kill -9 of every role, several times, and one immediate PostgreSQL restart.

At the end: every instance the senders sent is in the journal and in the spool; every target series was
analysed exactly once; every result reached dcmtk storescp once (counted from its reception log), except
an object that was in flight when its exporter was killed or the database went away (stored by the
destination but not yet confirmed to us: only Storage Commitment removes that, README step 5).
"""
from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pydicom
import pytest

from svdmark.journal import Journal
from svdmark_phantom import write_study

from tests.peers import Svdmark, storescu, wait_until
from .test_crash import _uid
from .test_end_to_end import expect_results

pytestmark = [pytest.mark.interop, pytest.mark.slow]

LEASE_SECONDS = 4


def _value(url: str, sql: str, args: tuple = ()):
    import psycopg

    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
            return conn.execute(sql, args).fetchone()[0]
    except psycopg.OperationalError:
        return None  # the server is restarting


def _in_flight(url: str) -> set[str]:
    """SOP Instance UIDs whose delivery is being sent (or was, when its sender died)."""
    import psycopg

    for _ in range(60):
        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
                return {r[0] for r in conn.execute("SELECT sop_uid FROM deliveries WHERE state='sending'")}
        except psycopg.OperationalError:
            time.sleep(0.5)
    raise TimeoutError("the journal did not answer")


def _files(study) -> list[Path]:
    return sorted(Path(study.out_dir).rglob("*.dcm"))


def _send(files, port) -> None:
    storescu(files, port, check=False)  # a receiver may be killed meanwhile: the final pass resends


def test_receivers_workers_and_an_exporter_share_postgresql_and_survive_kills(tmp_path, pacs, postgres_server,
                                                                               postgres_url):
    rng = random.Random(1515)
    studies = [write_study(tmp_path / "in" / f"s{k}", seed=60 + k, kind=kind, vendor=vendor, distractors=False,
                           matrix=96, **({"n_slices": 40, "slice_thickness": 2.0} if kind == "swi" else {}))
               for k, (kind, vendor) in enumerate([("ncct", "ge"), ("swi", "siemens"), ("ncct", "siemens"),
                                                   ("swi", "ge")])]  # measurable phantoms: SR, SEG and summary each
    targets = {t.series_uid for s in studies for t in s.targets}
    config = tmp_path / "svdmark.toml"
    config.write_text(f"[service]\nlease_seconds = {LEASE_SECONDS}\n")
    spool = tmp_path / "shared-spool"
    shared = ("--journal", postgres_url, "--spool", str(spool), "--config", str(config),
              "--settle-seconds", "1", "--fallback-seconds", "15")
    dest = [f"{pacs.aet}@127.0.0.1:{pacs.port}"]

    def process(name: str, roles: tuple[str, ...]) -> Svdmark:
        return Svdmark(tmp_path / name, dest, extra=shared, roles=roles)

    receivers = [process(f"receiver{i}", ("receive",)) for i in range(2)]
    workers = [process(f"worker{i}", ("assemble", "work")) for i in range(3)]
    exporter = process("exporter", ("export",))
    everyone = [*receivers, *workers, exporter]
    in_flight: set[str] = set()  # objects being sent at a kill of the exporter or of the database
    kills: list[str] = []

    def kill(svd: Svdmark, role: str, restart: bool = True) -> None:
        svd.kill9()
        kills.append(role)
        if role == "exporter":
            in_flight.update(_in_flight(postgres_url))
        if restart:
            svd.start()

    try:
        for svd in everyone:
            svd.start()
        # four senders at once, split across both receivers; the first study's series arrives over both
        first = _files(studies[0])
        sends = [(first[::2], receivers[0]), (first[1::2], receivers[1])]
        sends += [(_files(s), receivers[k % 2]) for k, s in enumerate(studies[1:], start=1)]
        senders = [threading.Thread(target=_send, args=(files, r.port)) for files, r in sends]
        for t in senders:
            t.start()

        wait_until(lambda: (_value(postgres_url, "SELECT COUNT(*) FROM instances") or 0) >= 20, 120,
                   "instances stored")
        kill(receivers[rng.randrange(2)], "receiver")  # mid-association: its senders see the abort
        wait_until(lambda: _value(postgres_url, "SELECT COUNT(*) FROM jobs WHERE state='running'"), 180,
                   "an analysis running", interval=0.1)
        owner = _value(postgres_url, "SELECT owner FROM jobs WHERE state='running' ORDER BY id LIMIT 1") or ""
        busy = [w for w in workers if f":{w.proc.pid}:" in owner] or workers
        kill(busy[0], "worker")  # the one analysing: its lease lapses, another worker takes the job
        for t in senders:
            t.join(300)
        wait_until(lambda: _value(postgres_url, "SELECT COUNT(*) FROM deliveries WHERE state='delivered'"), 240,
                   "a delivery confirmed", interval=0.1)
        kill(exporter, "exporter")
        postgres_server.restart("immediate")  # every process loses its connections at once
        kills.append("postgresql")
        in_flight.update(_in_flight(postgres_url))
        time.sleep(rng.uniform(0.5, 2.0))
        kill(workers[rng.randrange(3)], "worker")
        kill(receivers[rng.randrange(2)], "receiver")
        time.sleep(rng.uniform(0.5, 2.0))
        kill(exporter, "exporter")

        # the senders retry everything, as a PACS would (duplicates are recognised by digest)
        for k, s in enumerate(studies):
            storescu(_files(s), receivers[k % 2].port)
        expect_results(pacs, studies, timeout=300)
        wait_until(lambda: _value(postgres_url, "SELECT COUNT(*) FROM deliveries WHERE state<>'delivered'") == 0,
                   120, "every delivery confirmed")

        # every instance is in the journal and in the shared spool
        headers = [pydicom.dcmread(f, stop_before_pixels=True) for s in studies for f in _files(s)]
        journal = Journal(postgres_url, owner="test-reader")
        stored = {i.sop_uid: Path(i.path) for series in {str(h.SeriesInstanceUID) for h in headers}
                  for i in journal.instances(series)}
        sent = {str(h.SOPInstanceUID) for h in headers}
        assert sent <= set(stored), f"{len(sent - set(stored))} sent instances missing from the journal"
        assert all(stored[u].is_file() and spool.resolve() in stored[u].resolve().parents for u in sent), \
            "an instance is not in the shared spool"

        # every target series analysed exactly once, nothing failed
        history = journal.job_history()
        done = [j.series_uid for j in history if j.state == "done"]
        assert sorted(done) == sorted(targets), f"analyses per target: {sorted(done)}"
        assert not [j for j in history if j.state in ("failed", "running", "pending")]
        interruptions = sum(j.interruptions for j in history)

        # every result delivered once, except what was in flight at a kill of the exporter or the database
        received = [_uid(r) for r in pacs.receptions()]
        assert len(set(received)) == 3 * len(targets)
        twice = {u for u in received if received.count(u) > 1}
        assert twice <= in_flight, f"received twice but never in flight at a kill: {twice - in_flight}"

        # every process is alive and in the process table, with its roles
        live = journal.processes(max_age=3 * min(5.0, LEASE_SECONDS / 4) + 2)
        roles = sorted(",".join(p.roles) for p in live)
        assert roles == sorted(["receive"] * 2 + ["assemble,work"] * 3 + ["export"]), roles
        # ... and so does `svdmark status`, from any of them
        import json

        shown = json.loads(receivers[0].cli("status", "--journal", postgres_url, "--config", str(config),
                                            "--json").stdout)["processes"]
        alive = [p for p in shown if p["live"]]
        assert sorted(",".join(p["roles"]) for p in alive) == roles
        assert {p["pid"] for p in alive} == {svd.proc.pid for svd in everyone}
        assert {p["port"] for p in alive if p["roles"] == ["receive"]} == {r.port for r in receivers}
        assert len(shown) - len(alive) <= len(kills) - 1  # the killed ones, silent until forgotten
        print(f"kills: {kills}; interruptions: {interruptions}; in flight at a kill: {len(in_flight)}; "
              f"received twice: {len(twice)} of {len(set(received))}")
    finally:
        for svd in everyone:
            svd.stop()


def test_one_process_on_postgresql_restarts_after_kill_without_waiting_for_its_lease(tmp_path, pacs, postgres_url):
    """The embedded shape (all roles, one process) on PostgreSQL, killed mid-analysis: its successor takes
    the job back at once (its earlier self's PID is gone), though leases last 60 s; results exactly once."""
    studies = [write_study(tmp_path / "in" / "ncct", seed=31, kind="ncct", vendor="ge", distractors=False, matrix=96)]
    svd = Svdmark(tmp_path / "data", [f"{pacs.aet}@127.0.0.1:{pacs.port}"],
                  extra=("--journal", postgres_url, "--settle-seconds", "1", "--fallback-seconds", "15")).start()
    try:
        storescu(_files(studies[0]), svd.port)
        wait_until(lambda: _value(postgres_url, "SELECT COUNT(*) FROM jobs WHERE state='running'"), 120,
                   "an analysis running", interval=0.05)
        svd.kill9()
        started = time.monotonic()
        svd.start()
        expect_results(pacs, studies, timeout=50)  # well inside the 60 s lease
        waited = time.monotonic() - started
        assert _value(postgres_url, "SELECT COUNT(*) FROM jobs WHERE state='done'") == 1
        assert _value(postgres_url, "SELECT SUM(interruptions) FROM jobs") == 1
        received = pacs.receptions()
        assert len(received) == len(set(received)) == 3
        print(f"results {waited:.1f} s after the restart")
    finally:
        svd.stop()


def _logged(svd: Svdmark, name: str) -> bool:
    """Whether the process logged the event ``name`` (an event's name stands between spaces in its log line)."""
    return f" {name} " in svd.log_text()


def test_only_the_assembly_leader_runs_the_retention_and_its_successor_takes_over(tmp_path, pacs, postgres_url):
    """[retention] on a shared journal: two all-role processes on one spool; the assembly leader alone runs the
    purge (the standby's log has no run), each series' images are purged once, and when the leader is killed the
    other takes the lead and purges what arrives next."""
    studies = [write_study(tmp_path / "in" / f"s{k}", seed=70 + k, kind="ncct", vendor="ge", distractors=False,
                           matrix=96) for k in range(2)]
    config = tmp_path / "svdmark.toml"
    config.write_text(f"[service]\nlease_seconds = {LEASE_SECONDS}\n"
                      "[retention]\nolder_than_days = 0\nevery_hours = 0.001\n")
    shared = ("--journal", postgres_url, "--spool", str(tmp_path / "shared-spool"), "--config", str(config),
              "--settle-seconds", "1", "--fallback-seconds", "15")
    first, second = (Svdmark(tmp_path / name, [f"{pacs.aet}@127.0.0.1:{pacs.port}"], extra=shared)
                     for name in ("first", "second"))
    journal = Journal(postgres_url, owner="test-reader")

    def purged(study) -> list[str] | None:
        """The study's series purged (one audit entry each), once every one of them is."""
        uids = [a.detail["series_uid"] for a in journal.audit_entries(action="spool.purge")]
        mine = [u for u in uids if u in {s.series_uid for s in study.series}]
        return mine if len(set(mine)) == len(study.series) else None

    try:
        first.start()
        wait_until(lambda: _logged(first, "assembly_leader"), 60, "the first process leading the assembly")
        second.start()
        storescu(_files(studies[0]), second.port)  # received by the standby, assembled and purged by the leader
        expect_results(pacs, studies[:1])
        done = wait_until(lambda: purged(studies[0]), 120, "the first study's images purged")
        assert sorted(done) == sorted({s.series_uid for s in studies[0].series})  # each once
        assert _logged(first, "retention_run")
        assert not _logged(second, "assembly_leader") and not _logged(second, "retention_run")

        first.kill9()
        wait_until(lambda: _logged(second, "assembly_leader"), 60, "the second process leading after the kill")
        storescu(_files(studies[1]), second.port)
        expect_results(pacs, studies)
        done = wait_until(lambda: purged(studies[1]), 120, "the second study's images purged by the new leader")
        assert sorted(done) == sorted({s.series_uid for s in studies[1].series})
        assert _logged(second, "retention_run")
        assert not journal.audit_entries(action="spool.purge_failed")
        received = pacs.receptions()
        assert len(received) == len(set(received)) == 6  # SR, SEG and summary of each study, once
    finally:
        journal.close()
        first.stop()
        second.stop()

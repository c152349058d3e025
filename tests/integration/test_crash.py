"""kill -9 at each stage, then restart: nothing lost, nothing analysed or delivered twice."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from svdmark_phantom import write_study

from svdmark.journal import INTERRUPTION_CAP
from svdmark.journal_engine import ERRORS
from tests import journaldb
from tests.peers import StoreSCP, Svdmark, associate, send_studies, wait_until
from .test_end_to_end import expect_results

pytestmark = [pytest.mark.interop, pytest.mark.slow]


def journal_value(data_dir, sql):
    return journaldb.value(data_dir, sql)


def assert_results_complete(pacs, studies, data_dir):
    """One SR, SEG and summary per target at the destination, one analysis each. On a time-out the journal's
    series, jobs and deliveries are in the error, so that a failure in CI says where the work stopped."""
    try:
        got = expect_results(pacs, studies)
    except TimeoutError as e:
        raise TimeoutError(f"{e}\n{_journal_state(data_dir)}") from None
    targets = sum(len(s.targets) for s in studies)
    assert len(got["SR"]) == len(got["SEG"]) == len(got["OT"]) == targets, {k: len(v) for k, v in got.items()}
    done = journal_value(data_dir, "SELECT COUNT(*) FROM jobs WHERE state='done'")
    assert done == targets, f"{done} analyses for {targets} target series"


def _journal_state(data_dir) -> str:
    parts = []
    for what, sql in [
            ("series", "SELECT series_uid, modality, state, released, generation, first_received, last_received"
                       " FROM series"),
            ("instances per series", "SELECT series_uid, COUNT(*) FROM instances GROUP BY series_uid"),
            ("jobs", "SELECT id, series_uid, generation, state, attempts, interruptions, suspect_interruptions,"
                     " not_before, detail FROM jobs"),
            ("deliveries", "SELECT d.state, r.series_uid, COUNT(*) FROM deliveries d JOIN results r"
                           " ON r.sop_uid = d.sop_uid GROUP BY d.state, r.series_uid")]:
        try:
            rows = journaldb.query(data_dir, sql)
        except Exception as e:  # noqa: BLE001 - a diagnostic: say why it could not be read
            rows = [f"unreadable: {e}"]
        parts.append(f"{what}:\n" + "\n".join(f"  {r}" for r in rows))
    log = data_dir.parent / f"{data_dir.name}-serve.log"  # tests.peers.Svdmark's log of every start
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    worth = [line for line in lines if (" WARNING " in line or " ERROR " in line or "Traceback" in line)
             and "no_calling_ae_allow_list" not in line]
    parts.append("serve log, warnings and errors (last 40):\n" + "\n".join(worth[-40:]))
    return "\n".join(parts)


def assert_exactly_once(pacs, studies, data_dir):
    assert_results_complete(pacs, studies, data_dir)
    receptions = pacs.receptions()
    assert len(receptions) == len(set(receptions)), "an object was delivered twice"


@pytest.fixture
def studies(tmp_path):
    return [write_study(tmp_path / "in" / "ncct", seed=31, kind="ncct", vendor="ge", distractors=False, matrix=96),
            write_study(tmp_path / "in" / "swi", seed=32, kind="swi", vendor="siemens", distractors=False, n_slices=40,
                        slice_thickness=2.0, matrix=96)]


def test_kill_mid_association_then_resend(tmp_path, pacs, studies):
    """kill -9 while an association is open, after five of its C-STOREs were confirmed; the sender then sends
    everything again in a new association, as a PACS would. The first sender holds its association open at the
    kill by construction (a pynetdicom SCU), however fast the transfer."""
    import pydicom
    from pynetdicom import AE

    data = tmp_path / "data"
    svd = Svdmark(data, [f"{pacs.aet}@127.0.0.1:{pacs.port}"]).start()
    files = sorted(p for s in studies for p in Path(s.out_dir).rglob("*.dcm"))
    first = [pydicom.dcmread(f) for f in files[:5]]
    ae = AE(ae_title="STORESCU")
    for klass, ts in {(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for ds in first}:
        ae.add_requested_context(klass, ts)
    assoc = associate(ae, svd.port)
    assert assoc.is_established
    try:
        assert [assoc.send_c_store(ds).Status for ds in first] == [0] * len(first)
        assert journal_value(data, "SELECT COUNT(*) FROM instances") == len(first)
        svd.kill9()
    finally:
        assoc.abort()
    svd.start()
    send_studies(studies, svd.port)  # the sender retries everything, as a PACS would
    try:
        assert_exactly_once(pacs, studies, data)
    finally:
        svd.stop()


def test_kill_mid_analysis(tmp_path, pacs, studies):
    data = tmp_path / "data"
    svd = Svdmark(data, [f"{pacs.aet}@127.0.0.1:{pacs.port}"]).start()
    send_studies(studies, svd.port)
    wait_until(lambda: journal_value(data, "SELECT COUNT(*) FROM jobs WHERE state IN ('running','done')") >= 1,
               120, "an analysis to start")
    svd.kill9()
    svd.start()
    try:
        assert_exactly_once(pacs, studies, data)
        import json  # the killed process's row in the process table went with its restart

        shown = json.loads(svd.cli("status", "--json").stdout)["processes"]
        assert [(p["pid"], p["live"]) for p in shown] == [(svd.proc.pid, True)]
    finally:
        svd.stop()


def test_destination_down_then_kill_then_up(tmp_path, studies):
    data = tmp_path / "data"
    pacs = StoreSCP(tmp_path / "pacs")  # not started: the destination is down
    svd = Svdmark(data, [f"{pacs.aet}@127.0.0.1:{pacs.port}"]).start()
    try:
        send_studies(studies, svd.port)
        wait_until(lambda: journal_value(data, "SELECT COUNT(*) FROM deliveries WHERE attempts >= 1") >= 1,
                   180, "a failed delivery attempt")
        outbox = svd.cli("outbox", "list")
        assert "pending" in outbox.stdout
        svd.kill9()
        svd.start()
        pacs.start()
        assert_exactly_once(pacs, studies, data)
        # confirmed deliveries are not sent again after another restart
        n = len(pacs.receptions())
        svd.stop()
        svd.start()
        time.sleep(3)
        assert len(pacs.receptions()) == n
    finally:
        svd.stop()
        pacs.stop()


def test_dead_letters_are_listed_and_resent(tmp_path, studies):
    data = tmp_path / "data"
    pacs = StoreSCP(tmp_path / "pacs")
    cfg = tmp_path / "svdmark.toml"
    cfg.write_text("[assemble]\nsettle_seconds = 1.0\nfallback_seconds = 15.0\n"
                   "[export]\nmax_attempts = 2\nbackoff_seconds = 0.5\n")
    svd = Svdmark(data, [f"{pacs.aet}@127.0.0.1:{pacs.port}"], extra=("--config", str(cfg)))
    svd.start()
    try:
        send_studies(studies[:1], svd.port)
        wait_until(lambda: journal_value(data, "SELECT COUNT(*) FROM deliveries WHERE state='dead'") >= 3,
                   240, "dead letters")
        listed = svd.cli("outbox", "list", "--state", "dead")
        assert listed.returncode == 0 and listed.stdout.count("dead") >= 3
        pacs.start()
        assert svd.cli("outbox", "resend").returncode == 0
        assert_exactly_once(pacs, studies[:1], data)
    finally:
        svd.stop()
        pacs.stop()


def _progress(data_dir) -> tuple[int, int]:
    """(jobs done, deliveries delivered): what a round must have moved before it is killed."""
    try:
        return (journal_value(data_dir, "SELECT COUNT(*) FROM jobs WHERE state='done'"),
                journal_value(data_dir, "SELECT COUNT(*) FROM deliveries WHERE state='delivered'"))
    except ERRORS:  # not created yet
        return (0, 0)


def _deliveries_by_state(data_dir) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for sop_uid, state in journaldb.query(data_dir, "SELECT sop_uid, state FROM deliveries"):
        out.setdefault(state, set()).add(sop_uid)
    return out


class _Quarantines:
    """Jobs the crash loop gets quarantined, checked against the test's own record of the kills and run again at
    once with ``svdmark jobs retry``, as an administrator would (which clears the job's counters)."""

    def __init__(self):
        self.at_kills: dict[int, list[int]] = {}  # job id -> jobs done at each kill that found it running
        self.retried = 0
        self.interruptions = 0  # of the retried jobs, before the retry cleared them

    def kill(self, running: list[int], done: int) -> None:
        for job_id in running:
            self.at_kills.setdefault(job_id, []).append(done)

    def retry(self, svd: Svdmark, data) -> None:
        rows = journaldb.query(data, "SELECT id, interruptions, suspect_interruptions, detail FROM jobs"
                                     " WHERE state='failed' AND detail LIKE 'quarantined:%'")
        for job_id, interruptions, suspect, detail in rows:
            seen = self.at_kills.pop(job_id, [])
            # kills that found it running with more series done than at its last one: the rule's "suspect" ones
            rising = sum(1 for k, done in enumerate(seen) if done > (seen[k - 1] if k else 0))
            assert suspect >= INTERRUPTION_CAP and len(seen) >= INTERRUPTION_CAP and rising >= INTERRUPTION_CAP, \
                f"job {job_id} quarantined ({detail}), but running at {len(seen)} kills, {rising} after progress"
            r = svd.cli("jobs", "retry", str(job_id))
            assert r.returncode == 0, r.stderr
            self.retried += 1
            self.interruptions += interruptions


def _uid(reception: str) -> str:
    return reception.split(".", 1)[1]  # storescp -uf names a file <modality prefix>.<SOP Instance UID>


def test_crash_loop_of_twelve_kills_never_resends_a_confirmed_object(tmp_path, pacs):
    """12 rounds of kill -9. The six studies arrive one per round in the first six rounds, so those kills
    always find work left, however fast the machine: even rounds kill as soon as a job is running (in
    analysis), odd rounds up to a second after the send. Later rounds: odd ones a moment after the service
    moved on (a job done or an object delivered), even ones a few seconds after the restart. After each kill
    the journal says which objects were confirmed (``delivered``) and which one was in flight (``sending``).
    At the end: every target has its SR, SEG and summary; no object confirmed before a kill reached the
    destination again after it; an object that arrived twice (by SOP
    Instance UID: storescp -uf names files by it) was one in flight at a kill, stored by the destination but
    not yet confirmed to us; and no job failed. A job may be quarantined: the kills follow the analyses, so one
    job can be the one running at five kills with other series completed in between, which is the documented
    rule (``Journal.recover``) for a job that kills the service; it is checked against the test's own record of
    the kills, and the job is run again at once with ``svdmark jobs retry``, as an administrator would."""
    import random

    rng = random.Random(1412)
    studies = [write_study(tmp_path / "in" / f"s{k}", seed=60 + k, kind=kind, vendor=vendor, distractors=False,
                           matrix=96, **({"n_slices": 40, "slice_thickness": 2.0} if kind == "swi" else {}))
               for k, (kind, vendor) in enumerate([("ncct", "ge"), ("swi", "siemens"), ("ncct", "siemens"),
                                                   ("swi", "ge"), ("ncct", "philips"), ("swi", "philips")])]
    data = tmp_path / "data"
    svd = Svdmark(data, [f"{pacs.aet}@127.0.0.1:{pacs.port}"]).start()
    targets = sum(len(s.targets) for s in studies)
    kills = []  # (jobs done, objects delivered, jobs running) at each kill
    snapshots = []  # (receptions so far, confirmed, in flight) right after each kill
    quarantines = _Quarantines()
    try:
        for round_ in range(12):
            before = _progress(data)
            if round_ < len(studies):
                send_studies([studies[round_]], svd.port)
                if round_ % 2 == 0:
                    try:
                        wait_until(lambda: journal_value(data, "SELECT COUNT(*) FROM jobs WHERE state='running'") > 0,
                                   60, "an analysis running", interval=0.02)
                    except TimeoutError:
                        pass  # slow to start: kill anyway
                else:
                    time.sleep(rng.uniform(0.0, 1.0))
            elif round_ % 2 and before != (targets, 3 * targets):
                try:
                    wait_until(lambda: _progress(data) != before, 60, "progress in this round", interval=0.1)
                except TimeoutError:
                    pass  # slow: kill anyway
                time.sleep(rng.uniform(0.0, 1.0))
            else:
                time.sleep(rng.uniform(2.0, 6.0))
            running = [job_id for (job_id,) in journaldb.query(data, "SELECT id FROM jobs WHERE state='running'")]
            kills.append((*_progress(data), len(running)))
            quarantines.kill(running, kills[-1][0])
            svd.kill9()
            states = _deliveries_by_state(data)
            snapshots.append((len(pacs.receptions()), states.get("delivered", set()), states.get("sending", set())))
            svd.start()
            quarantines.retry(svd, data)
        assert_results_complete(pacs, studies, data)
        assert journal_value(data, "SELECT COUNT(*) FROM jobs WHERE state='failed'") == 0
        received = [_uid(r) for r in pacs.receptions()]
        for seen, confirmed, _ in snapshots:
            assert not confirmed & set(received[seen:]), "an object confirmed before a kill was sent again"
        in_flight = set().union(*(sending for _, _, sending in snapshots))
        twice = {u for u in received if received.count(u) > 1}
        assert twice <= in_flight, f"duplicates that were not in flight at a kill: {twice - in_flight}"
        assert len(set(received)) == 3 * targets
        interrupted = quarantines.interruptions + journal_value(data, "SELECT COALESCE(SUM(interruptions), 0)"
                                                                      " FROM jobs")
        print(f"(jobs done, objects delivered, jobs running) at each kill: {kills}; interruptions: {interrupted}; "
              f"quarantined by the crash loop, then retried: {quarantines.retried}; "
              f"objects in flight at a kill: {len(in_flight)}; received twice: {len(twice)} of {len(set(received))}")
        assert interrupted >= 1, "no kill landed during an analysis"
        with_work_left = sum(1 for done, delivered, _ in kills if (done, delivered) != (targets, 3 * targets))
        assert with_work_left >= len(studies), f"only {with_work_left} of 12 kills found work left"
    finally:
        svd.stop()

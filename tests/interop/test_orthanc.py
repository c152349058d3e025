"""A real Orthanc (Debian's package) in front of `svdmark serve`, wired with deploy/orthanc/.

storescu → Orthanc → (Lua: stable CT/MR series) → svdmark → SR, SEG, summary → Orthanc,
with Orthanc restarted after it routed and before the results came back (svdmark's outbox
retries), and svdmark killed while Orthanc is sending (the Lua script retries).
Everything is checked through Orthanc's REST API.
"""
from __future__ import annotations

import json
import re
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests import journaldb
from tests.peers import ORTHANC, Orthanc, Svdmark, storescu, wait_until

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy" / "orthanc"

pytestmark = [
    pytest.mark.interop,
    pytest.mark.slow,
    pytest.mark.skipif(not ORTHANC.exists(), reason="Orthanc is not installed (apt-get install orthanc; "
                                                    "scripts/test.sh does this)"),
]


class RoutingOrthanc(Orthanc):
    """Orthanc configured from deploy/orthanc/orthanc.json (its Lua routing to svdmark), verbose."""

    @classmethod
    def routing_to(cls, root: Path, svdmark_port: int, stable_age: int = 3) -> "RoutingOrthanc":
        """A new one, started, routing stable series to svdmark on ``svdmark_port``."""
        cfg = json.loads((DEPLOY / "orthanc.json").read_text())
        cfg.update({"StableAge": stable_age, "LuaScripts": [str(DEPLOY / "svdmark-routing.lua")], "Plugins": []})
        cfg["DicomModalities"]["svdmark"].update({"Host": "127.0.0.1", "Port": svdmark_port})
        return cls.started(root, settings=cfg, verbose=True)

    def metadata(self, level: str, oid: str, name: str) -> str | None:
        try:
            return self.get(f"/{level}/{oid}/metadata/{name}")
        except urllib.error.HTTPError:
            return None

    def series_by_uid(self) -> dict[str, dict]:
        out = {}
        for s in self.get("/series?expand"):
            out[s["MainDicomTags"]["SeriesInstanceUID"]] = s
        return out

    def store_jobs(self) -> list[dict]:
        return [j for j in self.get("/jobs?expand") if j.get("Type") == "DicomModalityStore"]


def _journal(svc: Svdmark, sql: str) -> list[tuple]:
    return journaldb.query(svc.data_dir, sql)


def _studies(tmp_path: Path):
    from svdmark_phantom import write_study

    return [write_study(tmp_path / "studies" / "ncct", seed=61, kind="ncct", vendor="siemens", distractors=True),
            write_study(tmp_path / "studies" / "swi", seed=62, kind="swi", vendor="ge", distractors=True)]


def _results_in_orthanc(orthanc: RoutingOrthanc, studies) -> dict[str, dict[str, int]]:
    """study UID → {modality: number of svdmark result series} as Orthanc holds them."""
    out: dict[str, dict[str, int]] = {s.study_uid: {} for s in studies}
    for s in orthanc.series_by_uid().values():
        tags = s["MainDicomTags"]
        if not str(tags.get("SeriesDescription", "")).startswith("svdmark"):
            continue
        study = orthanc.get(f"/studies/{s['ParentStudy']}")["MainDicomTags"]["StudyInstanceUID"]
        if study in out:
            out[study][tags["Modality"]] = out[study].get(tags["Modality"], 0) + 1
    return out


def _complete(orthanc: RoutingOrthanc, studies) -> bool:
    try:
        got = _results_in_orthanc(orthanc, studies)
    except (urllib.error.URLError, OSError):
        return False
    return all(all(k in got[s.study_uid] for k in ("SR", "SEG", "OT")) for s in studies)


def _check_everything_arrived(orthanc: RoutingOrthanc, svc: Svdmark, studies, files_sent: int) -> None:
    got = _results_in_orthanc(orthanc, studies)
    for s in studies:
        assert got[s.study_uid] == {"SR": 1, "SEG": 1, "OT": 1}, (s.kind, got[s.study_uid])
    # the study is marked for the PACS admin (metadata; a label too on Orthanc >= 1.12)
    for st in orthanc.get("/studies?expand"):
        if st["MainDicomTags"]["StudyInstanceUID"] in got:
            assert set(orthanc.metadata("studies", st["ID"], "svdmark-results").split(",")) >= {"SR", "SEG", "OT"}
    # nothing lost: every source instance is in Orthanc, every delivery confirmed, nothing dead
    results = sum(sum(v.values()) for v in got.values())
    assert orthanc.get("/statistics")["CountInstances"] >= files_sent + results
    states = dict(_journal(svc, "SELECT state, COUNT(*) FROM deliveries GROUP BY state"))
    assert set(states) == {"delivered"}, states
    # svdmark analysed the targets and ignored every distractor (a distractor's job may still be queued when the
    # targets' results have arrived: let the queue drain first, then check every state)
    deadline = time.monotonic() + 60
    while _journal(svc, "SELECT 1 FROM jobs WHERE state IN ('pending', 'running')") and time.monotonic() < deadline:
        time.sleep(0.5)
    jobs = _journal(svc, "SELECT series_uid, state FROM jobs WHERE state != 'superseded'")
    by_series = {uid: state for uid, state in jobs}
    for s in studies:
        for series in s.series:
            if series.target:
                assert by_series.get(series.series_uid) == "done", (series.description, by_series.get(series.series_uid))
            elif series.series_uid in by_series:
                assert by_series[series.series_uid] in ("ignored", "failed"), series.description


@pytest.fixture
def wired(tmp_path):
    svc = Svdmark(tmp_path / "svdmark", [], extra=("--settle-seconds", "5", "--fallback-seconds", "30"))
    orthanc = RoutingOrthanc.routing_to(tmp_path / "orthanc", svc.port)
    svc.destinations = [f"ORTHANC@127.0.0.1:{orthanc.dicom_port}"]
    try:
        svc.start()
        yield svc, orthanc
    finally:
        orthanc.stop()
        svc.stop()
    if orthanc.proc and orthanc.proc.returncode not in (0, -15, None):
        print(orthanc.log_text()[-4000:])


def test_orthanc_routes_to_svdmark_and_takes_results_back_across_an_orthanc_restart(wired, tmp_path):
    svc, orthanc = wired
    studies = _studies(tmp_path)
    files = sorted(p for s in studies for p in Path(s.out_dir).rglob("*.dcm"))
    storescu(files, orthanc.dicom_port, aet="ORTHANC", calling="MODALITY")
    ct_mr = {ser.series_uid for s in studies for ser in s.series}

    # Orthanc sees the series stable and routes each one (CT and MR) to svdmark
    def routed():
        done = [j for j in orthanc.store_jobs() if j["State"] == "Success"]
        failed = [j for j in orthanc.store_jobs() if j["State"] == "Failure"]
        assert not failed, failed
        return len(done) >= len(ct_mr)

    wait_until(routed, 240, "Orthanc to route every series to svdmark", interval=0.3)
    received = {uid for (uid,) in _journal(svc, "SELECT DISTINCT series_uid FROM instances")}
    assert ct_mr <= received

    # Orthanc goes down before the results come back: svdmark's outbox must keep them
    orthanc.stop()
    wait_until(lambda: "delivery_retry" in svc.log_text(), 600,
               "svdmark to finish the analysis and find Orthanc down (delivery_retry)")
    orthanc.start()

    wait_until(lambda: _complete(orthanc, studies), 600, "SR, SEG and summary of both studies in Orthanc", 2)
    wait_until(lambda: not _journal(svc, "SELECT 1 FROM deliveries WHERE state != 'delivered'"), 120,
               "every delivery confirmed")
    _check_everything_arrived(orthanc, svc, studies, len(files))
    # the routed source series are marked as sent
    forwarded = [s for s in orthanc.series_by_uid().values()
                 if s["MainDicomTags"]["Modality"] in ("CT", "MR")
                 and orthanc.metadata("series", s["ID"], "svdmark-forwarded")]
    assert len(forwarded) == len(ct_mr)


def test_orthanc_retries_when_svdmark_is_down_while_it_routes(wired, tmp_path):
    svc, orthanc = wired
    svc.stop()  # svdmark down: Orthanc's sends fail, the Lua script retries with backoff
    studies = _studies(tmp_path)
    files = sorted(p for s in studies for p in Path(s.out_dir).rglob("*.dcm"))
    storescu(files, orthanc.dicom_port, aet="ORTHANC", calling="MODALITY")
    wait_until(lambda: any(j["State"] == "Failure" for j in orthanc.store_jobs()), 120,
               "a failed send to svdmark while it is down", interval=0.5)
    time.sleep(1)
    svc.start()
    wait_until(lambda: _complete(orthanc, studies), 900, "SR, SEG and summary of both studies in Orthanc", 2)
    wait_until(lambda: not _journal(svc, "SELECT 1 FROM deliveries WHERE state != 'delivered'"), 120,
               "every delivery confirmed")
    _check_everything_arrived(orthanc, svc, studies, len(files))
    assert "retrying in" in orthanc.log_text()


def test_series_not_yet_stable_when_orthanc_restarts_are_still_routed(tmp_path):
    """Orthanc forgets unstable series at shutdown; the Lua script re-sends unconfirmed ones at start-up."""
    from svdmark_phantom import write_study

    svc = Svdmark(tmp_path / "svdmark", [], extra=("--settle-seconds", "5", "--fallback-seconds", "30"))
    orthanc = RoutingOrthanc.routing_to(tmp_path / "orthanc", svc.port, stable_age=60)
    svc.destinations = [f"ORTHANC@127.0.0.1:{orthanc.dicom_port}"]
    try:
        svc.start()
        study = write_study(tmp_path / "study", seed=63, kind="ncct", vendor="siemens", matrix=48, n_slices=6,
                            slice_thickness=5.0)
        files = sorted(Path(study.out_dir).rglob("*.dcm"))
        storescu(files, orthanc.dicom_port, aet="ORTHANC", calling="MODALITY")
        orthanc.stop()  # long before StableAge
        orthanc.start()
        wait_until(lambda: len([j for j in orthanc.store_jobs() if j["State"] == "Success"]) >= len(study.series),
                   120, "Orthanc to re-send the series after its restart", interval=0.3)
        stored = _journal(svc, "SELECT COUNT(*), COUNT(DISTINCT series_uid) FROM instances")[0]
        assert stored == (len(files), len(study.series))
        assert "re-sending" in orthanc.log_text()
    finally:
        orthanc.stop()
        svc.stop()


def _send_attempts(orthanc: RoutingOrthanc, series_id: str) -> set[tuple]:
    """Every try Orthanc made to send one series: (job, state, completion time) of its store jobs.
    A retry shows up as a changed tuple (a resubmitted job) or a new one (a new job)."""
    return {(j["ID"], j["State"], j.get("CompletionTime")) for j in orthanc.store_jobs()
            if series_id in (j.get("Content") or {}).get("ParentResources", [])}


def test_a_failing_destination_does_not_block_the_lua_engine(tmp_path):
    """svdmark down: while the first series waits for its next try, a second series is still routed
    (the Lua engine is free), and once svdmark is up both arrive without anyone resending them."""
    from svdmark_phantom import write_study

    # svdmark is down until it starts: its port is held, bound and not listening (every connection is refused),
    # so no other test's listener can take it meanwhile and accept Orthanc's sends
    down = socket.socket()
    down.bind(("127.0.0.1", 0))
    svc = Svdmark(tmp_path / "svdmark", [], port=down.getsockname()[1],
                  extra=("--settle-seconds", "1", "--fallback-seconds", "10"))
    orthanc = None
    try:
        orthanc = RoutingOrthanc.routing_to(tmp_path / "orthanc", svc.port, stable_age=2)
        first, second = (write_study(tmp_path / f"study{i}", seed=64 + i, kind="ncct", vendor="siemens", matrix=48,
                                     n_slices=6, slice_thickness=5.0, distractors=False) for i in range(2))
        storescu(sorted(Path(first.out_dir).rglob("*.dcm")), orthanc.dicom_port, aet="ORTHANC", calling="MODALITY")
        first_id = wait_until(lambda: next((s["ID"] for uid, s in orthanc.series_by_uid().items()
                                            if uid == first.series[0].series_uid), None), 60, "the first series")

        # wait for a retry far enough away that a second series can become stable meanwhile
        def long_wait():
            waits = [int(w) for w in re.findall(rf"sending series {first_id} failed \(attempt \d+\); retrying in (\d+)(?:\.\d+)? s",
                                                orthanc.log_text())]
            return waits[-1] if waits and waits[-1] >= 8 else None

        try:
            delay = wait_until(long_wait, 120, "a retry of the first series at least 8 s away", interval=0.2)
        except TimeoutError as e:
            routing = [line for line in orthanc.log_text().splitlines()
                       if "svdmark-routing" in line or "resubmit" in line]
            try:
                jobs = [(j["ID"], j["State"], j.get("ErrorDescription")) for j in orthanc.store_jobs()]
            except OSError as down_too:  # Orthanc itself gone: keep the timeout's message
                jobs = f"not readable ({down_too})"
            raise AssertionError(f"{e}; store jobs: {jobs}; routing log:\n" + "\n".join(routing[-40:])) from e
        before = _send_attempts(orthanc, first_id)
        storescu(sorted(Path(second.out_dir).rglob("*.dcm")), orthanc.dicom_port, aet="ORTHANC", calling="MODALITY")
        second_id = wait_until(lambda: next((s["ID"] for uid, s in orthanc.series_by_uid().items()
                                             if uid == second.series[0].series_uid), None), 30, "the second series")
        wait_until(lambda: _send_attempts(orthanc, second_id), 4 * delay, "the second series routed", interval=0.2)
        assert _send_attempts(orthanc, first_id) == before, \
            "the second series was routed only after the first one's retry: the Lua engine was blocked"

        down.close()
        svc.start()  # the destination comes back: the queued retries deliver both series
        wanted = {first.series[0].series_uid, second.series[0].series_uid}
        wait_until(lambda: wanted <= {u for (u,) in _journal(svc, "SELECT DISTINCT series_uid FROM instances")},
                   120, "both series received by svdmark after it came back")
        wait_until(lambda: all(orthanc.metadata("series", i, "svdmark-forwarded") for i in (first_id, second_id)),
                   60, "both series marked as forwarded")
        assert "retrying in" in orthanc.log_text()
    finally:
        down.close()
        if orthanc is not None:
            orthanc.stop()
        svc.stop()

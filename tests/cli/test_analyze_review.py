"""`svdmark analyze` where a review found it broke: a worker process that dies, a damaged element in a file's UIDs,
a failed series read through a relative and an absolute input, the output folder given as an input."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pandas as pd

from svdmark.batch import run as batch_run
from svdmark.batch.discover import _identity

from .conftest import SVDMARK, run_cli


def _ncct_files(studies) -> list[Path]:
    return sorted(next(Path(studies["ncct"].out_dir).glob("02_*")).glob("*.dcm"))


def test_a_damaged_element_in_a_files_uids_is_an_error_row_not_the_end_of_the_run(tmp_path, studies, fake_models):
    """pydicom parses a value when it is read: the damaged VR of the Study Instance UID raised after dcmread."""
    data = tmp_path / "data"
    data.mkdir()
    for f in _ncct_files(studies):
        shutil.copy(f, data)
    raw = bytearray(_ncct_files(studies)[0].read_bytes())
    at = raw.index(b"\x20\x00\x0d\x00UI")  # (0020,000D) Study Instance UID, explicit VR
    raw[at + 4:at + 6] = b"U\xc2"  # a VR that is no VR (one flipped byte)
    (data / "zz_bad.dcm").write_bytes(bytes(raw))
    assert _identity(bytes(raw))["study_uid"] == ""
    r = run_cli("analyze", data, "-o", tmp_path / "out", "--data-dir", tmp_path / "dd", "-q",
                env={"SVDMARK_MODELS_DIR": str(fake_models)})
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-800:]
    errors = pd.read_csv(tmp_path / "out" / "errors.csv", dtype=str)
    assert errors["file"].str.endswith("zz_bad.dcm").sum() == 1


def test_a_failed_series_read_through_a_relative_and_an_absolute_input_gets_its_rows(tmp_path, studies):
    files = _ncct_files(studies)
    for name, part in (("a", files[:3]), ("b", files[3:])):
        (tmp_path / name).mkdir()
        for f in part:
            shutil.copy(f, tmp_path / name)
    (tmp_path / "nomodels").mkdir()  # no model: the series fails, and its error row names its folders
    r = run_cli("analyze", "a", tmp_path / "b", "-o", tmp_path / "out", "--data-dir", tmp_path / "dd", "-q",
                env={"SVDMARK_MODELS_DIR": str(tmp_path / "nomodels")}, cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-1500:]
    results = pd.read_csv(tmp_path / "out" / "results.csv", dtype=str)
    assert results["status"].tolist() == ["failed"]
    errors = pd.read_csv(tmp_path / "out" / "errors.csv", dtype=str)
    assert errors["file"].tolist() == [str(tmp_path)]


def test_the_output_folder_given_as_an_input_is_refused(tmp_path):
    (tmp_path / "data").mkdir()
    r = run_cli("analyze", tmp_path / "data", "-o", tmp_path / "data")
    assert r.returncode == 2 and "is also an input folder" in r.stderr and "Traceback" not in r.stderr


def test_a_worker_killed_from_outside_costs_no_series(tmp_path, fake_models):
    """The OOM killer (or an admin) kills a worker of `--workers 2`: the series it held run again, each alone, and
    every series is analysed; no traceback."""
    from svdmark_phantom import write_study

    for i in range(4):
        write_study(tmp_path / "in" / f"s{i}", seed=30 + i, kind="ncct", vendor="siemens", matrix=96, n_slices=24,
                    slice_thickness=5.0, wml_ml=3.0, distractors=False)
    env = dict(os.environ, SVDMARK_PSEUDONYM_KEY="k", SVDMARK_MODELS_DIR=str(fake_models))
    p = subprocess.Popen([SVDMARK, "analyze", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--data-dir",
                          str(tmp_path / "dd"), "--workers", "2", "-q"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
    workers: list[int] = []
    for _ in range(300):
        time.sleep(0.1)
        children = subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True, text=True).stdout.split()
        workers = [int(c) for c in children if "spawn_main" in Path(f"/proc/{c}/cmdline").read_text(errors="replace")]
        if workers:
            break
    assert workers, "no worker process seen"
    time.sleep(1.0)  # at work on a series
    os.kill(workers[0], signal.SIGKILL)
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0 and "Traceback" not in err, err[-1500:]
    results = pd.read_csv(tmp_path / "out" / "results.csv", dtype=str)
    assert len(results) == 4 and set(results["status"]) == {"analysed"}


class _Pool:
    """A stand-in for the process pool: the series named ``killer`` kills its worker (every future in flight
    breaks, and the pool with them); any other series is analysed at once."""

    made = 0

    def __init__(self, killer: str, log: list):
        self.killer, self.log, self.flight, self.broken, self._processes = killer, log, [], False, {}
        _Pool.made += 1
        self.serial = _Pool.made

    def submit(self, fn, group, *args):
        f: Future = Future()
        self.log.append((self.serial, group.series_uid))
        self.flight.append(f)
        if self.broken or group.series_uid == self.killer:
            self.broken = True
            for g in self.flight:
                if not g.done():
                    g.set_exception(BrokenProcessPool("a worker died"))
        else:
            f.set_result({"series_uid": group.series_uid, "status": "analysed"})
        return f

    def shutdown(self, wait=True, cancel_futures=False):
        pass


def test_a_series_that_kills_its_worker_every_time_gets_a_failed_row_and_the_others_go_on(tmp_path, monkeypatch):
    from svdmark.batch.discover import SeriesGroup
    from svdmark.config import Config
    from svdmark.domain import RouteKind, RoutingDecision

    log: list = []
    runner = batch_run.Runner(Config(data_dir=tmp_path / "dd"), tmp_path / "out", workers=2)
    monkeypatch.setattr(runner, "_pool", lambda n: _Pool("1.2.3", log))
    monkeypatch.setattr(batch_run, "identity_row", lambda g: {"series_uid": g.series_uid})
    decision = RoutingDecision(RouteKind.WML, "ncct", "a head CT")
    todo = [(SeriesGroup("1.2", uid, ()), decision) for uid in ("1.2.1", "1.2.2", "1.2.3", "1.2.4", "1.2.5")]
    rows = {r["series_uid"]: r for r in runner._execute(todo, frozenset())}
    assert set(rows) == {"1.2.1", "1.2.2", "1.2.3", "1.2.4", "1.2.5"}
    assert {u for u, r in rows.items() if r["status"] == "analysed"} == {"1.2.1", "1.2.2", "1.2.4", "1.2.5"}
    assert rows["1.2.3"]["status"] == "failed" and "worker process analysing this series died" in rows["1.2.3"][
        "reason"]
    pools = [p for p, _ in log]
    alone = [u for (p, u) in log if pools.count(p) == 1]
    assert "1.2.3" in alone  # found by running it alone

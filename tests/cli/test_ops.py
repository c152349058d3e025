"""Operations as a PACS team meets them: `status`, `echo`, `jobs`, `outbox`, with and without --json,
against a real `svdmark serve` and a real dcmtk storescp; exit codes for a listener that is down and a
destination that does not answer; one-line errors; a closed pipe; the data-dir lock; the default config."""
from __future__ import annotations

import json
import os
import re
import subprocess
import tomllib
from pathlib import Path

import pydicom
import pytest

from tests import journaldb

from .conftest import REPO, SVDMARK, Serve, run_cli, wait_until

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def _one_line_error(r: subprocess.CompletedProcess, code: int, *words: str) -> None:
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    for w in words:
        assert w in r.stderr, r.stderr


def _json_error(r: subprocess.CompletedProcess, code: int, *words: str) -> dict:
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    err = json.loads(r.stdout)["error"]
    assert err["exit_code"] == code and all(w in err["message"] for w in words), err
    return err


def _description(study, target: bool) -> str:
    series = next(s for s in study.series if s.target == target)
    path = next(p for p in Path(study.out_dir).rglob("*.dcm")
                if pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID == series.series_uid)
    return str(pydicom.dcmread(path, stop_before_pixels=True).SeriesDescription)


@pytest.fixture(scope="module")
def served(tmp_path_factory, fake_models, studies):
    """A service with one analysed NCCT study (target + distractors), its results delivered.
    Shared by this module's tests; the last one stops its destination and then the service."""
    serve = Serve(tmp_path_factory.mktemp("ops") / "data", {"SVDMARK_MODELS_DIR": str(fake_models)}).start()
    try:
        serve.send(sorted(Path(studies["ncct"].out_dir).rglob("*.dcm")))
        wait_until(lambda: serve.settled(len(studies["ncct"].series)), 240,
                   "every series journalled and the results delivered")
        yield serve
    finally:
        serve.stop()


def test_closed_pipe_ends_quietly(served):
    """`svdmark jobs list --json | head`: the reader is gone before svdmark writes; no traceback."""
    for args in (("jobs", "list", "--json"), ("jobs", "list"), ("outbox", "list")):
        p = subprocess.Popen([SVDMARK, *args, "--data-dir", str(served.data_dir)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        p.stdout.close()  # like `head` that has read enough
        err = p.stderr.read()
        assert p.wait(60) == 141 and err == "", err


def test_second_serve_on_the_same_data_dir_is_refused(served, tmp_path):
    r = run_cli("serve", "--data-dir", served.data_dir, "--port", "0", "--host", "127.0.0.1",
                env=served.env, timeout=60)
    _one_line_error(r, 1, f"PID {served.svd.proc.pid}", "in use")
    assert json.loads((served.data_dir / "service.json").read_text())["pid"] == served.svd.proc.pid  # untouched


def test_serve_without_models_refuses_unless_receive_only(tmp_path, studies):
    empty = tmp_path / "no-models"
    empty.mkdir()
    env = {"SVDMARK_MODELS_DIR": str(empty)}
    r = run_cli("serve", "--data-dir", tmp_path / "data", "--port", "0", env=env, timeout=60)
    _one_line_error(r, 1, "no active model", "--receive-only")
    assert not (tmp_path / "data" / "service.json").exists()

    from tests.peers import Svdmark, send_studies

    svd = Svdmark(tmp_path / "data", [], extra=("--receive-only", "--settle-seconds", "1"), env=env).start()
    try:
        assert "no_active_model" in svd.log_text()
        send_studies([studies["ncct"]], svd.port)  # received and journalled; the analysis fails: no model

        def failed():
            jobs = json.loads(svd.cli("jobs", "list", "--state", "failed", "--json").stdout)
            return jobs or None

        (job,) = wait_until(failed, 120, "the target series' job failed for want of a model")
        assert "no model" in job["detail"]
        r = svd.cli("jobs", "list", "--state", "failed")
        assert "no model" in r.stdout and r.stdout.splitlines()[0].startswith("ID")
        assert json.loads(svd.cli("jobs", "retry", str(job["id"]), "--json").stdout) == \
            {"job_id": job["id"], "requeued": True}
        wait_until(failed, 120, "the re-queued job failed again (still no model)")
        r = svd.cli("jobs", "retry", str(job["id"]))
        assert r.returncode == 0 and r.stdout.strip() == f"job {job['id']} re-queued"
    finally:
        svd.stop()


def test_echo_default_calling_ae_is_admitted_by_the_example_allow_list(tmp_path, fake_models):
    """The deploy example's allow-list admits `svdmark echo` (and `status`) run on the host."""
    example = REPO / "deploy" / "svdmark.example.toml"
    allowed = tomllib.loads(example.read_text())["listener"]["allow_calling_ae"]
    from tests.peers import Svdmark, echo_ok

    extra = [a for entry in allowed for a in ("--allow-calling-ae", entry)]
    svd = Svdmark(tmp_path / "data", [], extra=tuple(extra), env={"SVDMARK_MODELS_DIR": str(fake_models)})
    svd.start = lambda: None  # peers' start waits for dcmtk echoscu (calling AE ECHOSCU), which this list refuses
    cmd = [SVDMARK, "serve", "--port", str(svd.port), "--host", "127.0.0.1", "--data-dir", str(svd.data_dir), *extra]
    svd.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env={**os.environ, **svd.env})
    try:
        peer = f"SVDMARK@127.0.0.1:{svd.port}"
        r = wait_until(lambda: (lambda r: r if r.returncode == 0 else None)(run_cli("echo", peer, "--config", example)),
                       60, "svdmark echo with its default calling AE answered")
        assert "ok (ok; calling AE SVDMARK-ADMIN)" in r.stdout
        assert not echo_ok(svd.port, "SVDMARK")  # the list is in force: dcmtk's ECHOSCU is refused
        doc = json.loads(run_cli("echo", peer, "--json", env={"SVDMARK_CONFIG": str(example)}, check_rc=0).stdout)
        assert doc == {"peer": peer, "calling_ae": "SVDMARK-ADMIN", "ok": True, "detail": "ok"}
        r = run_cli("echo", peer, "--calling-ae", "STRANGER", check_rc=1)
        assert "association rejected" in r.stdout and "--calling-ae" in r.stdout
        assert json.loads(run_cli("echo", peer, "--calling-ae", "STRANGER", "--json", check_rc=1).stdout)["ok"] is False
    finally:
        svd.stop()
    r = run_cli("echo", "NOT-A-PEER", check_rc=1)
    _one_line_error(r, 1, "AET@HOST:PORT")


def test_default_config_path_and_bad_values(tmp_path, served):
    cfg = tmp_path / "site.toml"
    cfg.write_text(f'[storage]\ndata_dir = "{served.data_dir}"\n')
    r = run_cli("jobs", "list", "--json", env={"SVDMARK_CONFIG": str(cfg), **journaldb.env_for(served.data_dir)},
                check_rc=0)  # no --config, no --data-dir
    assert len(json.loads(r.stdout)) == len(served.jobs())
    models = run_cli("models", "list", env={"SVDMARK_CONFIG": str(cfg), **served.env}, check_rc=0).stdout
    assert models.splitlines()[0].split() == ["NAME", "VERSION", "TASK", "STATE", "SOURCE", "SHA256", "PATH"]
    _json_error(run_cli("models", "install", tmp_path / "nothing", "--json"), 2, "no such folder")
    _one_line_error(run_cli("jobs", "list", "--config", tmp_path / "missing.toml"), 1, "does not exist")
    _one_line_error(run_cli("jobs", "list", env={"SVDMARK_CONFIG": str(tmp_path / "gone.toml")}), 1, "gone.toml")
    _one_line_error(run_cli("serve", "--log-level", "verbose", "--data-dir", tmp_path / "d"), 2, "log level")
    _json_error(run_cli("serve", "--log-level", "verbose", "--json"), 2, "log level")
    _one_line_error(run_cli("jobs", "show", "abc"), 2, "invalid int value")
    _one_line_error(run_cli("jobs", "list", "--limit", "0", "--data-dir", served.data_dir), 1, "--limit")
    bad = tmp_path / "bad.toml"
    bad.write_text('[logging]\nlevel = "verbose"\n')
    _one_line_error(run_cli("serve", "--config", bad, "--data-dir", tmp_path / "d2"), 1, "log level")


@pytest.mark.embedded_journal  # the default journal is a file under --data-dir
def test_a_data_dir_without_its_journal_is_named(tmp_path):
    _one_line_error(run_cli("jobs", "list", "--data-dir", tmp_path / "nowhere"), 1, "no journal")
    _json_error(run_cli("jobs", "list", "--data-dir", tmp_path / "nowhere", "--json"), 1, "no journal")


def test_jobs_outbox_status_text_json_and_exit_codes(served, studies, monkeypatch, capsys):
    """Last in this module: it stops the destination, then the service."""
    target, distractor = _description(studies["ncct"], True), _description(studies["ncct"], False)

    text = served.cli("jobs", "list").stdout.splitlines()
    assert text[0].split() == ["ID", "RECEIVED", "MOD", "SERIES", "DESCRIPTION", "ACCESSION", "STATE", "RESULT",
                               "REASON"]
    done = [line for line in text if f"  {target}  " in line]  # the column, not "CTA <target>"
    assert len(done) == 1 and " done " in done[0] and re.search(r"\d+\.\d\d mL WML", done[0]), text
    assert any(distractor in line and " ignored " in line for line in text), text

    jobs = json.loads(served.cli("jobs", "list", "--json").stdout)
    assert len(jobs) == len(studies["ncct"].series)
    j = next(j for j in jobs if j["state"] == "done")
    assert j["series_description"] == target and j["modality"] == "CT" and j["result"].endswith("mL WML")
    assert ISO.match(j["received_at"]) and ISO.match(j["finished_at"]) and ISO.match(j["created_at"])
    assert all(x["detail"] for x in jobs if x["state"] == "ignored")
    assert json.loads(served.cli("jobs", "list", "--state", "done", "--json").stdout) == [j]

    shown = served.cli("jobs", "show", str(j["id"])).stdout
    assert f"series_description: {target}" in shown and "summary.wml_ml:" in shown and not shown.startswith("{")
    full = json.loads(served.cli("jobs", "show", str(j["id"]), "--json").stdout)
    assert isinstance(full["summary"], dict) and full["summary"]["task"] == "wml"  # an object, not a string
    assert ISO.match(full["started_at"])

    _one_line_error(served.cli("jobs", "retry", str(j["id"]), check_rc=None), 1, "is done, not failed")
    _json_error(served.cli("jobs", "retry", str(j["id"]), "--json", check_rc=None), 1, "not failed")
    _one_line_error(served.cli("jobs", "show", "99999", check_rc=None), 1, "no job 99999")
    _json_error(served.cli("jobs", "show", "99999", "--json", check_rc=None), 1, "no job 99999")

    out = served.cli("outbox", "list").stdout.splitlines()
    assert out[0].split()[:6] == ["ID", "DESTINATION", "STATE", "TRIES", "KIND", "MOD"]
    assert len(out) == 4 and all(f"  {target}  " in line and " delivered " in line for line in out[1:]), out
    rows = json.loads(served.cli("outbox", "list", "--json").stdout)
    assert sorted(r["kind"] for r in rows) == ["seg", "sr", "summary"]
    assert all(r["series_description"] == target and ISO.match(r["delivered_at"]) for r in rows)
    assert served.cli("outbox", "list", "--state", "dead").stdout.strip() == "outbox empty (no dead deliveries)"
    assert served.cli("outbox", "resend").stdout.strip() == "0 dead letter(s) re-queued"
    assert json.loads(served.cli("outbox", "resend", "--json").stdout) == {"requeued": 0, "ids": None}
    _one_line_error(served.cli("outbox", "resend", str(rows[0]["id"]), check_rc=None), 1, "not dead")
    _json_error(served.cli("outbox", "resend", "99999", "--json", check_rc=None), 1, "no delivery 99999")
    shown = json.loads(served.cli("outbox", "show", str(rows[0]["id"]), "--json").stdout)
    assert {k: shown[k] for k in ("id", "state", "sop_uid")} == {k: rows[0][k] for k in ("id", "state", "sop_uid")}
    assert [t["outcome"] for t in shown["tries"]] == ["delivered"] and ISO.match(shown["tries"][0]["at"])
    human = served.cli("outbox", "show", str(rows[0]["id"])).stdout
    assert f"id: {rows[0]['id']}\n" in human and "\ntry 1: " in human and "  delivered" in human
    _one_line_error(served.cli("outbox", "show", "99999", check_rc=None), 1, "no delivery 99999")

    status = served.cli("status")
    assert status.stdout.startswith("status: ok\n") and "CLIPACS@127.0.0.1" in status.stdout
    assert "{" not in status.stdout  # readable text, no dict reprs
    doc = json.loads(served.cli("status", "--json").stdout)
    assert doc["status"] == "ok" and doc["exit_code"] == 0 and doc["listener"]["up"]
    assert ISO.match(doc["listener"]["started_at"]) and doc["destinations"][0]["reachable"]

    # the data directory's disk nearly full (listener and destination fine): exit 5 with the reason
    import svdmark.health
    from svdmark.cli.main import main

    monkeypatch.setattr(svdmark.health, "_disk_free", lambda spool_dir: (False, 3 * 2**20))
    capsys.readouterr()
    assert main(["status", "--json", "--data-dir", str(served.data_dir)]) == 5
    doc = json.loads(capsys.readouterr().out)
    assert doc["status"] == "UNHEALTHY" and doc["problems"] == {
        "disk": "disk full: 3.0 MiB free on the data directory's file system"}
    monkeypatch.undo()

    # an active model that would not load (its file replaced since activation): UNHEALTHY, named, not "ok"
    import svdmark.lifecycle
    from svdmark.errors import ModelError

    def corrupt(self, name, version):
        raise ModelError(f"checksum mismatch for {name} {version}: the file is corrupt or was replaced")

    monkeypatch.setattr(svdmark.lifecycle.Lifecycle, "spec", corrupt)
    assert main(["status", "--json", "--data-dir", str(served.data_dir)]) == 5
    doc = json.loads(capsys.readouterr().out)
    assert doc["status"] == "UNHEALTHY" and all(not m["verified"] for m in doc["models"])
    assert any(k.startswith("model wml-ncct") and "checksum mismatch" in v for k, v in doc["problems"].items())
    monkeypatch.undo()

    served.pacs.stop()  # the destination goes away
    r = served.cli("status", check_rc=4)
    assert r.stdout.startswith("status: destination UNREACHABLE") and "UNREACHABLE" in r.stdout
    doc = json.loads(served.cli("status", "--json", check_rc=4).stdout)
    assert doc["exit_code"] == 4 and doc["destinations_reachable"] == {"CLIPACS@127.0.0.1:%d" % served.pacs.port:
                                                                       False}

    served.svd.stop()  # and the listener
    r = served.cli("status", check_rc=3)
    assert r.stdout.startswith("status: listener DOWN") and "last started as PID" in r.stdout
    doc = json.loads(served.cli("status", "--json", check_rc=3).stdout)
    assert doc["listener"]["up"] is False and doc["status"] == "listener DOWN"

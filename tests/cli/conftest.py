"""CLI tests run `svdmark` through its console entry point, as a user does.

Models: tests use tiny real ONNX models built by ``fakemodels`` (packaged layout, own
manifests and sha256) through ``SVDMARK_MODELS_DIR``, so they do not depend on training.
Tests marked ``packaged_models`` use ``models_onnx/`` and skip while it holds no model.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from . import fakemodels

REPO = Path(__file__).resolve().parents[2]
SVDMARK = shutil.which("svdmark", path=str(Path(sys.executable).parent)) or shutil.which("svdmark")
DCMTK = Path("/usr/bin")


def run_cli(*args, env: dict | None = None, timeout: float = 300, check_rc: int | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess:
    assert SVDMARK, "the svdmark entry point is not installed (pip install -e .)"
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    r = subprocess.run([SVDMARK, *[str(a) for a in args]], capture_output=True, text=True, timeout=timeout,
                       env=full_env, cwd=cwd)
    if check_rc is not None:
        assert r.returncode == check_rc, f"svdmark {' '.join(map(str, args))} -> {r.returncode}\n" \
                                         f"stdout:\n{r.stdout[-3000:]}\nstderr:\n{r.stderr[-3000:]}"
    return r


def run_json(*args, env: dict | None = None, check_rc: int = 0):
    r = run_cli(*args, "--json", env=env, check_rc=check_rc)
    return json.loads(r.stdout)


def packaged_models() -> list[Path]:
    return sorted(p.parent for p in (REPO / "models_onnx").glob("*/*/manifest.json"))


@pytest.fixture(scope="session")
def fake_models(tmp_path_factory) -> Path:
    pytest.importorskip("onnx", reason="the test models are built with the onnx package (pip install -e .[test])")
    root = tmp_path_factory.mktemp("models_onnx")
    fakemodels.make_wml(root, "1.0.0")
    fakemodels.make_cmb(root, "1.0.0")
    return root


@pytest.fixture(scope="session")
def studies(tmp_path_factory) -> dict:
    """A small NCCT study (with distractor series) and a small SWI study, 64 px."""
    from svdmark.phantom import write_study

    root = tmp_path_factory.mktemp("studies")
    ncct = write_study(root / "ncct", seed=21, kind="ncct", vendor="siemens", matrix=64, distractors=True,
                       slice_thickness=5.0)
    swi = write_study(root / "swi", seed=22, kind="swi", vendor="ge", matrix=64, distractors=False,
                      slice_thickness=2.5)
    return {"root": root, "ncct": ncct, "swi": swi}


# --------------------------------------------------------------------------- DICOM peers
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def echo_ok(port: int, aet: str) -> bool:
    r = subprocess.run([str(DCMTK / "echoscu"), "-aec", aet, "-to", "2", "127.0.0.1", str(port)],
                       capture_output=True, timeout=20)
    return r.returncode == 0


def wait_for_echo(port: int, aet: str, proc: subprocess.Popen | None = None, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before answering C-ECHO")
        if echo_ok(port, aet):
            return
        time.sleep(0.3)
    raise TimeoutError(f"{aet} on port {port} did not answer C-ECHO within {timeout} s")


def storescu_cmd(files, port: int, aet: str = "SVDMARK") -> list[str]:
    return [str(DCMTK / "storescu"), "-aet", "CLITEST", "-aec", aet, "-nh", "127.0.0.1", str(port),
            *[str(f) for f in files]]


def wait_until(predicate, timeout: float, what: str, interval: float = 0.5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


class Serve:
    """`svdmark serve` (the entry point) in a subprocess, with a dcmtk storescp as its PACS."""

    def __init__(self, data_dir: Path, env: dict):
        self.data_dir = data_dir
        self.env = env
        self.port = free_port()
        self.pacs_dir = data_dir.parent / "pacs"
        self.pacs_port = free_port()
        self.log = data_dir.parent / "serve.log"
        self.proc = self.pacs = None

    def start(self) -> "Serve":
        if not (DCMTK / "storescp").exists():
            pytest.skip("dcmtk is not installed (/usr/bin/storescp); see scripts/test.sh")
        self.pacs_dir.mkdir(parents=True, exist_ok=True)
        self.pacs = subprocess.Popen([str(DCMTK / "storescp"), "-aet", "CLIPACS", "-od", str(self.pacs_dir), "+xa",
                                      "-uf", str(self.pacs_port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_echo(self.pacs_port, "CLIPACS", self.pacs)
        cmd = [SVDMARK, "serve", "--port", str(self.port), "--host", "127.0.0.1", "--data-dir", str(self.data_dir),
               "--destination", f"CLIPACS@127.0.0.1:{self.pacs_port}", "--settle-seconds", "1",
               "--fallback-seconds", "10"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"),
                                     env=dict(os.environ, PYTHONUNBUFFERED="1", **self.env))
        wait_for_echo(self.port, "SVDMARK", self.proc)
        return self

    def send(self, files, background: bool = False):
        cmd = storescu_cmd(files, self.port)
        if background:
            return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        return r

    def cli(self, *args, check_rc: int | None = 0):
        return run_cli(*args, "--data-dir", self.data_dir, env=self.env, check_rc=check_rc)

    def jobs(self) -> list[dict]:
        r = self.cli("jobs", "list", "--json")
        return json.loads(r.stdout)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        for p in (self.proc, self.pacs):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()

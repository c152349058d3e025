"""CLI tests run `svdmark` through its console entry point, as a user does.

Models: tests use tiny real ONNX models built by ``fakemodels`` (packaged layout, own
manifests and sha256) through ``SVDMARK_MODELS_DIR``, so they do not depend on training.
Tests marked ``packaged_models`` use the packaged ``svdmark/data/models/`` and skip while it holds no model.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import journaldb
from tests.peers import DCMTK, StoreSCP, Svdmark, storescu, storescu_commands, wait_until  # noqa: F401

from . import fakemodels

REPO = Path(__file__).resolve().parents[2]
SVDMARK = shutil.which("svdmark", path=str(Path(sys.executable).parent)) or shutil.which("svdmark")


def run_cli(*args, env: dict | None = None, timeout: float = 300, check_rc: int | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess:
    assert SVDMARK, "the svdmark entry point is not installed (pip install -e .)"
    args = [str(a) for a in args]
    journal = journaldb.env_for(Path(args[args.index("--data-dir") + 1])) if "--data-dir" in args[:-1] else {}
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", **journal, **(env or {}))
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
    return sorted(p.parent for p in (REPO / "service" / "svdmark" / "data" / "models").glob("*/*/manifest.json"))


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
    from svdmark_phantom import write_study

    root = tmp_path_factory.mktemp("studies")
    ncct = write_study(root / "ncct", seed=21, kind="ncct", vendor="siemens", matrix=64, distractors=True,
                       slice_thickness=5.0)
    swi = write_study(root / "swi", seed=22, kind="swi", vendor="ge", matrix=64, distractors=False,
                      slice_thickness=2.5)
    return {"root": root, "ncct": ncct, "swi": swi}


# --------------------------------------------------------------------------- DICOM peers


class Serve:
    """`svdmark serve` in a subprocess with a dcmtk storescp as its PACS (peers from tests/peers.py)."""

    def __init__(self, data_dir: Path, env: dict):
        self.data_dir = data_dir
        self.env = env
        self.pacs = StoreSCP(data_dir.parent / "pacs", aet="CLIPACS")
        self.svd: Svdmark | None = None

    @property
    def pacs_dir(self) -> Path:
        return self.pacs.folder

    def start(self) -> "Serve":
        if not (DCMTK / "storescp").exists():
            pytest.skip("dcmtk is not installed (/usr/bin/storescp); see scripts/test.sh")
        self.pacs.start()
        self.svd = Svdmark(self.data_dir, [f"{self.pacs.aet}@127.0.0.1:{self.pacs.port}"],
                           extra=("--settle-seconds", "1", "--fallback-seconds", "10"), env=self.env).start()
        return self

    def send(self, files, background: bool = False):
        """Send with dcmtk storescu; in the background, a Popen of the (single) command."""
        if background:
            (cmd,) = storescu_commands(files, self.svd.port, calling="CLITEST")
            return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        return storescu(files, self.svd.port, calling="CLITEST")

    def cli(self, *args, check_rc: int | None = 0):
        return run_cli(*args, "--data-dir", self.data_dir, env=self.env, check_rc=check_rc)

    def jobs(self) -> list[dict]:
        return json.loads(self.cli("jobs", "list", "--json").stdout)

    def settled(self, n_jobs: int) -> list[dict] | None:
        """The outbox rows once at least ``n_jobs`` jobs are journalled, none pending or running, and every
        delivery delivered (for ``wait_until``); else None."""
        jobs = self.jobs()
        if len(jobs) < n_jobs or any(j["state"] in ("pending", "running") for j in jobs):
            return None
        rows = json.loads(self.cli("outbox", "list", "--json").stdout)
        return rows if rows and all(r["state"] == "delivered" for r in rows) else None

    def log_text(self) -> str:
        return self.svd.log_text() if self.svd else ""

    def stop(self) -> None:
        if self.svd:
            self.svd.stop()
        self.pacs.stop()

"""docs/admin-guide.md, run as a reader runs it: its ```` ```bash run ```` blocks, in order, with bash.

The guide starts and stops `svdmark serve` itself (in the background, its PID in ``$WORK_DIR/serve.pid``);
the test provides what the guide assumes is there: a dcmtk storescp as the PACS, a JPEG-lossless phantom
head CT (with distractor series) as ``$STUDY_DIR``, free localhost ports, and small real ONNX models named
like the shipped versions the guide activates and rolls back. Each block runs in a fresh
``bash -euo pipefail`` after the guide's first block (the settings a reader's shell would hold) and must
end with exit 0, or N where its info string says ``exit=N``. The guide must stop whatever it starts; the test
stops what is left (each block runs in a session of its own), also when a block fails.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from . import fakemodels
from .conftest import REPO, SVDMARK, packaged_models
from tests.peers import DCMTK, StoreSCP, free_port, wait_until

GUIDE = REPO / "docs" / "admin-guide.md"
GUIDE_VERSIONS = ("1.2.0", "1.12.5")  # the wml-ncct versions the guide activates and rolls back to
BLOCK_TIMEOUT = 180.0
FENCE = re.compile(r"^```(?P<info>[^`\n]*)\n(?P<code>.*?)^```[ \t]*$", re.M | re.S)


@dataclass(frozen=True)
class Block:
    line: int  # where the block starts in the guide (1-based)
    code: str
    exit_code: int = 0


def runnable_blocks(markdown: str) -> list[Block]:
    """The fenced blocks whose info string is ``bash run`` (optionally ``exit=N``), in order."""
    blocks = []
    for m in FENCE.finditer(markdown):
        words = m["info"].split()
        if words[:2] != ["bash", "run"]:
            continue
        codes = [int(w.removeprefix("exit=")) for w in words[2:] if w.startswith("exit=")]
        blocks.append(Block(markdown.count("\n", 0, m.start()) + 1, m["code"], codes[0] if codes else 0))
    return blocks


def run_block(block: Block, settings: Block, env: dict, timeout: float = BLOCK_TIMEOUT,
              sessions: list[int] | None = None) -> subprocess.CompletedProcess:
    """Run one block after the settings block; AssertionError unless it ends with its expected exit code.

    The block runs in a session of its own, whose id (its bash's PID) goes to ``sessions``: what it leaves
    running in the background can be found and stopped (:func:`stop_sessions`)."""
    script = "set -euo pipefail\n" + ("" if block is settings else settings.code) + block.code
    p = subprocess.Popen(["bash", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                         cwd=env["WORK_DIR"], start_new_session=True)
    if sessions is not None:
        sessions.append(p.pid)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        p.kill()
        p.communicate()
        raise AssertionError(f"guide block at line {block.line} ran past {timeout} s:\n{block.code}") from exc
    assert p.returncode == block.exit_code, (
        f"guide block at line {block.line} exited {p.returncode}, the guide says {block.exit_code}:\n{block.code}"
        f"stdout:\n{out[-3000:]}\nstderr:\n{err[-3000:]}")
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def guide_env(work: Path, **values: str) -> dict:
    """The environment of a reader's shell: dcmtk before svdmark's venv (pynetdicom installs a `storescu`
    of its own there), `svdmark` on PATH, no inherited SVDMARK_* settings, the guide's variables."""
    bin_dir = work / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    if not (bin_dir / "svdmark").exists():
        (bin_dir / "svdmark").symlink_to(SVDMARK)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SVDMARK_")}
    env.update(PATH=f"{bin_dir}:{DCMTK}:/bin:{os.environ.get('PATH', '')}", PYTHONUNBUFFERED="1",
               WORK_DIR=str(work), **values)
    return env


def alive_in(sessions: list[int]) -> list[int]:
    """PIDs of the processes still running in these sessions (what the blocks left in the background)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) in sessions and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


def stop_sessions(sessions: list[int], grace: float = 30.0) -> None:
    """SIGTERM whatever still runs in these sessions (svdmark finishes its job in hand), SIGKILL after ``grace``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in alive_in(sessions):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + grace
        while alive_in(sessions) and time.time() < deadline:
            time.sleep(0.2)


# --------------------------------------------------------------------------- the runner can fail


def test_runnable_blocks_are_found_with_their_exit_codes():
    text = "x\n```bash run\necho a\n```\n\n```bash\nnot run\n```\n```text\nout\n```\n```bash run exit=3\nfalse\n```\n"
    assert runnable_blocks(text) == [Block(2, "echo a\n"), Block(12, "false\n", 3)]
    guide = runnable_blocks(GUIDE.read_text())
    assert len(guide) > 15 and "export WORK_DIR" in guide[0].code


def test_a_block_with_a_wrong_option_fails_the_run(tmp_path):
    env = guide_env(tmp_path)
    settings = Block(1, 'export STUDY_DIR="$WORK_DIR/study"\n')
    run_block(Block(2, "storescu --version\n"), settings, env)
    with pytest.raises(AssertionError, match="line 3 exited 1"):
        run_block(Block(3, 'storescu -aet X --no-such-option 127.0.0.1 1 "$STUDY_DIR"\n'), settings, env)
    with pytest.raises(AssertionError, match="line 4 exited 2"):
        run_block(Block(4, "svdmark jobs list --no-such-option\n"), settings, env)
    with pytest.raises(AssertionError, match="line 5 exited 1"):  # a failure before the last command counts
        run_block(Block(5, "false\ntrue\n"), settings, env)
    with pytest.raises(AssertionError, match="exited 0, the guide says 3"):
        run_block(Block(6, "true\n", exit_code=3), settings, env)


def test_the_guide_names_shipped_model_versions():
    shipped = {(p.parent.name, p.name) for p in packaged_models()}
    assert {("wml-ncct", v) for v in GUIDE_VERSIONS} <= shipped, sorted(shipped)


# --------------------------------------------------------------------------- the guide, run


@pytest.fixture(scope="module")
def guide_models(tmp_path_factory) -> Path:
    pytest.importorskip("onnx", reason="the test models are built with the onnx package (pip install -e .[test])")
    root = tmp_path_factory.mktemp("guide_models")
    for version, gain in zip(GUIDE_VERSIONS, (4.0, 4.5)):
        fakemodels.make_wml(root, version, gain=gain)
        fakemodels.make_cmb(root, version, gain=gain - 1.0)
    return root


@pytest.mark.embedded_journal  # the guide walks through the embedded install
def test_admin_guide_runs(tmp_path, guide_models):
    if not (DCMTK / "storescp").exists() or not (DCMTK / "dcmsend").exists():
        pytest.skip("dcmtk is not installed (/usr/bin/storescp, dcmsend); see scripts/test.sh")
    if not shutil.which("curl"):
        pytest.skip("the guide reads /healthz and /metrics with curl, which is not installed")
    from svdmark_phantom import write_study

    work = tmp_path / "work"
    study = write_study(tmp_path / "study", seed=41, kind="ncct", vendor="siemens", matrix=64, distractors=True,
                        slice_thickness=5.0, n_slices=16, transfer_syntax="jpeg14")
    target = next(s for s in study.series if s.target)
    assert target.transfer_syntax == "1.2.840.10008.1.2.4.70"  # JPEG lossless: the guide's storescu -xs
    env = guide_env(work, SVDMARK_CONFIG=str(work / "svdmark.toml"), DATA_DIR=str(work / "data"),
                    SVDMARK_PORT=str(free_port()), METRICS_PORT=str(free_port()), PACS_PORT=str(free_port()),
                    STUDY_DIR=str(study.out_dir), SVDMARK_MODELS_DIR=str(guide_models))
    pacs = StoreSCP(work / "pacs", port=int(env["PACS_PORT"]), aet="PACS").start()
    blocks = runnable_blocks(GUIDE.read_text())
    sessions: list[int] = []
    outputs: list[tuple[Block, subprocess.CompletedProcess]] = []
    try:
        for block in blocks:
            outputs.append((block, run_block(block, blocks[0], env, sessions=sessions)))
        left = alive_in(sessions)
    finally:
        stop_sessions(sessions)
        pacs.stop()

    # what the guide promises
    def results_kinds() -> set[str] | None:
        k = {str(ds.Modality) for ds in pacs.datasets()}
        return k if {"SR", "SEG", "OT"} <= k else None

    # the head CT's results reached the PACS (storescp lists a file once its reception is logged)
    kinds = wait_until(results_kinds, 30, "SR, SEG and summary at the PACS")
    log = (work / "serve.log").read_text()
    assert "instance_replaced" not in log and "KO" not in kinds  # a resend as first sent replaces nothing
    statuses = [(b.exit_code, r.stdout) for b, r in outputs if re.search(r"^svdmark status\b", b.code, re.M)]
    assert [code for code, _ in statuses] == [0, 3, 0], statuses  # up; after the stop; after kill -9 + restart
    assert "status: ok" in statuses[0][1] and "status: listener DOWN" in statuses[1][1] and \
        "status: ok" in statuses[2][1], statuses
    assert not left, f"the guide left processes running: {left}"
    assert log.count('"event": "listening"') == 3, "three starts: §3, and before and after the kill -9"

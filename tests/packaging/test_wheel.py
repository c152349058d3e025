"""The wheel as a user installs it: built with `pip wheel`, installed into a fresh virtual environment
(no system site-packages, no PYTHONPATH, no checkout in sight) and run from a folder outside the
checkout: `svdmark models list` finds every packaged model version, `svdmark models verify` passes the
active ones (checksum and self-test), and `svdmark demo` gets all six result objects to its PACS. A clean
venv installs from pip's cache/index in about 70 s on the dev machine."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def _run(cmd, cwd: Path, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    return r


def _ok(r: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert r.returncode == 0, f"{' '.join(r.args)} -> {r.returncode}\nstdout:\n{r.stdout[-3000:]}\n" \
                              f"stderr:\n{r.stderr[-3000:]}"
    return r


SOURCES = ("pyproject.toml", "README.md", "LICENSE", "service")  # what the build reads (as the Dockerfiles copy)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Built from a copy of the tracked sources (git ls-files; their working-tree content), so that
    setuptools' build/ stays out of the checkout, no stale build/lib of an earlier build slips into
    the wheel, and a model version still being written by training (untracked) is not shipped."""
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("wheel")
    tracked = subprocess.run(["git", "ls-files", "-z", "--", *SOURCES], cwd=REPO, capture_output=True,
                             check=True).stdout.decode().split("\0")
    for name in filter(None, tracked):
        if (REPO / name).is_file():  # a tracked file deleted in the working tree is not shipped
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    _ok(_run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", out, src], cwd=out))
    (whl,) = out.glob("svdmark-*.whl")
    return whl


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> dict:
    """A fresh venv with the wheel installed; the environment and a working folder outside the checkout."""
    root = tmp_path_factory.mktemp("user")
    venv = root / "venv"
    _ok(_run([sys.executable, "-m", "venv", venv], cwd=root))
    _ok(_run([venv / "bin" / "python", "-m", "pip", "install", "-q", wheel], cwd=root, timeout=1200))
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "SVDMARK_MODELS_DIR", "SVDMARK_TEMPLATES", "SVDMARK_CONFIG",
                        "SVDMARK_DATA_DIR")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    work = root / "work"
    work.mkdir()
    return {"venv": venv, "env": env, "cwd": work, "svdmark": venv / "bin" / "svdmark"}


def _shipped_model_files() -> list[Path]:
    """The model files the wheel ships (relative to service/): the tracked ones, as the wheel fixture copies."""
    tracked = subprocess.run(["git", "ls-files", "service/svdmark/data/models"], cwd=REPO, capture_output=True,
                             text=True, check=True).stdout.split()
    return sorted(Path(p).relative_to("service") for p in tracked if (REPO / p).is_file())


def test_wheel_carries_models_templates_license_and_metadata(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        meta = Parser().parsestr(z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode())
    shipped = _shipped_model_files()
    assert shipped and all(str(p) in names for p in shipped), "a packaged model file is missing from the wheel"
    with zipfile.ZipFile(wheel) as z:  # every version's files byte for byte (the other test self-tests the active)
        changed = [str(p) for p in shipped if z.read(str(p)) != (REPO / "service" / p).read_bytes()]
    assert not changed, f"packaged model files differ in the wheel: {changed}"
    for name in ("common.json", "wml_ncct.json", "cmb_swi.json"):
        assert f"svdmark/data/sr_templates/{name}" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    import svdmark

    assert meta["Version"] == svdmark.__version__  # one source: svdmark/__init__.py
    assert meta["License"] == "Apache-2.0" or "Apache" in (meta.get("License-Expression") or meta["License"])
    assert any(u.startswith("Repository, https://") for u in meta.get_all("Project-URL"))
    requires = meta.get_all("Requires-Dist")
    gpu = [r for r in requires if r.startswith("onnxruntime-gpu")]
    cpu = [r for r in requires if r.startswith("onnxruntime") and not r.startswith("onnxruntime-gpu")]
    assert gpu and 'platform_machine == "x86_64"' in gpu[0] and 'sys_platform == "linux"' in gpu[0]
    assert cpu and 'platform_machine != "x86_64"' in cpu[0] and 'sys_platform != "linux"' in cpu[0]


def test_installed_wheel_runs_outside_the_checkout(installed):
    cwd, env, svdmark_bin = installed["cwd"], installed["env"], installed["svdmark"]
    where = _ok(_run([installed["venv"] / "bin" / "python", "-c", "import svdmark; print(svdmark.__file__)"],
                     cwd=cwd, env=env)).stdout.strip()
    assert str(installed["venv"]) in where and str(REPO) not in where, where

    import svdmark

    assert _ok(_run([svdmark_bin, "--version"], cwd=cwd, env=env)).stdout.strip() == f"svdmark {svdmark.__version__}"

    # every packaged version is found in the installed package, one active per task; the active ones pass their
    # checksum and self-test there (the self-tests of all seven versions took 81 s; every version's files are
    # compared byte for byte in the wheel by test_wheel_carries_models_templates_license_and_metadata)
    listed = json.loads(_ok(_run([svdmark_bin, "models", "list", "--json"], cwd=cwd, env=env)).stdout)
    versions = {p.parts[-3:-1] for p in _shipped_model_files() if p.name == "manifest.json"}
    assert {(r["name"], r["version"]) for r in listed} == versions, listed
    assert all(r["source"] == "packaged" and str(installed["venv"]) in r["path"] for r in listed), listed
    active = [r for r in listed if r["active"]]
    assert sorted(r["name"] for r in active) == ["cmb-swi", "wml-ncct"], listed
    for r in active:
        verified = json.loads(_ok(_run([svdmark_bin, "models", "verify", r["name"], r["version"], "--json"],
                                       cwd=cwd, env=env)).stdout)
        assert [(v["name"], v["version"]) for v in verified] == [(r["name"], r["version"])], verified
        assert all(v["ok"] and v["checksum"] == "ok" and v["self_test"]["passed"] for v in verified), verified

    demo = _run([svdmark_bin, "demo", "--json", "--workdir", cwd / "demo"], cwd=cwd, env=env, timeout=1200)
    report = json.loads(_ok(demo).stdout)
    assert report["objects_received"] == report["objects_expected"] == 6, report
    assert report["ok"] is True
    assert sorted(o["modality"] for o in report["objects"]) == ["OT", "OT", "SEG", "SEG", "SR", "SR"]
    text = _ok(_run([svdmark_bin, "demo", "--help"], cwd=cwd, env=env)).stdout
    assert "six result" in text.replace("\n", " ")

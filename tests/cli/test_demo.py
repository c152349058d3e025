"""`svdmark demo` succeeds only when all six result objects reach DEMOPACS (the wheel test in
tests/packaging runs it with the shipped models); with a model missing it must fail, not exit 0."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from .conftest import run_cli

# `svdmark demo` runs a whole embedded site in a temporary folder of its own (its SQLite journal included)
pytestmark = pytest.mark.embedded_journal


def test_demo_fails_when_results_are_missing(tmp_path, fake_models):
    only_wml = tmp_path / "models"
    shutil.copytree(fake_models / "wml-ncct", only_wml / "wml-ncct")  # no microbleed model: the SWI series fails
    env = {"SVDMARK_MODELS_DIR": str(only_wml)}
    r = run_cli("demo", "--workdir", tmp_path / "demo", env=env, timeout=900)
    assert r.returncode == 1, (r.stdout[-2000:], r.stderr[-2000:])
    assert "Objects received at DEMOPACS: 3 of 6" in r.stdout
    assert "svdmark demo: FAILED: 3 of 6 result objects arrived" in r.stdout

    report = json.loads(run_cli("demo", "--json", "--workdir", tmp_path / "demo-json", env=env, timeout=900,
                                check_rc=1).stdout)
    assert (report["objects_received"], report["objects_expected"], report["ok"]) == (3, 6, False)
    assert any(j["state"] == "failed" and "no model" in j["detail"] for j in report["jobs"])


def test_demo_refuses_at_once_without_any_model(tmp_path):
    (tmp_path / "empty").mkdir()
    r = run_cli("demo", "--workdir", tmp_path / "demo", env={"SVDMARK_MODELS_DIR": str(tmp_path / "empty")},
                check_rc=1)
    assert "no model is active" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "demo" / "studies").exists()


def test_demo_without_the_study_generator_says_how_to_install_it(tmp_path):
    shadow = tmp_path / "shadow" / "svdmark_phantom"  # first on the path: importing it fails as if it were absent
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'svdmark_phantom'\", "
                                        "name='svdmark_phantom')\n")
    path = os.pathsep.join(filter(None, [str(shadow.parent), os.environ.get("PYTHONPATH")]))
    r = run_cli("demo", "--workdir", tmp_path / "demo", env={"PYTHONPATH": path}, check_rc=2)
    assert r.stderr.strip().splitlines() == [
        "svdmark demo: error: the demo's study generator svdmark_phantom is not installed: "
        "pip install 'svdmark[phantom]' (it ships in the svdmark wheel)"], r.stderr
    assert not (tmp_path / "demo" / "studies").exists()


def test_demo_with_every_model_gets_six_objects(tmp_path, fake_models):
    r = run_cli("demo", "--json", "--workdir", tmp_path / "demo", env={"SVDMARK_MODELS_DIR": str(fake_models)},
                timeout=900, check_rc=0)
    report = json.loads(r.stdout)
    assert (report["objects_received"], report["objects_expected"], report["ok"]) == (6, 6, True)

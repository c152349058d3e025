"""`svdmark models` against what a careless or hostile package, a tampered file or an odd reference would do
(found by a review): each refused with one sentence, audited, and never changing what runs."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli import fakemodels

SVDMARK = str(Path(sys.executable).parent / "svdmark")


def cli(*args, models: Path):
    env = dict(os.environ, SVDMARK_MODELS_DIR=str(models), SVDMARK_PSEUDONYM_KEY="review")
    return subprocess.run([SVDMARK, *map(str, args)], capture_output=True, text=True, env=env, timeout=300)


def js(*args, models: Path):
    r = cli(*args, "--json", models=models)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def pkg(tmp_path_factory):
    root = tmp_path_factory.mktemp("pkg")
    fakemodels.make_wml(root, "1.0.0")
    fakemodels.make_cmb(root, "1.0.0")
    return root


def test_manifest_file_outside_the_version_folder_is_refused(tmp_path, pkg):
    """A manifest whose "file" points outside its folder must not install: the installed version would not hold
    its model (and the self-test then reads its reference from that outside folder, too)."""
    src = fakemodels.make_wml(tmp_path / "cand", "1.0.3", gain=5.0)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.move(src / "model.onnx", outside / "model.onnx")
    shutil.copy(src / "selftest.npz", outside / "selftest.npz")
    m = json.loads((src / "manifest.json").read_text())
    m["file"] = str(outside / "model.onnx")
    (src / "manifest.json").write_text(json.dumps(m))
    data = tmp_path / "data"
    r = cli("models", "install", src, "--data-dir", data, models=pkg)
    assert r.returncode == 1 and "field 'file' must name a file in the version's folder" in r.stderr, r.stderr
    assert not (data / "models" / "wml-ncct" / "1.0.3").exists()


def test_install_of_a_version_with_another_task_is_refused(tmp_path):
    """Installing (not activating) wml-ncct 2.0.0 whose manifest says task cmb must not change what runs: the
    registry decides a name's task from its highest version, so WML loses its model and CMB gets the WML one."""
    pkgw = tmp_path / "pkgw"
    fakemodels.make_wml(pkgw, "1.0.0")
    cand = fakemodels.renamed(fakemodels.make_cmb(tmp_path / "tmpc", "2.0.0"), "wml-ncct", tmp_path / "cross")
    data = tmp_path / "data"
    r = cli("models", "install", cand, "--data-dir", data, models=pkgw)
    assert r.returncode == 1 and "a model name keeps its task" in r.stderr, r.stderr
    from svdmark.infer.registry import ModelRegistry

    reg = ModelRegistry(pkgw, data / "models")
    assert reg.active("wml").label == "wml-ncct 1.0.0"


def test_activation_refused_for_a_checksum_mismatch_is_audited(tmp_path, pkg):
    """admin-guide §7: activation checks the sha256 and the self-test first, 'and the refusal is audited too'."""
    data = tmp_path / "data"
    src = fakemodels.make_wml(tmp_path / "cand", "1.0.1", gain=5.0)
    js("models", "install", src, "--data-dir", data, models=pkg)
    with open(data / "models" / "wml-ncct" / "1.0.1" / "model.onnx", "ab") as fh:
        fh.write(b"tampered")
    r = cli("models", "activate", "wml-ncct", "1.0.1", "--data-dir", data, models=pkg)
    assert r.returncode == 1 and "checksum mismatch" in r.stderr, r.stderr
    show = js("models", "show", "wml-ncct", "1.0.0", "--data-dir", data, models=pkg)
    actions = [a["action"] for a in show["recent_changes"]]
    assert "model.activate_refused" in actions, actions


def test_rollback_onto_the_shadow_version_leaves_it_shadowing_itself(tmp_path, pkg):
    data = tmp_path / "data"
    src = fakemodels.make_wml(tmp_path / "cand", "1.0.1", gain=5.0)
    js("models", "install", src, "--data-dir", data, models=pkg)
    js("models", "activate", "wml-ncct", "1.0.1", "--data-dir", data, models=pkg)
    js("models", "shadow", "wml-ncct", "1.0.0", "--data-dir", data, models=pkg)
    js("models", "rollback", "wml-ncct", "--data-dir", data, models=pkg)
    state = json.loads((data / "models" / "state.json").read_text())
    assert state["shadow"].get("wml-ncct") != state["active"]["wml-ncct"], state


def test_bland_altman_limits_undefined_for_one_case():
    from svdmark.validation.agreement import bland_altman

    ba = bland_altman([1.0], [2.0])
    assert ba == {"n": 1, "bias": -1.0, "bias_ci95": None, "sd": None, "loa_low": None, "loa_high": None}


def test_points_json_with_two_coordinates_is_refused(tmp_path):
    """A points.json point given as {"center_mm": [x, y]} is taken as a 2-vector; match_points then reshapes the
    reference to (-1, 3), so three such bleeds silently become two wrong ones."""
    from svdmark.validation import references

    p = tmp_path / "points.json"
    p.write_text(json.dumps({"1.2.3": [{"center_mm": [1, 2]}, {"center_mm": [3, 4]}, {"center_mm": [5, 6]}]}))
    with pytest.raises(references.BadReference, match="needs three finite coordinates"):
        references._read_points_json(p)
    p.write_text(json.dumps({"1.2.3": [[1, 2, 3, -2.0]]}))
    with pytest.raises(references.BadReference, match="not a positive number"):
        references._read_points_json(p)
    p.write_text(json.dumps({"1.2.3": [[1, 2, 3, 2.5], {"center_mm": [4, 5, 6]}]}))
    assert references._read_points_json(p)[0].points == [((1.0, 2.0, 3.0), 2.5), ((4.0, 5.0, 6.0), None)]


def test_points_csv_refuses_a_diameter_of_zero_as_points_json_does(tmp_path):
    from svdmark.validation import references

    p = tmp_path / "points.csv"
    p.write_text("series_uid,x,y,z,diameter_mm\n1.2.3,1,2,3,0\n")
    with pytest.raises(references.BadReference, match="diameter_mm '0' is out of range"):
        references._read_points_csv(p)
    p.write_text("series_uid,x,y,z,diameter_mm\n1.2.3,-1,2,3,2.5\n1.2.3,4,5,6,\n")
    assert references._read_points_csv(p)[0].points == [((-1.0, 2.0, 3.0), 2.5), ((4.0, 5.0, 6.0), None)]


@pytest.mark.parametrize("edit", [lambda m: [m], lambda m: dict(m, input=None)], ids=["list", "input-null"])
def test_malformed_manifest_is_one_sentence_not_a_traceback(tmp_path, pkg, edit):
    src = fakemodels.make_wml(tmp_path / "cand", "1.0.4", gain=5.0)
    m = json.loads((src / "manifest.json").read_text())
    (src / "manifest.json").write_text(json.dumps(edit(m)))
    r = cli("models", "install", src, "--data-dir", tmp_path / "data", models=pkg)
    assert r.returncode == 1 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "must hold a JSON object" in r.stderr or "field 'input' is missing" in r.stderr, r.stderr


def test_a_bland_altman_plot_of_one_case_draws_no_limits(tmp_path):
    from svdmark.validation.agreement import bland_altman
    from svdmark.validation.report import _bland_altman

    ba = bland_altman([1.0], [2.0])
    path = _bland_altman(tmp_path / "ba.png", [{"model_value": 1.0, "reference_value": 2.0}],
                         {"primary": {"bland_altman": ba}}, "mL")
    assert path.stat().st_size > 1000


def test_the_same_model_with_another_manifest_is_refused_not_dropped(tmp_path, pkg):
    """Same sha256, new thresholds: 'already installed' would silently keep the old manifest."""
    data = tmp_path / "data"
    src = fakemodels.make_wml(tmp_path / "cand", "1.0.5", gain=5.0)
    js("models", "install", src, "--data-dir", data, models=pkg)
    again = js("models", "install", src, "--data-dir", data, models=pkg)
    assert again["installed"] is False and "same sha256" in again["detail"]
    m = json.loads((src / "manifest.json").read_text())
    m["output"] = dict(m["output"], threshold=0.9 if m["output"].get("threshold") != 0.9 else 0.8)
    (src / "manifest.json").write_text(json.dumps(m))
    r = cli("models", "install", src, "--data-dir", data, models=pkg)
    assert r.returncode == 1 and "the same model but another manifest" in r.stderr, r.stderr


def test_models_show_gives_its_changes_in_utc_as_every_other_output(tmp_path, pkg, monkeypatch):
    from svdmark.domain import iso_utc
    from svdmark.journal import Journal

    data = tmp_path / "data"
    j = Journal(data / "journal.sqlite")
    j.audit("root", "model.activate", {"name": "wml-ncct", "version": "1.0.0", "sha256": "e18deb40b278"})
    (entry,) = j.audit_entries(action_prefix="model.")
    j.close()
    monkeypatch.setenv("TZ", "America/New_York")  # the host's zone must not move the times
    text = cli("models", "show", "wml-ncct", "--data-dir", data, models=pkg)
    assert text.returncode == 0, text.stderr
    assert f"{iso_utc(entry.at)} root" in text.stdout
    shown = js("models", "show", "wml-ncct", "--data-dir", data, models=pkg)
    assert shown["recent_changes"][0]["at"] == iso_utc(entry.at)

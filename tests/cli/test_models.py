"""`svdmark models`: install / verify / activate / rollback / shadow / compare, offline and against a
running `svdmark serve` that keeps receiving studies."""
from __future__ import annotations

import getpass
import json
import shutil
from pathlib import Path

import pandas as pd
import pydicom
import pytest

from tests import journaldb
from . import fakemodels
from .conftest import Serve, run_cli, run_json, wait_until


def _env(models: Path) -> dict:
    return {"SVDMARK_MODELS_DIR": str(models), "SVDMARK_PSEUDONYM_KEY": "lifecycle-test"}


def test_a_version_whose_reference_is_shared_installs_self_contained(tmp_path, fake_models):
    """``models install`` from a models folder laid out as the package is (references in the shared store)."""
    env, data = _env(fake_models), tmp_path / "data"
    vdir = fakemodels.shared_reference(fakemodels.make_wml(tmp_path / "packaged", "1.0.5", gain=5.0))
    out = run_json("models", "install", vdir, "--data-dir", data, env=env)
    assert out["installed"] and "self-test passed" in out["self_test"], out
    (shared,) = (tmp_path / "packaged" / "wml-ncct" / "references").iterdir()
    assert (data / "models" / "wml-ncct" / "1.0.5" / "selftest.npz").read_bytes() == shared.read_bytes()
    shared.unlink()  # the installed copy no longer needs the folder it came from
    (verified,) = run_json("models", "verify", "wml-ncct", "1.0.5", "--data-dir", data, env=env)
    assert verified["ok"] and verified["self_test"]["passed"], verified


def test_install_verify_refuse_activate_rollback_offline(tmp_path, fake_models):
    env, data = _env(fake_models), tmp_path / "data"
    cand = tmp_path / "candidates"
    good = fakemodels.make_wml(cand, "1.0.1", gain=5.0)
    failing = fakemodels.make_wml(cand, "1.0.2", gain=5.0, expect=(5000.0, 6000.0))  # self-test cannot pass
    corrupt = tmp_path / "corrupt" / "wml-ncct" / "1.0.3"
    shutil.copytree(good, corrupt)
    m = json.loads((corrupt / "manifest.json").read_text())
    m["version"] = "1.0.3"
    (corrupt / "manifest.json").write_text(json.dumps(m))
    with open(corrupt / "model.onnx", "ab") as fh:
        fh.write(b"tampered")

    rows = run_json("models", "list", "--data-dir", data, env=env)
    assert {(r["name"], r["version"], r["active"]) for r in rows} == {("wml-ncct", "1.0.0", True),
                                                                     ("cmb-swi", "1.0.0", True)}

    r = run_cli("models", "install", failing, "--data-dir", data, env=env)
    assert r.returncode == 1 and "self-test FAILED" in r.stderr
    r = run_cli("models", "install", corrupt, "--data-dir", data, env=env)
    assert r.returncode == 1 and "checksum mismatch" in r.stderr
    assert not (data / "models" / "wml-ncct" / "1.0.2").exists() and not (data / "models" / "wml-ncct" / "1.0.3").exists()

    out = run_json("models", "install", good, "--data-dir", data, env=env)
    assert out["installed"] and out["version"] == "1.0.1" and out["active_version"] == "1.0.0"  # install != activate
    assert (data / "models" / "wml-ncct" / "1.0.1" / "model.onnx").is_file()
    again = run_json("models", "install", good, "--data-dir", data, env=env)
    assert again["installed"] is False

    verify = run_json("models", "verify", "--data-dir", data, env=env)
    assert len(verify) == 3 and all(v["ok"] for v in verify)

    act = run_json("models", "activate", "wml-ncct", "1.0.1", "--data-dir", data, env=env)
    assert act["previous_version"] == "1.0.0" and act["sha256"] == out["sha256"]
    assert {r["version"] for r in run_json("models", "list", "--data-dir", data, env=env)
            if r["active"] and r["name"] == "wml-ncct"} == {"1.0.1"}
    rb = run_json("models", "rollback", "wml-ncct", "--data-dir", data, env=env)
    assert rb["version"] == "1.0.0" and rb["previous_version"] == "1.0.1"
    r = run_cli("models", "rollback", "wml-ncct", "--data-dir", data, env=env)
    assert r.returncode == 1 and "nothing to roll back" in r.stderr

    r = run_cli("models", "activate", "wml-ncct", "9.9.9", "--data-dir", data, env=env)
    assert r.returncode == 1 and "no version '9.9.9'" in r.stderr
    r = run_cli("models", "shadow", "wml-ncct", "1.0.0", "--data-dir", data, env=env)
    assert r.returncode == 1 and "active version" in r.stderr
    r = run_cli("models", "shadow", "wml-ncct", "--data-dir", data, env=env)
    assert r.returncode == 2

    # a second model name for the same task would make the active model ambiguous: refused
    renamed = fakemodels.renamed(fakemodels.make_wml(tmp_path / "other", "1.0.0"), "wml-other", tmp_path / "other2")
    r = run_cli("models", "install", renamed, "--data-dir", data, env=env)
    assert r.returncode == 1 and "already serves task 'wml'" in r.stderr

    audit = journaldb.query(data, "SELECT actor, action, detail FROM audit ORDER BY id")
    actions = [a for _, a, _ in audit]
    for wanted in ("model.install", "model.verify", "model.activate", "model.rollback"):
        assert wanted in actions
    assert {a for a, _, _ in audit} == {getpass.getuser()}
    activate = json.loads(next(d for _, a, d in audit if a == "model.activate"))
    assert activate["sha256"] == out["sha256"] and activate["previous_version"] == "1.0.0"
    assert activate["previous_sha256"] and len(activate["previous_sha256"]) == 64


def test_rollback_runs_the_self_test_and_install_activate_of_an_installed_version_activates_it(tmp_path,
                                                                                                 fake_models):
    """Rollback checks what activation checks (sha256 and self-test): a version whose self-test now fails is not
    made active again, and the refusal is audited. ``install --activate`` of a version already installed still
    activates it."""
    env, data = _env(fake_models), tmp_path / "data"
    for version in ("1.0.1", "1.0.4"):
        run_json("models", "install", fakemodels.make_wml(tmp_path / "cand", version, gain=5.0), "--data-dir", data,
                 env=env)
    again = run_json("models", "install", tmp_path / "cand" / "wml-ncct" / "1.0.1", "--activate", "--data-dir",
                     data, env=env)
    assert again["installed"] is False and again["activation"]["version"] == "1.0.1"
    run_json("models", "activate", "wml-ncct", "1.0.4", "--data-dir", data, env=env)
    manifest = data / "models" / "wml-ncct" / "1.0.1" / "manifest.json"
    m = json.loads(manifest.read_text())
    m["self_test"]["expect"] = {"volume_ml": [5000.0, 6000.0]}  # edited in place: its self-test cannot pass now
    manifest.write_text(json.dumps(m))
    r = run_cli("models", "rollback", "wml-ncct", "--data-dir", data, env=env)
    assert r.returncode == 1 and "not rolled back to wml-ncct 1.0.1" in r.stderr and "self-test FAILED" in r.stderr
    assert {x["version"] for x in run_json("models", "list", "--data-dir", data, env=env)
            if x["active"] and x["name"] == "wml-ncct"} == {"1.0.4"}
    refused = journaldb.query(data, "SELECT detail FROM audit WHERE action = 'model.rollback_refused'")
    assert [json.loads(d)["version"] for (d,) in refused] == ["1.0.1"]

    r = run_cli("models", "show", "wml-ncct", "9.9.9", "--data-dir", data, env=env)
    assert r.returncode == 1 and "has no version '9.9.9'" in r.stderr
    r = run_cli("models", "compare", "wml-nosuch", "--data-dir", data, env=env)
    assert r.returncode == 1 and "no model named 'wml-nosuch'" in r.stderr
    malformed = fakemodels.make_wml(tmp_path / "cand2", "1.0.6", gain=5.0)
    m = json.loads((malformed / "manifest.json").read_text())
    m["output"]["mask_threshold"] = "high"
    (malformed / "manifest.json").write_text(json.dumps(m))
    r = run_cli("models", "install", malformed, "--data-dir", data, env=env)
    assert r.returncode == 1 and "mask_threshold" in r.stderr and str(malformed) in r.stderr  # the admin's folder
    assert ".staging-" not in r.stderr


def _study(root: Path, seed: int, distractors: bool = False):
    from svdmark_phantom import write_study

    return write_study(root / f"study{seed}", seed=seed, kind="ncct", vendor="siemens", matrix=64,
                       distractors=distractors, slice_thickness=5.0)


def _files(study) -> list[Path]:
    return sorted(Path(study.out_dir).rglob("*.dcm"))


def _target(study) -> str:
    return next(s.series_uid for s in study.series if s.target)


def _job_for(serve: Serve, series_uid: str, timeout: float = 180) -> dict:
    def done():
        for j in serve.jobs():
            if j["series_uid"] == series_uid and j["state"] in ("done", "failed"):
                return j
        return None

    job = wait_until(done, timeout, f"the job of series {series_uid}", interval=1.0)
    assert job["state"] == "done", f"{job}\n{serve.log_text()[-3000:]}"
    return job


def _lifecycle_under_traffic(tmp_path: Path, models_root: Path, candidate: Path, name: str):
    """Install/activate/rollback/shadow/compare against a running service receiving studies."""
    env = _env(models_root)
    serve = Serve(tmp_path / "data", env).start()
    try:
        a = _study(tmp_path / "in", 61, distractors=True)
        serve.send(_files(a))
        job_a = _job_for(serve, _target(a))
        base_version = job_a["model_version"]

        # install + activate while another study is being sent and analysed
        b = _study(tmp_path / "in", 62)
        sending = serve.send(_files(b), background=True)
        inst = serve.cli("models", "install", candidate, "--activate", "--json")
        new_version = json.loads(inst.stdout)["version"]
        assert sending.wait(300) == 0, sending.stderr.read()[-2000:]
        _job_for(serve, _target(b))  # finished, with whichever model it started with

        c = _study(tmp_path / "in", 63)
        serve.send(_files(c))
        assert _job_for(serve, _target(c))["model_version"] == new_version  # no restart needed

        serve.cli("models", "rollback", name)
        d = _study(tmp_path / "in", 64)
        serve.send(_files(d))
        assert _job_for(serve, _target(d))["model_version"] == base_version

        # shadow: the candidate runs beside the active model; only the active model's results are sent
        serve.cli("models", "shadow", name, new_version)
        e = _study(tmp_path / "in", 65)
        serve.send(_files(e))
        job_e = _job_for(serve, _target(e))
        assert job_e["model_version"] == base_version

        def compared():
            rows = json.loads(serve.cli("models", "compare", name, "--json").stdout)
            return rows if rows and rows[0]["series"] >= 1 else None

        cmp_rows = wait_until(compared, 120, "a shadow result")
        c0 = cmp_rows[0]
        assert (c0["active_version"], c0["shadow_version"]) == (base_version, new_version)
        assert c0["series_uids"] == [_target(e)] and c0["errors"] == 0
        stats = c0["wml_ml"]
        assert stats["n"] == 1 and "limits_of_agreement" in stats  # one pair: its |difference| is the max
        assert stats["max_abs_difference"] == pytest.approx(abs(stats["mean_difference"]))
        human = serve.cli("models", "compare", name).stdout
        assert "paired series" in human and "max abs" in human

        jobs = serve.jobs()
        assert not [j for j in jobs if j["state"] == "failed"], jobs
        done = [j for j in jobs if j["state"] == "done"]

        # nothing from the shadow was sent: exactly one SR per analysed series at the PACS
        def all_delivered():
            srs = [ds for ds in (pydicom.dcmread(p, stop_before_pixels=True) for p in serve.pacs_dir.iterdir())
                   if ds.Modality == "SR"]
            return srs if len(srs) >= len(done) else None

        srs = wait_until(all_delivered, 120, "all SRs at the PACS")
        assert len(srs) == len(done)

        audit = {a for (a,) in journaldb.query(serve.data_dir, "SELECT action FROM audit")}
        assert {"model.install", "model.activate", "model.rollback", "model.shadow"} <= audit

        # results export / summary from the journal
        csv_path = tmp_path / "export.csv"
        serve.cli("results", "export", "--format", "csv", "--output", csv_path)
        exported = pd.read_csv(csv_path, dtype=str)
        assert set(_target(s) for s in (a, b, c, d, e)) <= set(exported["series_uid"])
        assert exported["series_uid"].is_unique
        assert exported["patient_pseudonym"].notna().all()
        summary = json.loads(serve.cli("results", "summary", "--json").stdout)
        assert summary["wml_ml"]["n"] == 5 and summary["status"]["analysed"]["n"] == 5

        # analyze (offline) makes the same SR and SEG as serve for the same series and model
        out = tmp_path / "batch"
        run_cli("analyze", a.out_dir, "--output", out, "--data-dir", serve.data_dir, env=env, check_rc=0)
        row = pd.read_csv(out / "results.csv", dtype=str).set_index("series_uid").loc[_target(a)]
        served = {str(ds.SOPInstanceUID): ds for ds in
                  (pydicom.dcmread(p, stop_before_pixels=True) for p in serve.pacs_dir.iterdir())}
        for kind in ("sr", "seg"):
            ours = pydicom.dcmread(out / row[f"{kind}_file"], stop_before_pixels=True)
            assert str(ours.SOPInstanceUID) in served, f"{kind} from analyze differs from serve's"
        assert row["model_version"] == base_version
        assert float(row["wml_ml"]) == pytest.approx(json.loads(
            serve.cli("jobs", "show", str(job_a["id"]), "--json").stdout)["summary"]["wml_ml"])
    finally:
        serve.stop()


@pytest.mark.slow
@pytest.mark.interop
def test_lifecycle_while_serving_fake_models(tmp_path, fake_models):
    candidate = fakemodels.make_wml(tmp_path / "candidate", "1.0.1", gain=5.0)  # different weights, new sha
    _lifecycle_under_traffic(tmp_path, fake_models, candidate, "wml-ncct")


def test_compare_counts_withheld_results_separately(tmp_path):
    """`models compare` on journalled shadow results where the quality gate withheld some: the withheld
    counts (active, shadow, both) are reported and agreement is over the series both measured."""
    from svdmark.journal import Journal, ShadowResult
    from svdmark.summary import ResultSummary

    def wml(v):
        flag = {"rule_id": "aspirin-sich-wml", "category": "not-measurable" if v is None else "below-cut-point"}
        return {"task": "wml", "wml_ml": v, "measurable": v is not None, "flags": [flag],
                "quality_reasons": [] if v is not None else ["image noise is above the model's limit"]}

    data = tmp_path / "data"
    data.mkdir()
    journal = Journal(journaldb.url_for(data))
    pairs = [(2.0, 2.5), (4.0, 3.0), (None, 6.0), (5.0, None), (None, None)]
    for i, (a, s) in enumerate(pairs):
        journal.record_shadow(ShadowResult(f"1.2.{i}", "wml", "wml-ncct", "1.1.0", 100.0 + i, active_name="wml-ncct",
                                           active_version="1.0.0", active_summary=ResultSummary.from_json(wml(a)),
                                           shadow_summary=ResultSummary.from_json(wml(s))))
    journal.close()
    (tmp_path / "models").mkdir()
    env = _env(tmp_path / "models")

    rows = json.loads(run_cli("models", "compare", "wml-ncct", "--data-dir", data, "--json", env=env,
                              check_rc=0).stdout)
    (c,) = rows
    assert c["series"] == 5 and c["errors"] == 0
    assert c["withheld"] == {"active": 2, "shadow": 2, "both": 1, "active_only": 1, "shadow_only": 1}
    assert c["measurable_pairs"] == 2
    st = c["wml_ml"]
    assert st["n"] == 2 and st["mean_difference"] == pytest.approx(-0.25) and st["max_abs_difference"] == 1.0
    assert c["flag_agreement_percent"] == 100.0
    human = run_cli("models", "compare", "wml-ncct", "--data-dir", data, env=env, check_rc=0).stdout
    assert "5 paired series" in human
    assert ("withheld (not reliably measurable): active 2, shadow 2, both 1 (active only 1, shadow only 1);"
            " agreement over the 2 series measurable by both") in human
    assert "nan" not in human.lower() and "max abs 1.000 mL" in human


def test_show_lists_what_every_sr_says_about_the_model(tmp_path):
    """The packaged WML model's measured limitations, as the SR carries them, are on `models show`."""
    r = run_cli("models", "show", "wml-ncct", "1.12.5", "--data-dir", tmp_path / "data")
    assert r.returncode == 0, r.stderr
    assert "limitations (in every SR):" in r.stdout and "off by 5.3 mL on average" in r.stdout

"""Self-tests run on the reference volumes shipped beside each model (``infer.reference``), not on a generator:
the file round-trips, every packaged version has one, and a self-test passes with ``svdmark_phantom`` absent."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from svdmark.domain import Task
from svdmark.errors import ModelError
from svdmark.infer import ModelRegistry, reference
from svdmark.infer.reference import ReferenceCase
from svdmark_phantom import as_volume, make_ncct, make_swi
from tests.cli import fakemodels

MODELS = Path(__file__).resolve().parents[2] / "service" / "svdmark" / "data" / "models"


def test_cases_round_trip_at_their_step(tmp_path):
    ct = make_ncct(seed=3, matrix=48, n_slices=6, slice_thickness=5.0, wml_ml=4.0)
    mr = make_swi(seed=4, matrix=48, n_slices=8, slice_thickness=2.0, n_cmb=3)
    bleeds = np.array([b[0] for b in mr.microbleeds])
    cases = [ReferenceCase(as_volume(ct), wml_ml=ct.truth_wml_ml), ReferenceCase(as_volume(mr), bleeds_mm=bleeds)]
    reference.save(tmp_path / "r.npz", cases, [1.0, 0.1])
    back = reference.load(tmp_path / "r.npz")
    assert len(back) == 2
    for case, got, step in zip(cases, back, (1.0, 0.1)):
        assert np.abs(got.volume.array - case.volume.array).max() <= step / 2 + 1e-3
        np.testing.assert_allclose(got.volume.positions, case.volume.positions)
        assert (got.volume.row_direction, got.volume.column_direction, got.volume.pixel_spacing) == \
               (case.volume.row_direction, case.volume.column_direction, case.volume.pixel_spacing)
        assert got.volume.slice_thickness == case.volume.slice_thickness
        assert got.volume.voxel_volume_mm3 == pytest.approx(case.volume.voxel_volume_mm3)
    assert back[0].truth(Task.WML) == pytest.approx(ct.truth_wml_ml)
    assert back[1].truth(Task.CMB) == 3
    np.testing.assert_allclose(back[1].bleeds_mm, bleeds)
    with pytest.raises(ModelError, match="no microbleeds"):
        back[0].truth(Task.CMB)


def test_a_step_too_fine_for_int16_is_refused(tmp_path):
    ct = make_ncct(seed=3, matrix=32, n_slices=4, slice_thickness=5.0)
    with pytest.raises(ValueError, match="too fine"):
        reference.save(tmp_path / "r.npz", [ReferenceCase(as_volume(ct), wml_ml=0.0)], [0.01])


def test_missing_or_unnamed_reference_fails_the_self_test_clearly(tmp_path):
    from svdmark.infer import Runtime, self_test

    vdir = fakemodels.make_wml(tmp_path, "1.0.0")
    spec = ModelRegistry(tmp_path).get("wml-ncct", "1.0.0")
    (vdir / "selftest.npz").unlink()
    with pytest.raises(ModelError, match="selftest.npz is missing"):
        self_test(spec, Runtime(providers=["CPUExecutionProvider"]))
    st = dict(spec.manifest["self_test"])
    del st["reference"]
    with pytest.raises(ModelError, match="names no reference"):
        self_test(replace(spec, manifest=dict(spec.manifest, self_test=st)), Runtime(providers=["CPUExecutionProvider"]))


def test_every_packaged_version_ships_its_reference_once_per_model():
    manifests = sorted(MODELS.glob("*/*/manifest.json"))
    assert manifests
    used = set()
    for mpath in manifests:
        st = json.loads(mpath.read_text()).get("self_test")
        if not st:
            continue
        assert st.get("reference_sha256"), f"{mpath}: no reference_sha256 (python -m training.selftest_reference)"
        path = reference.locate(mpath.parent, st["reference"], st["reference_sha256"])  # found, and checked
        assert path.parent.name == reference.STORE, f"{path}: not shared (training.selftest_reference --share)"
        cases = reference.load(path)
        assert len(cases) == len(st.get("cases") or [st["kwargs"]])
        assert path.stat().st_size < 3_000_000, f"{path} is {path.stat().st_size / 1e6:.1f} MB"
        used.add(path)
    # the store holds nothing that no version uses
    assert set(MODELS.glob(f"*/{reference.STORE}/*")) == used


def test_a_shared_reference_is_found_checked_and_shared_once(tmp_path):
    from svdmark.infer import Runtime, self_test

    a, b = (fakemodels.shared_reference(fakemodels.make_wml(tmp_path, v)) for v in ("1.0.0", "1.0.1"))
    (stored,) = (tmp_path / "wml-ncct" / reference.STORE).iterdir()
    sha = json.loads((a / "manifest.json").read_text())["self_test"]["reference_sha256"]
    assert stored.name == f"{sha}.npz"
    runtime = Runtime(providers=["CPUExecutionProvider"])
    registry = ModelRegistry(tmp_path)
    assert self_test(registry.get("wml-ncct", "1.0.1"), runtime).passed
    assert registry.versions("wml-ncct") == ["1.0.0", "1.0.1"]  # the store is not a version
    stored.write_bytes(stored.read_bytes()[:-1] + b"x")  # corrupt the shared copy: both versions refuse it
    for version in ("1.0.0", "1.0.1"):
        with pytest.raises(ModelError, match="not the one the manifest names"):
            self_test(registry.get("wml-ncct", version), runtime)
    stored.unlink()
    with pytest.raises(ModelError, match="selftest.npz is missing, nor is the shared copy"):
        self_test(registry.get("wml-ncct", "1.0.0"), runtime)
    manifest = json.loads((b / "manifest.json").read_text())
    manifest["self_test"]["reference_sha256"] = "not-a-digest"
    (b / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="reference_sha256.*64 lower-case hex digits"):
        registry.get("wml-ncct", "1.0.1")


def test_a_self_test_needs_no_generator(tmp_path):
    fakemodels.make_wml(tmp_path, "1.0.0")
    fakemodels.make_cmb(tmp_path, "1.0.0")
    code = ("import sys; sys.modules['svdmark_phantom'] = None\n"  # importing it now fails, as when not installed
            "from svdmark.infer import ModelRegistry, Runtime, self_test\n"
            f"reg = ModelRegistry({str(tmp_path)!r})\n"
            "for name in ('wml-ncct', 'cmb-swi'):\n"
            "    r = self_test(reg.get(name, '1.0.0'), Runtime(providers=['CPUExecutionProvider']))\n"
            "    assert r.passed and r.truth > 0, r.describe()\n"
            "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


@pytest.mark.parametrize("name", ["../escaped.npz", "/tmp/escaped.npz", "sub/selftest.npz", ".hidden.npz", 7])
def test_a_reference_name_that_is_not_a_plain_file_name_is_refused(tmp_path, name):
    """An installed package's manifest cannot make the install read or write outside the version's folder."""
    src = fakemodels.make_wml(tmp_path / "src", "1.0.0")
    sha = json.loads((src / "manifest.json").read_text())["self_test"].get("reference_sha256")
    dest = tmp_path / "dest" / "wml-ncct" / "1.0.0"
    dest.mkdir(parents=True)
    with pytest.raises(ModelError, match="plain file name"):
        reference.copy_into(src, dest, {"reference": name, "reference_sha256": sha})
    with pytest.raises(ModelError, match="plain file name"):
        reference.locate(src, name)
    assert sorted(p.name for p in (tmp_path / "dest").rglob("*")) == ["1.0.0", "wml-ncct"]
    manifest = json.loads((src / "manifest.json").read_text())
    manifest["self_test"]["reference"] = name
    (src / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="self_test.'reference' must be a plain file name"):
        ModelRegistry(tmp_path / "src").get("wml-ncct", "1.0.0")

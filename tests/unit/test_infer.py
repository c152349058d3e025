"""svdmark.infer: registry, providers, determinism, sliding window."""
from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from svdmark.domain import TTA_NAMES, FrameRef, Manifest, ManifestFieldError, Task, Volume
from svdmark.errors import ModelError
from svdmark.infer import ModelRegistry, Pinned, Runtime, default_models_dir, managed
from svdmark.infer.activation import write_state
from svdmark.infer.registry import sha256_file
from svdmark.infer.runtime import (PATCH_TTA, TTA_FLIPS, flip_averaged, flip_combos, patch_averaged, patch_view,
                                   tiled_2d)

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

REPO_MODELS = default_models_dir()


# --------------------------------------------------------------------------- fixtures


def _conv_model(path: Path, seed: int = 0) -> None:
    """Two 3x3 convs + sigmoid (receptive field 5 px): a stand-in fully convolutional WML net."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.5, (4, 1, 3, 3)).astype(np.float32)
    w2 = rng.normal(0, 0.5, (1, 4, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["image", "w1"], ["h"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["h"], ["hr"]),
        helper.make_node("Conv", ["hr", "w2"], ["o"], pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["o"], ["fraction"]),
    ]
    g = helper.make_graph(
        nodes, "wml-test",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 1, "h", "w"])],
        [helper.make_tensor_value_info("fraction", TensorProto.FLOAT, ["n", 1, "h", "w"])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))


def install(root: Path, name="wml-test", version="1.0.0", task="wml", window=32, overlap=8, sha=None) -> Path:
    vdir = root / name / version
    vdir.mkdir(parents=True)
    _conv_model(vdir / "model.onnx")
    manifest = {
        "name": name, "version": version, "task": task, "modality": "CT",
        "sha256": sha or sha256_file(vdir / "model.onnx"),
        "input": {"kind": "slice2d", "spacing_mm": [1.0, 1.0], "window": [window, window], "overlap": overlap,
                  "multiple_of": 1, "pad_value": -1000.0,
                  "normalisation": {"type": "hu_window", "center": 30.0, "scale": 20.0, "clip": [-2.0, 4.0]}},
        "output": {"name": "fraction", "mask_threshold": 0.5},
    }
    (vdir / "manifest.json").write_text(json.dumps(manifest))
    return vdir


def test_a_bad_manifest_is_refused_when_the_registry_loads_it_naming_file_and_field(tmp_path):
    install(tmp_path)
    good = ModelRegistry(tmp_path).get("wml-test", "1.0.0")
    assert good.manifest.input.kind == "slice2d" and good.manifest.input.window == (32, 32)
    assert good.manifest.output.mask_threshold == 0.5 and good.manifest["output"]["name"] == "fraction"  # still a mapping
    for change, field in ((lambda m: m["input"].update(kind="volume3d"), "input.'kind'"),
                          (lambda m: m["output"].update(mask_threshold="half"), "output.'mask_threshold'"),
                          (lambda m: m.update(self_test={"reference": "x.npz", "expect": {"count": [1]}}),
                           "self_test.expect.'count'"),
                          (lambda m: m["input"].pop("normalisation"), "input.'normalisation' is missing")):
        f = tmp_path / "wml-test" / "1.0.0" / "manifest.json"
        m = json.loads(f.read_text())
        change(m)
        f.write_text(json.dumps(m))
        with pytest.raises(ModelError) as err:
            ModelRegistry(tmp_path).get("wml-test", "1.0.0")
        assert str(f) in str(err.value) and field in str(err.value)
        shutil.rmtree(tmp_path / "wml-test")
        install(tmp_path)


def make_volume(array: np.ndarray, spacing=(1.0, 1.0), step=(0.0, 0.0, 1.0)) -> Volume:
    n = array.shape[0]
    positions = np.array([[0.0, 0.0, 0.0]]) + np.arange(n)[:, None] * np.asarray(step)[None, :]
    return Volume(
        array=array.astype(np.float32), row_direction=(1.0, 0.0, 0.0), column_direction=(0.0, 1.0, 0.0),
        pixel_spacing=spacing, positions=positions,
        frames=tuple(FrameRef(f"2.25.{k}", "1.2.840.10008.5.1.4.1.1.2") for k in range(n)),
        frame_of_reference_uid="2.25.99", slice_thickness=float(step[2]),
    )


# --------------------------------------------------------------------------- registry


def test_registry_verifies_checksum_and_picks_versions(tmp_path):
    install(tmp_path, version="1.0.0")
    install(tmp_path, version="1.10.0")
    install(tmp_path, version="1.2.0")
    reg = ModelRegistry(tmp_path)
    assert reg.active(Task.WML).version == "1.10.0"  # numeric ordering, not lexical
    (tmp_path / "wml-test" / "ACTIVE").write_text("1.2.0\n")
    assert reg.active(Task.WML).version == "1.2.0"
    assert [s.version for s in reg.all()] == ["1.0.0", "1.2.0", "1.10.0"]
    with pytest.raises(ModelError, match="no model for task"):
        reg.active(Task.CMB)
    (tmp_path / "wml-test" / "ACTIVE").write_text("9.9.9")
    with pytest.raises(ModelError, match="not installed"):
        reg.active(Task.WML)


def test_one_registry_over_packaged_and_installed_models(tmp_path):
    """Installed models and the activation state answer "which model runs" in the same registry object."""
    packaged, data_dir = tmp_path / "packaged", tmp_path / "data"
    install(packaged, version="1.0.0")
    reg = managed(ModelRegistry(packaged), data_dir)
    assert managed(reg, data_dir) is reg and reg.installed == data_dir / "models"
    assert reg.active(Task.WML).version == "1.0.0" and reg.shadow_version("wml-test") is None  # nothing installed
    install(data_dir / "models", version="1.1.0")
    assert reg.versions("wml-test") == ["1.0.0", "1.1.0"]
    assert (reg.source("wml-test", "1.0.0"), reg.source("wml-test", "1.1.0")) == ("packaged", "installed")
    assert reg.active(Task.WML).version == "1.0.0"  # installing alone changes nothing: the packaged version runs
    write_state(data_dir / "models", {"active": {"wml-test": "1.1.0"}, "shadow": {"wml-test": "1.0.0"}})
    spec = reg.active(Task.WML)
    assert (spec.version, spec.path.parent) == ("1.1.0", data_dir / "models" / "wml-test" / "1.1.0")
    assert reg.shadow_version("wml-test") == "1.0.0"
    assert ModelRegistry(packaged).active(Task.WML).version == "1.0.0"  # the packaged registry alone
    pinned = Pinned(reg.get("wml-test", "1.0.0"))
    assert pinned.active(Task.WML).version == "1.0.0"
    with pytest.raises(ModelError, match="is for wml, not cmb"):
        pinned.active(Task.CMB)
    write_state(data_dir / "models", {"active": {"wml-test": "2.0.0"}})
    with pytest.raises(ModelError, match="state.json names wml-test '2.0.0', which is not installed"):
        reg.active(Task.WML)


def test_registry_rejects_corrupt_model(tmp_path):
    install(tmp_path, sha="0" * 64)
    with pytest.raises(ModelError, match="checksum mismatch"):
        ModelRegistry(tmp_path).get("wml-test", "1.0.0")


def test_registry_env_override(tmp_path, monkeypatch):
    monkeypatch.setenv("SVDMARK_MODELS_DIR", str(tmp_path))
    assert ModelRegistry().root == tmp_path


# --------------------------------------------------------------------------- providers


def test_default_providers_fall_back_to_cpu_with_one_line(tmp_path, caplog):
    install(tmp_path)
    spec = ModelRegistry(tmp_path).active(Task.WML)
    rt = Runtime()  # TensorRT → CUDA → CPU; on a machine without a GPU only CPU loads
    with caplog.at_level(logging.INFO, logger="svdmark.infer"):
        sess, provider = rt.session(spec)
        rt.session(spec)  # cached: no second line
    lines = [r for r in caplog.records if r.name == "svdmark.infer"]
    assert len(lines) == 1 and lines[0].getMessage() == "inference_provider"
    assert lines[0].fields["provider"] == provider
    import onnxruntime as ort

    try:
        gpu = ort.get_device() == "GPU" and provider != "cpu"
    except Exception:  # pragma: no cover
        gpu = False
    if not gpu:
        assert provider == "cpu"


def test_provider_that_raises_is_skipped(tmp_path, caplog):
    import onnxruntime as ort

    install(tmp_path)
    spec = ModelRegistry(tmp_path).active(Task.WML)
    calls = []

    def factory(path, sess_options, providers):
        name = providers[0] if isinstance(providers[0], str) else providers[0][0]
        calls.append(name)
        if name != "CPUExecutionProvider":
            raise RuntimeError("libcudart.so.12: cannot open shared object file\n... 40 more lines ...")
        return ort.InferenceSession(path, sess_options=sess_options, providers=providers)

    rt = Runtime(providers=["CUDAExecutionProvider", "CPUExecutionProvider"], session_factory=factory)
    with caplog.at_level(logging.DEBUG, logger="svdmark.infer"):
        _, provider = rt.session(spec)
    assert provider == "cpu"
    (line,) = [r for r in caplog.records if r.name == "svdmark.infer" and r.levelno >= logging.INFO]
    assert line.fields["provider"] == "cpu" and "skipped" not in line.fields  # the choice: one INFO line
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert calls == ["CUDAExecutionProvider", "CPUExecutionProvider"]
        (detail,) = [r for r in caplog.records if r.name == "svdmark.infer" and r.levelno == logging.DEBUG]
        assert "libcudart" in detail.fields["skipped"] and "40 more" not in detail.fields["skipped"]


def test_no_provider_loads_is_model_error(tmp_path):
    install(tmp_path)
    spec = ModelRegistry(tmp_path).active(Task.WML)

    def factory(*a, **k):
        raise RuntimeError("broken")

    with pytest.raises(ModelError, match="no onnxruntime provider"):
        Runtime(providers=["CPUExecutionProvider"], session_factory=factory).session(spec)


# --------------------------------------------------------------------------- determinism, tiling


def _ncct_like(seed=0, shape=(3, 70, 90)):
    rng = np.random.default_rng(seed)
    return (30 + 15 * rng.standard_normal(shape)).astype(np.float32)


def test_same_input_same_output(tmp_path):
    install(tmp_path)
    spec = ModelRegistry(tmp_path).active(Task.WML)
    vol = make_volume(_ncct_like(), spacing=(0.8, 0.8))
    a = Runtime(intra_op_num_threads=2).run(spec, vol).fraction
    b = Runtime(intra_op_num_threads=1).run(spec, vol).fraction
    c = Runtime(intra_op_num_threads=2).run(spec, vol).fraction
    assert a.shape == vol.shape and a.dtype == np.float32
    np.testing.assert_array_equal(a, c)
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_sliding_window_equals_whole_volume(tmp_path):
    install(tmp_path, window=32, overlap=8)
    spec = ModelRegistry(tmp_path).active(Task.WML)
    vol = make_volume(_ncct_like(shape=(2, 70, 90)))
    rt = Runtime(intra_op_num_threads=1)
    sess, _ = rt.session(spec)
    tiled = rt._run_slice2d(sess, spec.manifest.input, vol)[0]  # 32-px windows → 3 x 4 tiles per slice
    whole = rt._run_slice2d(sess, spec.manifest.input, vol, window=512)[0]  # one window
    np.testing.assert_allclose(tiled, whole, atol=1e-6)


def test_tiling_is_exact_for_any_core_function():
    planes = np.random.default_rng(1).standard_normal((2, 37, 53)).astype(np.float32)

    def box3(x):  # a 3x3 mean (receptive field 3) with zero padding at the tile edge
        from scipy import ndimage as ndi

        return ndi.uniform_filter(x, size=(1, 1, 3, 3), mode="constant")

    whole = tiled_2d(box3, planes, window=256, margin=2, multiple=1, bg=0.0, batch=4)
    tiled = tiled_2d(box3, planes, window=12, margin=2, multiple=1, bg=0.0, batch=1)
    np.testing.assert_allclose(tiled, whole, atol=1e-6)


def test_context_slices_feed_neighbours_as_channels(tmp_path):
    """2.5-D manifests (context_slices = 1): slice k sees (k-1, k, k+1), the stack ends repeat, tiling stays exact."""
    vdir = install(tmp_path, window=32, overlap=8)
    seen = []

    class Sess:
        def get_inputs(self):
            return [type("I", (), {"name": "image"})()]

        def run(self, _, feeds):
            x = feeds["image"]
            seen.append(x.shape[1])
            return [x[:, [1]] / 10 + (x[:, [2]] - x[:, [0]]) / 40]

    manifest = json.loads((vdir / "manifest.json").read_text())
    manifest["input"]["context_slices"] = 1
    manifest["input"]["normalisation"] = {"type": "hu_window", "center": 0.0, "scale": 1.0}
    arr = np.stack([np.full((40, 50), float(k)) for k in range(5)]).astype(np.float32)
    vol = make_volume(arr)
    rt = Runtime(intra_op_num_threads=1)
    out = rt._run_slice2d(Sess(), Manifest.from_json(manifest).input, vol)[0]
    whole = rt._run_slice2d(Sess(), Manifest.from_json(manifest).input, vol, window=512)[0]
    assert set(seen) == {3}
    # channel 1 is slice k, channel 0 slice k-1 and channel 2 slice k+1, the end slices repeated
    expect = np.array([k / 10 + (min(k + 1, 4) - max(k - 1, 0)) / 40 for k in range(5)], np.float32)
    np.testing.assert_allclose(out[:, 10, 10], expect, atol=1e-6)
    np.testing.assert_allclose(out, whole)


def test_thin_stacks_are_averaged_into_slabs_and_each_slice_takes_its_slabs_output(tmp_path):
    """min_slice_mm = 2.5: a 0.625 mm stack runs as 2.5 mm slabs (means of 4 slices; a shorter rest joins the last), each
    source slice gets its slab's output, so a fraction's summed volume is the slab's; 2.5 mm stacks run as they are."""
    from svdmark.infer import preprocess as pp

    assert [pp.slab_group(s, 2.5) for s in (0.625, 1.0, 1.25, 2.0, 2.3, 2.5, 5.0)] == [4, 3, 2, 2, 1, 1, 1]
    assert pp.slab_group(0.625, 0.0) == 1
    vdir = install(tmp_path, window=32, overlap=8)
    seen = []

    class Sess:  # the output is the input slice's value, so each slab's mean shows through
        def get_inputs(self):
            return [type("I", (), {"name": "image"})()]

        def run(self, _, feeds):
            seen.append(feeds["image"].shape[0])
            return [feeds["image"][:, [0]]]

    manifest = json.loads((vdir / "manifest.json").read_text())
    manifest["input"]["normalisation"] = {"type": "hu_window", "center": 0.0, "scale": 100.0}
    manifest["input"]["min_slice_mm"] = 2.5
    spec = Manifest.from_json(manifest).input
    arr = np.stack([np.full((20, 24), float(k)) for k in range(10)]).astype(np.float32)
    rt = Runtime(intra_op_num_threads=1)
    out = rt._run_slice2d(Sess(), spec, make_volume(arr, step=(0.0, 0.0, 0.625)))[0]
    assert out.shape == arr.shape and sum(seen) == 2  # two slabs: slices 0-3, and 4-9 (the short rest joins them)
    np.testing.assert_allclose(out[:, 5, 5] * 100, [1.5] * 4 + [6.5] * 6, atol=1e-5)
    seen.clear()
    out = rt._run_slice2d(Sess(), spec, make_volume(arr, step=(0.0, 0.0, 2.5)))[0]
    assert sum(seen) == 10
    np.testing.assert_allclose(out[:, 5, 5] * 100, np.arange(10), atol=1e-5)


@pytest.mark.slow
@pytest.mark.skipif(not (REPO_MODELS / "wml-ncct").is_dir(), reason="reference WML model not installed")
def test_reference_unet_tiles_match_whole_image():
    spec = ModelRegistry(REPO_MODELS).active(Task.WML)
    vol = make_volume(_ncct_like(shape=(1, 300, 280)), spacing=(1.0, 1.0))
    rt = Runtime(intra_op_num_threads=2)
    sess, _ = rt.session(spec)
    tiled = rt._run_slice2d(sess, spec.manifest.input, vol, window=128)[0]
    whole = rt._run_slice2d(sess, spec.manifest.input, vol, window=1024)[0]
    np.testing.assert_allclose(tiled, whole, atol=1e-4)


def _first_channel_weighted(x: np.ndarray) -> np.ndarray:
    """A deliberately non-equivariant net: depends on position (a ramp) and on channel order."""
    ramp = np.linspace(0.0, 1.0, x.shape[-1], dtype=np.float32)
    return (2.0 * x[:, :1] + x[:, -1:]) * ramp


def test_flip_averaging_unflips_each_pass():
    x = np.random.default_rng(1).normal(size=(2, 3, 5, 7)).astype(np.float32)
    f = _first_channel_weighted
    got = flip_averaged(f, ["lr", "slices"])(x)
    lr = lambda a: a[..., ::-1]  # noqa: E731
    sl = lambda a: a[:, ::-1]  # noqa: E731
    want = (f(x) + lr(f(lr(x))) + f(sl(x)) + lr(f(lr(sl(x))))) / 4
    assert np.allclose(got, want, atol=1e-6)
    assert not np.allclose(got, f(x))  # the passes really differ for this net
    assert flip_averaged(f, ()) is f


def test_flip_averaging_rejects_unknown_flip():
    with pytest.raises(ModelError, match="unknown test-time flips"):
        flip_averaged(_first_channel_weighted, ["upside-down"])


def test_patch_flips_give_the_sixteen_symmetries_the_classifier_was_trained_under():
    x = np.random.default_rng(2).normal(size=(1, 2, 4, 4, 4)).astype(np.float32)
    combos = flip_combos(list(PATCH_TTA), PATCH_TTA)
    views = [patch_view(x, c) for c in combos]
    assert combos[0] == () and np.array_equal(views[0], x)
    assert len({v.tobytes() for v in views}) == 16  # flips of 3 axes x in-plane transposition, all distinct
    assert np.array_equal(patch_view(x, ("transpose",)), x.transpose(0, 1, 2, 4, 3))
    assert np.array_equal(patch_view(x, ("normal", "row")), x[:, :, ::-1, :, ::-1])
    with pytest.raises(ModelError, match="unknown test-time flips"):
        flip_combos(["lr"], PATCH_TTA)  # a 2-D flip name is not a patch flip


def test_patch_averaging_rereads_only_patches_at_or_above_the_floor():
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 1, size=(6, 2, 4, 4, 4)).astype(np.float32)
    ramp = np.linspace(0.0, 1.0, 4, dtype=np.float32)

    def net(p):  # deliberately orientation-dependent: a weighted corner of the patch
        prob = (p[:, 0] * ramp[None, :, None, None] * ramp[None, None, :, None]).mean(axis=(1, 2, 3)) * 4
        return np.stack([prob, 10 * prob], axis=1).astype(np.float32)

    combos = flip_combos(["normal", "column", "transpose"], PATCH_TTA)
    first = net(x)
    floor = float(np.median(first[:, 0]))
    got = patch_averaged(net, x, combos, floor)
    want = np.mean([net(patch_view(x, c)) for c in combos], axis=0)
    hi = first[:, 0] >= floor
    assert hi.any() and (~hi).any()
    np.testing.assert_allclose(got[hi], want[hi], rtol=1e-5)
    np.testing.assert_array_equal(got[~hi], first[~hi])
    assert not np.allclose(want[hi], first[hi])  # the passes really differ for this net
    np.testing.assert_array_equal(patch_averaged(net, x, combos[:1], 0.0), first)  # no flips: one reading
    np.testing.assert_allclose(patch_averaged(net, x, combos, floor, batch=2), got, rtol=1e-6)  # any batching


def test_the_runtime_maps_every_flip_the_manifest_may_name():
    assert set(TTA_FLIPS) == set(TTA_NAMES["slice2d"]) and set(PATCH_TTA) == set(TTA_NAMES["patch3d"])


def _cmb_manifest(**input_fields) -> dict:
    m = json.loads((REPO_MODELS / "cmb-swi" / "1.4.8" / "manifest.json").read_text())
    m["input"].update(input_fields)
    return m


def test_patch_flips_are_checked_when_the_manifest_is_read():
    assert Manifest.from_json(_cmb_manifest()).input.exact_from == pytest.approx(1 - 0.5 / 16)
    assert Manifest.from_json(_cmb_manifest(tta=[])).input.exact_from == 0.0
    for fields, words in (({"tta": ["lr"]}, "input.'tta'"), ({"tta": ["row", "row"]}, "at most once"),
                          ({"tta_from": 1.5}, "input.'tta_from'"), ({"tta_from": None}, "input.'tta_from'"),
                          ({"tta_from": 0.99}, "output.'threshold' is 0.99, below 0.9994")):
        with pytest.raises(ManifestFieldError, match=re.escape(words)):
            Manifest.from_json(_cmb_manifest(**fields))
    m = _cmb_manifest()
    m["uncertainty"]["cmb"]["threshold_low"] = 0.95  # an interval threshold where readings are mixed
    with pytest.raises(ManifestFieldError, match="threshold_low"):
        Manifest.from_json(m)
    wml = json.loads((REPO_MODELS / "wml-ncct" / "1.12.2" / "manifest.json").read_text())
    wml["input"]["tta_from"] = 0.5
    with pytest.raises(ManifestFieldError, match="patch3d"):
        Manifest.from_json(wml)


def test_a_flip_averaged_model_counts_exactly_at_and_above_its_bound():
    """The packaged flip-averaged model, read through the runtime: every candidate first read under tta_from keeps
    its reading, and re-reading more of them (tta_from 0.1) changes no count at any threshold from the bound up."""
    import dataclasses

    import svdmark_phantom as phantom
    from svdmark_phantom import as_volume

    reg = ModelRegistry()
    tta, single = reg.get("cmb-swi", "1.4.8"), reg.get("cmb-swi", "1.4.6")  # the same weights
    every = dataclasses.replace(tta, manifest=_cmb_manifest(tta_from=0.1))
    vol = as_volume(phantom.make_swi(seed=3, matrix=96, slice_thickness=2.0, n_cmb=12))
    rt = Runtime(providers=["CPUExecutionProvider"], intra_op_num_threads=2)
    p1, pt, pe = (np.array([c.probability for c in rt.run(s, vol).candidates]) for s in (single, tta, every))
    assert len(p1) == len(pt) == len(pe) > 50
    low = p1 < 0.5
    np.testing.assert_array_equal(pt[low], p1[low])
    assert (~low).sum() >= 5 and not np.allclose(pt[~low], p1[~low])  # the likely ones were read again
    bound = tta.manifest.input.exact_from
    assert (low & (p1 >= 0.1)).any() and pe[low].max() < bound  # some were read again, none reached the bound
    for t in (bound, 0.98, 0.99, 0.995, 0.999):
        assert (pt >= t).sum() == (pe >= t).sum()

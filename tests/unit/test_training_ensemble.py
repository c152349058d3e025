"""training.ensemble: the merged graph outputs the mean of its members' outputs, and its manifest names them."""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root holds training/

from training import ensemble  # noqa: E402


def _member(weight: np.ndarray, bias: np.ndarray) -> onnx.ModelProto:
    """A small net of the members' shape: patch (n, 4) -> MatMul -> Add -> Sigmoid -> output (n, 2)."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["patch", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["z"]),
         helper.make_node("Sigmoid", ["z"], ["output"])],
        "member",
        [helper.make_tensor_value_info("patch", onnx.TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, ["n", 2])],
        [numpy_helper.from_array(weight.astype(np.float32), "w"),
         numpy_helper.from_array(bias.astype(np.float32), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _random_member(rng: np.random.Generator) -> onnx.ModelProto:
    return _member(rng.normal(size=(4, 2)), rng.normal(size=2))


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"patch": x})[0]


def _write(folder: Path, model: onnx.ModelProto, version: str) -> Path:
    folder.mkdir(parents=True)
    data = model.SerializeToString()
    (folder / "model.onnx").write_bytes(data)
    (folder / "selftest.npz").write_bytes(b"reference of " + version.encode())
    manifest = {"name": "cmb-swi", "task": "cmb", "version": version, "sha256": hashlib.sha256(data).hexdigest(),
                "file": "model.onnx", "input": {"kind": "patch3d"}, "candidates": {"threshold": 0.3},
                "output": {"threshold": float(version[-1]) / 10 + 0.5}, "uncertainty": {"cmb": {}},
                "quality": {"limits": {}}, "self_test": {"reference": "selftest.npz"},
                "training": {"command": f"train {version}"}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_merged_graph_is_the_mean_of_its_members():
    rng = np.random.default_rng(3)
    members = [_random_member(rng) for _ in range(3)]
    x = rng.normal(size=(5, 4)).astype(np.float32)
    merged = ensemble.merge(members)
    expected = np.mean([_run(m, x) for m in members], axis=0)
    got = _run(merged, x)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    assert not np.allclose(got, _run(members[0], x))  # not just the first member


def test_cli_writes_model_and_manifest_that_name_the_members(tmp_path):
    rng = np.random.default_rng(4)
    a = _write(tmp_path / "a" / "1.0.0", _random_member(rng), "1.0.0")
    b = _write(tmp_path / "b" / "1.1.0", _random_member(rng), "1.1.0")
    out = tmp_path / "ens" / "cmb-swi" / "2.0.0"
    ensemble.main(["--members", str(a), str(b), "--out", str(out)])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["version"] == "2.0.0"
    assert manifest["sha256"] == hashlib.sha256((out / "model.onnx").read_bytes()).hexdigest()
    members = manifest["ensemble"]["members"]
    assert [m["version"] for m in members] == ["1.0.0", "1.1.0"]
    assert [m["sha256"] for m in members] == [hashlib.sha256((d / "model.onnx").read_bytes()).hexdigest()
                                              for d in (a, b)]
    assert "uncertainty" not in manifest and "quality" not in manifest  # re-chosen for the mean, not inherited
    assert manifest["output"]["threshold"] == 0.5  # the first member's, until the sweep on validation
    assert (out / "selftest.npz").read_bytes() == b"reference of 1.0.0"
    with pytest.raises(SystemExit, match="exists"):  # never over an existing version
        ensemble.main(["--members", str(a), str(b), "--out", str(out)])


def test_members_of_another_candidate_stage_are_refused(tmp_path):
    rng = np.random.default_rng(6)
    a = _write(tmp_path / "a" / "1.0.0", _random_member(rng), "1.0.0")
    b = _write(tmp_path / "b" / "1.1.0", _random_member(rng), "1.1.0")
    manifest = json.loads((b / "manifest.json").read_text())
    manifest["candidates"]["threshold"] = 0.4
    (b / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SystemExit, match="candidates"):
        ensemble.main(["--members", str(a), str(b), "--out", str(tmp_path / "ens" / "2.0.0")])


def test_members_with_another_input_are_refused():
    rng = np.random.default_rng(5)
    other = _random_member(rng)
    other.graph.input[0].name = "image"
    other.graph.node[0].input[0] = "image"
    with pytest.raises(ValueError, match="share one input"):
        ensemble.merge([_random_member(rng), other])
    narrow = _member(rng.normal(size=(4, 1)), rng.normal(size=1))  # one output column: Sum would broadcast it
    narrow.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 1
    with pytest.raises(ValueError, match="shapes"):
        ensemble.merge([_random_member(rng), narrow])

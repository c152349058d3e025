"""Tiny but real ONNX models in the packaged layout, for CLI tests that must not wait for training.

They follow the manifests of ``training/train_wml.py`` and ``training/train_cmb.py`` (same input
kinds, normalisation and tensor shapes) but compute a fixed intensity rule instead of a trained
network: enough to exercise the whole pipeline, the registry, checksums and self-tests. ``gain``
changes the weights, so two versions give different sha256 and slightly different results. Each has
its self-test reference (``training.selftest_reference``), rendered once per test session.
"""
from __future__ import annotations

import atexit
import functools
import hashlib
import json
import shutil
import tempfile
from pathlib import Path

WML_NORMALISATION = {"type": "hu_window", "center": 30.0, "scale": 20.0, "clip": [-2.0, 4.0]}
CMB_NORMALISATION = {"type": "foreground_median", "foreground_fraction": 0.2, "clip": [0.0, 3.0]}


def _save(model, path: Path) -> str:
    import onnx

    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _wml_graph(gain: float):
    from onnx import TensorProto, helper

    c = lambda name, v: helper.make_node("Constant", [], [name], value=helper.make_tensor(name + "_t", TensorProto.FLOAT, [], [v]))  # noqa: E731
    nodes = [
        c("g", gain), c("a", -0.6), c("b", 1.2), c("neg", -1.0),
        # low = sigmoid(g * (b + x)), high = sigmoid(g * (a - x)): a band between CSF and white matter
        helper.make_node("Add", ["image", "b"], ["xb"]),
        helper.make_node("Mul", ["xb", "g"], ["zb"]),
        helper.make_node("Sigmoid", ["zb"], ["low"]),
        helper.make_node("Mul", ["image", "neg"], ["nx"]),
        helper.make_node("Add", ["nx", "a"], ["xa"]),
        helper.make_node("Mul", ["xa", "g"], ["za"]),
        helper.make_node("Sigmoid", ["za"], ["high"]),
        helper.make_node("Mul", ["low", "high"], ["fraction"]),
    ]
    graph = helper.make_graph(
        nodes, "fake-wml",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 1, "h", "w"])],
        [helper.make_tensor_value_info("fraction", TensorProto.FLOAT, ["n", 1, "h", "w"])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="svdmark-tests")


def _cmb_graph(gain: float):
    from onnx import TensorProto, helper

    c = lambda name, v: helper.make_node("Constant", [], [name], value=helper.make_tensor(name + "_t", TensorProto.FLOAT, [], [v]))  # noqa: E731
    axes = helper.make_node("Constant", [], ["ax"], value=helper.make_tensor("ax_t", TensorProto.INT64, [1], [1]))
    nodes = [
        c("k", -gain), c("b", 2.0), c("zero", 0.0), c("d", 3.0), axes,
        helper.make_node("ReduceMean", ["patch"], ["m"], axes=[1, 2, 3, 4], keepdims=0),
        helper.make_node("Mul", ["m", "k"], ["mk"]),
        helper.make_node("Add", ["mk", "b"], ["z"]),
        helper.make_node("Sigmoid", ["z"], ["p"]),
        helper.make_node("Mul", ["p", "zero"], ["p0"]),
        helper.make_node("Add", ["p0", "d"], ["diam"]),
        helper.make_node("Unsqueeze", ["p", "ax"], ["p2"]),
        helper.make_node("Unsqueeze", ["diam", "ax"], ["d2"]),
        helper.make_node("Concat", ["p2", "d2"], ["output"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "fake-cmb",
        [helper.make_tensor_value_info("patch", TensorProto.FLOAT, ["n", 2, 20, 20, 20])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["n", 2])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="svdmark-tests")


@functools.lru_cache(maxsize=None)
def _reference(self_test: str) -> Path:
    """The reference file for a self-test section (JSON text), rendered once per process."""
    from training import selftest_reference

    folder = tempfile.mkdtemp(prefix="svdmark-fake-reference-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = Path(folder) / selftest_reference.REFERENCE
    selftest_reference.build(json.loads(self_test), path)
    return path


def _write_manifest(out: Path, manifest: dict) -> None:
    """The manifest, and beside it the self-test reference it names."""
    st = manifest.get("self_test")
    if st:
        source = _reference(json.dumps({k: st[k] for k in ("generator", "kwargs", "cases") if k in st}, sort_keys=True))
        shutil.copyfile(source, out / source.name)
        st["reference"] = source.name
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))


def shared_reference(vdir: Path) -> Path:
    """``vdir`` with its self-test reference moved into its model's shared store, as the packaged versions have it
    (``training.selftest_reference --share``; every version under the same root is shared too)."""
    from training import selftest_reference

    selftest_reference.write(vdir)  # names the reference's sha256 in the manifest
    selftest_reference.share(Path(vdir).parent.parent)
    assert not (Path(vdir) / selftest_reference.REFERENCE).exists()
    return Path(vdir)


def make_wml(root: Path, version: str = "1.0.0", gain: float = 4.0, expect=(0.0, 1e6)) -> Path:
    out = Path(root) / "wml-ncct" / version
    sha = _save(_wml_graph(gain), out / "model.onnx")
    manifest = {
        "name": "wml-ncct", "version": version, "task": "wml", "modality": "CT", "sha256": sha, "file": "model.onnx",
        "input": {"kind": "slice2d", "spacing_mm": [1.0, 1.0], "normalisation": WML_NORMALISATION,
                  "pad_value": -1000.0, "window": [128, 128], "overlap": 16, "multiple_of": 4, "batch": 4, "slab": 8,
                  "tensor": {"name": "image", "shape": ["n", 1, "h", "w"], "dtype": "float32"}},
        "output": {"name": "fraction", "mask_threshold": 0.5, "units": "1"},
        "self_test": {"generator": "make_ncct",
                      "kwargs": {"seed": 0, "matrix": 64, "slice_thickness": 5.0, "tilt_deg": 0.0, "wml_ml": 10.0},
                      "expect": {"volume_ml": list(expect)}},
        "training": {"note": "test fixture: fixed intensity rule, not a trained model"},
    }
    _write_manifest(out, manifest)
    return out


def make_cmb(root: Path, version: str = "1.0.0", gain: float = 3.0, expect=(0, 100000)) -> Path:
    out = Path(root) / "cmb-swi" / version
    sha = _save(_cmb_graph(gain), out / "model.onnx")
    manifest = {
        "name": "cmb-swi", "version": version, "task": "cmb", "modality": "MR", "sha256": sha, "file": "model.onnx",
        "input": {"kind": "patch3d", "patch": [20, 20, 20], "channel_spacing_mm": [1.0, 2.0],
                  "spacing_mm": [1.0, 1.0, 1.0], "normalisation": CMB_NORMALISATION, "batch": 64,
                  "tensor": {"name": "patch", "shape": ["n", 2, 20, 20, 20], "dtype": "float32"}},
        "candidates": {"sigmas_mm": [0.8, 1.2, 1.7, 2.4, 3.2], "threshold": 0.2, "mask_fraction": 0.35,
                       "erode_mm": 0.0, "max_candidates": 600, "min_distance_mm": 3.0},
        "output": {"name": "output", "threshold": 0.5, "merge_mm": 4.0, "max_count": 200},
        "self_test": {"generator": "make_swi", "kwargs": {"seed": 0, "matrix": 64, "slice_thickness": 2.0, "n_cmb": 3},
                      "expect": {"count": list(expect)}},
        "training": {"note": "test fixture: fixed intensity rule, not a trained model"},
    }
    _write_manifest(out, manifest)
    return out


def renamed(vdir: Path, name: str, root: Path) -> Path:
    """A copy of the version folder ``vdir`` under ``root/name/<version>`` whose manifest names it ``name``."""
    manifest = json.loads((vdir / "manifest.json").read_text())
    manifest["name"] = name
    out = root / name / vdir.name
    shutil.copytree(vdir, out)
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out

"""An ensemble of shipped models as one ONNX graph: every member reads the same input, the output is their mean.

    PYTHONPATH=.:service .venv/bin/python -m training.ensemble --members DIR_A DIR_B --out DIR

Each ``DIR`` holds a member's ``model.onnx`` and ``manifest.json``; the members must be versions of one model
with the same manifest ``input`` and ``candidates`` blocks (the preprocessing and candidate stage the runtime
runs once for all) and graphs with one input and one output of the same names, types and shapes. The merged
graph prefixes each member's names (``m0/``, ``m1/``, ...), feeds the one input to all of them and averages
their outputs element-wise (for cmb-swi: the probability and the diameter of each candidate), so the service
runs it like any single model: nothing in the runtime or the manifest format changes. Graphs with subgraphs,
local functions or sparse initializers are refused (the members so far have none).

The new manifest (``DIR``'s name is the version) is the first member's with the new file's SHA-256, an
``ensemble`` record of the members (versions and the SHA-256 of the files read) and the first member's self-test
reference file copied (it holds the phantoms' expected readings, not the model's); without the members'
uncertainty and quality-gate sections and with the first member's threshold: ``training.evaluate --sweep`` and
``training.calibrate`` choose them again on the validation split (the members' choices were made for the
members, not for their mean). An existing ``DIR`` is refused.

Why a merged graph and not several sessions in the runtime: one file keeps the manifest's one SHA-256, the
model registry's install/verify/activate and the self-test exactly as they are, and onnxruntime runs the
branches of one graph in one call.
"""
from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import onnx
from onnx import compose, helper

from svdmark.infer import reference

MAX_IR_VERSION = 13  # what onnxruntime 1.31 loads


def _io(model: onnx.ModelProto) -> tuple:
    """A graph's inputs and outputs as comparable (name, type) pairs."""
    g = model.graph
    return tuple((v.name, v.type.SerializeToString()) for v in (*g.input, *g.output))


def merge(members: list[onnx.ModelProto]) -> onnx.ModelProto:
    """One graph: the members side by side on the first member's input, their outputs averaged."""
    first = members[0]
    if len(first.graph.input) != 1 or len(first.graph.output) != 1:
        raise ValueError("members must have one input and one output")
    in_name, out_name = first.graph.input[0].name, first.graph.output[0].name
    if first.graph.output[0].type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise ValueError("members must output float32")
    for m in members:
        if _io(m) != _io(first):
            raise ValueError("members must share one input and one output: names, types and shapes")
        if m.opset_import != first.opset_import:
            raise ValueError("members must share their opset imports")
        if m.functions or m.graph.sparse_initializer or any(a.g.node or a.graphs for n in m.graph.node
                                                            for a in n.attribute):
            raise ValueError("members with subgraphs, local functions or sparse initializers are not supported")
    nodes, inits, outs = [], [], []
    for k, m in enumerate(members):
        g = compose.add_prefix(m, f"m{k}/").graph
        for node in g.node:  # the prefixed input name back to the shared one
            node.input[:] = [in_name if x == f"m{k}/{in_name}" else x for x in node.input]
        nodes.extend(g.node)
        inits.extend(g.initializer)
        outs.append(f"m{k}/{out_name}")
    scale = helper.make_tensor("ensemble/scale", onnx.TensorProto.FLOAT, [], [1.0 / len(members)])
    nodes.append(helper.make_node("Sum", outs, ["ensemble/sum"], name="ensemble/sum"))
    nodes.append(helper.make_node("Mul", ["ensemble/sum", "ensemble/scale"], [out_name], name="ensemble/mean"))
    graph = helper.make_graph(nodes, "ensemble", [first.graph.input[0]], [first.graph.output[0]], [*inits, scale])
    model = helper.make_model(graph, opset_imports=list(first.opset_import), producer_name="svdmark.training.ensemble")
    model.ir_version = max(m.ir_version for m in members)  # not onnx's newest default, which onnxruntime may refuse
    if model.ir_version > MAX_IR_VERSION:
        raise ValueError(f"members of IR version {model.ir_version}: onnxruntime 1.31 loads at most {MAX_IR_VERSION}")
    onnx.checker.check_model(model)
    return model


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--members", type=Path, nargs="+", required=True, help="member model directories")
    ap.add_argument("--out", type=Path, required=True, help="new model directory (its name is the version)")
    args = ap.parse_args(argv)
    if len(args.members) < 2:
        raise SystemExit("an ensemble needs at least two members")
    if args.out.exists():
        raise SystemExit(f"{args.out} exists: an ensemble is written as a new version")
    manifests = [json.loads((d / "manifest.json").read_text()) for d in args.members]
    for key in ("name", "task", "input", "candidates"):
        if any(m.get(key) != manifests[0].get(key) for m in manifests):
            raise SystemExit(f"members must be versions of one model with the same {key!r}")
    files = [(d / m.get("file", "model.onnx")).read_bytes() for d, m in zip(args.members, manifests)]
    data = merge([onnx.load_from_string(f) for f in files]).SerializeToString()
    args.out.mkdir(parents=True)
    (args.out / "model.onnx").write_bytes(data)
    reference.copy_into(args.members[0], args.out, manifests[0].get("self_test"))  # beside it or shared
    out = {k: v for k, v in manifests[0].items() if k not in ("uncertainty", "quality")}  # module doc
    out.update(version=args.out.name, sha256=hashlib.sha256(data).hexdigest(), file="model.onnx")
    out["ensemble"] = {"combine": "mean of the members' outputs",
                       "members": [{"version": m["version"], "sha256": hashlib.sha256(f).hexdigest()}
                                   for m, f in zip(manifests, files)]}
    command = f"python -m training.ensemble --members {' '.join(map(str, args.members))} --out {args.out}"
    out["training"] = {"command": command, "members": [m.get("training", {}) for m in manifests]}
    (args.out / "manifest.json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out} sha256 {out['sha256']}")


if __name__ == "__main__":
    main()

"""An ensemble of shipped models as one ONNX graph: every member reads the same input, the output is their mean.

    PYTHONPATH=.:service .venv/bin/python -m training.ensemble --members DIR_A DIR_B --out DIR [--version X]

Each ``DIR`` holds a member's ``model.onnx`` and ``manifest.json``; the members must share the input and output
names, shapes and manifest ``input`` block (the preprocessing the runtime applies once for all). The merged
graph prefixes each member's names (``m0/``, ``m1/``, ...), feeds the one input to all of them and averages
their outputs element-wise (for cmb-swi: the probability and the diameter of each candidate), so the service
runs it like any single model: nothing in the runtime or the manifest format changes. The new manifest is the
first member's, with the new file's SHA-256, the version and an ``ensemble`` record of the members (their
versions and SHA-256), without the members' uncertainty and quality-gate sections and with the first
member's post-processing threshold: ``training.evaluate --sweep`` and ``training.calibrate`` choose them again
on the validation split (the members' choices were made for the members, not for their mean).

Why a merged graph and not several sessions in the runtime: one file keeps the manifest's one SHA-256, the
model registry's install/verify/activate and the self-test exactly as they are, and onnxruntime runs the two
branches of one graph in one call.
"""
from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import onnx
from onnx import compose, helper

IR_VERSION = 8  # onnxruntime 1.31 loads IR <= 13; the members are IR 8


def merge(members: list[onnx.ModelProto]) -> onnx.ModelProto:
    """One graph: the members side by side on the first member's input, their outputs averaged."""
    first = members[0]
    in_name, out_name = first.graph.input[0].name, first.graph.output[0].name
    for m in members[1:]:
        if [i.name for i in m.graph.input] != [in_name] or [o.name for o in m.graph.output] != [out_name]:
            raise ValueError("members must share one input and one output name")
        if m.opset_import != first.opset_import:
            raise ValueError("members must share their opset imports")
    nodes, inits, outs = [], [], []
    for k, m in enumerate(members):
        prefixed = compose.add_prefix(m, f"m{k}/")
        g = prefixed.graph
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
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--members", type=Path, nargs="+", required=True, help="member model directories")
    ap.add_argument("--out", type=Path, required=True, help="output model directory (its name is the version)")
    args = ap.parse_args(argv)
    if len(args.members) < 2:
        raise SystemExit("an ensemble needs at least two members")
    manifests = [json.loads((d / "manifest.json").read_text()) for d in args.members]
    if any(m["input"] != manifests[0]["input"] or m["name"] != manifests[0]["name"] for m in manifests):
        raise SystemExit("members must be versions of one model with the same input block")
    model = merge([onnx.load(d / m.get("file", "model.onnx")) for d, m in zip(args.members, manifests)])
    args.out.mkdir(parents=True, exist_ok=True)
    data = model.SerializeToString()
    (args.out / "model.onnx").write_bytes(data)
    out = dict(manifests[0])
    out.update(version=args.out.name, sha256=hashlib.sha256(data).hexdigest(), file="model.onnx")
    for section in ("uncertainty", "quality"):  # calibrated for a member, not for the mean (module doc)
        out.pop(section, None)
    out["ensemble"] = {"combine": "mean of the members' outputs",
                       "members": [{"version": m["version"], "sha256": m["sha256"]} for m in manifests]}
    command = f"python -m training.ensemble --members {' '.join(map(str, args.members))} --out {args.out}"
    out["training"] = {"command": command, "members": [m.get("training", {}) for m in manifests]}
    (args.out / "manifest.json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out} sha256 {out['sha256']}")


if __name__ == "__main__":
    main()

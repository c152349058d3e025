"""How much a WML model's volume moves when a head's tissue level moves: a calibration-offset probe.

    PYTHONPATH=.:service .venv/bin/python -m training.level_probe --models DIR --set val,val_atlas --n 12 \
        --max-truth 1.0 --offsets -6,-4,-2,0,2,4

Scanners differ in their water calibration and patients in their white-matter level by several HU (normal white
matter 24-36 HU across scanners and ages). A model that reads lesion from the absolute level rather than from
darkening against the surrounding white matter reports false millilitres in a head whose white matter is a few HU
darker than the heads it learnt on. This adds each offset to every voxel above -200 HU (tissue, CSF, bone; air
stays air) of our own `val` cases, runs the model through the service's runtime and measurement, and prints the
volume per offset next to the truth. Only validation splits are accepted; nothing is chosen here.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np

from svdmark.domain import Task
from svdmark.infer import ModelRegistry, Runtime
from svdmark.measure import from_output

from . import data
from .evaluate import refuse_reported, split_seeds

TISSUE_HU = -200.0  # voxels above this are moved by the offset


def offset_volume(volume, offset_hu: float):
    """``volume`` with ``offset_hu`` added to every voxel above ``TISSUE_HU``."""
    a = volume.array
    return dataclasses.replace(volume, array=np.where(a > TISSUE_HU, a + np.float32(offset_hu), a).astype(np.float32))


def probe(split: str, n: int, offsets: list[float], max_truth: float, runtime: Runtime,
          registry: ModelRegistry) -> list[dict]:
    """Volume (mL) per offset of each case of ``split`` whose truth is at most ``max_truth`` mL."""
    refuse_reported(split, "the probe looks at validation splits only")
    spec = registry.active(Task.WML)
    rows = []
    for s in split_seeds(split, n):
        case = data.ncct_case(s)
        if case.truth_ml > max_truth:
            continue
        vols = {}
        for o in offsets:
            moved = offset_volume(case.volume, o)
            vols[o] = from_output(spec, moved, runtime.run(spec, moved)).volume_ml
        rows.append({"seed": s, "truth": case.truth_ml, "volumes": vols})
        print(f"  seed {s}: truth {case.truth_ml:5.2f} mL  " +
              "  ".join(f"{o:+.0f} HU {v:5.2f}" for o, v in vols.items()), flush=True)
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=Path, default=None)
    ap.add_argument("--set", default="val,val_atlas")
    ap.add_argument("--n", type=int, default=12)
    ap.add_argument("--max-truth", type=float, default=1.0, help="only cases with at most this truth (mL)")
    ap.add_argument("--offsets", default="-6,-4,-2,0,2,4", help="HU, comma-separated")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    offsets = [float(o) for o in args.offsets.split(",")]
    registry = ModelRegistry(args.models)
    rows = probe(args.set, args.n, offsets, args.max_truth,
                 Runtime(providers=["CPUExecutionProvider"], intra_op_num_threads=args.threads), registry)
    print(f"{registry.active(Task.WML).label}: {len(rows)} cases with truth <= {args.max_truth} mL; mean volume error (mL) per offset:")
    for o in offsets:
        err = [r["volumes"][o] - r["truth"] for r in rows]
        print(f"  {o:+5.1f} HU: mean {np.mean(err):+.2f}  median {np.median(err):+.2f}")


if __name__ == "__main__":
    main()

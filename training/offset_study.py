"""CT-number calibration offset study: does a WML model read absolute HU?

    PYTHONPATH=. .venv/bin/python -m training.offset_study --manifest service/svdmark/data/models/wml-ncct/1.3.0/manifest.json

Every voxel inside the head of each validation case (``val`` and ``val_atlas``, never a reported split) is
shifted by each offset, and the model's volume error is tabulated per offset. Scanners' water calibration
differs by a few HU; a model that reads absolute HU would move its volumes with it.
"""
from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np

from svdmark.infer import ModelRegistry, Runtime
from svdmark.measure import wml_postprocessing, wml_volume_ml

from . import data
from .evaluate import split_seeds


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--offsets", default="-4,-2,0,2,4", help="HU, comma-separated")
    ap.add_argument("--n", type=int, default=4, help="cases from each of val and val_atlas")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    man = args.manifest.resolve()
    spec = ModelRegistry(man.parents[2]).get(man.parents[1].name, man.parent.name)
    runtime = Runtime(providers=["CPUExecutionProvider"], intra_op_num_threads=args.threads)
    offsets = [float(x) for x in args.offsets.split(",")]
    rows = []
    for seed in split_seeds("val", args.n) + split_seeds("val_atlas", args.n):
        case = data.ncct_case(seed)
        a = case.volume.array
        for off in offsets:
            vol = replace(case.volume, array=np.where(a > -500, a + off, a).astype(np.float32))
            v = wml_volume_ml(vol, runtime.run(spec, vol).fraction, **wml_postprocessing(spec.manifest, vol))
            rows.append((off, case.truth_ml, v))
            print(f"seed {seed} offset {off:+.1f} HU: truth {case.truth_ml:6.2f} model {v:6.2f}", flush=True)
    print("| offset (HU) | MAE (mL) | bias (mL) |\n|---|---|---|")
    for off in offsets:
        err = np.array([v - t for o, t, v in rows if o == off])
        print(f"| {off:+.0f} | {np.abs(err).mean():.2f} | {err.mean():+.2f} |")


if __name__ == "__main__":
    main()

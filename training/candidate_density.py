"""The CMB quality gate's candidate density on a calibration split, counted in full and as passed on.

The gate's ``candidates_per_ml`` limit is ``training.calibrate``'s rule (1.5 × the largest value on val,val_atlas).
Up to cmb-swi 1.10.3 the density was scored on the candidates the stage passes on to the classifier (at most its
``max_candidates``), so on heads that reach the cap the limit measured the cap; the service now scores every
candidate the stage found. This reads the candidate stage alone (no classifier) of the active (or ``--models``) CMB
model on the split's heads and prints both densities per head, the heads that reached the cap, and the limit the
rule gives on each.

    PYTHONPATH=.:service .venv/bin/python -m training.candidate_density --n 40   # no SVDMARK_TRAIN_* variables set

Writes ``training/runs/candidate_density_<splits>_<n>_<model>.json``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from svdmark.domain import Task
from svdmark.infer import ModelRegistry
from svdmark.infer import preprocess as pp
from svdmark.measure import quality

from . import data


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--splits", default="val,val_atlas")
    ap.add_argument("--n", type=int, default=40, help="heads per split")
    ap.add_argument("--models", type=Path, default=None, help="a models folder (default: the packaged ones)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    spec = ModelRegistry(args.models).active(Task.CMB)
    cspec, norm = dict(spec.manifest.candidates), spec.manifest.input.normalisation
    rows = []
    for split in args.splits.split(","):
        for seed in data.seeds(split, args.n):
            t0 = time.perf_counter()
            vol = data.swi_case(seed).volume
            _, passed, _, _, ref, found = pp.cmb_candidates(vol, cspec, norm, args.threads)
            rows.append({"seed": seed, "found": found, "passed": len(passed),
                         "found_per_ml": quality.candidate_density(vol, ref, found),
                         "passed_per_ml": quality.candidate_density(vol, ref, len(passed))})
            print(rows[-1], f"{time.perf_counter() - t0:.1f} s", flush=True)
    found = np.array([r["found_per_ml"] for r in rows])
    passed = np.array([r["passed_per_ml"] for r in rows])
    summary = {"model": spec.label, "splits": args.splits, "n": len(rows),
               "reached_cap": int(sum(r["found"] > r["passed"] for r in rows)),
               "max_found_per_ml": float(found.max()), "limit_on_found": round(1.5 * float(found.max()), 3),
               "max_passed_per_ml": float(passed.max()), "limit_on_passed": round(1.5 * float(passed.max()), 3)}
    print(json.dumps(summary))
    out = Path(__file__).parent / "runs" / (f"candidate_density_{args.splits.replace(',', '-')}_{args.n}_"
                                           f"{spec.label.replace(' ', '-')}.json")
    out.write_text(json.dumps({"summary": summary, "heads": rows}, indent=1))


if __name__ == "__main__":
    main()

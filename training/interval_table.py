"""WML intervals compared on one evaluation: coverage, mean width and how much the low end says.

Every interval is recomputed from the evaluation's recorded volumes and passes with the runtime's
``svdmark.measure.uncertainty.wml_interval`` and each manifest's ``uncertainty.wml``, so intervals that differ only
in their calibration are compared on the same readings (first used for
``training/preregistered/2026-12-05-wml-interval-asymmetric.md``). Heads the quality gate withheld have no
interval and are left out.

    PYTHONPATH=.:service .venv/bin/python -m training.interval_table EVAL.json MANIFEST_A.json MANIFEST_B.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from svdmark.measure.uncertainty import wml_interval

LOW_END_FROM_ML = 3.0  # the lower end's mean is taken over heads with at least this much lesion


def table(rows: list[dict], spec: dict) -> dict:
    """Coverage, mean width, and the mean lower end over heads whose truth is at least ``LOW_END_FROM_ML``."""
    rows = [r for r in rows if r.get("measurable") is not False]
    ivs = [wml_interval(r["model"], r["passes"], spec) for r in rows]
    truth = np.array([r["truth"] for r in rows])
    low, high = np.array([iv.low for iv in ivs]), np.array([iv.high for iv in ivs])
    big = truth >= LOW_END_FROM_ML
    return {"n": len(rows), "coverage": float(np.mean((low <= truth) & (truth <= high))),
            "mean_width_ml": float(np.mean(high - low)),
            "mean_low_end_ml": float(np.mean(low[big])) if big.any() else None, "n_low_end": int(big.sum())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("eval", type=Path, help="a training.evaluate --task wml JSON")
    ap.add_argument("manifests", type=Path, nargs="+")
    args = ap.parse_args(argv)
    rows = json.loads(args.eval.read_text())["cases"]
    for m in args.manifests:
        manifest = json.loads(m.read_text())
        t = table(rows, manifest["uncertainty"]["wml"])
        low = "n/a" if t["mean_low_end_ml"] is None else f"{t['mean_low_end_ml']:.2f}"
        print(f"{manifest['name']} {manifest['version']}: n {t['n']}, coverage {t['coverage']:.3f}, mean width "
              f"{t['mean_width_ml']:.2f} mL, mean low end {low} mL over the {t['n_low_end']} heads >= "
              f"{LOW_END_FROM_ML:g} mL")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

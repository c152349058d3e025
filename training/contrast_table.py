"""WML figures of ``training.evaluate`` runs split by each head's drawn lesion contrast.

A training generator draws each head's lesion contrast (``training.data.NcctCase.contrast_hu``; synth_ct from 2-20 HU);
a set of validation heads that drew low is mostly lesion no reader of the pixels can see, so its MAE says little about
what a model learnt. This splits the heads of one or more runs (``training.evaluate --set val``, which records each
case's ``contrast_hu``) into **H** (lesion, contrast >= ``--cut``), **L** (lesion, below it) and **Z** (lesion-free)
and prints MAE, bias and r of H and L and the median read of Z, one row per run. A development-set run (``--set dev``)
carries the contrast its generator drew too (``truth.json``'s ``lesion.contrast_hu``). Nothing is chosen here.

    PYTHONPATH=.:service .venv/bin/python -m training.contrast_table --cut 5 RUN.json [RUN.json ...]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .compare import reading, wml_figures


def groups(cases: list[dict], cut: float) -> dict[str, list[dict]]:
    """The cases of one run as {"H": ..., "L": ..., "Z": ...}; refuses a case without a recorded contrast."""
    out = {"H": [], "L": [], "Z": []}
    for c in cases:
        if c["truth"] == 0:
            out["Z"].append(c)
        elif c.get("contrast_hu") is None:
            raise SystemExit(f"seed {c['seed']}: no contrast_hu in the run (evaluate it again, or a development run)")
        else:
            out["H" if c["contrast_hu"] >= cut else "L"].append(c)
    return out


def figures(cases: list[dict]) -> dict:
    """n, MAE, bias and r (None where undefined) of lesion heads; n and the median read of lesion-free heads."""
    if not cases:
        return {"n": 0}
    f = wml_figures([reading(c) for c in cases])
    if f["n_lesion_free"] == f["n"]:
        return {"n": f["n"], "median_ml": f["lesion_free_median_ml"]}
    return {"n": f["n"], "mae_ml": f["mae_ml"], "bias_ml": f["bias_ml"],
            "pearson_r": f["pearson_r"] if f["n"] > 2 else None}


def table(runs: dict[str, list[dict]], cut: float) -> dict[str, dict[str, dict]]:
    """label → group → figures."""
    return {label: {g: figures(c) for g, c in groups(cases, cut).items()} for label, cases in runs.items()}


def _cell(f: dict) -> str:
    if not f["n"]:
        return "-"
    if "median_ml" in f:
        return f"{f['n']}: {f['median_ml']:.2f}"
    r = "n/a" if f["pearson_r"] is None else f"{f['pearson_r']:.3f}"
    return f"{f['n']}: {f['mae_ml']:.2f} / {f['bias_ml']:+.2f} / {r}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="training.evaluate WML JSONs")
    ap.add_argument("--cut", type=float, default=5.0, help="lesion contrast (HU) that splits H from L")
    args = ap.parse_args(argv)
    runs = {}
    for p in args.runs:
        res = json.loads(p.read_text())
        runs[f"{res.get('model_label', p.stem)} ({p.name})"] = res["cases"]
    print(f"| run | H (>= {args.cut:g} HU): n: MAE / bias / r | L (< {args.cut:g} HU) | Z: n: median read (mL) |")
    print("|---|---|---|---|")
    for label, t in table(runs, args.cut).items():
        print(f"| {label} | {_cell(t['H'])} | {_cell(t['L'])} | {_cell(t['Z'])} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Write a validation sweep's choice into a candidate's manifest: WML post-processing, or the CMB threshold.

    PYTHONPATH=.:service .venv/bin/python -m training.evaluate --task wml --set val,val_atlas --n 12 --sweep \
        --no-baseline --models DIR            # writes training/runs/eval_wml_val,val_atlas_12_<label>-sweep.json
    PYTHONPATH=.:service .venv/bin/python -m training.operating_point --eval <that json> \
        --manifest DIR/wml-ncct/<version>/manifest.json [--by mae|targets]

Until now the sweep printed its table and the choice was copied into the manifest by hand, so the record of
*why* (``output.postprocessing_choice`` / ``output.threshold_choice``) was as good as whoever typed it. Here the
rules are code:

* WML: the (floor, support) setting with the lowest volume MAE (``--by mae``, the rule every shipped model used)
  or with the lowest target score (``--by targets``: ``MAE/1.0 + MAE(truth < 1 mL)/0.5``), and the mask threshold
  with the best Dice on cases of at least 1 mL.
* CMB: the threshold with the highest sensitivity + grade agreement among those at most ``--max-fp`` false
  positives per scan (the issue's operating point); none qualifies: refused.

Only a sweep over a validation split or the independent development set (``--set dev``) is accepted
(``evaluate.refuse_reported``). The record names the split, its seeds, the command and the generator's
``SVDMARK_TRAIN_*`` variables the sweep ran under (for the development set: its folder instead).
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from .evaluate import best_sweep_row, refuse_reported


def _seeds(res: dict) -> str:
    """'5000-5011, 6000-6011': the sweep's seeds as runs of consecutive numbers."""
    seeds = sorted(r["seed"] for r in res["cases"])
    runs, start = [], seeds[0]
    for a, b in zip(seeds, seeds[1:] + [None]):
        if b != a + 1:
            runs.append(f"{start}-{a}" if a != start else f"{a}")
            start = b
    return ", ".join(runs)


def _provenance(res: dict, command: str) -> str:
    if res.get("data"):  # the development set: its own cases, which the generator's variables do not change
        return f"{res['split']} (seeds {_seeds(res)}, n={res['n']}; {command} --data {res['data']})"
    env = res.get("environment") or {}
    under = f", with {' '.join(f'{k}={v}' for k, v in env.items())}" if env else ""
    return f"{res['split']} (seeds {_seeds(res)}, n={res['n']}; {command}{under})"


def wml_choice(res: dict, by: str) -> dict:
    """The manifest ``output`` entries for the sweep's best setting under ``by`` ('mae' or 'targets')."""
    best = best_sweep_row(res["sweep"], by)
    if best is None:
        raise SystemExit(f"the sweep has no {'MAE' if by == 'mae' else 'target score'} to choose by "
                         "(no case with truth under 1 mL?)")
    if not res.get("sweep_dice"):
        raise SystemExit("the sweep has no case of at least 1 mL: no mask threshold can be chosen")
    mt, dice = max(res["sweep_dice"].items(), key=lambda kv: kv[1])
    rule = "lowest volume MAE" if by == "mae" else "lowest MAE/1.0 + MAE(truth < 1 mL)/0.5"
    lt1 = best.get("mae_lt1_ml")
    why = (f"{rule} over training.evaluate.WML_SWEEP (floor {best['fraction_floor']:.2f}, support "
           f"{best['support_threshold']}/{best['support_dilate_vox']}: MAE {best['mae_ml']:.3f} mL"
           + (f", MAE(truth < 1 mL) {lt1:.3f} mL" if lt1 is not None and not math.isnan(lt1) else "")
           + f", r {best['pearson_r']:.4f}), and the mask threshold with the best Dice ({mt}: {dice:.3f}) on "
           + _provenance(res, f"training.evaluate --task wml --set {res['split']} --sweep"))
    return {"fraction_floor": float(best["fraction_floor"]), "support_threshold": float(best["support_threshold"]),
            "support_dilate_vox": int(best["support_dilate_vox"]), "mask_threshold": float(mt),
            "postprocessing_choice": why}


def cmb_choice(res: dict, max_fp: float) -> dict:
    ok = [r for r in res["sweep"] if r["fp_per_scan"] <= max_fp]
    if not ok:
        raise SystemExit(f"no swept threshold keeps FP/scan <= {max_fp}: lowest "
                         f"{min(r['fp_per_scan'] for r in res['sweep']):.2f}; nothing written")
    best = max(ok, key=lambda r: (r["sensitivity"] + r["grade_agreement"], r["threshold"]))
    why = (f"maximise sensitivity + grade agreement subject to FP/scan <= {max_fp}: {best['threshold']} gives "
           f"sensitivity {best['sensitivity']:.3f}, {best['fp_per_scan']:.2f} FP/scan, grade agreement "
           f"{best['grade_agreement']:.2f} on "
           + _provenance(res, f"training.evaluate --task cmb --set {res['split']} --sweep"))
    return {"threshold": float(best["threshold"]), "threshold_choice": why}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--eval", type=Path, required=True, help="training.evaluate --sweep JSON of a validation run")
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--by", choices=["mae", "targets"], default="mae", help="WML: the sweep column chosen on")
    ap.add_argument("--max-fp", type=float, default=1.0, help="CMB: false positives per scan allowed")
    args = ap.parse_args(argv)
    res = json.loads(args.eval.read_text())
    refuse_reported(res["split"], "an operating point is a choice")
    if not res.get("sweep"):
        raise SystemExit(f"{args.eval} holds no sweep (run training.evaluate with --sweep)")
    man = json.loads(args.manifest.read_text())
    if res.get("sha256") and res["sha256"] != man["sha256"]:
        raise SystemExit(f"{args.eval} swept {res['model_label']} ({res['sha256'][:12]}), not the model of "
                         f"{args.manifest} ({man['sha256'][:12]})")
    chosen = wml_choice(res, args.by) if man["task"] == "wml" else cmb_choice(res, args.max_fp)
    man["output"].update(chosen)
    args.manifest.write_text(json.dumps(man, indent=2) + "\n")
    print(json.dumps(chosen, indent=2))


if __name__ == "__main__":
    main()

"""Set the quality gate's noise limit from a degradation study on validation phantoms.

    PYTHONPATH=. .venv/bin/python -m training.degrade --task wml --manifest service/svdmark/data/models/wml-ncct/<v>/manifest.json
    PYTHONPATH=. .venv/bin/python -m training.degrade --task cmb --manifest service/svdmark/data/models/cmb-swi/<v>/manifest.json

``training.calibrate`` first set each gate limit from the validation *range* widened by a margin: that
withholds whatever looks unlike validation, whether or not the model still measures it well (on the
stress set 42 % of 1.5 T SWI were withheld), and lets through whatever looks alike, however wrong. The
gate should instead withhold where the numbers stop being trustworthy. So here every validation case is
re-read with added noise of increasing level (CT: soft- or sharp-kernel textured, in HU; SWI: Rician, in
units of the brain's median signal), and at each level the model's error is compared with its clean
error:

* WML: the level is acceptable while the calibrated interval still covers the truth in ≥ ``--coverage``
  of cases and the mean absolute error has grown by ≤ ``--mae-growth`` mL;
* CMB: while sensitivity has dropped by ≤ 0.05, false positives grown by ≤ 0.5 per scan and burden-grade
  agreement dropped by ≤ 0.1.

The noise limit is the largest gate noise score seen at the highest level whose every lower level is
acceptable too. Only validation splits are used (never a reported split). The per-level table goes into
the manifest's ``quality.degradation`` record, with the command, so the model card can show it.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from svdmark.domain import BurdenGrade
from svdmark.infer.preprocess import foreground_reference
from svdmark.infer import ModelRegistry, Runtime
from svdmark.measure import counted_candidates, cmb_findings, cmb_merging, quality, wml_postprocessing, wml_volume_ml
from svdmark.measure.uncertainty import wml_interval

from . import data
from .augment import noise_field
from .evaluate import match, split_seeds

CT_LEVELS_HU = (0.0, 3.0, 6.0, 9.0, 12.0, 16.0)
SWI_LEVELS = (0.0, 0.02, 0.04, 0.06, 0.09, 0.12)


def noisy_ct(volume, sd_hu: float, rng: np.random.Generator):
    """The volume with extra CT noise of ``sd_hu`` (random kernel texture) in the head; air stays air."""
    if sd_hu <= 0:
        return volume
    a = volume.array
    n = noise_field(rng, a.shape, sd_hu)
    return replace(volume, array=np.where(a > -500, a + n, a).astype(np.float32))


def noisy_swi(volume, level: float, rng: np.random.Generator):
    """The volume with Rician noise of ``level`` × the brain's median signal (magnitude of complex noise)."""
    if level <= 0:
        return volume
    a = volume.array.astype(np.float32)
    sd = level * foreground_reference(a)
    re = a + rng.normal(0, sd, a.shape).astype(np.float32)
    im = rng.normal(0, sd, a.shape).astype(np.float32)
    return replace(volume, array=np.hypot(re, im).astype(np.float32))


def study_wml(spec, runtime, seeds, levels, rng) -> list[dict]:
    unc = spec.manifest.get("uncertainty", {}).get("wml")
    rows = []
    for s in seeds:
        case = data.ncct_case(s)
        for lv in levels:
            vol = noisy_ct(case.volume, lv, rng)
            out = runtime.run(spec, vol)
            post = wml_postprocessing(spec.manifest, vol)
            v = wml_volume_ml(vol, out.fraction, **post)
            passes = [wml_volume_ml(vol, p, **post) for p in out.passes]
            iv = wml_interval(v, passes, unc)
            rows.append({"seed": s, "level": lv, "truth": case.truth_ml, "model": v,
                         "covered": bool(iv is None or iv.low <= case.truth_ml <= iv.high),
                         "noise": quality.ct_scores(vol, post["slab_group"], spec.manifest.noise_score)["noise"]})
            print(f"  wml seed {s} +{lv:4.1f} HU: truth {case.truth_ml:6.2f} model {v:6.2f} "
                  f"noise score {rows[-1]['noise']:.2f}", flush=True)
    return rows


def study_cmb(spec, runtime, seeds, levels, rng) -> list[dict]:
    thr = float(spec.manifest["output"]["threshold"])
    merge = cmb_merging(spec.manifest)
    rows = []
    for s in seeds:
        case = data.swi_case(s)
        T = [b["center_mm"] for b in case.bleeds]
        D = [b["diameter_mm"] for b in case.bleeds]
        for lv in levels:
            vol = noisy_swi(case.volume, lv, rng)
            out = runtime.run(spec, vol)
            f = cmb_findings(vol, counted_candidates(spec.manifest, vol, out), thr, **merge)
            tp, fp, _ = match([m.center_mm for m in f.microbleeds], T, D)
            rows.append({"seed": s, "level": lv, "n_truth": len(T), "tp": tp, "fp": fp,
                         "grade_ok": int(f.grade) == int(BurdenGrade.from_count(len(T))),
                         "noise": quality.swi_scores(vol, foreground_reference(vol.array))["noise"]})
            print(f"  cmb seed {s} +{lv:.2f}: truth {len(T):3d} tp {tp:3d} fp {fp:3d} "
                  f"noise score {rows[-1]['noise']:.4f}", flush=True)
    return rows


def per_level(rows: list[dict], task: str) -> list[dict]:
    table = []
    for lv in sorted({r["level"] for r in rows}):
        rs = [r for r in rows if r["level"] == lv]
        row = {"level": lv, "n": len(rs), "noise_max": max(r["noise"] for r in rs),
               "noise_median": float(np.median([r["noise"] for r in rs]))}
        if task == "wml":
            row["mae_ml"] = float(np.mean([abs(r["model"] - r["truth"]) for r in rs]))
            row["interval_coverage"] = float(np.mean([r["covered"] for r in rs]))
        else:
            row["sensitivity"] = sum(r["tp"] for r in rs) / max(sum(r["n_truth"] for r in rs), 1)
            row["fp_per_scan"] = sum(r["fp"] for r in rs) / len(rs)
            row["grade_agreement"] = float(np.mean([r["grade_ok"] for r in rs]))
        table.append(row)
    return table


def acceptable(row: dict, clean: dict, task: str, coverage: float, mae_growth: float) -> bool:
    if task == "wml":
        return row["interval_coverage"] >= coverage and row["mae_ml"] <= clean["mae_ml"] + mae_growth
    return (row["sensitivity"] >= clean["sensitivity"] - 0.05 and row["fp_per_scan"] <= clean["fp_per_scan"] + 0.5
            and row["grade_agreement"] >= clean["grade_agreement"] - 0.1)


def noise_limit(table: list[dict], task: str, coverage: float, mae_growth: float) -> tuple[float, float]:
    """(limit, level): the worst noise score seen at the highest level reached with every level acceptable."""
    ok = table[0]
    for row in table:
        if not acceptable(row, table[0], task, coverage, mae_growth):
            break
        ok = row
    return ok["noise_max"], ok["level"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", choices=["wml", "cmb"], required=True)
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--n", type=int, default=8, help="cases from each of val and val_atlas")
    ap.add_argument("--coverage", type=float, default=0.8, help="WML: interval coverage an acceptable level keeps")
    ap.add_argument("--mae-growth", type=float, default=1.0, help="WML: MAE growth (mL) an acceptable level allows")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--write", action="store_true", help="write the limit and the table into the manifest")
    args = ap.parse_args(argv)
    man_path = args.manifest.resolve()
    spec = ModelRegistry(man_path.parents[2]).get(man_path.parents[1].name, man_path.parent.name)
    runtime = Runtime(providers=["CPUExecutionProvider"], intra_op_num_threads=args.threads)
    seeds = split_seeds("val", args.n) + split_seeds("val_atlas", args.n)
    rng = np.random.default_rng(args.seed)
    if args.task == "wml":
        rows, unit = study_wml(spec, runtime, seeds, CT_LEVELS_HU, rng), "HU"
    else:
        rows, unit = study_cmb(spec, runtime, seeds, SWI_LEVELS, rng), "x brain median"
    table = per_level(rows, args.task)
    limit, level = noise_limit(table, args.task, args.coverage, args.mae_growth)
    record = {"table": table, "added_noise_unit": unit, "noise_limit": round(limit, 4),
              "highest_acceptable_level": level,
              "criterion": (f"interval coverage >= {args.coverage} and MAE growth <= {args.mae_growth} mL"
                            if args.task == "wml" else
                            "sensitivity drop <= 0.05, FP/scan growth <= 0.5, grade agreement drop <= 0.1"),
              "chosen_on": f"val,val_atlas (n={len(seeds)}): python -m training.degrade --task {args.task} "
                           f"--n {args.n} --coverage {args.coverage} --mae-growth {args.mae_growth}"}
    print(json.dumps(record, indent=2))
    if args.write:
        man = json.loads(man_path.read_text())
        q = man.setdefault("quality", {})
        q.setdefault("limits", {})["noise"] = {"max": round(limit, 4)}
        q["degradation"] = record
        man_path.write_text(json.dumps(man, indent=2) + "\n")


if __name__ == "__main__":
    main()

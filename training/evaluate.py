"""Score the installed models and the classical baselines on a phantom split.

    .venv/bin/python -m training.evaluate --set heldout --n 40            # both tasks
    .venv/bin/python -m training.evaluate --task wml --set heldout --n 40
    .venv/bin/python -m training.evaluate --task cmb --set val --n 20 --sweep   # threshold sweep (val only)
    .venv/bin/python -m training.evaluate --task wml --set val --n 16 --sweep   # floor / support sweep (val only)
    .venv/bin/python -m training.evaluate --task wml --set dev --data /work/dev_data/choose --sweep   # dev set
    .venv/bin/python -m training.evaluate --task cmb --set dev --data /work/dev_swi/choose --sweep   # its SWI half
    .venv/bin/python -m training.evaluate --task wml --set extra --data /work/devtrain --n 20   # fit to heads trained on
    # a sweep's JSON ends in -sweep.json; training.operating_point writes its choice into the manifest

WML: volume MAE (mL), Pearson r, Dice on cases with truth ≥ 1 mL.
CMB: sensitivity and false positives per scan (one-to-one greedy matching within
max(5 mm, lesion diameter)), burden grade exact agreement.
Models come from the registry (the packaged ``svdmark/data/models/`` or ``$SVDMARK_MODELS_DIR``).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from svdmark.domain import BurdenGrade, CmbFindings, Task, WmlFindings
from svdmark.infer import ModelRegistry, Runtime
from svdmark.measure import (counted_candidates, cmb_findings, cmb_merging, from_output, merged_centres, unit_fraction,
                             wml_postprocessing, wml_support, wml_volume_ml)
from svdmark.validation.agreement import match_points

from . import baselines, data, devcases
from .data import RUNS


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(bool)
    b = b.astype(bool)
    s = a.sum() + b.sum()
    return float(2 * (a & b).sum() / s) if s else 1.0


def match(pred_xyz, truth_xyz, truth_d):
    """Greedy one-to-one matching by distance within max(5 mm, diameter). Returns (tp, fp, fn).

    The same matcher a site validation uses (``svdmark.validation.agreement.match_points``), so training
    figures and site figures count a hit the same way.
    """
    m = match_points(pred_xyz, truth_xyz, truth_d, min_mm=5.0)
    return m.true_positives, m.false_positives, m.false_negatives


def split_seeds(split: str, n: int) -> list[int]:
    """Seeds of one split, or of several (``val,val_atlas``: ``n`` from each)."""
    names = split.split(",")
    unknown = [x for x in names if x not in data.SPLITS]
    if unknown:
        raise SystemExit(f"unknown split(s) {unknown}; known: {sorted(data.SPLITS)}")
    return [s for name in names for s in data.seeds(name, n)]


REPORTED_SPLITS = {"heldout", "heldout_b", "shifted"}
DEV_SPLIT = "dev"  # the independent development sets (training.devcases): choices allowed
EXTRA_SPLIT = "extra"  # another generator's heads trained on (train_wml --extra-ncct): how well a net fits them


def refuse_reported(split: str, why: str) -> None:
    """Stop, saying ``why``, when ``split`` (names joined by commas) holds a split whose figures are reported: a
    choice, a calibration or a probe may see only validation splits."""
    reported = REPORTED_SPLITS & set(split.split(","))
    if reported:
        raise SystemExit(f"{why}: use validation splits (val, val_atlas), never {sorted(reported)}")


def refuse_sweep_on_reported(split: str, what: str) -> None:
    """A sweep chooses ``what``: it may see only val splits, never one whose figures are reported."""
    refuse_reported(split, f"--sweep chooses {what}")


def pearson(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


# The two WML volume targets (mL): MAE over all cases, and MAE where the truth is under 1 mL. The sweep's
# ``target_score`` weighs each MAE by its target, so neither end of the range is chosen away for the other.
WML_MAE_TARGET_ML = 1.0
WML_MAE_LT1_TARGET_ML = 0.5

WML_SWEEP = {"fraction_floor": (0.0, 0.05, 0.1, 0.15, 0.2, 0.3), "support": ((0.0, 0), (0.3, 2), (0.5, 2), (0.5, 4),
                                                                          (0.7, 3)),
             "mask_threshold": (0.3, 0.4, 0.5, 0.6)}


def _wml_sweep_case(volume, fraction, truth_mask, slab_group: int = 1) -> dict:
    """Volume (mL) per (floor, support_threshold, support_dilate_vox) and Dice per mask threshold; the support is
    ``measure.wml_support``'s (one slab through-plane where the runtime read slabs)."""
    frac = unit_fraction(fraction)
    vv = volume.voxel_volume_mm3 / 1000.0
    vols = {}
    for st, dil in WML_SWEEP["support"]:
        f = np.where(wml_support(frac, st, dil, slab_group), frac, 0.0) if st > 0 else frac
        for fl in WML_SWEEP["fraction_floor"]:
            kept = f[f >= fl] if fl > 0 else f
            vols[(fl, st, dil)] = float(kept.sum(dtype=np.float64) * vv)
    dices = {t: dice(fraction >= t, truth_mask) for t in WML_SWEEP["mask_threshold"]}
    return {"volumes": vols, "dice": dices}


def _folder_cases(task: str, n: int, data_dir: Path | None, split: str = DEV_SPLIT):
    """Cases under ``data_dir``: the development set's (``dev``), or for ``extra`` (NCCT only) the foreign heads
    ``train_wml --extra-ncct`` trains on, read the same way, to see whether a net fits its own training heads."""
    if data_dir is None:
        raise SystemExit(f"--set {split} reads case folders: give --data DIR (python -m {devcases.BUILDERS[task]})")
    dirs = devcases.case_dirs(data_dir, n, task, extra=split == EXTRA_SPLIT)
    read = devcases.read_ncct_case if task == "wml" else devcases.read_swi_case
    return (read(d) for d in dirs)


def wml_cases(split: str, n: int, data_dir: Path | None = None):
    """The NCCT cases of a split, one at a time: the generator's cache, or for ``dev`` the independent development
    set's DICOM cases under ``data_dir`` (``training.devcases``; choices may be made there), for ``extra`` the foreign
    heads trained on there."""
    if split in (DEV_SPLIT, EXTRA_SPLIT):
        return _folder_cases("wml", n, data_dir, split)
    return (data.ncct_case(s) for s in split_seeds(split, n))


def cmb_cases(split: str, n: int, data_dir: Path | None = None):
    """The SWI cases of a split, one at a time (as :func:`wml_cases`)."""
    if split in (DEV_SPLIT, EXTRA_SPLIT):
        return _folder_cases("cmb", n, data_dir, split)
    return (data.swi_case(s) for s in split_seeds(split, n))


def eval_wml(split: str, n: int, runtime: Runtime, registry: ModelRegistry, sweep: bool = False,
             baseline: bool = True, tta: list[str] | None = None, data_dir: Path | None = None) -> dict:
    spec = registry.active(Task.WML)
    if tta is not None:  # compare test-time flips on val before fixing them in the manifest
        spec = dataclasses.replace(spec, manifest={**spec.manifest, "input": {**spec.manifest["input"], "tta": tta}})
    if sweep:
        refuse_sweep_on_reported(split, "post-processing")
    rows = []
    sweeps = []
    for case in wml_cases(split, n, data_dir):
        t = time.perf_counter()
        out = runtime.run(spec, case.volume)
        f = from_output(spec, case.volume, out)
        secs = time.perf_counter() - t
        truth_mask = case.truth_fraction >= 0.5
        post = wml_postprocessing(spec.manifest, case.volume)
        if sweep:
            sweeps.append(_wml_sweep_case(case.volume, out.fraction, truth_mask, post["slab_group"]))
        b = baselines.wml_threshold(case.volume) if baseline else WmlFindings(float("nan"), truth_mask * 0, ())
        rows.append(dict(seed=case.seed, truth=case.truth_ml, model=f.volume_ml, baseline=b.volume_ml,
                         dice_model=dice(f.mask, truth_mask), dice_baseline=dice(b.mask, truth_mask), seconds=secs,
                         matrix=case.volume.shape[1], thickness=case.params["slice_thickness"],
                         tilt=case.params["tilt_deg"], passes=[wml_volume_ml(case.volume, p, **post) for p in out.passes],
                         contrast_hu=case.contrast_hu, generator=case.params.get("generator"),
                         **_uncertainty_columns(f)))
        r = rows[-1]
        print(f"  wml seed {case.seed}: truth {r['truth']:6.2f} model {r['model']:6.2f} "
              f"baseline {r['baseline']:6.2f} mL "
              f"dice {r['dice_model']:.2f}/{r['dice_baseline']:.2f} ({secs:.1f} s, {r['matrix']} px, "
              f"{r['thickness']} mm, tilt {r['tilt']})", flush=True)
    res = {"model_label": spec.label, "sha256": spec.sha256, "split": split, "n": len(rows), "cases": rows,
           "tta": list(spec.manifest["input"].get("tta", []))}
    if split in (DEV_SPLIT, EXTRA_SPLIT):
        res["data"] = str(data_dir)  # which cases: the split's name alone does not say
    res.update(wml_run_figures(rows, ("model", "baseline") if baseline else ("model",)))
    if sweep:
        truth = np.array([r["truth"] for r in rows])
        big = truth >= 1.0
        table = [_wml_sweep_row(key, np.array([sw["volumes"][key] for sw in sweeps]), truth)
                 for key in sweeps[0]["volumes"]]
        table.sort(key=lambda r: r["mae_ml"])
        res["sweep"] = table
        for r in table[:12]:
            print(f"  sweep floor {r['fraction_floor']:.2f} support {r['support_threshold']:.1f}/{r['support_dilate_vox']} "
                  f"vox: MAE {r['mae_ml']:.3f} r {r['pearson_r']:.4f} bias {r['bias_ml']:+.3f}")
        t = best_sweep_row(table, "targets")
        if t is not None:
            print(f"  sweep by targets floor {t['fraction_floor']:.2f} support {t['support_threshold']:.1f}/"
                  f"{t['support_dilate_vox']} vox: MAE {t['mae_ml']:.3f} MAE<1 {t['mae_lt1_ml']:.3f} "
                  f"score {t['target_score']:.3f} r {t['pearson_r']:.4f} bias {t['bias_ml']:+.3f}")
        res["sweep_dice"] = {str(t): float(np.mean([sw["dice"][t] for sw, g in zip(sweeps, big) if g]))
                             for t in WML_SWEEP["mask_threshold"]} if big.any() else {}
        print(f"  sweep mask threshold → Dice(≥1 mL): {res['sweep_dice']}")
    return res


def wml_run_figures(rows: list[dict], readers: tuple[str, ...] = ("model",)) -> dict:
    """A WML run's summary over its case rows: per reader (``model``, ``baseline``) MAE, r, Dice on cases >= 1 mL and
    bias; the count of cases >= 1 mL, interval coverage, the share withheld and the mean seconds per case.
    ``training.cascade`` summarises its combined runs with it too."""
    truth = np.array([r["truth"] for r in rows])
    big = truth >= 1.0
    res: dict = {"baseline": None}  # not run (--no-baseline): no figures rather than zeros
    for who in readers:
        v = np.array([r[who] for r in rows])
        res[who] = {
            "mae_ml": float(np.abs(v - truth).mean()),
            "pearson_r": pearson(v, truth),
            "dice_ge_1ml": float(np.mean([r[f"dice_{who}"] for r, g in zip(rows, big) if g])) if big.any() else None,
            "bias_ml": float((v - truth).mean()),
        }
    res["n_ge_1ml"] = int(big.sum())
    res.update(_coverage_and_withheld(rows))
    res["seconds_mean"] = float(np.mean([r["seconds"] for r in rows]))
    return res


def best_sweep_row(table: list[dict], by: str) -> dict | None:
    """The sweep row with the lowest MAE (``by="mae"``) or target score (``"targets"``); None where no row has that
    figure (without a case under 1 mL there is no target score). ``training.operating_point`` chooses with it."""
    key = "mae_ml" if by == "mae" else "target_score"
    rows = [r for r in table if not np.isnan(r[key])]
    return min(rows, key=lambda r: r[key]) if rows else None


def target_score(mae_ml: float, mae_lt1_ml: float) -> float:
    """``MAE / WML_MAE_TARGET_ML + MAE(truth < 1 mL) / WML_MAE_LT1_TARGET_ML``: both volume targets in one figure."""
    return mae_ml / WML_MAE_TARGET_ML + mae_lt1_ml / WML_MAE_LT1_TARGET_ML


def _wml_sweep_row(key: tuple, v: np.ndarray, truth: np.ndarray) -> dict:
    """One post-processing setting's volume errors over the sweep's cases, with the target-weighted score
    (``target_score``; nan without cases under 1 mL)."""
    err = np.abs(v - truth)
    small = truth < 1.0
    mae, mae_lt1 = float(err.mean()), float(err[small].mean()) if small.any() else float("nan")
    return {"fraction_floor": key[0], "support_threshold": key[1], "support_dilate_vox": key[2], "mae_ml": mae,
            "pearson_r": pearson(v, truth), "bias_ml": float((v - truth).mean()), "mae_lt1_ml": mae_lt1,
            "target_score": target_score(mae, mae_lt1)}


def _uncertainty_columns(f) -> dict:
    """The interval and the quality gate's verdict of one finding, as table columns."""
    q = f.quality
    return dict(interval=None if f.interval is None else [f.interval.low, f.interval.high],
                measurable=None if q is None else q.measurable, reasons=[] if q is None else list(q.reasons),
                scores={} if q is None else dict(q.scores))


def _coverage_and_withheld(rows, truth_key="truth") -> dict:
    """Interval coverage (truth inside) and the share withheld by the quality gate."""
    with_iv = [r for r in rows if r["interval"] is not None]
    cov = (float(np.mean([r["interval"][0] <= r[truth_key] <= r["interval"][1] for r in with_iv]))
           if with_iv else None)
    gated = [r for r in rows if r["measurable"] is not None]
    return {"interval_coverage": cov,
            "withheld_fraction": float(np.mean([not r["measurable"] for r in gated])) if gated else None}


# the CMB operating thresholds a sweep reports and the counts a calibration may pick its interval's ends from
CMB_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995, 0.997, 0.998, 0.999)


def cmb_detect_model(spec, runtime, case, threshold=None):
    """Findings of the model (from_output: interval and quality gate included) and the raw output."""
    out = runtime.run(spec, case.volume)
    if threshold is None:
        return from_output(spec, case.volume, out), out
    f = cmb_findings(case.volume, counted_candidates(spec.manifest, case.volume, out), threshold,
                     **cmb_merging(spec.manifest))
    return f, out


def _counts_at(spec, case, cands) -> dict:
    """Merged count of the candidates at each calibration threshold (training.calibrate picks the interval's
    thresholds)."""
    return {str(t): len(merged_centres(case.volume, cands, t, **cmb_merging(spec.manifest)))
            for t in CMB_THRESHOLDS}


def eval_cmb(split: str, n: int, runtime: Runtime, registry: ModelRegistry, sweep: bool = False,
             baseline: bool = True, data_dir: Path | None = None) -> dict:
    spec = registry.active(Task.CMB)
    if sweep:
        refuse_sweep_on_reported(split, "the operating threshold")
    rows = []
    outs = []
    for case in cmb_cases(split, n, data_dir):
        s = case.seed
        t = time.perf_counter()
        f, out = cmb_detect_model(spec, runtime, case)
        secs = time.perf_counter() - t
        b = baselines.cmb_blobs(case.volume) if baseline else CmbFindings((), None)
        T = [bl["center_mm"] for bl in case.bleeds]
        Dm = [bl["diameter_mm"] for bl in case.bleeds]
        tp, fp, fn = match([m.center_mm for m in f.microbleeds], T, Dm)
        btp, bfp, bfn = match([m.center_mm for m in b.microbleeds], T, Dm)
        g = int(BurdenGrade.from_count(len(T)))
        cands = counted_candidates(spec.manifest, case.volume, out)
        rows.append(dict(seed=s, n_truth=len(T), tp=tp, fp=fp, fn=fn, count=f.count, grade_truth=g,
                         grade_model=int(f.grade), b_tp=btp, b_fp=bfp, b_fn=bfn, b_count=b.count,
                         grade_baseline=int(b.grade), seconds=secs,
                         n_candidates=int(out.extras.get("n_candidates_found", len(out.candidates))),
                         matrix=case.volume.shape[1], thickness=case.params["slice_thickness"],
                         counts_at=_counts_at(spec, case, cands), **_uncertainty_columns(f)))
        if sweep:
            outs.append((case, cands))
        r = rows[-1]
        print(f"  cmb seed {s}: truth {len(T):3d} model tp {tp:3d} fp {fp:3d} | baseline tp {btp:3d} fp {bfp:3d} "
              f"| grade {g}/{r['grade_model']}/{r['grade_baseline']} ({secs:.1f} s, {len(out.candidates)} cand)",
              flush=True)
    res = {"model_label": spec.label, "sha256": spec.sha256, "split": split, "n": len(rows), "cases": rows}
    if split == DEV_SPLIT:
        res["data"] = str(data_dir)
    nt = sum(r["n_truth"] for r in rows)
    res["baseline"] = None  # not run (--no-baseline): no figures rather than zeros
    for who, k in (("model", ""), ("baseline", "b_")) if baseline else (("model", ""),):
        res[who] = {
            "sensitivity": sum(r[k + "tp"] for r in rows) / max(nt, 1),
            "fp_per_scan": sum(r[k + "fp"] for r in rows) / len(rows),
            "grade_agreement": float(np.mean([r["grade_truth"] == r["grade_" + who] for r in rows])),
        }
    res["seconds_mean"] = float(np.mean([r["seconds"] for r in rows]))
    res.update(_coverage_and_withheld(rows, "n_truth"))
    if sweep:
        res["sweep"] = []
        merge = cmb_merging(spec.manifest)
        exact = spec.manifest.input.exact_from if spec.manifest.input is not None else 0.0
        for thr in CMB_THRESHOLDS:
            tp = fp = 0
            agree = 0
            for case, cands in outs:  # the called centres only: what cmb_findings counts, without its mask
                called = merged_centres(case.volume, cands, thr, **merge)
                a, b_, _ = match([p[3] for p in called], [bl["center_mm"] for bl in case.bleeds],
                                 [bl["diameter_mm"] for bl in case.bleeds])
                tp += a
                fp += b_
                agree += BurdenGrade.from_count(len(called)) == BurdenGrade.from_count(len(case.bleeds))
            row = {"threshold": thr, "sensitivity": tp / max(nt, 1), "fp_per_scan": fp / len(outs),
                   "grade_agreement": agree / len(outs), "exact": thr >= exact}
            res["sweep"].append(row)
            print(f"  sweep thr {thr}: sens {row['sensitivity']:.3f} fp/scan {row['fp_per_scan']:.2f} "
                  f"grade {row['grade_agreement']:.2f}"
                  + ("" if row["exact"] else f"  (below {exact:.3f}: first readings mixed with flip averages)"))
    return res


def _gate_line(res) -> str:
    cov, wh = res.get("interval_coverage"), res.get("withheld_fraction")
    return (f"  interval coverage {'n/a' if cov is None else f'{cov:.2f}'}  "
            f"withheld by the quality gate {'n/a' if wh is None else f'{wh:.2f}'}")


def measured(res) -> list[tuple[str, dict]]:
    """(who, figures) for the model and, where it was run, the baseline."""
    return [(who, res[who]) for who in ("model", "baseline") if res.get(who)]


def report(res_w, res_c):
    lines = []
    if res_w:
        lines.append(f"WML  {res_w['model_label']}  split={res_w['split']} n={res_w['n']} (≥1 mL: {res_w['n_ge_1ml']})")
        for who, m in measured(res_w):
            d = "n/a" if m["dice_ge_1ml"] is None else f"{m['dice_ge_1ml']:.3f}"
            lines.append(f"  {who:8s} MAE {m['mae_ml']:.3f} mL  r {m['pearson_r']:.4f}  Dice(≥1 mL) {d}  "
                         f"bias {m['bias_ml']:+.3f} mL")
        lines.append(f"  model inference {res_w['seconds_mean']:.2f} s/series (mean)")
        lines.append(_gate_line(res_w))
    if res_c:
        lines.append(f"CMB  {res_c['model_label']}  split={res_c['split']} n={res_c['n']} "
                     f"(truth bleeds {sum(r['n_truth'] for r in res_c['cases'])})")
        for who, m in measured(res_c):
            lines.append(f"  {who:8s} sensitivity {m['sensitivity']:.3f}  FP/scan {m['fp_per_scan']:.2f}  "
                         f"grade agreement {m['grade_agreement']:.3f}")
        lines.append(f"  model inference {res_c['seconds_mean']:.2f} s/series (mean)")
        lines.append(_gate_line(res_c))
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", default="heldout", help=f"a split, or several joined by commas: {sorted(data.SPLITS)}; "
                    "or 'dev': the independent development set under --data; or 'extra': the foreign heads a model "
                    "was trained on (train_wml --extra-ncct) under --data, to see how well it fits them")
    ap.add_argument("--data", type=Path, default=None,
                    help="--set dev: the folder devset.build (wml) or devset.build_swi (cmb) wrote; --set extra: "
                    "the folder train_wml --extra-ncct read")
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--task", choices=["wml", "cmb", "both"], default="both")
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--no-baseline", action="store_true", help="skip the classical baselines (faster val sweeps)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", type=Path, default=None)
    ap.add_argument("--tta", default=None, help="override the WML manifest's test-time flips: 'lr,slices', '' = none")
    args = ap.parse_args(argv)
    tta = None if args.tta is None else [t for t in args.tta.split(",") if t]
    rt = Runtime(providers=["CPUExecutionProvider"], intra_op_num_threads=args.threads)
    reg = ModelRegistry(args.models)
    if args.set in (DEV_SPLIT, EXTRA_SPLIT) and args.task == "both":
        raise SystemExit(f"a case folder holds one task's cases: --set {args.set} needs --task wml or --task cmb")
    rw = eval_wml(args.set, args.n, rt, reg, args.sweep, not args.no_baseline, tta, args.data) \
        if args.task in ("wml", "both") else None
    rc = eval_cmb(args.set, args.n, rt, reg, args.sweep, not args.no_baseline, args.data) \
        if args.task in ("cmb", "both") else None
    text = report(rw, rc)
    print(text)
    RUNS.mkdir(exist_ok=True)
    for name, r in (("wml", rw), ("cmb", rc)):
        if r:
            r["environment"] = data.training_environment()  # the generator's draws the figures were made on
            label = r["model_label"].replace(" ", "-") + ("-tta-" + "-".join(r["tta"]) if r.get("tta") else "") \
                + ("-sweep" if args.sweep else "")  # a sweep's table is not overwritten by the run after the choice
            # dev / extra: which folder, e.g. dev-judge, extra-devtrain
            where = f"{args.set}-{args.data.name}" if args.set in (DEV_SPLIT, EXTRA_SPLIT) else args.set
            (RUNS / f"eval_{name}_{where}_{args.n}_{label}.json").write_text(json.dumps(r, indent=2, default=float))


if __name__ == "__main__":
    main()

"""Calibrate a model's uncertainty interval and quality-gate limits on validation splits, into its manifest.

    PYTHONPATH=. .venv/bin/python -m training.evaluate --task wml --set val,val_atlas --n 12 --no-baseline
    PYTHONPATH=. .venv/bin/python -m training.calibrate --task wml --eval training/runs/eval_wml_val,val_atlas_12_<label>.json \
        --manifest service/svdmark/data/models/wml-ncct/<version>/manifest.json

Reads the per-case rows ``training.evaluate`` wrote for a validation run (never a reported split: refused)
and writes two manifest sections that ``svdmark.measure`` reads:

* ``uncertainty`` — WML: h = a_ml + b × volume around the test-time-augmentation passes, the (a, b) of
  smallest mean width whose coverage of the validation truths is ≥ ``--coverage``; CMB: the pair of
  classifier thresholds (strict, loose) and the margin h = a + b × count of smallest mean count width with
  that coverage. ``--interval-eval`` pools more evaluation files (e.g. a development set's choice half)
  into the interval's calibration only; the gate's limits come from ``--eval`` alone.
* ``quality.limits`` — each gate score's limit: the validation range widened by a stated margin, so the
  gate fires on images unlike anything the model was validated on, not on ordinary variation.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from svdmark.domain import InputSpec
from svdmark.measure.uncertainty import count_bounds

from .evaluate import refuse_reported

B_GRID = (0.0, 0.02, 0.05, 0.08, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5)
CMB_B_GRID = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)  # the count interval's margin: h = a + b x count
CMB_A_GRID = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0)


def wml_uncertainty(rows: list[dict], coverage: float) -> dict:
    v = np.array([r["model"] for r in rows])
    t = np.array([r["truth"] for r in rows])
    lo = np.array([min([r["model"], *r["passes"]]) for r in rows])
    hi = np.array([max([r["model"], *r["passes"]]) for r in rows])
    need = np.maximum.reduce([lo - t, t - hi, np.zeros_like(t)])  # half-width each case needs beyond its passes
    best = None
    for b in B_GRID:
        a = float(max(0.05, np.quantile(need - b * v, coverage, method="higher")))
        cov = float(np.mean(need <= a + b * v + 1e-9))
        width = float(np.mean(hi - lo + 2 * (a + b * v)))
        if cov >= coverage and (best is None or width < best[2]):
            best = (a, b, width, cov)
    a, b, width, cov = best
    return {"a_ml": round(a, 3), "b": b, "coverage": coverage, "validation_coverage": round(cov, 3),
            "validation_mean_width_ml": round(width, 3), "n": len(rows)}


def cmb_uncertainty(rows: list[dict], coverage: float, threshold: float, min_threshold: float = 0.0) -> dict:
    """The (strict, loose) threshold pair and margin h = a + b x count (``svdmark.measure.uncertainty``) of smallest
    mean width whose coverage reaches ``coverage``, a the smallest of ``CMB_A_GRID`` that does for each b; when none
    does, the widest, with its measured coverage. Thresholds under ``min_threshold`` (a flip-averaged model's
    ``input.exact_from``) are not considered."""
    ts = sorted(t for t in set.intersection(*({float(k) for k in r["counts_at"]} for r in rows))  # every row has it
                if t >= min_threshold - 1e-12)
    n = np.array([r["n_truth"] for r in rows])
    count = np.array([r["count"] for r in rows])

    def at(t: float) -> np.ndarray:
        return np.array([r["counts_at"][_key(r, t)] for r in rows])

    best = None
    for tl in [x for x in ts if x <= threshold]:
        for th in [x for x in ts if x >= threshold]:
            strict, loose = at(th), at(tl)
            for b in CMB_B_GRID:
                for a in CMB_A_GRID:
                    lo, hi = count_bounds(count, strict, loose, a, b)
                    cov, width = float(np.mean((lo <= n) & (n <= hi))), float(np.mean(hi - lo))
                    if cov >= coverage:
                        if best is None or width < best[4]:
                            best = (tl, th, a, b, width, cov)
                        break
    if best is None:
        tl, th, a, b = ts[0], ts[-1], CMB_A_GRID[-1], CMB_B_GRID[-1]
        lo, hi = count_bounds(count, at(th), at(tl), a, b)
        best = (tl, th, a, b, float(np.mean(hi - lo)), float(np.mean((lo <= n) & (n <= hi))))
    tl, th, a, b, width, cov = best
    return {"threshold_low": tl, "threshold_high": th, "a": a, "b": b, "coverage": coverage,
            "validation_coverage": round(cov, 3), "validation_mean_width": round(width, 2), "n": len(rows)}


def _source(res: dict) -> str:
    """An evaluation's split, data folder (development sets) and number of cases, for the manifest's provenance."""
    folder = f" {Path(res['data']).name}" if res.get("data") else ""
    return f"{res['split']}{folder} (n={len(res['cases'])})"


def _key(row: dict, t: float) -> str:
    for k in row["counts_at"]:
        if abs(float(k) - t) < 1e-9:
            return k
    raise SystemExit(f"case {row.get('seed')} has no count at threshold {t} (an evaluation from before "
                     f"training.evaluate.CMB_THRESHOLDS had it): evaluate it again")


def gate_scores(rows: list[dict], task: str, inp: InputSpec | None = None, noise_score: str = "median") -> None:
    """Fill each row's ``scores`` (when the evaluated manifest had no gate yet) from its cached case and the
    row's own model figures, as the runtime gate scores them: CT noise on the slabs ``inp`` reads
    (``input.min_slice_mm``), with the manifest's ``quality.noise_score``."""
    from svdmark.infer.preprocess import foreground_reference, slab_group
    from svdmark.measure import quality

    from . import data

    for r in rows:
        if r.get("scores"):
            continue
        if task == "wml":
            vol = data.ncct_case(r["seed"]).volume
            group = slab_group(vol.slice_spacing, inp.min_slice_mm) if inp is not None else 1
            r["scores"] = quality.ct_scores(vol, group, noise_score)
            if r.get("passes"):
                r["scores"]["tta_spread"] = quality.tta_spread(r["passes"], r["model"])
        else:
            vol = data.swi_case(r["seed"]).volume
            ref = foreground_reference(vol.array)
            r["scores"] = quality.swi_scores(vol, ref)
            r["scores"]["candidates_per_ml"] = quality.candidate_density(vol, ref, r["n_candidates"])


def quality_limits(rows: list[dict], task: str) -> dict:
    """Validation range of each score, widened: minimums × 0.7, maximums × 1.5 (tta spread × 2 + 0.1)."""
    sc = {k: np.array([r["scores"][k] for r in rows if k in r.get("scores", {})], float)
          for k in rows[0].get("scores", {})}
    lim: dict[str, dict] = {}
    if "coverage_mm" in sc:
        lim["coverage_mm"] = {"min": round(float(sc["coverage_mm"].min()) * 0.7, 1)}
    if "noise" in sc:
        lim["noise"] = {"max": round(float(sc["noise"].max()) * 1.5, 4)}
    if task == "wml":
        if "tissue_level" in sc:
            lim["tissue_level"] = {"range": [round(float(sc["tissue_level"].min()) - 8, 1),
                                             round(float(sc["tissue_level"].max()) + 8, 1)]}
        if "tta_spread" in sc:
            lim["tta_spread"] = {"max": round(float(sc["tta_spread"].max()) * 2 + 0.1, 3)}
    else:
        lim["slice_mm"] = {"max": 3.0}  # trained on 1-2.5 mm; bleeds of 2-10 mm vanish in thicker slices
        if "candidates_per_ml" in sc:
            # no floor: set from our own validation range it withheld 5 of 30 development heads whose candidate
            # density ran low as a whole (training/preregistered/2026-12-03-cmb-candidate-floor.md)
            lim["candidates_per_ml"] = {"max": round(float(sc["candidates_per_ml"].max()) * 1.5, 3)}
    return lim


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", choices=["wml", "cmb"], required=True)
    ap.add_argument("--eval", type=Path, required=True, help="training.evaluate JSON of a validation run")
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--coverage", type=float, default=0.9)
    ap.add_argument("--interval-eval", type=Path, action="append", default=[],
                    help="another training.evaluate JSON pooled into the interval's calibration only (repeatable)")
    args = ap.parse_args(argv)
    res = json.loads(args.eval.read_text())
    refuse_reported(res["split"], "calibration is a choice")
    extra = [json.loads(p.read_text()) for p in args.interval_eval]
    for e in extra:
        refuse_reported(e["split"], "calibration is a choice")
    man = json.loads(args.manifest.read_text())
    # only the sections calibration needs: a whole parse would check the interval thresholds it is about to replace
    inp = InputSpec.from_json(man["input"]) if man.get("input") else None
    noise_score = man.get("quality", {}).get("noise_score")  # the residual the rows were scored on; kept
    rows = res["cases"]
    gate_scores(rows, args.task, inp, noise_score or "median")
    pooled = rows + [r for e in extra for r in e["cases"]]
    if args.task == "wml":
        unc = wml_uncertainty(pooled, args.coverage)
    else:  # the count at the manifest's (possibly newly chosen) threshold
        thr = float(man["output"]["threshold"])
        for r in pooled:
            r["count"] = r["counts_at"][_key(r, thr)]
        unc = cmb_uncertainty(pooled, args.coverage, thr, inp.exact_from if inp is not None else 0.0)
    source = " + ".join(_source(e) for e in [res, *extra])
    unc["chosen_on"] = f"{source}: training.calibrate --task {args.task}"
    man.setdefault("uncertainty", {})[args.task] = unc
    scored_on = {"noise_score": noise_score} if noise_score else {}
    if args.task == "cmb":  # training.evaluate records every candidate found (svdmark.domain.CANDIDATE_COUNTS)
        scored_on["candidate_count"] = "found"
    man["quality"] = {**scored_on, "limits": quality_limits(rows, args.task),
                      "chosen_on": f"{res['split']} (n={len(rows)}): validation range widened "
                                   "(minimums x0.7, maximums x1.5; see training.calibrate)"}
    args.manifest.write_text(json.dumps(man, indent=2) + "\n")
    print(json.dumps({"uncertainty": man["uncertainty"], "quality": man["quality"]}, indent=2))


if __name__ == "__main__":
    main()

"""A bleed beside a counted bleed needs less certainty: the table of (R, t2) on choice data.

Rule: ``training/preregistered/2026-12-05-cmb-neighbour.md``. A candidate that the model's darkness criteria keep,
at probability t2 or more, within R mm of a kept candidate at the operating threshold T or more, is counted as if it
cleared T (one pass); merging and matching as the evaluation does. Prints sensitivity, FP per scan and grade
agreement for B (no recruiting) and every (R, t2) of ``GRID``, on SWI development heads or our validation splits
(reported splits are refused).

    PYTHONPATH=.:service .venv/bin/python -m training.neighbour_probe --data /work/dev_swi/choose --n 30
    PYTHONPATH=.:service .venv/bin/python -m training.neighbour_probe --set val,val_atlas --n 20

Writes ``training/runs/neighbour_<data>_<n>_<model>.json``.
"""
from __future__ import annotations

import argparse

import numpy as np

from svdmark.domain import BurdenGrade
from svdmark.measure import cmb_merging, counted_candidates, merged_centres

from . import cmb_cases
from .evaluate import match

GRID = tuple((r, t2) for r in (3.0, 4.0, 5.0, 6.0, 8.0) for t2 in (0.9, 0.95, 0.98, 0.99))


def recruited(xyz: np.ndarray, p: np.ndarray, threshold: float, radius_mm: float, t2: float) -> np.ndarray:
    """Which candidates count: those at ``threshold`` or more, and those at ``t2`` or more within ``radius_mm`` of
    one of them (one pass: a recruited candidate recruits no other)."""
    strong = p >= threshold
    if not strong.any():
        return strong
    d = np.linalg.norm(xyz[:, None, :] - xyz[None, strong, :], axis=2)
    return strong | ((p >= t2) & (d <= radius_mm).any(axis=1))


def case_counts(spec, runtime, case) -> dict:
    """One case's (true, false) findings for B ("none") and each "R|t2" of ``GRID``."""
    vol = case.volume
    out = runtime.run(spec, vol)
    kept = counted_candidates(spec.manifest, vol, out)
    threshold, merge = spec.manifest.output.threshold, cmb_merging(spec.manifest)
    xyz = np.array([vol.index_to_patient(*c[0]) for c in kept]).reshape(-1, 3)
    p = np.array([c[1] for c in kept], float)
    truth = ([b["center_mm"] for b in case.bleeds], [b["diameter_mm"] for b in case.bleeds])
    counts = {}
    for key, mask in [("none", p >= threshold)] + [(f"{r}|{t2}", recruited(xyz, p, threshold, r, t2))
                                                  for r, t2 in GRID]:
        # the recruited candidates enter merging as they are (strongest first), at any probability
        picked = merged_centres(vol, [c for c, k in zip(kept, mask) if k], 0.0, **merge)
        tp, fp, _ = match([q[3] for q in picked], *truth)
        counts[key] = (tp, fp)
    return dict(seed=case.seed, n_truth=len(case.bleeds), counts=counts)


def table(rows: list[dict]) -> list[dict]:
    """Sensitivity, FP per scan and grade agreement for each key of the rows' counts, B ("none") first."""
    if not rows:
        raise ValueError("no cases to tabulate")
    nt = max(1, sum(r["n_truth"] for r in rows))
    out = []
    for key in rows[0]["counts"]:
        tp = sum(r["counts"][key][0] for r in rows)
        fp = sum(r["counts"][key][1] for r in rows)
        agree = sum(BurdenGrade.from_count(sum(r["counts"][key])) == BurdenGrade.from_count(r["n_truth"])
                    for r in rows)
        radius, t2 = (None, None) if key == "none" else (float(v) for v in key.split("|"))
        out.append(dict(radius_mm=radius, t2=t2, sensitivity=tp / nt, fp_per_scan=fp / len(rows),
                        grade_agreement=agree / len(rows)))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cmb_cases.add_arguments(ap)
    args = ap.parse_args(argv)
    spec, rt = cmb_cases.model_and_runtime(args)
    name, cases = cmb_cases.cases(args, "the neighbour probe informs a choice")
    rows = []
    for case, _ in cases:
        rows.append(case_counts(spec, rt, case))
        print(f"  {case.seed}: {len(case.bleeds)} bleeds, B {rows[-1]['counts']['none']}", flush=True)
    res = {"model_label": spec.label, "data": str(args.data or args.set), "n": len(rows), "cases": rows,
           "table": table(rows)}
    for t in res["table"]:
        print(f"  R {t['radius_mm']} t2 {t['t2']}: sensitivity {t['sensitivity']:.3f} "
              f"FP/scan {t['fp_per_scan']:.2f} grade {t['grade_agreement']:.3f}")
    cmb_cases.write_run("neighbour", name, spec, res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

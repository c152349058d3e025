"""Where a CMB model loses the true bleeds of SWI development heads, by the development set's bleed tags.

Issue 10 asks that high burden be counted and that adjacent bleeds stay separate detections. For every true bleed
of each development case this says what became of it at the operating threshold:

- ``found``: a counted finding matches it (the evaluation's matcher);
- ``no candidate``: the candidate stage put no candidate within the matcher's reach of it (max(5 mm, its
  diameter), as the evaluation matches);
- ``below threshold``: a candidate lies there, but the classifier's best one there is under the threshold;
- ``criterion``: a candidate there clears the threshold, but the manifest's darkness criteria drop every such one;
- ``merged``: a candidate there is counted, but merging or matching gave its finding to a neighbour.

and tallies the fates by the development set's tags (``adjacent-pair``, ``cluster``, ``vein-adjacent``,
``near-air``, ``near-calcification``; ``isolated`` for none). Our generator's splits carry no tags, and reported
splits are refused (development data only).

    PYTHONPATH=.:service .venv/bin/python -m training.cmb_misses --data /work/dev_swi/choose --n 30 [--models DIR]

Writes ``training/runs/misses_<data>_<n>_<model>.json``.
"""
from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from svdmark.measure import candidate_tuples, cmb_merging, counted_candidates, merged_centres
from svdmark.validation.agreement import MATCH_MIN_MM, match_points

from . import cmb_cases

FATES = ("found", "no candidate", "below threshold", "criterion", "merged")
ISOLATED = "isolated"


def fate(centre_mm, diameter_mm: float, found: bool, cand_mm: np.ndarray, cand_p: np.ndarray,
         cand_kept: np.ndarray, threshold: float) -> tuple[str, float | None]:
    """One true bleed's fate (``FATES``) and the best candidate probability within the matcher's reach of it,
    max(``MATCH_MIN_MM``, its diameter)."""
    near = np.linalg.norm(cand_mm - np.asarray(centre_mm, float), axis=1) <= max(MATCH_MIN_MM, diameter_mm) \
        if len(cand_mm) else np.zeros(0, bool)
    best = float(cand_p[near].max()) if near.any() else None
    if found:
        return "found", best
    if best is None:
        return "no candidate", None
    if best < threshold:
        return "below threshold", best
    if not (near & cand_kept & (cand_p >= threshold)).any():
        return "criterion", best
    return "merged", best


def case_fates(spec, runtime, case, tags_by_bleed: list[list[str]], threshold: float) -> list[dict]:
    """Every true bleed of one case: its diameter, tags and fate at ``threshold``."""
    vol = case.volume
    out = runtime.run(spec, vol)
    every, counted = candidate_tuples(out), counted_candidates(spec.manifest, vol, out)
    kept = {tuple(c[0]) for c in counted}
    picked = merged_centres(vol, counted, threshold, **cmb_merging(spec.manifest))
    centres = [b["center_mm"] for b in case.bleeds]
    diameters = [b["diameter_mm"] for b in case.bleeds]
    m = match_points([p[3] for p in picked], centres, diameters, min_mm=MATCH_MIN_MM)
    hit = {j for _, j, _ in m.pairs}
    cand_mm = np.array([vol.index_to_patient(*c[0]) for c in every]).reshape(-1, 3)
    cand_p = np.array([c[1] for c in every], float)
    cand_kept = np.array([tuple(c[0]) in kept for c in every], bool)
    rows = []
    for j, (centre, diameter, tags) in enumerate(zip(centres, diameters, tags_by_bleed)):
        what, p = fate(centre, diameter, j in hit, cand_mm, cand_p, cand_kept, threshold)
        rows.append(dict(diameter_mm=float(diameter), tags=list(tags) or [ISOLATED], fate=what, probability=p))
    return rows


def table(bleeds: list[dict]) -> dict:
    """Per tag (a bleed counts under each of its tags, and under ``all``): how many, the share found, and how many
    met each way of being lost."""
    out: dict[str, Counter] = defaultdict(Counter)
    for b in bleeds:
        for tag in ["all"] + b["tags"]:
            out[tag][b["fate"]] += 1
    return {tag: {"n": sum(c.values()), "found": c["found"] / sum(c.values()), **{f: c[f] for f in FATES[1:]}}
            for tag, c in sorted(out.items(), key=lambda kv: (kv[0] != "all", kv[0]))}


def bleed_tags(case_dir: Path, case) -> list[list[str]]:
    """Each loaded bleed's tags from the case's truth (``devcases.read_swi_case`` keeps the truth's order)."""
    bleeds = json.loads((case_dir / "truth.json").read_text())["microbleeds"]
    if len(bleeds) != len(case.bleeds):
        raise ValueError(f"{case_dir}: {len(bleeds)} bleeds in truth.json, {len(case.bleeds)} loaded")
    return [list(b.get("tags", [])) for b in bleeds]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cmb_cases.add_arguments(ap, validation=False)
    ap.add_argument("--at", type=float, default=None, help="the threshold (default: the manifest's)")
    args = ap.parse_args(argv)
    spec, rt = cmb_cases.model_and_runtime(args)
    threshold = spec.manifest.output.threshold if args.at is None else args.at
    name, dev_cases = cmb_cases.cases(args)
    cases = []
    for case, d in dev_cases:
        rows = case_fates(spec, rt, case, bleed_tags(d, case), threshold)
        cases.append(dict(seed=case.seed, n_truth=len(rows), bleeds=rows))
        lost = Counter(r["fate"] for r in rows if r["fate"] != "found")
        print(f"  {case.seed}: {len(rows)} bleeds, {len(rows) - sum(lost.values())} found; lost: {dict(lost)}",
              flush=True)
    res = {"model_label": spec.label, "data": str(args.data), "n": len(cases), "threshold": threshold,
           "cases": cases, "table": table([b for c in cases for b in c["bleeds"]])}
    for tag, t in res["table"].items():
        print(f"  {tag:20s} n {t['n']:4d}  found {t['found']:.3f}  " +
              "  ".join(f"{f} {t[f]}" for f in FATES[1:]))
    cmb_cases.write_run("misses", name, spec, res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

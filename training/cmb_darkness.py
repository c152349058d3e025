"""What lies under a CMB model's findings, and how dark each one is: on the SWI development set or a validation split.

For every finding at threshold 0.9 (duplicates merged as the service merges them) on each case: whether it matches a
true bleed (the evaluation's matcher), its patient position (mm), its core level (``svdmark.measure.darkness``: the
darkest voxel within max(1 mm, its predicted radius), in units of the foreground median), its surround level (the
median of the shell 1-3 mm beyond that), the Hessian's eigenvalues at its centre (a blob or a tube), its in-plane
depth below the head's outline and, on development cases, the truth label under its centre (the devset's codes:
vein, calcification, iron-rich nucleus, ...). Prints the false positives by label, the core levels of true and false
findings, and sensitivity / FP per scan / grade agreement for each operating threshold and cut (a core-level cut,
``output.max_core_level``, or a core-to-surround cut, ``output.max_core_to_surround``), the cut applied to the
candidates before merging, as the service applies it. Our generator's splits have no labels; reported splits are
refused.

    PYTHONPATH=.:service .venv/bin/python -m training.cmb_darkness --data /work/dev_swi/choose --n 30 [--models DIR]
    PYTHONPATH=.:service .venv/bin/python -m training.cmb_darkness --set val,val_atlas --n 20

The candidate list is taken before any darkness criterion in the model's manifest, so a cut can be studied on a
model that already has one; ``--on-criteria`` takes it after the model's own criteria instead, so a cut is studied
on top of them. ``--mirror`` adds the mirror-twin criteria (:mod:`training.symmetry`: a twin within R mm of the
mirror image, at probability p or more) to the table, each alone on the listed candidates, and which findings have a
twin. Writes ``training/runs/darkness_<data>_<n>_<model>[_on-criteria][_mirror].json``.
"""
from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np
from scipy import ndimage

from svdmark.domain import BurdenGrade
from svdmark.infer.preprocess import index_affine
from svdmark.measure import candidate_tuples, cmb_merging, counted_candidates, merged_centres, reference_intensity
from svdmark.measure.darkness import core_levels, dark_mask, surround_levels
from svdmark.measure.geometry import head_frame
from svdmark.validation.agreement import match_points

from . import cmb_cases, devcases, symmetry

PROBE_THRESHOLD = 0.9
THRESHOLDS = (0.9, 0.95, 0.98, 0.99, 0.995)
CUTS = (None, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8)  # output.max_core_level
SURROUND_CUTS = (0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7)  # output.max_core_to_surround (alone)
# (twin radius in mm, the twin's least probability), alone; with --mirror (training.symmetry)
MIRROR_CUTS = ((3.0, 0.9), (4.0, 0.9), (5.0, 0.9), (6.0, 0.9), (8.0, 0.9), (5.0, 0.5), (5.0, 0.99), (6.0, 0.5),
               (6.0, 0.99))


def case_labels(case_dir: Path, case) -> tuple[np.ndarray, dict]:
    """A development case's truth labels in the loaded volume's slice order, and their names."""
    truth = json.loads((case_dir / "truth.json").read_text())
    return devcases.truth_array(case_dir, truth, case.volume, "labels"), truth.get("label_names", {})


def hessian_eigenvalues(volume, centre_kij, diameter_mm: float) -> list[float]:
    """The Hessian's eigenvalues (ascending, per mm^2, in patient space) at a finding's centre, at the scale of its
    radius (sigma = max(0.8 mm, radius / sqrt 3), at least 0.7 voxel per axis): all large and positive for a dark
    blob, one near 0 for a dark tube (a vein)."""
    m = index_affine(volume)
    steps = np.linalg.norm(m, axis=0)
    sig = np.maximum(max(0.8, 0.5 * diameter_mm / np.sqrt(3)) / steps, 0.7)
    c = np.clip(np.round(np.asarray(centre_kij, float)).astype(int), 0, np.asarray(volume.shape) - 1)
    half = np.ceil(3 * sig).astype(int) + 2
    lo, hi = np.maximum(c - half, 0), np.minimum(c + half + 1, volume.shape)
    sub = volume.array[tuple(slice(a, b) for a, b in zip(lo, hi))].astype(np.float64)
    at = tuple(c - lo)
    h = np.empty((3, 3))
    for a in range(3):
        for b in range(a, 3):
            order = [0, 0, 0]
            order[a] += 1
            order[b] += 1
            h[a, b] = h[b, a] = ndimage.gaussian_filter(sub, sig, order=order, mode="nearest")[at]
    m_inv = np.linalg.inv(m)
    return [float(v) for v in np.linalg.eigvalsh(m_inv.T @ h @ m_inv)]


def surface_depth(frame, centre_kij) -> float:
    """The in-plane distance (mm) from a finding's centre to the edge of the head (``measure.geometry.head_frame``:
    the scalp's outline, per slice)."""
    k, i, j = np.clip(np.round(centre_kij).astype(int), 0, np.asarray(frame.mask.shape) - 1)
    return float(frame.depth_mm(int(k))[i, j])


def case_findings(spec, runtime, case, labels: tuple[np.ndarray, dict] | None = None,
                  on_criteria: bool = False, mirror: bool = False) -> dict:
    """One case: its bleed count, every finding at ``PROBE_THRESHOLD`` without a cut (tp, core level, label if
    given), and the matched counts at each threshold and cut, the cut applied before merging as the service does.
    ``on_criteria``: the candidates the manifest's own criteria keep, instead of all of them. ``mirror``: also the
    counts under each mirror-twin criterion (``MIRROR_CUTS``), and which findings have a twin."""
    out = runtime.run(spec, case.volume)
    vol, merge = case.volume, cmb_merging(spec.manifest)
    listed = counted_candidates(spec.manifest, vol, out) if on_criteria else candidate_tuples(out)
    cands = [c for c in listed if c[1] >= PROBE_THRESHOLD]
    ref = reference_intensity(vol, out)
    levels = core_levels(vol, [c[0] for c in cands], [c[2] for c in cands], ref)
    surrounds = surround_levels(vol, [c[0] for c in cands], [c[2] for c in cands], ref)
    truth = ([b["center_mm"] for b in case.bleeds], [b["diameter_mm"] for b in case.bleeds])

    def matched(kept: list, thr: float):
        picked = merged_centres(vol, kept, thr, **merge)
        return picked, match_points([p[3] for p in picked], *truth, min_mm=5.0)

    def called(thr: float, cut: float | None, surround: float | None = None):
        keep = dark_mask(levels, np.inf if cut is None else cut, surrounds, np.inf if surround is None else surround)
        return matched([c for c, k in zip(cands, keep) if k], thr)

    plane = symmetry.midsagittal_plane(vol) if mirror else None
    twin_free = {}
    for radius, prob in MIRROR_CUTS if plane is not None else ():
        kept = symmetry.without_mirror_twins(vol, listed, radius, prob, plane)
        twin_free[(radius, prob)] = {tuple(c[0]) for c in kept}

    counts = {}
    for (radius, prob), free in twin_free.items():
        kept = [c for c in cands if tuple(c[0]) in free]
        for thr in THRESHOLDS:
            m = matched(kept, thr)[1]
            counts[f"{thr}|m{radius}@{prob}"] = (m.true_positives, m.false_positives)
    for thr in THRESHOLDS:
        for cut in CUTS:
            m = called(thr, cut)[1]
            counts[f"{thr}|{cut}"] = (m.true_positives, m.false_positives)
        for cut in SURROUND_CUTS:
            m = called(thr, None, cut)[1]
            counts[f"{thr}|s{cut}"] = (m.true_positives, m.false_positives)
    picked, m = called(PROBE_THRESHOLD, None)
    hit = {i for i, _, _ in m.pairs}
    frame = head_frame(vol)
    level_of = {tuple(c[0]): lv for c, lv in zip(cands, levels)}
    surround_of = {tuple(c[0]): rv for c, rv in zip(cands, surrounds)}
    finds = []
    for i, (idx, conf, diam, xyz) in enumerate(picked):
        label = None
        if labels is not None:
            k, r, c = np.clip(np.round(idx).astype(int), 0, np.asarray(labels[0].shape) - 1)
            label = labels[1].get(str(int(labels[0][k, r, c])), str(int(labels[0][k, r, c])))
        finds.append(dict(probability=float(conf), diameter_mm=float(diam), tp=i in hit,
                          center_mm=[round(float(v), 2) for v in xyz],
                          hessian=hessian_eigenvalues(vol, idx, float(diam)),
                          core_level=float(level_of[tuple(idx)]), surround_level=float(surround_of[tuple(idx)]),
                          label=label, depth_mm=None if frame is None else surface_depth(frame, idx),
                          twinned=[f"{r}@{p}" for (r, p), free in twin_free.items()
                                                if tuple(idx) not in free]))
    return dict(seed=case.seed, n_truth=len(case.bleeds), finds=finds, counts=counts,
                plane=None if plane is None else dict(normal=plane.normal, offset=plane.offset,
                                                      correlation=plane.correlation),
                field_t=float(case.params.get("field_t", 3.0)), slice_thickness=float(case.params["slice_thickness"]))


def table(rows: list[dict]) -> list[dict]:
    """Sensitivity, FP per scan and grade agreement at each operating threshold and cut: each core-level cut, then
    each core-to-surround cut alone, then (where the rows have them) each mirror-twin criterion alone."""
    nt = max(1, sum(r["n_truth"] for r in rows))
    crits = ([("max_core_level", c, f"{c}") for c in CUTS]
             + [("max_core_to_surround", c, f"s{c}") for c in SURROUND_CUTS]
             + [("mirror_partner", f"{r}@{p}", f"m{r}@{p}") for r, p in MIRROR_CUTS])
    out = []
    for thr in THRESHOLDS:
        for key, cut, suffix in crits:
            if f"{thr}|{suffix}" not in rows[0]["counts"]:
                continue
            tp = fp = agree = 0
            for r in rows:
                t, f = r["counts"][f"{thr}|{suffix}"]
                tp, fp = tp + t, fp + f
                agree += BurdenGrade.from_count(t + f) == BurdenGrade.from_count(r["n_truth"])
            crit = {"max_core_level": None, "max_core_to_surround": None, "mirror_partner": None, key: cut}
            out.append(dict(threshold=thr, **crit, sensitivity=tp / nt, fp_per_scan=fp / len(rows),
                            grade_agreement=agree / len(rows)))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cmb_cases.add_arguments(ap)
    ap.add_argument("--at", type=float, default=0.995, help="the operating threshold the summary is printed at")
    ap.add_argument("--on-criteria", action="store_true",
                    help="study the cuts on the candidates the model's own darkness criteria keep")
    ap.add_argument("--mirror", action="store_true", help="also study the mirror-twin criteria (MIRROR_CUTS)")
    args = ap.parse_args(argv)
    spec, rt = cmb_cases.model_and_runtime(args)
    name, cases = cmb_cases.cases(args, "a darkness probe informs a choice")
    rows = []
    for case, case_dir in cases:
        labels = None if case_dir is None else case_labels(case_dir, case)
        rows.append(case_findings(spec, rt, case, labels, args.on_criteria, args.mirror))
        r = rows[-1]
        print(f"  {r['seed']}: {r['n_truth']} bleeds, {sum(f['tp'] for f in r['finds'])} true and "
              f"{sum(not f['tp'] for f in r['finds'])} false findings at {PROBE_THRESHOLD}", flush=True)
    at = [f for r in rows for f in r["finds"] if f["probability"] >= args.at]
    for who, group in (("true", [f for f in at if f["tp"]]), ("false", [f for f in at if not f["tp"]])):
        lv = np.asarray([f["core_level"] for f in group])
        if lv.size:
            print(f"  {who} findings at {args.at}: {lv.size}, core level median {np.median(lv):.3f}, "
                  f"5th-95th percentile {np.percentile(lv, 5):.3f}-{np.percentile(lv, 95):.3f}")
    if args.data:
        print("  false findings by the label under their centre:",
              dict(Counter(f["label"] for f in at if not f["tp"]).most_common()))
    if args.mirror:
        for who, group in (("true", [f for f in at if f["tp"]]), ("false", [f for f in at if not f["tp"]])):
            print(f"  {who} findings with a mirror twin, by criterion:",
                  dict(Counter(c for f in group for c in f["twinned"])),
                  "by label:", dict(Counter(f["label"] for f in group if f["twinned"])))
    res = {"model_label": spec.label, "data": str(args.data or args.set), "n": len(rows), "cases": rows,
           "table": table(rows)}
    for t in res["table"]:
        crit = (f"no mirror twin within {t['mirror_partner']}" if t["mirror_partner"] is not None
                else f"core <= {t['max_core_level']}" if t["max_core_to_surround"] is None
                else f"core <= {t['max_core_to_surround']} x surround")
        print(f"  threshold {t['threshold']:.3f} {crit}: sensitivity {t['sensitivity']:.3f} "
              f"FP/scan {t['fp_per_scan']:.2f} grade {t['grade_agreement']:.3f}")
    cmb_cases.write_run("darkness", name, spec, res, "_on-criteria" * args.on_criteria + "_mirror" * args.mirror)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

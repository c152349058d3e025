"""Write MODEL_CARD.md (and the self-test bounds) of an installed model from its manifest and evaluation.

    PYTHONPATH=. .venv/bin/python -m training.model_card service/svdmark/data/models/wml-ncct/1.1.0 \
        --eval training/runs/eval_wml_heldout_30_<model>.json --eval training/runs/eval_wml_shifted_30_<model>.json \
        --bench "..." --notes notes.md

Sets ``manifest["self_test"]`` to three phantoms and a window on summed reading / summed truth that can
fail (see ``sanity_bounds``: a model that halves or doubles the WML volume, or misses a third of the bleeds,
is rejected), writes them as the model's reference volumes (``training.selftest_reference``), then checks
the model passes it. Accuracy is what ``training.evaluate`` and ``stress.score``
report. The manifest's sha256 is unaffected (it covers model.onnx only).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from svdmark.infer import ModelRegistry, Runtime, self_test

from . import selftest_reference
from .evaluate import measured

INTENDED = (
    "Research use only. Trained exclusively on synthetic phantoms from `svdmark_phantom` "
    "(analytic and MNI152-atlas warped heads, vendor-neutral intensities); it has never seen a real patient scan. "
    "It is a reference implementation of the pipeline, to be retrained on labelled site data "
    "with the same command before any real-world use. Not a medical device."
)

LIMITS = {
    "wml": [
        "Synthetic-only training: real NCCT (beam hardening, motion, post-stroke change, hydrocephalus, "
        "different kernels) is out of distribution.",
        "2.5-D network (a slice and its direct neighbours as channels): through-plane partial volume is learned "
        "from the phantom's thick-slice occupancy, so it is only as right as that model of the detector slab; "
        "neighbour slices are taken as they are stored (2.5-5 mm apart), so other slice spacings are untested.",
        "Low-contrast (3–4 HU) lesions under heavy noise are under-called; the mask (fraction ≥ 0.5) "
        "misses lesions thinner than half a slice although their volume is counted.",
        "Mimics seen in training: lacunes, calcifications, early ischaemic wedges; others (old infarcts, "
        "tumours, oedema) are untested.",
    ],
    "cmb": [
        "Synthetic-only training: real SWI (phase-wrap artefacts, motion, different echo times and field "
        "strengths, calcification vs. haemosiderin) is out of distribution.",
        "Detection depends on the LoG candidate stage: a bleed that gives no candidate cannot be found.",
        "Location (MARS lobar / deep / infratentorial) comes from a coarse rule on the head's own shape "
        "(`svdmark.measure.geometry.locate`), not from a parcellation; bleeds near its boundaries can fall either way.",
        "Diameters are the blooming diameter on the magnitude image, not a physical haemosiderin size.",
    ],
}


SPLIT_TITLES = {
    "heldout": "Held-out results (phantom seeds 900000+, never used in training or tuning)",
    "heldout_b": "Second held-out split (seeds 900500+, drawn as the held-out split; first used 2026-12-02)",
    "shifted": "Shifted-set results (seeds 700000+: MNI152 atlas heads, other noise, field of view and "
               "acquisition draws, through DICOM in four vendors' header styles; never used in training or tuning)",
    "dev": "Development set (devset/, seeds 7330000+: heads, lesions, scanner and DICOM built by other code; choices "
           "may be made on it, so its figures are from the half that no choice saw where one was made)",
}


def _results(task: str, ev: dict | None) -> list[str]:
    """The results section of one ``training.evaluate`` JSON."""
    if not ev:
        return ["## Held-out results", "(not evaluated yet)"]
    data = f" --data {ev['data']}" if ev.get("data") else ""  # the development set's folder
    lines = [f"## {SPLIT_TITLES.get(ev['split'], ev['split'])}",
             f"Command: `PYTHONPATH=. .venv/bin/python -m training.evaluate --task {task} --set "
             f"{ev['split']}{data} --n {ev['n']}{'' if ev.get('baseline') else ' --no-baseline'}`", ""]
    if task == "wml":
        lines += ["| | MAE (mL) | Pearson r | Dice (truth ≥ 1 mL) | bias (mL) |", "|---|---|---|---|---|"]
        for who, m in measured(ev):
            d = "n/a" if m["dice_ge_1ml"] is None else f"{m['dice_ge_1ml']:.3f}"
            lines.append(f"| {who} | {m['mae_ml']:.3f} | {m['pearson_r']:.4f} | {d} | {m['bias_ml']:+.3f} |")
        lines += ["", f"n = {ev['n']} cases, {ev['n_ge_1ml']} with truth ≥ 1 mL. Targets: MAE ≤ 1.0 mL, "
                      "r ≥ 0.97, Dice ≥ 0.70."]
    else:
        lines += ["| | sensitivity | FP / scan | grade agreement |", "|---|---|---|---|"]
        for who, m in measured(ev):
            lines.append(f"| {who} | {m['sensitivity']:.3f} | {m['fp_per_scan']:.2f} | {m['grade_agreement']:.3f} |")
        lines += ["", f"n = {ev['n']} scans, {sum(r['n_truth'] for r in ev['cases'])} true bleeds; match within "
                      "max(5 mm, diameter). Targets: sensitivity ≥ 0.90 at ≤ 1.0 FP/scan, grade ≥ 0.90."]
    cov, wh = ev.get("interval_coverage"), ev.get("withheld_fraction")
    if cov is not None or wh is not None:
        lines.append(f"Interval coverage (truth inside the reported interval): "
                     f"{'n/a' if cov is None else f'{cov:.2f}'}; withheld by the quality gate: "
                     f"{'n/a' if wh is None else f'{wh:.2f}'}.")
    lines += [f"Mean CPU inference in the evaluation: {ev['seconds_mean']:.2f} s/series (shared 2-core machine).", ""]
    return lines


def _uncertainty_and_gate(manifest: dict) -> list[str]:
    """What the manifest's ``uncertainty`` and ``quality`` sections say, and where they were chosen."""
    lines = []
    for task, u in manifest.get("uncertainty", {}).items():
        if task == "wml":
            how = (f"[min(passes) − h, max(passes) + h], h = {u['a_ml']} mL + {u['b']} × volume, over the "
                   f"test-time-augmentation passes `{manifest['input'].get('tta', [])}`")
            width = f"mean width {u['validation_mean_width_ml']} mL"
        else:
            how = f"counts at classifier thresholds {u['threshold_high']} (low end) and {u['threshold_low']} (high end)"
            if u.get("a") or u.get("b"):
                how = (f"[floor(min(count, count at {u['threshold_high']}) - h), ceil(max(count, count at "
                       f"{u['threshold_low']}) + h)] with h = {u.get('a', 0):g} + {u.get('b', 0):g} × count, "
                       "the low end at least 0")
            width = f"mean width {u['validation_mean_width']} bleeds"
        lines += ["## Uncertainty interval",
                  f"{how}; target coverage {u['coverage']:.0%}, validation coverage {u['validation_coverage']:.2f}, "
                  f"{width}. Chosen on {u['chosen_on']}.", ""]
    q = manifest.get("quality")
    if q:
        lines += ["## Quality gate", "A result is withheld (\"not reliably measurable\", no number) when any score is "
                  "outside its limit:", ""]
        lines += [f"- `{k}`: {json.dumps(v)}" for k, v in q["limits"].items()]
        lines += ["", f"Limits chosen on {q['chosen_on']}."]
        if q.get("noise_score"):
            lines += [f"CT noise scored on the `{q['noise_score']}` residual (`svdmark.measure.quality`)."]
        lines += [""]
        if q.get("degradation"):
            lines += _degradation(q["degradation"])
    return lines


def _degradation(d: dict) -> list[str]:
    """The degradation study (training.degrade) behind the noise limit: error per added-noise level."""
    keys = [k for k in ("mae_ml", "interval_coverage", "sensitivity", "fp_per_scan", "grade_agreement")
            if k in d["table"][0]]
    lines = ["### Noise limit from a degradation study",
             f"Validation cases re-read with added noise ({d['added_noise_unit']}); a level is acceptable while "
             f"{d['criterion']} (against the clean read). Noise limit {d['noise_limit']} = the worst gate noise "
             f"score at the highest acceptable level ({d['highest_acceptable_level']}). Command: "
             f"`{d['chosen_on'].split(': ', 1)[-1]}`.", "",
             "| added noise | n | noise score (median / max) | " + " | ".join(keys) + " |",
             "|---" * (3 + len(keys)) + "|"]
    for r in d["table"]:
        lines.append(f"| {r['level']} | {r['n']} | {r['noise_median']:.4g} / {r['noise_max']:.4g} | "
                     + " | ".join(f"{r[k]:.3f}" for k in keys) + " |")
    return lines + [""]


_STRESS_COLS = {
    "wml": [("n", "n", "{:d}"), ("withheld_frac", "withheld", "{:.2f}"), ("mae_ml", "MAE mL", "{:.2f}"),
            ("bias_ml", "bias mL", "{:+.2f}"), ("pearson_r", "r", "{:.3f}"), ("dice_truth_ge1", "Dice ≥1 mL", "{:.2f}"),
            ("mae_truth_lt1", "MAE <1 mL", "{:.2f}"), ("median_pred_lesion_free", "median, lesion-free", "{:.2f}"),
            ("interval_coverage", "interval coverage", "{:.2f}"),
            ("category_agreement", "flag category right", "{:.2f}"),
            ("category_wrong_unflagged", "category wrong, not marked uncertain", "{:.2f}")],
    "cmb": [("n", "n", "{:d}"), ("withheld_frac", "withheld", "{:.2f}"), ("sensitivity", "sensitivity", "{:.3f}"),
            ("fp_per_scan", "FP/scan", "{:.2f}"), ("grade_agreement", "grade agreement", "{:.2f}"),
            ("count_mae", "count MAE", "{:.2f}"), ("interval_coverage", "interval coverage", "{:.2f}"),
            ("grade_wrong_unflagged", "grade wrong, not marked uncertain", "{:.2f}")],
}


def _stress(task: str, st: dict) -> list[str]:
    """The stress-set section: overall and every breakdown ``stress.score`` wrote."""
    cols = _STRESS_COLS[task]

    def row(name: str, m: dict) -> str:
        cells = ["–" if m.get(k) is None else f.format(m[k]) for k, _, f in cols]
        return f"| {name} | " + " | ".join(cells) + " |"

    lines = [f"## Independent stress set ({st['model']})",
             "Built by other code (`stress/`: its own anatomy, deformation, lesions, mimics, CT/MR physics, noise "
             "and DICOM writer; see `stress/README.md`), scored through the service's own stages (route, "
             "volume.load, runtime, measure, rules). Never used for training, post-processing, calibration or limits.",
             f"Command: `PYTHONPATH=. .venv/bin/python -m stress.score --task {task} --data DIR --json OUT` "
             f"(DIR from `python -m stress.build --task {task} --n {st['overall']['n']} --out DIR`).", "",
             "| group | " + " | ".join(h for _, h, _ in cols) + " |", "|---" * (len(cols) + 1) + "|",
             row("**all**", st["overall"])]
    for by, groups in st.get("by", {}).items():
        for g, m in groups.items():
            lines.append(row(f"{by}: {g}", m))
    lines.append("")
    return lines


def card(manifest: dict, evals: list[dict], bench: str | None, selftest: str | None, notes: str | None = None,
         stress: list[dict] | None = None) -> str:
    task = manifest["task"]
    tr = manifest.get("training", {})
    lines = [
        f"# {manifest['name']} {manifest['version']}",
        "",
        f"Task: {'WML volume on non-contrast head CT' if task == 'wml' else 'cerebral microbleeds on SWI'} "
        f"({manifest['modality']}). sha256 `{manifest['sha256']}`.",
        "",
        "## Intended use",
        INTENDED,
        "",
        "## Model",
        f"- input: `{json.dumps(manifest['input'])}`",
    ]
    if "candidates" in manifest:
        lines.append(f"- candidate stage: `{json.dumps(manifest['candidates'])}`")
    lines += [
        f"- output: {manifest['output'].get('semantics', '')}",
        f"- thresholds: `{json.dumps({k: v for k, v in manifest['output'].items() if k != 'semantics'})}`",
        "",
        "## Training",
        "```",
        *(f"export {k}={v}" for k, v in tr.get("environment", {}).items()),
        f"{tr.get('command', '')}",
        "```",
        f"PyTorch {tr.get('torch', '')}, CPU, seed {tr.get('seed', '')}, {tr.get('n_train_cases', '?')} training "
        f"phantoms on the analytic head + {tr.get('n_train_atlas_cases', 0)} on the MNI152 atlas head, "
        f"{tr.get('steps', '?')} steps in {tr.get('seconds', '?')} s. Recipe: `training/README.md`.",
        "",
    ]
    lines += _uncertainty_and_gate(manifest)
    for ev in evals or [None]:
        lines += _results(task, ev)
    for st in stress or []:
        lines += _stress(task, st)
    lines += ["", "## Inference time", bench or "See `bench/bench_inference.py`.", ""]
    if selftest:
        lines += ["## Self-test", selftest, ""]
    if notes:
        lines += [notes.rstrip(), ""]
    said = manifest.get("limitations") or []
    if said:  # the manifest's sentences, which the SR and the summary image carry with every result
        lines += ["## What the SR and the summary image say about this model",
                  "With every result, one SR TEXT item (`MODELLIMIT`) each and a few lines on the summary image, from "
                  "the manifest's `limitations`:"] + [f"- {x}" for x in said] + [""]
    lines += ["## Known limitations"] + [f"- {x}" for x in LIMITS[task]] + [""]
    return "\n".join(lines)


SELF_TEST_SEEDS = (0, 1, 2)
RATIO_WINDOW = {"make_ncct": [0.7, 1.4], "make_swi": [0.8, 1.25]}


def sanity_bounds(self_test_spec: dict) -> dict:
    """Self-test over three phantoms (seeds 0-2 of the manifest's kwargs) with a window on the summed
    reading / summed truth that can fail: WML 0.7-1.4 (a model that halves or doubles volumes fails),
    CMB 0.8-1.25 (a model that misses a third of the bleeds, or calls a third too many, fails)."""
    base = self_test_spec.get("kwargs") or self_test_spec["cases"][0]
    return {"cases": [{**base, "seed": s} for s in SELF_TEST_SEEDS],
            "expect": {"ratio_to_truth": RATIO_WINDOW[self_test_spec["generator"]]}}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("--eval", type=Path, action="append", default=[], help="training.evaluate JSON (repeatable)")
    ap.add_argument("--stress", type=Path, action="append", default=[], help="stress.score JSON (repeatable)")
    ap.add_argument("--bench", default=None)
    ap.add_argument("--notes", type=Path, default=None, help="markdown appended before the limitations")
    args = ap.parse_args(argv)
    mpath = args.model_dir / "manifest.json"
    man = json.loads(mpath.read_text())
    reg = ModelRegistry(args.model_dir.parent.parent)
    spec = reg.get(man["name"], man["version"])
    # self-test bounds from the phantom truth, checked against the model
    st = man["self_test"]
    st.update(sanity_bounds(st))
    st.pop("kwargs", None)
    mpath.write_text(json.dumps(man, indent=2) + "\n")
    selftest_reference.write(args.model_dir, force=True)  # the cases beside the model, named in the manifest
    spec = ModelRegistry(args.model_dir.parent.parent).get(man["name"], man["version"])
    res = self_test(spec, Runtime(providers=["CPUExecutionProvider"], intra_op_num_threads=2))
    print(res.describe())
    evals = [json.loads(p.read_text()) for p in args.eval]
    notes = args.notes.read_text() if args.notes else None
    stress = [json.loads(p.read_text()) for p in args.stress]
    (args.model_dir / "MODEL_CARD.md").write_text(card(man, evals, args.bench, res.describe(), notes, stress))
    if not res.passed:
        raise SystemExit(f"self-test failed: {res.describe()}")
    print(f"wrote {args.model_dir / 'MODEL_CARD.md'}")


if __name__ == "__main__":
    main()

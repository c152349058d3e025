"""Probe: the quantifier's fraction counted only where a presence net marks a region ("P says where, Q how much").

    PYTHONPATH=.:service .venv/bin/python -m training.gated --gate ROOT_P --set dev --data /work/dev_data/choose --n 30

Session 44's cascade (``training.cascade``, rule ``training/preregistered/2026-12-07-wml-presence-cascade.md``) switched
on the presence net's *volume* and failed: the BCE-trained net P marks a large faint load about where 1.12.5 (Q) does
(Dice within 0.1 on every `judge7` head >= 10 mL) but sums little there, so its volume cannot tell a faint load from
none. Here P's fraction map decides *where* (``measure.wml_support``: voxels at or above ``s``, grown ``d`` voxels,
the runtime's own hysteresis) and Q's post-processed fraction inside that region gives the volume. Each case runs both
nets through the service's stages (Q: the active model or ``--models``; P: ``--gate``, each with its own manifest's
test-time flips and post-processing); the table gives every (s, d) of ``GRID`` beside Q and P alone.

A sweep is a choice, so the reported splits are refused (``evaluate.refuse_sweep_on_reported``). The per-case volumes
of every setting go to ``training/runs/gated_<set>-<folder>_<n>_<P>_<Q>.json``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from svdmark.domain import Task
from svdmark.infer import ModelRegistry, Runtime
from svdmark.measure import from_output, wml_postprocessing, wml_support, wml_volume_ml

from . import data
from .data import RUNS
from .compare import WmlReading, wml_figures
from .evaluate import DEV_SPLIT, EXTRA_SPLIT, refuse_sweep_on_reported, target_score, wml_cases

GRID = [(s, d) for s in (0.1, 0.2, 0.3, 0.5, 0.7) for d in (1, 3, 5)]  # P's support threshold, voxels grown


def gated_volumes(volume, q_fraction: np.ndarray, p_fraction: np.ndarray, q_post: dict, p_slab_group: int,
                  grid=GRID) -> dict[str, float]:
    """Q's volume (its own post-processing) counted only inside P's support region, for each (s, d)."""
    out = {}
    for s, d in grid:
        region = wml_support(p_fraction, s, d, p_slab_group)
        out[f"{s:g}/{d}"] = wml_volume_ml(volume, np.where(region, q_fraction, 0.0), **q_post)
    return out


def figures(truth: np.ndarray, pred: np.ndarray) -> dict:
    """``compare.wml_figures`` of one setting (nan where a figure has no case) with the target score."""
    f = wml_figures([WmlReading(float(t), float(v), True) for t, v in zip(truth, pred)])
    f = {k: float("nan") if v is None else v for k, v in f.items()}
    return {**f, "target_score": target_score(f["mae_ml"], f["mae_lt1_ml"])}


def run(split: str, n: int, data_dir: Path | None, runtime: Runtime, q_reg: ModelRegistry, p_reg: ModelRegistry,
        grid=GRID) -> dict:
    refuse_sweep_on_reported(split, "the presence gate")
    q_spec, p_spec = q_reg.active(Task.WML), p_reg.active(Task.WML)
    rows = []
    for case in wml_cases(split, n, data_dir):
        q_out, p_out = runtime.run(q_spec, case.volume), runtime.run(p_spec, case.volume)
        q_post = wml_postprocessing(q_spec.manifest, case.volume)
        p_slabs = wml_postprocessing(p_spec.manifest, case.volume)["slab_group"]
        vols = {"Q": from_output(q_spec, case.volume, q_out).volume_ml,
                "P": from_output(p_spec, case.volume, p_out).volume_ml,
                **gated_volumes(case.volume, q_out.fraction, p_out.fraction, q_post, p_slabs, grid)}
        rows.append({"seed": case.seed, "truth": case.truth_ml, "volumes": vols})
        print(f"  wml seed {case.seed}: truth {case.truth_ml:6.2f}  Q {vols['Q']:6.2f}  P {vols['P']:6.2f}  "
              + " ".join(f"{k} {v:.2f}" for k, v in vols.items() if k not in ("Q", "P")), flush=True)
    truth = np.array([r["truth"] for r in rows])
    table = {k: figures(truth, np.array([r["volumes"][k] for r in rows])) for k in rows[0]["volumes"]}
    res = {"q": q_spec.label, "p": p_spec.label, "split": split, "n": len(rows), "cases": rows, "table": table}
    if split in (DEV_SPLIT, EXTRA_SPLIT):
        res["data"] = str(data_dir)
    return res


def report(res: dict) -> str:
    lines = [f"{res['p']} marks where, {res['q']} reads how much: {res['split']} n={res['n']}",
             f"{'setting':>10} {'MAE':>7} {'MAE<1':>7} {'score':>7} {'free med':>9} {'bias':>7} {'r':>6}"]
    for k, f in sorted(res["table"].items(), key=lambda kv: kv[1]["target_score"]):
        lines.append(f"{k:>10} {f['mae_ml']:7.3f} {f['mae_lt1_ml']:7.3f} {f['target_score']:7.2f} "
                     f"{f['lesion_free_median_ml']:9.2f} {f['bias_ml']:+7.2f} {f['pearson_r']:6.3f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gate", type=Path, required=True, help="models root holding the presence net P")
    ap.add_argument("--models", type=Path, default=None, help="models root of the quantifier Q (default: active)")
    ap.add_argument("--set", default=DEV_SPLIT)
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    rt = Runtime(providers=["CPUExecutionProvider"], intra_op_num_threads=a.threads)
    res = run(a.set, a.n, a.data, rt, ModelRegistry(a.models), ModelRegistry(a.gate))
    res["environment"] = data.training_environment()
    print(report(res))
    where = f"{a.set}-{a.data.name}" if a.set in (DEV_SPLIT, EXTRA_SPLIT) else a.set
    RUNS.mkdir(exist_ok=True)
    out = RUNS / f"gated_{where}_{res['n']}_{res['p']}_{res['q']}.json".replace(" ", "-")
    out.write_text(json.dumps(res, indent=1, default=float))
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

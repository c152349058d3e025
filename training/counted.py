"""Post-processing probes on a WML model's counted fraction: each head read once, every setting measured from it.

A probe (``training.hu_grow``, ``training.csf_exclusion``) changes what is counted after the net, so the net need not
run again for each setting: a head's counted fraction (the service's runtime, then the manifest's own
post-processing, ``measure.counted_fraction``) is kept under ``--cache`` and each setting is a function of it and the
head. The quality gate is not applied, so every setting is read on every head. A grid is a choice, so the reported
splits are refused (``evaluate.refuse_sweep_on_reported``); ``--pair A B`` compares two settings case by case
(``compare.paired``: B - A with a bootstrap CI). ``--only S`` reads one setting fixed beforehand, which is a reading,
not a choice, so it may run on any split.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from svdmark.domain import Task
from svdmark.infer import ModelRegistry, Runtime
from svdmark.measure import counted_fraction, wml_postprocessing

from . import data
from .compare import WmlReading, paired
from .data import RUNS
from .evaluate import DEV_SPLIT, EXTRA_SPLIT, refuse_sweep_on_reported, wml_cases
from .gated import figures



@dataclass(frozen=True)
class Probe:
    """What a post-processing probe does to a head's counted fraction: ``measure(case, counted, settings)`` gives the
    volume (mL) under each named setting asked for, and notes on the head (its levels, say)."""

    what: str
    prefix: str  # of the run file under training/runs
    grid: tuple[str, ...]
    measure: Callable[[object, np.ndarray, list[str]], tuple[dict[str, float], dict]]


def case_counted(runtime: Runtime, spec, case, cache: Path) -> np.ndarray:
    """The model's counted fraction of one case, read once and kept under ``cache``."""
    path = cache / f"{spec.label}_{case.seed}.npz".replace(" ", "-")
    if path.exists():
        with np.load(path) as z:
            return z["counted"].astype(np.float32)
    out = runtime.run(spec, case.volume)
    counted = counted_fraction(out.fraction, **wml_postprocessing(spec.manifest, case.volume)).astype(np.float16)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, counted=counted)
    return counted.astype(np.float32)  # as kept: a run reads the same fractions whether or not the cache had them


def volume_ml(case, fraction: np.ndarray) -> float:
    return float(fraction.sum(dtype=np.float64) * case.volume.voxel_volume_mm3 / 1000.0)


def run(split: str, n: int, data_dir: Path | None, runtime: Runtime, registry: ModelRegistry, cache: Path,
        probe: Probe, only: str | None = None) -> dict:
    """Every head's volume as the model reads it (``model``) and under each setting of the grid (or ``only`` one),
    with the table of figures."""
    if only is None:
        refuse_sweep_on_reported(split, probe.what)
    elif only not in probe.grid:
        raise SystemExit(f"--only {only}: not a setting of {probe.prefix} ({', '.join(probe.grid)})")
    spec = registry.active(Task.WML)
    rows = []
    for case in wml_cases(split, n, data_dir):
        counted = case_counted(runtime, spec, case, cache)
        vols, notes = probe.measure(case, counted, list(probe.grid) if only is None else [only])
        vols = {"model": volume_ml(case, counted), **vols}
        rows.append({"seed": case.seed, "truth": case.truth_ml, "volumes": vols, **notes})
        print(f"  wml seed {case.seed}: truth {case.truth_ml:6.2f}  "
              + " ".join(f"{k} {v:.2f}" for k, v in vols.items()), flush=True)
    truth = np.array([r["truth"] for r in rows])
    table = {k: figures(truth, np.array([r["volumes"][k] for r in rows])) for k in rows[0]["volumes"]}
    res = {"model": spec.label, "probe": probe.what, "split": split, "n": len(rows), "cases": rows, "table": table,
           "environment": data.training_environment()}
    if split in (DEV_SPLIT, EXTRA_SPLIT):
        res["data"] = str(data_dir)
    return res


def readings(res: dict, setting: str) -> dict[int, WmlReading]:
    return {int(c["seed"]): WmlReading(float(c["truth"]), float(c["volumes"][setting]), True) for c in res["cases"]}


def pair(res: dict, a: str, b: str) -> dict:
    """``compare.paired`` of two settings of one run."""
    return paired(readings(res, a), readings(res, b))


def report(res: dict, pairs: list[tuple[str, str]] = ()) -> str:
    lines = [f"{res['model']}, {res['probe']}: {res['split']} n={res['n']}",
             f"{'setting':>10} {'MAE':>7} {'MAE<1':>7} {'score':>7} {'free med':>9} {'bias':>7} {'r':>6}"]
    for k, f in sorted(res["table"].items(), key=lambda kv: kv[1]["target_score"]):
        lines.append(f"{k:>10} {f['mae_ml']:7.3f} {f['mae_lt1_ml']:7.3f} {f['target_score']:7.2f} "
                     f"{f['lesion_free_median_ml']:9.2f} {f['bias_ml']:+7.2f} {f['pearson_r']:6.3f}")
    for a, b in pairs:
        for name, d in pair(res, a, b)["difference"].items():
            lo, hi = d["ci95"]
            lines.append(f"{b} - {a}: {name} {d['b_minus_a']:+.3f} (95 % CI {lo:+.3f} to {hi:+.3f}, n {d['n']})")
    return "\n".join(lines)


def parser(doc: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--models", type=Path, default=None, help="models root (default: the active model)")
    ap.add_argument("--set", default=DEV_SPLIT)
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/svdmark-counted"),
                    help="where each head's counted fraction is kept between runs")
    ap.add_argument("--only", default=None, metavar="S", help="read one setting fixed beforehand (any split)")
    ap.add_argument("--pair", nargs=2, action="append", default=[], metavar=("A", "B"),
                    help="compare two settings case by case (e.g. --pair model 0.4/0)")
    return ap


def main(doc: str, probe: Probe, argv=None) -> int:
    a = parser(doc).parse_args(argv)
    rt = Runtime(providers=["CPUExecutionProvider"], intra_op_num_threads=a.threads)
    res = run(a.set, a.n, a.data, rt, ModelRegistry(a.models), a.cache, probe, a.only)
    print(report(res, [tuple(p) for p in a.pair]))
    where = f"{a.set}-{a.data.name}" if a.set in (DEV_SPLIT, EXTRA_SPLIT) else a.set
    RUNS.mkdir(exist_ok=True)
    tail = "" if a.only is None else "_" + a.only.replace("/", "-")
    out = RUNS / f"{probe.prefix}_{where}_{res['n']}_{res['model']}{tail}.json".replace(" ", "-")
    out.write_text(json.dumps(res, indent=1, default=float))
    print(f"-> {out}")
    return 0

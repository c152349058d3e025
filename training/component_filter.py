"""Fit and probe the WML component filter (``svdmark.measure.components``) on heads the net never saw.

A perfect filter of 1.12.5's counted components (keep a component when half its counted millilitres lie on the
truth lesion) would take `choose` from MAE 6.98 / MAE < 1 mL 4.88 / r 0.63 to 6.30 / 0.18 / 0.90: nearly all the false
millilitres lie in components of their own. This learns that filter from heads of a generator the net was not trained
on and the development set was not built by (synth_ct: ``SVDMARK_TRAIN_SYNTH_CT=1``, its ``train`` seeds), so that
the development set judges it as it judges the net.

    P="env PYTHONPATH=.:service SVDMARK_TRAIN_ATROPHY_NCCT=0.75 SVDMARK_TRAIN_WML_SPREAD=0.5 .venv/bin/python"
    SVDMARK_TRAIN_SYNTH_CT=1 $P -m training.component_filter tables --set train --n 80 --out training/runs/cf_synth.npz
    $P -m training.component_filter fit --tables training/runs/cf_synth.npz --out training/runs/cf_fit.json
    $P -m training.component_filter probe --fit training/runs/cf_fit.json --set dev --data /work/dev_data/choose

``tables``: every head's components (:data:`~svdmark.measure.components.FEATURES`, counted millilitres, the share of
them on the truth lesion) from the net's counted fraction (``training.counted``: kept under ``--cache``). ``fit``: an
L2 logistic model of "at least half on the lesion", each component weighted by its millilitres (+ 0.01), so a large
false region weighs as much as it costs. ``probe``: ``training.counted``'s probe with one setting per threshold.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage, optimize

from svdmark.domain import Task
from svdmark.infer import ModelRegistry, Runtime
from svdmark.measure.components import FEATURES, ComponentFilter, component_features, components
from svdmark.measure.head import smoothed_head

from . import counted as probes
from .evaluate import wml_cases

RIM = 0.02  # a voxel is on the lesion at this truth fraction (the development set's smallest labelled fraction)
GRID = tuple(f"{t:.2f}" for t in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8))
ON_SHARE = 0.5  # a component is lesion when at least this share of its counted millilitres lies on the lesion


def head_components(case, counted: np.ndarray) -> dict | None:
    """One head's component table: features, counted mL and the share on the truth lesion; None without levels."""
    head = smoothed_head(case.volume)
    if head is None:
        return None
    labels, n = components(counted)
    idx = np.arange(1, n + 1)
    voxel_ml = case.volume.voxel_volume_mm3 / 1000.0
    mass = ndimage.sum(counted, labels, idx) * voxel_ml if n else np.zeros(0)
    on = ndimage.sum(counted * (case.truth_fraction >= RIM), labels, idx) * voxel_ml if n else np.zeros(0)
    return {"features": component_features(case.volume, counted, head, labels, n), "ml": np.asarray(mass),
            "on_share": np.asarray(on) / np.maximum(mass, 1e-9)}


def tables(split: str, n: int, data_dir: Path | None, runtime: Runtime, registry: ModelRegistry, cache: Path) -> dict:
    """Every head's components, stacked, with the head each row belongs to."""
    spec = registry.active(Task.WML)
    parts, heads = [], []
    for case in wml_cases(split, n, data_dir):
        t = head_components(case, probes.case_counted(runtime, spec, case, cache))
        if t is None:
            print(f"  seed {case.seed}: no tissue levels, left out", flush=True)
            continue
        parts.append(t)
        heads.append(np.full(len(t["ml"]), case.seed))
        print(f"  seed {case.seed}: truth {case.truth_ml:.2f}, {len(t['ml'])} components, "
              f"{t['ml'].sum():.2f} mL of which {(t['ml'] * t['on_share']).sum():.2f} on the lesion", flush=True)
    return {"features": np.concatenate([p["features"] for p in parts]), "ml": np.concatenate([p["ml"] for p in parts]),
            "on_share": np.concatenate([p["on_share"] for p in parts]), "seed": np.concatenate(heads),
            "names": np.array(FEATURES), "model": spec.label, "split": split}


def fit(features: np.ndarray, ml: np.ndarray, on_share: np.ndarray, names=FEATURES, l2: float = 1.0) -> dict:
    """An L2 logistic model of ``on_share >= ON_SHARE`` over standardised ``names``, weighted by millilitres."""
    cols = [FEATURES.index(c) for c in names]
    x = features[:, cols]
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    z = (x - mean) / scale
    y = (on_share >= ON_SHARE).astype(float)
    w = ml + 0.01
    w = w / w.mean()

    def loss(p):
        s = z @ p[:-1] + p[-1]
        nll = np.sum(w * (np.logaddexp(0.0, s) - y * s))
        g = w * (1.0 / (1.0 + np.exp(-s)) - y)
        return nll + 0.5 * l2 * p[:-1] @ p[:-1], np.append(z.T @ g + l2 * p[:-1], g.sum())

    p = optimize.minimize(loss, np.zeros(len(cols) + 1), jac=True, method="L-BFGS-B").x
    return {"features": list(names), "mean": mean.tolist(), "scale": scale.tolist(), "coef": p[:-1].tolist(),
            "intercept": float(p[-1]), "l2": l2, "components": int(len(y)), "lesion_share": float(np.mean(y)),
            "lesion_ml_share": float(np.sum(ml * y) / max(np.sum(ml), 1e-9))}


def filter_probe(fitted: dict) -> probes.Probe:
    """``training.counted``'s probe of the fitted filter, one setting per threshold."""

    def measure(case, counted, settings):
        head = smoothed_head(case.volume)
        if head is None:
            return {s: probes.volume_ml(case, counted) for s in settings}, {"levels": None}
        labels, n = components(counted)
        voxel_ml = case.volume.voxel_volume_mm3 / 1000.0
        mass = ndimage.sum(counted, labels, np.arange(1, n + 1)) * voxel_ml if n else np.zeros(0)
        flt = ComponentFilter.from_json({**fitted, "threshold": 0.5})
        p = flt.probability(component_features(case.volume, counted, head, labels, n)) if n else np.zeros(0)
        return {s: float(np.sum(mass[p >= float(s)])) for s in settings}, {"levels": [head.wm, head.csf]}

    return probes.Probe("the component filter", "component_filter", GRID, measure)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["probe"]:
        ap = argparse.ArgumentParser()
        ap.add_argument("--fit", type=Path, required=True)
        a, rest = ap.parse_known_args(argv[1:])
        return probes.main(__doc__, filter_probe(json.loads(a.fit.read_text())), rest)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("tables")
    t.add_argument("--set", default="train")
    t.add_argument("--n", type=int, default=80)
    t.add_argument("--data", type=Path, default=None)
    t.add_argument("--models", type=Path, default=None)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--cache", type=Path, default=Path("/tmp/svdmark-counted"))
    t.add_argument("--out", type=Path, required=True)
    f = sub.add_parser("fit")
    f.add_argument("--tables", type=Path, nargs="+", required=True)
    f.add_argument("--features", nargs="+", default=list(FEATURES))
    f.add_argument("--l2", type=float, default=1.0)
    f.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    if a.cmd == "tables":
        rt = Runtime(providers=["CPUExecutionProvider"], intra_op_num_threads=a.threads)
        res = tables(a.set, a.n, a.data, rt, ModelRegistry(a.models), a.cache)
        np.savez_compressed(a.out, **res)
        print(f"-> {a.out}: {len(res['ml'])} components")
        return 0
    loaded = [np.load(p) for p in a.tables]
    cat = {k: np.concatenate([z[k] for z in loaded]) for k in ("features", "ml", "on_share")}
    res = {**fit(cat["features"], cat["ml"], cat["on_share"], a.features, a.l2),
           "tables": [str(p) for p in a.tables]}
    a.out.write_text(json.dumps(res, indent=1))
    print(json.dumps({k: v for k, v in res.items() if k not in ("mean", "scale")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Two models on the same cases, paired: the figures on the cases both report, and B − A with a bootstrap CI.

    PYTHONPATH=.:service .venv/bin/python -m training.compare A.json B.json [--json OUT]

A and B are the JSONs of ``training.evaluate`` or ``stress.score`` on the same split, both WML (volume MAE,
MAE where the truth is under 1 mL, lesion-free median, r) or both CMB (sensitivity, false positives per scan,
grade agreement, count MAE). A case withheld by either model's quality gate, or not reported at all (not
routed, an error), leaves the common set, so a gate that withholds the hard cases cannot pass for a better
reading of them; each model's figures as scored are printed too. The confidence interval resamples cases
(percentile bootstrap, ``--boot`` draws, fixed seed): with 30 or 40 cases a difference of a few tenths of a mL
can be within it, which a fixed release margin does not show. Runs over different cases, or the same seed with
a different truth (another cache or generator), are refused.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .evaluate import pearson


@dataclass(frozen=True)
class WmlReading:
    truth_ml: float
    pred_ml: float
    reported: bool  # False: withheld by the quality gate

    @property
    def truth(self) -> float:
        return self.truth_ml


@dataclass(frozen=True)
class CmbReading:
    truth_count: int
    pred_count: int
    tp: int
    fp: int
    truth_grade: int
    pred_grade: int
    reported: bool

    @property
    def truth(self) -> float:
        return float(self.truth_count)


def reading(c: dict):
    """One case of an evaluate or a stress.score JSON as a ``WmlReading`` or a ``CmbReading``."""
    if "truth_ml" not in c and "count" in c and "n_truth" not in c:  # stress.score, CMB
        if "pred_count" not in c:  # not routed to the model, or an error: nothing reported
            return CmbReading(int(c["count"]), 0, 0, 0, int(c["grade"]), 0, False)
        return CmbReading(int(c["count"]), int(c["pred_count"]), int(c["tp"]), int(c["fp"]), int(c["grade"]),
                          int(c["pred_grade"]), not c.get("withheld"))
    if "n_truth" in c:  # training.evaluate, CMB
        return CmbReading(int(c["n_truth"]), int(c["count"]), int(c["tp"]), int(c["fp"]), int(c["grade_truth"]),
                          int(c["grade_model"]), c.get("measurable") is not False)
    if "truth_ml" in c:  # stress.score, WML
        reported = not c.get("withheld") and c.get("pred_ml") is not None
        return WmlReading(float(c["truth_ml"]), float(c["pred_ml"]) if reported else float("nan"), reported)
    return WmlReading(float(c["truth"]), float(c["model"]), c.get("measurable") is not False)  # evaluate, WML


def load(path: Path) -> tuple[str, dict]:
    """(model label, seed → reading) from an evaluate or a stress.score JSON."""
    res = json.loads(Path(path).read_text())
    label = res.get("model_label") or res.get("model") or Path(path).stem
    return str(label), {int(c["seed"]): reading(c) for c in res["cases"]}


def wml_figures(r: list[WmlReading]) -> dict:
    """n, MAE, bias, MAE where the truth is under 1 mL, lesion-free median and r of the readings ``r`` (not empty);
    None where a figure has no case (or r no spread)."""
    truth, pred = np.array([x.truth_ml for x in r]), np.array([x.pred_ml for x in r])
    err = np.abs(pred - truth)
    low, free = truth < 1.0, truth == 0.0
    rho = pearson(pred, truth)
    return {"n": len(r), "mae_ml": float(err.mean()), "bias_ml": float((pred - truth).mean()),
            "mae_lt1_ml": float(err[low].mean()) if low.any() else None, "n_lt1": int(low.sum()),
            "lesion_free_median_ml": float(np.median(pred[free])) if free.any() else None,
            "n_lesion_free": int(free.sum()),
            "pearson_r": None if np.isnan(rho) else rho}


def cmb_figures(r: list[CmbReading]) -> dict:
    bleeds = sum(x.truth_count for x in r)
    return {"n": len(r), "sensitivity": sum(x.tp for x in r) / bleeds if bleeds else None, "n_bleeds": bleeds,
            "fp_per_scan": float(np.mean([x.fp for x in r])),
            "grade_agreement": float(np.mean([x.pred_grade == x.truth_grade for x in r])),
            "count_mae": float(np.mean([abs(x.pred_count - x.truth_count) for x in r]))}


def _per_case(a: list, b: list) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """name → (B − A per case, the cases' weights for a ratio of sums, or None for a plain mean)."""
    def diff(per_case) -> np.ndarray:
        return np.array([float(per_case(y)) - float(per_case(x)) for x, y in zip(a, b)])

    if isinstance(a[0], WmlReading):
        err = diff(lambda r: abs(r.pred_ml - r.truth_ml))
        low = np.array([x.truth_ml < 1.0 for x in a])
        return {"mae_ml": (err, None), **({"mae_lt1_ml": (err[low], None)} if low.any() else {})}
    out = {"fp_per_scan": (diff(lambda r: r.fp), None),
           "grade_agreement": (diff(lambda r: r.pred_grade == r.truth_grade), None),
           "count_mae": (diff(lambda r: abs(r.pred_count - r.truth_count)), None)}
    bleeds = np.array([x.truth_count for x in a], dtype=float)
    if bleeds.sum():
        out["sensitivity"] = (diff(lambda r: r.tp), bleeds)
    return out


def _bootstrap_ci(d: np.ndarray, weights: np.ndarray | None, boot: int, rng: np.random.Generator):
    """(estimate, 2.5th and 97.5th percentiles) of the mean of ``d``, or of sum(d) / sum(weights), over cases."""
    idx = rng.integers(0, d.size, size=(boot, d.size))
    if weights is None:
        est, draws = d.mean(), d[idx].mean(axis=1)
    else:
        est = d.sum() / weights.sum()
        w = weights[idx].sum(axis=1)
        draws = d[idx].sum(axis=1)[w > 0] / w[w > 0]
    lo, hi = np.percentile(draws, [2.5, 97.5])
    return float(est), (float(lo), float(hi))


def _figures(r: list) -> dict:
    return wml_figures(r) if isinstance(r[0], WmlReading) else cmb_figures(r)


def paired(a: dict, b: dict, boot: int = 2000, seed: int = 0) -> dict:
    """Figures of A and B on the cases both report, and B − A per figure with a 95 % CI."""
    kinds = {type(r) for r in (*a.values(), *b.values())}
    if len(kinds) != 1:
        raise SystemExit("one run is WML and the other CMB")
    if a.keys() != b.keys():
        raise SystemExit(f"the runs read different cases ({len(a.keys() - b.keys())} only in A, "
                         f"{len(b.keys() - a.keys())} only in B): compare runs over the same split and n")
    for s in a:
        if abs(a[s].truth - b[s].truth) > 1e-6:
            raise SystemExit(f"seed {s}: truth {a[s].truth:.4f} against {b[s].truth:.4f}; the two runs did not "
                             "read the same data (a rebuilt cache or another generator?)")
    common = sorted(s for s in a if a[s].reported and b[s].reported)
    if not common:
        raise SystemExit("no case is reported by both models")
    ra, rb = [a[s] for s in common], [b[s] for s in common]
    rng = np.random.default_rng(seed)
    diff = {}
    for name, (d, weights) in _per_case(ra, rb).items():
        est, ci = _bootstrap_ci(d, weights, boot, rng)
        diff[name] = {"b_minus_a": est, "ci95": ci, "n": int(d.size)}
    return {"common": len(common), "a": _figures(ra), "b": _figures(rb), "difference": diff}


def as_scored(readings: dict) -> dict:
    shown = [r for r in readings.values() if r.reported]
    return {**(_figures(shown) if shown else {}), "withheld": len(readings) - len(shown), "cases": len(readings)}


def _f(v) -> str:
    return "–" if v is None else f"{v:.4g}"


def report(label_a: str, label_b: str, a: dict, b: dict, res: dict) -> str:
    names = [k for k, v in res["a"].items() if isinstance(v, float) or v is None]
    rows = [(f"{label_a}, as scored", as_scored(a)), (f"{label_b}, as scored", as_scored(b)),
            (f"{label_a}, common cases", res["a"]), (f"{label_b}, common cases", res["b"])]
    width = {k: max(len(k), 8) + 2 for k in names}
    lines = [f"{'':<32}{'n':>4}{'withheld':>10}" + "".join(f"{k:>{width[k]}}" for k in names)]
    for label, fig in rows:
        lines.append(f"{label:<32}{fig.get('cases', fig['n']):>4}{fig.get('withheld', ''):>10}"
                     + "".join(f"{_f(fig.get(k)):>{width[k]}}" for k in names))
    for name, d in res["difference"].items():
        lo, hi = d["ci95"]
        lines.append(f"B - A {name} on {d['n']} common cases: {d['b_minus_a']:+.4g} (95 % CI {lo:+.4g} to {hi:+.4g})")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.compare", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--boot", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    (la, a), (lb, b) = load(args.a), load(args.b)
    res = paired(a, b, args.boot, args.seed)
    print(report(la, lb, a, b, res))
    if args.json:
        args.json.write_text(json.dumps({"a": la, "b": lb, **res}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Two WML models on the same cases, paired: the figures on the cases both report, and B − A with a bootstrap CI.

    PYTHONPATH=.:service .venv/bin/python -m training.compare A.json B.json [--json OUT]

A and B are the JSONs of ``training.evaluate --task wml`` or ``stress.score --task wml`` on the same split.
A case withheld by either model's quality gate leaves the common set, so a gate that withholds the hard
cases cannot pass for a better reading of them; each model's figures as scored are printed too. The
confidence interval resamples cases (percentile bootstrap, ``--boot`` draws, fixed seed): with 30 or 40
cases a difference of a few hundredths of a mL is within it, which a fixed release margin does not show.
The same seed with a different truth means the two runs did not read the same data; that is refused.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Reading:
    truth_ml: float
    pred_ml: float | None  # None: withheld by the quality gate


def load(path: Path) -> tuple[str, dict[int, Reading]]:
    """(model label, seed → reading) from an evaluate or a stress.score JSON."""
    res = json.loads(Path(path).read_text())
    label = res.get("model_label") or res.get("model") or Path(path).stem
    out = {}
    for c in res["cases"]:
        if "truth_ml" in c:  # stress.score
            pred = None if c.get("withheld") or c.get("pred_ml") is None else float(c["pred_ml"])
            out[int(c["seed"])] = Reading(float(c["truth_ml"]), pred)
        else:  # training.evaluate
            pred = float(c["model"]) if c.get("measurable", True) else None
            out[int(c["seed"])] = Reading(float(c["truth"]), pred)
    return str(label), out


def figures(truth: np.ndarray, pred: np.ndarray) -> dict:
    err = np.abs(pred - truth)
    low, free = truth < 1.0, truth == 0.0
    return {"n": int(truth.size), "mae_ml": float(err.mean()),
            "mae_lt1_ml": float(err[low].mean()) if low.any() else None, "n_lt1": int(low.sum()),
            "lesion_free_median_ml": float(np.median(pred[free])) if free.any() else None, "n_lesion_free": int(free.sum()),
            "pearson_r": float(np.corrcoef(pred, truth)[0, 1]) if truth.size > 2 and truth.std() > 0 else None}


def _as_scored(readings: dict[int, Reading]) -> dict:
    shown = [r for r in readings.values() if r.pred_ml is not None]
    fig = figures(np.array([r.truth_ml for r in shown]), np.array([r.pred_ml for r in shown])) if shown else {}
    return {**fig, "withheld": len(readings) - len(shown), "cases": len(readings)}


def _bootstrap_ci(diffs: np.ndarray, boot: int, rng: np.random.Generator) -> tuple[float, float]:
    idx = rng.integers(0, diffs.size, size=(boot, diffs.size))
    lo, hi = np.percentile(diffs[idx].mean(axis=1), [2.5, 97.5])
    return float(lo), float(hi)


def paired(a: dict[int, Reading], b: dict[int, Reading], boot: int = 2000, seed: int = 0) -> dict:
    """Figures of A and B on the cases both report, and B − A of the absolute errors with a 95 % CI."""
    for s in a.keys() & b.keys():
        if abs(a[s].truth_ml - b[s].truth_ml) > 1e-6:
            raise SystemExit(f"seed {s}: truth {a[s].truth_ml:.4f} against {b[s].truth_ml:.4f} mL; the two runs "
                             "did not read the same data (a rebuilt cache or another generator?)")
    common = sorted(s for s in a.keys() & b.keys() if a[s].pred_ml is not None and b[s].pred_ml is not None)
    if not common:
        raise SystemExit("no case is reported by both models")
    truth = np.array([a[s].truth_ml for s in common])
    pa, pb = (np.array([m[s].pred_ml for s in common]) for m in (a, b))
    rng = np.random.default_rng(seed)
    out = {"common": len(common), "a": figures(truth, pa), "b": figures(truth, pb), "difference": {}}
    for name, keep in (("mae_ml", np.ones_like(truth, dtype=bool)), ("mae_lt1_ml", truth < 1.0)):
        if keep.any():
            d = np.abs(pb - truth)[keep] - np.abs(pa - truth)[keep]
            out["difference"][name] = {"b_minus_a": float(d.mean()), "ci95": _bootstrap_ci(d, boot, rng),
                                       "n": int(keep.sum())}
    return out


def _f(v, fmt=".3f") -> str:
    return "–" if v is None else format(v, fmt)


def report(label_a: str, label_b: str, a: dict[int, Reading], b: dict[int, Reading], res: dict) -> str:
    lines = [f"{'':<32}{'n':>4}{'withheld':>10}{'MAE':>8}{'MAE<1':>8}{'LF med':>8}{'r':>8}"]
    for label, readings in ((label_a, a), (label_b, b)):
        s = _as_scored(readings)
        lines.append(f"{label + ', as scored':<32}{s['cases']:>4}{s['withheld']:>10}{_f(s.get('mae_ml')):>8}"
                     f"{_f(s.get('mae_lt1_ml')):>8}{_f(s.get('lesion_free_median_ml')):>8}{_f(s.get('pearson_r'), '.4f'):>8}")
    for label, key in ((label_a, "a"), (label_b, "b")):
        s = res[key]
        lines.append(f"{label + ', common cases':<32}{s['n']:>4}{'':>10}{_f(s['mae_ml']):>8}{_f(s['mae_lt1_ml']):>8}"
                     f"{_f(s['lesion_free_median_ml']):>8}{_f(s['pearson_r'], '.4f'):>8}")
    for name, d in res["difference"].items():
        lo, hi = d["ci95"]
        lines.append(f"B - A {name} on {d['n']} common cases: {d['b_minus_a']:+.3f} mL (95 % CI {lo:+.3f} to {hi:+.3f})")
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

"""The development-set table rows of training/README.md from ``training.evaluate`` WML JSONs.

Every case the model read counts, withheld or not (as ``training.evaluate`` prints its MAE); ``training.compare`` gives
the paired differences on the cases both models report.

    PYTHONPATH=.:service .venv/bin/python -m training.judge_table training/runs/eval_wml_dev-judge_30_*.json
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def row(path: Path) -> dict:
    """MAE, MAE where truth < 1 mL, the target score (MAE/1.0 + MAE(< 1 mL)/0.5), r, the lesion-free median and
    the >= 10 mL and 1-10 mL bins of one evaluation."""
    cases = [c for c in json.loads(Path(path).read_text())["cases"] if c["model"] == c["model"]]
    t = np.array([c["truth"] for c in cases])
    m = np.array([c["model"] for c in cases])
    err = np.abs(m - t)
    low, big, mid = t < 1, t >= 10, (t >= 1) & (t < 10)
    mae, mae_lt1 = float(err.mean()), float(err[low].mean())
    return {"n": len(cases), "mae": mae, "mae_lt1": mae_lt1, "score": mae + 2 * mae_lt1,
            "r": float(np.corrcoef(t, m)[0, 1]), "lesion_free_median": float(np.median(m[t == 0])),
            "n_lesion_free": int((t == 0).sum()), "mae_ge10": float(err[big].mean()),
            "bias_ge10": float((m - t)[big].mean()), "n_ge10": int(big.sum()), "mae_1to10": float(err[mid].mean())}


def markdown(label: str, f: dict) -> str:
    return (f"| {label} | {f['mae']:.3f} / {f['mae_lt1']:.3f} / {f['score']:.2f} | {f['r']:.3f} | "
            f"{f['lesion_free_median']:.2f} | {f['mae_ge10']:.2f} / {f['bias_ge10']:.2f} | {f['mae_1to10']:.2f} |")


if __name__ == "__main__":  # pragma: no cover
    for p in sys.argv[1:]:
        print(markdown(json.loads(Path(p).read_text())["model_label"], row(Path(p))))

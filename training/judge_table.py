"""The development-set table rows of training/README.md from ``training.evaluate`` (or ``stress.score``) WML JSONs.

Every case the model read counts, withheld or not (as ``training.evaluate`` prints its MAE); ``training.compare`` gives
the paired differences on the cases both models report.

    PYTHONPATH=.:service .venv/bin/python -m training.judge_table training/runs/eval_wml_dev-judge_30_*.json
"""
from __future__ import annotations

import sys
from pathlib import Path

from .compare import load, wml_figures
from .evaluate import target_score


def row(path: Path) -> dict:
    """:func:`readings_row` of one evaluation's JSON."""
    return readings_row(list(load(path)[1].values()))


def readings_row(readings: list) -> dict:
    """``compare.wml_figures`` of every case the model read (MAE, MAE where truth < 1 mL, lesion-free median, r), the
    target score (MAE/1.0 + MAE(< 1 mL)/0.5) and the >= 10 mL and 1-10 mL bins of one run's ``compare`` readings."""
    read = [r for r in readings if r.pred_ml == r.pred_ml]
    f = wml_figures(read)
    big = [r for r in read if r.truth_ml >= 10]
    mid = [r for r in read if 1 <= r.truth_ml < 10]
    fb = wml_figures(big) if big else {"mae_ml": None, "bias_ml": None}  # None for an empty bin, as wml_figures does
    return {**f, "score": None if f["mae_lt1_ml"] is None else target_score(f["mae_ml"], f["mae_lt1_ml"]),
            "mae_ge10_ml": fb["mae_ml"], "bias_ge10_ml": fb["bias_ml"], "n_ge10": len(big),
            "mae_1to10_ml": wml_figures(mid)["mae_ml"] if mid else None}


def _num(v, digits: int) -> str:
    """``v`` to ``digits`` decimals; "n/a" where the set has no case for it (a split without lesion-free heads)."""
    return "n/a" if v is None else f"{v:.{digits}f}"


def markdown(label: str, f: dict) -> str:
    return (f"| {label} | {_num(f['mae_ml'], 3)} / {_num(f['mae_lt1_ml'], 3)} / {_num(f['score'], 2)} | "
            f"{_num(f['pearson_r'], 3)} | {_num(f['lesion_free_median_ml'], 2)} | {_num(f['mae_ge10_ml'], 2)} / "
            f"{_num(f['bias_ge10_ml'], 2)} | {_num(f['mae_1to10_ml'], 2)} |")


if __name__ == "__main__":  # pragma: no cover
    for p in sys.argv[1:]:
        print(markdown(load(Path(p))[0], row(Path(p))))

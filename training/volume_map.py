"""Can a monotone map of a WML model's reading undo its under-read of large loads? A probe; nothing is chosen.

wml-ncct 1.12.5 reads the development set's loads of 10 mL or more at about a third of their volume (sessions 39-44).
Were that a calibration, a non-decreasing map from reading to truth fitted on some development heads would carry to
heads it was not fitted on, as a site's regression calibration would. This fits one on every run given but one,
applies it to the one left out, and prints the target figures (``judge_table.readings_row``) raw and mapped, one pair
of rows per run left out. The map is isotonic regression (``scipy.optimize.isotonic_regression``: the least-squares
non-decreasing step function of the reading), held constant beyond the readings it was fitted on.

Every run must be a ``training.evaluate --set dev`` run of one model over its own heads (seeds in no other run):
the stress set is never fitted on, and a head is never mapped by a fit that saw it.

    R=training/runs; PYTHONPATH=.:service .venv/bin/python -m training.volume_map \\
        $R/eval_wml_dev-choose_30_wml-ncct-1.12.5-tta-lr.json $R/eval_wml_dev-judge[4-7]_60_wml-ncct-1.12.5-tta-lr.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.optimize import isotonic_regression

from .compare import WmlReading, reading
from .judge_table import readings_row

COLUMNS = ("mae_ml", "mae_lt1_ml", "score", "pearson_r", "lesion_free_median_ml", "bias_ge10_ml")


def _read(path: Path) -> tuple[str, dict[int, WmlReading]]:
    run = json.loads(Path(path).read_text())
    if run.get("split") != "dev":
        raise SystemExit(f"{path}: not a development-set run of training.evaluate (split {run.get('split')!r})")
    cases = {int(c["seed"]): reading(c) for c in run["cases"]}
    # every case read, withheld or not, as judge_table counts them (a quality gate does not hide a reading here)
    return str(run["model_label"]), {s: r for s, r in cases.items() if r.pred_ml == r.pred_ml}


class MonotoneMap:
    """The non-decreasing step function of the reading that fits the truths best (least squares)."""

    def __init__(self, readings: list[WmlReading]):
        order = sorted(readings, key=lambda r: r.pred_ml)
        self.x = np.array([r.pred_ml for r in order])
        self.y = isotonic_regression(np.array([r.truth_ml for r in order])).x

    def __call__(self, volume: float) -> float:
        """The fitted value of the nearest fitted reading at or below ``volume`` (the lowest one below them all)."""
        i = int(np.searchsorted(self.x, volume, side="right")) - 1
        return float(self.y[max(i, 0)])


def leave_one_out(runs: dict[str, dict[int, WmlReading]]) -> dict[str, tuple[dict, dict]]:
    """Per run: (its figures raw, its figures mapped by the fit on every other run)."""
    out = {}
    for name, cases in runs.items():
        fit = MonotoneMap([r for other, c in runs.items() if other != name for r in c.values()])
        mapped = [WmlReading(r.truth_ml, fit(r.pred_ml), True) for r in cases.values()]
        out[name] = (readings_row(list(cases.values())), readings_row(mapped))
    return out


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="training.evaluate --set dev JSONs of one model")
    args = ap.parse_args(argv)
    if len(args.runs) < 2:
        raise SystemExit("leave-one-out needs two runs or more")
    runs, labels, seen = {}, set(), set()
    for path in args.runs:
        label, cases = _read(path)
        if seen & set(cases):
            raise SystemExit(f"{path}: reads heads another run reads (each run must bring its own seeds)")
        seen |= set(cases)
        labels.add(label)
        runs[path.stem] = cases
    if len(labels) != 1:
        raise SystemExit(f"the runs read different models: {sorted(labels)}")
    print(f"{labels.pop()}, each run mapped by the monotone fit on the others")
    print("| run left out | n | " + " | ".join(COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 2) + "|")
    for name, (raw, mapped) in leave_one_out(runs).items():
        for tag, f in (("raw", raw), ("mapped", mapped)):
            print(f"| {name} {tag} | {f['n']} | " + " | ".join(_fmt(f[c]) for c in COLUMNS) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

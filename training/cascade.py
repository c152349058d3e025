"""The WML cascade, read from two evaluation runs: a presence net's reading where it reads under a cut, the
quantifier's otherwise (rule ``training/preregistered/2026-12-07-wml-presence-cascade.md``).

    PYTHONPATH=.:service .venv/bin/python -m training.cascade --low P.json --high Q.json --choose
    PYTHONPATH=.:service .venv/bin/python -m training.cascade --low P.json --high Q.json --cut C --out OUT.json

``P.json`` and ``Q.json`` are ``training.evaluate --task wml`` runs (not sweeps' choices: each case's reading at the
manifest's post-processing) over the same cases; runs over other seeds or another truth are refused. ``--choose``
prints the target score (``MAE/1.0 + MAE(truth < 1 mL)/0.5``, every case read, as ``training.judge_table`` counts)
at each cut of ``CUTS`` and names the lowest (ties: the smaller cut). ``--cut`` writes the combined run as an
evaluate JSON (volume, mask Dice, interval and passes of the net chosen for each case, ``source`` naming it), so
``training.judge_table`` and ``training.compare`` read it unchanged. A case either net's quality gate withholds is
withheld.

The switch is a function of two readings the service already makes, so it is measured here before the service is
taught to run two nets; the service does not run it yet.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .compare import reading
from .evaluate import wml_run_figures
from .judge_table import readings_row

CUTS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0)
_FROM_NET = ("model", "dice_model", "interval", "passes")  # a case's columns taken from the net chosen for it


def _cases(run: dict) -> dict[int, dict]:
    return {int(c["seed"]): c for c in run["cases"]}


def _measurable(a, b):
    """Withheld (False) if either net withholds; measurable (True) if either gate passed it; None: no gate ran."""
    if a is False or b is False:
        return False
    return True if (a or b) else None


def combine(low: dict, high: dict, cut: float) -> dict:
    """The combined run: ``low``'s case where its reading is under ``cut`` mL, ``high``'s otherwise."""
    lo, hi = _cases(low), _cases(high)
    if set(lo) != set(hi):
        raise SystemExit(f"the runs read different cases ({len(set(lo) ^ set(hi))} seeds in one only)")
    rows = []
    for seed in sorted(hi):
        a, b = lo[seed], hi[seed]
        if abs(float(a["truth"]) - float(b["truth"])) > 1e-6:
            raise SystemExit(f"seed {seed}: truth {a['truth']} against {b['truth']} (another cache or generator)")
        pick, source = (a, "low") if float(a["model"]) < cut else (b, "high")
        row = {**b, **{k: pick[k] for k in _FROM_NET if k in pick}, "source": source,
               "seconds": float(a["seconds"]) + float(b["seconds"]),
               "measurable": _measurable(a.get("measurable"), b.get("measurable")),
               "reasons": sorted(set(a.get("reasons") or []) | set(b.get("reasons") or []))}
        rows.append(row)
    res = {"model_label": f"cascade {low['model_label']} below {cut:g} mL else {high['model_label']}",
           "sha256": None, "members": {"low": [low["model_label"], low.get("sha256")],
                                       "high": [high["model_label"], high.get("sha256")]},
           "cut_ml": cut, "split": high["split"], "n": len(rows), "cases": rows, "tta": high.get("tta", [])}
    if "data" in high:
        res["data"] = high["data"]
    res.update(wml_run_figures(rows))
    return res


def score(run: dict) -> float | None:
    """The target score over every case read (withheld or not): ``training.judge_table``'s."""
    return readings_row([reading(c) for c in run["cases"]])["score"]


def choose_cut(low: dict, high: dict, cuts=CUTS) -> tuple[float, list[tuple[float, float]]]:
    """The cut with the lowest target score (ties: the smaller), and every cut's score."""
    table = [(c, score(combine(low, high, c))) for c in cuts]
    scored = [(s, c) for c, s in table if s is not None]
    if not scored:
        raise SystemExit("no case under 1 mL: the target score is undefined, so no cut can be chosen")
    return min(scored)[1], table


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--low", type=Path, required=True, help="the presence net's training.evaluate WML JSON")
    ap.add_argument("--high", type=Path, required=True, help="the quantifier's run over the same cases")
    what = ap.add_mutually_exclusive_group(required=True)
    what.add_argument("--choose", action="store_true", help="print each cut's target score and the lowest")
    what.add_argument("--cut", type=float, help="write the combined run at this cut (mL)")
    ap.add_argument("--out", type=Path, help="with --cut: the combined run's JSON")
    a = ap.parse_args(argv)
    low, high = (json.loads(p.read_text()) for p in (a.low, a.high))
    if a.choose:
        best, table = choose_cut(low, high)
        for c, s in table:
            print(f"  cut {c:5.2f} mL: target score {'n/a' if s is None else f'{s:.3f}'}")
        print(f"chosen cut: {best:g} mL (lowest target score; ties: the smaller cut)")
        return 0
    if a.out is None:
        ap.error("--cut needs --out")
    res = combine(low, high, a.cut)
    a.out.write_text(json.dumps(res, indent=1))
    n_low = sum(c["source"] == "low" for c in res["cases"])
    print(f"{res['model_label']}: {n_low} of {res['n']} cases from the presence net; "
          f"MAE {res['model']['mae_ml']:.3f} mL, score {score(res):.3f} -> {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A presence bar for the burden grade's first boundary, read off ``training.cmb_darkness --on-criteria`` runs.

A head is called bleed-free unless one of its counted findings (at the operating threshold) clears a stricter bar:
a probability, a core-to-surround darkness, or a second finding (rule:
``training/preregistered/2026-12-05-cmb-presence-bar.md``). The counts at the operating threshold are the darkness
run's own (``counts["<thr>|None"]``); the bar zeroes them or leaves them. Prints sensitivity, FP per scan and grade
agreement for no bar and for each bar, per file. The findings the bar looks at are the darkness run's, merged at its
probe threshold (0.9) and taken at probability >= 0.995; the counts it zeroes were merged at 0.995, so where merging
differs between the two, the second finding of bar "k" may not be one of the counted ones.

    PYTHONPATH=.:service .venv/bin/python -m training.presence_bar training/runs/darkness_choose_30_*_on-criteria.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from svdmark.domain import BurdenGrade

OPERATING = 0.995
PROBABILITY_BARS = (0.997, 0.998, 0.999, 0.9995, 0.9998)
DARKNESS_BARS = (0.3, 0.35, 0.4, 0.45, 0.5)  # core-to-surround level at most
BARS = [("none", None)] + [("p", b) for b in PROBABILITY_BARS] + [("s", b) for b in DARKNESS_BARS] + [("k", 2)]


def clears(finds: list[dict], kind: str, bar: float | None) -> bool:
    """Whether a head's counted findings (probability >= OPERATING) clear the bar."""
    counted = [f for f in finds if f["probability"] >= OPERATING]
    if kind == "none":
        return True
    if kind == "k":
        return len(counted) >= bar
    if kind == "p":
        return any(f["probability"] >= bar for f in counted)
    return any(f["core_level"] <= bar * f["surround_level"] for f in counted)


def table(rows: list[dict]) -> list[dict]:
    if not rows:
        raise ValueError("no heads in the run")
    nt = max(1, sum(r["n_truth"] for r in rows))
    out = []
    for kind, bar in BARS:
        tp = fp = agree = zeroed = lost = 0
        for r in rows:
            t, f = r["counts"][f"{OPERATING}|None"]
            if not clears(r["finds"], kind, bar):
                zeroed += t + f > 0
                lost += t > 0
                t = f = 0
            tp, fp = tp + t, fp + f
            agree += BurdenGrade.from_count(t + f) == BurdenGrade.from_count(r["n_truth"])
        out.append(dict(bar=kind, value=bar, sensitivity=tp / nt, fp_per_scan=fp / len(rows),
                        grade_agreement=agree / len(rows), heads_zeroed=zeroed, heads_with_a_true_bleed_zeroed=lost))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="JSONs of training.cmb_darkness --on-criteria")
    args = ap.parse_args(argv)
    for path in args.runs:
        rows = json.loads(path.read_text())["cases"]
        print(f"{path.name} ({len(rows)} heads, {sum(r['n_truth'] == 0 for r in rows)} bleed-free)")
        print("  bar        sens   FP/scan grade  zeroed (with a true bleed)")
        for t in table(rows):
            name = t["bar"] if t["value"] is None else f"{t['bar']} {t['value']:g}"
            print(f"  {name:10s} {t['sensitivity']:.3f} {t['fp_per_scan']:6.2f}  {t['grade_agreement']:.3f}  "
                  f"{t['heads_zeroed']:3d} ({t['heads_with_a_true_bleed_zeroed']})")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

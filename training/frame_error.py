"""How well the anatomical frame (``svdmark.measure.frame``) places the mimic sites on development heads.

For each case folder (``devset.build_swi`` layout) the frame is fitted to the series as the service loads it; each
pineal and choroid plexus calcification of the truth is mapped into the template and compared with the template's
site (the nearer glomus for the glomera). Per site: the mean and SD of the error along the template's axes, the 95th
percentile of its absolute value (plus 2 mm, rounded up, that is the zone a manifest's ``output.mimic_sites`` took in
cmb-swi 1.4.10), and the median distance; and how many heads the frame refused.

    PYTHONPATH=.:service .venv/bin/python -m training.frame_error /work/dev_swi/choose /work/dev_swi/judge8 \\
        [--json OUT]

A few lines of arithmetic over the frame and the truth; no library does this matching.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

from svdmark.measure import frame as frame_mod

from .devcases import dev_case_dirs, read_series

TRUTH_SITE = {"pineal": "pineal", "choroid plexus": "choroid plexus glomus"}  # truth.json site -> frame.SITES
CALCIFICATION_RADIUS_MM = 2.0


def site_errors(truth: dict, fit: frame_mod.Frame) -> list[tuple[str, np.ndarray]]:
    """(site, template error in mm) for each pineal or glomus calcification of one head's truth."""
    out = []
    for m in truth.get("mimics", []):
        site = TRUTH_SITE.get(m.get("site"))
        if m.get("kind") != "calcification" or site is None or "center_mm" not in m:
            continue
        got = fit.to_template(m["center_mm"])[0]
        refs = np.asarray(frame_mod.SITES[site], float)
        out.append((site, got - refs[int(np.argmin(np.linalg.norm(refs - got, axis=1)))]))
    return out


def error_stats(errors) -> dict:
    """n, mean and SD per axis, 95th percentile of |error| per axis and median distance of (n, 3) errors in mm
    ({"n": 0} for none)."""
    e = np.asarray(errors, float).reshape(-1, 3)
    if not len(e):
        return {"n": 0}
    return {"n": len(e), "mean_mm": e.mean(0).round(1).tolist(), "sd_mm": e.std(0).round(1).tolist(),
            "p95_abs_mm": np.percentile(np.abs(e), 95, axis=0).round(1).tolist(),
            "median_distance_mm": round(float(np.median(np.linalg.norm(e, axis=1))), 1)}


def summary(errors: list[tuple[str, np.ndarray]]) -> dict:
    """Per site: :func:`error_stats` and the zone it implies."""
    out = {}
    for site in frame_mod.SITES:
        stats = error_stats([v for s, v in errors if s == site])
        if stats["n"]:
            out[site] = {**stats, "zone_mm": [math.ceil(v + CALCIFICATION_RADIUS_MM) for v in stats["p95_abs_mm"]]}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path, nargs="+", help="development halves (devset.build_swi --out)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    errors, refused, seconds = [], [], []
    for half in args.data:
        for case in dev_case_dirs(half, task="cmb"):
            truth, vol = read_series(case, "cmb")
            t = time.perf_counter()
            fit = frame_mod.fit_frame(vol)
            seconds.append(time.perf_counter() - t)
            if fit is None:
                refused.append(case.name)
                continue
            errors += site_errors(truth, fit)
    res = {"heads": len(seconds), "refused": refused, "fit_seconds_median": round(float(np.median(seconds)), 2),
           "fit_seconds_max": round(float(np.max(seconds)), 2), "sites": summary(errors)}
    print(json.dumps(res, indent=1))
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What a zone about another anatomical site would do, before a manifest names it: the anatomical frame's error at
the development truth's mimics of that site, and what zones about it would remove of a model's findings.

``svdmark.measure.frame`` places the pineal and the glomera; cmb-swi 1.4.10's ``output.mimic_sites`` drops the
findings in zones about them. A further site (an iron-rich nucleus, a pallidum) would be a template position and a
zone. This asks, on development heads already read:

* where the truth's mimics of ``--site`` (``truth.json`` ``mimics[].site``) land in the template, against the
  position given (``--at``, MNI RAS mm, one per side): the mean, SD and 95th percentile of the error per axis;
* of the findings a model calls (``training.cmb_darkness --on-criteria`` tables, called as ``training.cmb_sites``
  calls them) that the active model's own zones keep, how many false and true ones each ``--zone`` (semi-axes in
  mm, template axes) about ``--at`` would remove.

    PYTHONPATH=.:service .venv/bin/python -m training.site_zones --site "red nucleus" --at=-5,-20,-8 --at=5,-20,-8 \\
        --zone 6,6,6 --zone 7,9,8 --model cmb-swi-1.4.8 --t 0.99 --c 0.6 \\
        --data /work/dev_swi/choose /work/dev_swi/judge8 /work/dev_swi/judge9 [--frames CACHE.json]

Frames are fitted as the service fits them (``--frames`` keeps them between runs). A few lines of arithmetic over
the frame, the truth and the tables; no library does this matching.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from svdmark.domain import Task
from svdmark.infer import ModelRegistry
from svdmark.measure import frame as frame_mod

from .cmb_cases import run_path
from .cmb_sites import called
from .devcases import dev_case_dirs, read_series
from .frame_error import error_stats


def site_errors(truth: dict, fit: frame_mod.Frame, site: str, at: np.ndarray) -> list[np.ndarray]:
    """Template error (mm) of each of the truth's mimics at ``site`` against its position in ``at``: when the head
    has as many such mimics as ``at`` has positions (a pair of nuclei), matched in order of template x (side by side,
    so that a large left-right error is not credited to the other side); otherwise against the nearer position."""
    got = [fit.to_template(m["center_mm"])[0] for m in truth.get("mimics", [])
           if m.get("site") == site and "center_mm" in m]
    if len(got) == len(at) > 1:
        return [g - a for g, a in zip(sorted(got, key=lambda v: v[0]), sorted(at, key=lambda v: v[0]))]
    return [g - at[int(np.argmin(np.linalg.norm(at - g, axis=1)))] for g in got]


def removals(cases: list[tuple[dict, frame_mod.Frame | None]], at: np.ndarray, zones: list, t: float, c: float,
             shipped: dict) -> dict:
    """Per zone, the (false, true) findings called at (t, c) and kept by the ``shipped`` mimic zones that it would
    remove; a head without a frame removes nothing."""
    kept = [0, 0]
    removed = {_key(z): [0, 0] for z in zones}
    for table_case, fit in cases:
        for f in table_case["finds"]:
            if not called(f, t, c):
                continue
            if fit is not None and shipped and frame_mod.in_sites(fit, [f["center_mm"]], shipped)[0]:
                continue
            kept[bool(f["tp"])] += 1
            if fit is None:
                continue
            ras = fit.to_template(f["center_mm"])
            for z in zones:
                if frame_mod.in_ellipsoids(ras, at, z)[0]:
                    removed[_key(z)][bool(f["tp"])] += 1
    return {"kept_by_the_shipped_zones": {"false": kept[0], "true": kept[1]},
            "zone_removes": {z: {"false": r[0], "true": r[1]} for z, r in removed.items()}}


def _key(zone) -> str:
    return json.dumps([float(v) for v in zone])


def _frames(halves: list[Path], cache: Path | None) -> dict:
    """{case name: fitted frame as JSON, or None where refused} for every case of ``halves``, fitted as the service
    fits them; with ``cache``, read from and written to that file (keyed by case name: one cache per data set)."""
    frames = json.loads(cache.read_text()) if cache and cache.exists() else {}
    for half in halves:
        for case in dev_case_dirs(half, task="cmb"):
            if case.name not in frames:
                fit = frame_mod.fit_frame(read_series(case, "cmb")[1])
                frames[case.name] = None if fit is None else {"matrix": fit.matrix.tolist(),
                                                              "offset": fit.offset.tolist(), "cost": fit.cost}
                if cache:
                    cache.write_text(json.dumps(frames))
    return frames


def _frame(d: dict | None) -> frame_mod.Frame | None:
    """A frame from :func:`_frames`'s JSON (None stays None)."""
    return None if d is None else frame_mod.Frame(np.asarray(d["matrix"]), np.asarray(d["offset"]), d["cost"])


def _triple(text: str) -> tuple[float, float, float]:
    """``x,y,z`` as three floats (argparse type)."""
    v = tuple(float(x) for x in text.split(","))
    if len(v) != 3:
        raise argparse.ArgumentTypeError(f"{text!r}: three numbers, x,y,z")
    return v


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--site", required=True, help="the truth's mimic site, e.g. 'red nucleus'")
    ap.add_argument("--at", type=_triple, action="append", required=True, help="its template position x,y,z (MNI)")
    ap.add_argument("--zone", type=_triple, action="append", default=[], help="semi-axes a,b,c in mm (repeatable)")
    ap.add_argument("--model", required=True, help="the darkness tables' model label, e.g. cmb-swi-1.4.8")
    ap.add_argument("--t", type=float, required=True, help="the threshold the findings are called at")
    ap.add_argument("--c", type=float, default=0.6, help="the core-to-surround cut they are called at")
    ap.add_argument("--n", type=int, default=30, help="the tables' case count (their file names carry it)")
    ap.add_argument("--data", type=Path, nargs="+", required=True, help="development halves (devset.build_swi --out)")
    ap.add_argument("--frames", type=Path, default=None, help="a JSON cache of the fitted frames")
    args = ap.parse_args(argv)
    at = np.asarray(args.at, float)
    frames = _frames(args.data, args.frames)
    errors, cases, missing, fitted = [], [], [], 0
    for half in args.data:
        for case in dev_case_dirs(half, task="cmb"):
            fit = _frame(frames[case.name])
            if fit is not None:
                fitted += 1
                errors += site_errors(json.loads((case / "truth.json").read_text()), fit, args.site, at)
        table = run_path("darkness", half.name, args.n, args.model, "_on-criteria")
        rows = json.loads(table.read_text())["cases"] if table.exists() else []
        if not rows or any("center_mm" not in f for r in rows for f in r["finds"]):
            missing.append(table.name)  # no table, or one written before findings carried their position
            continue
        cases += [(r, _frame(frames.get(f"cmb_{r['seed']}"))) for r in rows]
    shipped = dict(ModelRegistry().active(Task.CMB).manifest.output.mimic_sites or {})
    res = {"site": args.site, "at": at.tolist(), "heads_with_frames": fitted, "error": error_stats(errors),
           "tables_model": args.model, "tables_without_positions": missing, "shipped_zones": shipped,
           **removals(cases, at, args.zone, args.t, args.c, shipped)}
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

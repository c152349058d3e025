"""Where a CMB model's false findings lie on the SWI development set: the nearest mimic in each head's truth.

Reads the tables ``training.cmb_darkness`` writes (each finding's patient position, probability, core and surround
levels) and the development cases' ``truth.json`` (``mimics``: kind, site, centre in patient mm). A finding called
at threshold t and core-to-surround cut c (the service's criterion: probability >= t and core <= c x surround) that
matches no bleed is given the site of the nearest mimic within ``--radius`` mm, or the truth label under its centre.
``--oracle SITE`` also counts what an exclusion sphere of that radius about each named site's true centre would
remove: false findings, and true ones (the bound a run-time anatomical frame could reach at best).

    PYTHONPATH=.:service .venv/bin/python -m training.cmb_sites --model cmb-swi-1.4.8 --t 0.99 --c 0.6 \\
        --data /work/dev_swi/choose /work/dev_swi/judge8 --oracle pineal --oracle "choroid plexus"

A few lines of arithmetic over two JSON files; no library does this matching.
"""
from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np

from svdmark.measure.darkness import dark_mask

from .cmb_cases import run_path


def called(find: dict, t: float, c: float) -> bool:
    """Whether the service would call this finding at threshold t and core-to-surround cut c (its own
    ``dark_mask``, so a NaN surround does not reject, as in the service)."""
    return find["probability"] >= t and bool(dark_mask([find["core_level"]], surrounds=[find["surround_level"]],
                                                       max_core_to_surround=c)[0])


def _distances(centre_mm, centres_mm: list) -> np.ndarray:
    return np.linalg.norm(np.asarray(centres_mm, float).reshape(-1, 3) - np.asarray(centre_mm, float), axis=1)


def nearest_site(centre_mm, mimics: list[dict], radius_mm: float) -> str | None:
    """The site (or kind) of the nearest mimic within ``radius_mm`` of ``centre_mm``, or None."""
    placed = [m for m in mimics if "center_mm" in m]
    d = _distances(centre_mm, [m["center_mm"] for m in placed])
    if not placed or d.min() > radius_mm:
        return None
    m = placed[int(d.argmin())]
    return f"{m['kind']}: {m.get('site', '')}".rstrip(": ")


def tally(cases: list[tuple[dict, dict]], t: float, c: float, radius_mm: float = 6.0,
          oracle: tuple[str, ...] = ()) -> dict:
    """False findings by site over (table case, truth) pairs, and what an oracle exclusion about ``oracle`` sites
    would remove (false, true)."""
    sites: Counter = Counter()
    removed = [0, 0]
    for case, truth in cases:
        mimics = truth.get("mimics", [])
        excluded = [m["center_mm"] for m in mimics if m.get("site") in oracle and "center_mm" in m]
        for f in case["finds"]:
            if not called(f, t, c):
                continue
            if excluded and _distances(f["center_mm"], excluded).min() <= radius_mm:
                removed[bool(f["tp"])] += 1
            if not f["tp"]:
                sites[nearest_site(f["center_mm"], mimics, radius_mm) or f"no mimic within {radius_mm:g} mm "
                      f"({str(f.get('label')).split(' (')[0]})"] += 1
    return {"heads": len(cases), "false_findings": sum(sites.values()), "by_site": dict(sites.most_common()),
            "oracle_removes": {"false": removed[0], "true": removed[1]}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="the table's model label, e.g. cmb-swi-1.4.8")
    ap.add_argument("--data", type=Path, nargs="+", required=True, help="development halves (devset.build_swi --out)")
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--t", type=float, required=True)
    ap.add_argument("--c", type=float, default=0.6)
    ap.add_argument("--radius", type=float, default=6.0)
    ap.add_argument("--oracle", action="append", default=[], help="a mimic site to exclude about its true centre")
    args = ap.parse_args(argv)
    cases = []
    for d in args.data:
        table = run_path("darkness", d.name, args.n, args.model, "_on-criteria")
        for case in json.loads(table.read_text())["cases"]:
            cases.append((case, json.loads((d / f"cmb_{case['seed']}" / "truth.json").read_text())))
    print(json.dumps(tally(cases, args.t, args.c, args.radius, tuple(args.oracle)), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

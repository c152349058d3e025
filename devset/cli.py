"""The command line both case builders share: ``--n``, ``--out``, ``--start``, ``--small``, one line per case."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable


def run(argv: list[str] | None, prog: str, doc: str, seed_base: int, small_help: str,
        build_case: Callable[[int, Path, bool], dict], describe: Callable[[dict], str]) -> int:
    """Build cases ``start .. start + n - 1`` (seed = ``seed_base`` + index) into ``--out``, printing
    ``describe(truth)`` for each."""
    ap = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=40, help="number of cases")
    ap.add_argument("--out", type=Path, required=True, help="output folder")
    ap.add_argument("--start", type=int, default=0, help=f"first case index (seed = {seed_base} + index)")
    ap.add_argument("--small", action="store_true", help=small_help)
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    for i in range(a.start, a.start + a.n):
        print(describe(build_case(seed_base + i, a.out, a.small)), flush=True)
    return 0

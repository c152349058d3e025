"""Peak resident memory of one CMB or WML analysis (``Runtime.run`` + ``measure.from_output``) of a development case.

    PYTHONPATH=. .venv/bin/python -m devset.build_swi --start 403 --n 1 --out /tmp/dev403
    PYTHONPATH=.:service .venv/bin/python bench/peak_rss.py /tmp/dev403/cmb_7335403 --threads 2

One analysis per process: ``ru_maxrss`` is the process's peak, so the series is loaded first (its figure is printed
too) and the analysis's peak is what comes after. Compare thread counts, or code versions from a worktree, in
separate runs one after the other.
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # training/ lives in the checkout

from svdmark import measure  # noqa: E402
from svdmark.domain import Task  # noqa: E402
from svdmark.infer import ModelRegistry, Runtime  # noqa: E402
from training.devcases import read_series  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("case", type=Path, help="a development case folder (devset.build_swi / devset.build --out)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    task = "cmb" if args.case.name.startswith("cmb_") else "wml"
    spec = ModelRegistry().active(Task(task))
    vol = read_series(args.case, task)[1]
    loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    rt = Runtime(providers=["CPUExecutionProvider"], intra_op_num_threads=args.threads)
    t = time.perf_counter()
    measure.from_output(spec, vol, rt.run(spec, vol))
    print(f"{spec.label} {args.case.name} {vol.shape} threads {args.threads}: peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MiB (after loading {loaded} MiB), "
          f"{time.perf_counter() - t:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

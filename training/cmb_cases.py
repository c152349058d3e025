"""The SWI cases a CMB probe reads, the model it reads them with, and where it writes its run.

One place for the probes that read the CMB model's findings case by case (``training.cmb_darkness``,
``training.cmb_misses``, ``training.neighbour_probe``): SWI development heads (``--data``), or, where a probe allows
them, our validation splits (``--set``; reported splits are refused, since a probe informs a choice).
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

from svdmark.domain import ModelSpec, Task
from svdmark.infer.registry import ModelRegistry
from svdmark.infer.runtime import Runtime

from . import data, devcases
from .evaluate import RUNS, refuse_reported, split_seeds


def add_arguments(ap: argparse.ArgumentParser, validation: bool = True) -> None:
    """``--data`` (or, with ``validation``, ``--set``), ``--n``, ``--models`` and ``--threads``."""
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", type=Path, help="an SWI development-set folder (devset.build_swi)")
    if validation:
        src.add_argument("--set", help="validation split(s) of our generator, e.g. val,val_atlas")
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--models", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=2)


def model_and_runtime(args: argparse.Namespace) -> tuple[ModelSpec, Runtime]:
    """The active CMB model of ``--models`` (the packaged ones without it) and a CPU runtime."""
    spec = ModelRegistry(args.models).active(Task.CMB)
    return spec, Runtime(providers=["CPUExecutionProvider"], intra_op_num_threads=args.threads)


def cases(args: argparse.Namespace, why: str = "a probe informs a choice"
          ) -> tuple[str, Iterator[tuple[object, Path | None]]]:
    """The data's name and its cases, each with its development folder (None for our splits)."""
    if getattr(args, "set", None):
        refuse_reported(args.set, why)
        return split_name(args.set), ((data.swi_case(s), None) for s in split_seeds(args.set, args.n))
    dirs = devcases.dev_case_dirs(args.data, args.n, "cmb")
    return args.data.name, ((devcases.read_swi_case(d), d) for d in dirs)


def split_name(splits: str) -> str:
    """Our splits' name in a run with every ``SVDMARK_TRAIN_*`` variable set appended (but the cache's place), so that
    ``val,val_atlas`` drawn with ``SVDMARK_TRAIN_SWI_BLOOMING=1`` is ``val,val_atlas+SWI_BLOOMING1``; a variable that
    changes only the NCCT draws is named too, which is harmless and keeps the name a plain record of the run."""
    return splits + "".join(f"+{k.removeprefix('SVDMARK_TRAIN_')}{v}" for k, v in data.training_environment().items())


def run_path(kind: str, name: str, n: int, model_label: str, suffix: str = "") -> Path:
    """``training/runs/<kind>_<data>_<n>_<model><suffix>.json`` (the model label with hyphens for spaces)."""
    return RUNS / f"{kind}_{name}_{n}_{model_label.replace(' ', '-')}{suffix}.json"


def write_run(kind: str, name: str, spec: ModelSpec, res: dict, suffix: str = "") -> Path:
    """Write a probe's run to :func:`run_path`."""
    RUNS.mkdir(exist_ok=True)
    path = run_path(kind, name, res["n"], spec.label, suffix)
    path.write_text(json.dumps(res, indent=1))
    print(f"  wrote {path}")
    return path

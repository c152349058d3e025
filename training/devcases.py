"""NCCT cases of the independent development set (``devset/``), read through the service's own stages.

The training generator's own splits cannot show how a model reads heads built differently, so choices made on
them (post-processing, thresholds, which candidate ships) are blind to exactly what the stress set finds. The
development set is built by other code (``python -m devset.build``) for such choices. The stress set
(``stress/``, seeds 7 310 000+) stays for reporting only: this loader refuses any case that is not a development
case, so no sweep, calibration or release rule can ever see it.

A case directory is ``DIR/wml_<seed>/`` with ``dicom/*.dcm``, ``truth.json`` and ``truth.npz`` (``devset/README.md``);
the series goes route → ``svdmark.volume.load`` exactly as ``svdmark serve`` reads it, and the truth fraction is
put into the loaded slice order through the SOP Instance UIDs.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .data import NcctCase

DEV_SEEDS = range(7_330_000, 7_340_000)  # devset.build's seeds (its BASE_SEED + case index)


def dev_case_dirs(root: Path, n: int | None = None) -> list[Path]:
    """The first ``n`` (all when None) development cases under ``root``, in seed order; SystemExit, naming the
    directory, for anything else there that looks like a case (a stress case, another task) or for none at all."""
    dirs = _case_dirs(root)
    foreign = [p.name for p in dirs if not (p.name.startswith("wml_") and _seed(p.name) in DEV_SEEDS)]
    if foreign:
        raise SystemExit(f"{root}: {foreign[:3]} are not development-set NCCT cases (wml_<seed>, seeds "
                         f"{DEV_SEEDS.start}-{DEV_SEEDS.stop - 1}); the stress set is for reporting only "
                         "(stress.score)")
    if not dirs:
        raise SystemExit(f"{root}: no development cases (build them: python -m devset.build --n 40 --out {root})")
    return dirs[:n] if n else dirs


STRESS_SEEDS = range(7_310_000, 7_330_000)  # stress.build's seeds (wml and cmb)


def foreign_case_dirs(root: Path, n: int | None = None) -> list[Path]:
    """Heads of another generator in this layout (``devset.build --start 10000``: seeds 7 340 000+) to *train* on
    (``train_wml --extra-ncct``); SystemExit for any development-set or stress-set case, which must never be
    trained on."""
    dirs = _case_dirs(root)
    kept = [p.name for p in dirs if _seed(p.name) in DEV_SEEDS or _seed(p.name) in STRESS_SEEDS]
    if kept:
        raise SystemExit(f"{root}: {kept[:3]} are development or stress cases, which are never trained on")
    if not dirs:
        raise SystemExit(f"{root}: no cases to train on")
    return dirs[:n] if n else dirs


def _case_dirs(root: Path) -> list[Path]:
    """The case folders (those with a ``truth.json``) under ``root``, by name; none where ``root`` is no folder."""
    root = Path(root)
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / "truth.json").exists()) if root.is_dir() else []


def _seed(name: str) -> int | None:
    """The seed of a case folder ``<task>_<seed>``; None for any other name."""
    seed = name.partition("_")[2]
    return int(seed) if seed.isdigit() else None


def read_ncct_case(case: Path) -> NcctCase:
    """One case folder of this layout (development or ``--extra-ncct``) as an ``NcctCase``: the loaded volume and
    its truth in slice order."""
    import pydicom

    from svdmark import route, volume
    from svdmark.domain import RouteKind, Series

    truth = json.loads((case / "truth.json").read_text())
    datasets = tuple(pydicom.dcmread(str(f)) for f in sorted((case / "dicom").glob("*.dcm")))
    series = Series(str(datasets[0].StudyInstanceUID), str(datasets[0].SeriesInstanceUID), datasets)
    decision = route.decide(series.header)
    if decision.kind is not RouteKind.WML:
        raise ValueError(f"{case.name}: routed {decision.kind.value} ({decision.rule_id}: {decision.reason}), not WML")
    vol = volume.load(series)
    k_of = {uid: k for k, uid in enumerate(truth["sop_uids"])}
    with np.load(case / "truth.npz") as z:
        fraction = z["fraction"].astype(np.float32)[[k_of[fr.sop_instance_uid] for fr in vol.frames]]
    params = {k: truth[k] for k in ("slice_thickness", "tilt_deg", "vendor", "phenotype", "atrophy") if k in truth}
    return NcctCase(int(truth["seed"]), params, vol, fraction, float(truth["wml_ml"]))

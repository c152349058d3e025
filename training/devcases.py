"""Cases of the independent development sets (``devset/``: NCCT and SWI), read through the service's own stages.

The training generator's own splits cannot show how a model reads heads built differently, so choices made on
them (post-processing, thresholds, which candidate ships) are blind to exactly what the stress set finds. The
development set is built by other code (``python -m devset.build``) for such choices. The stress set
(``stress/``, seeds 7 310 000+) stays for reporting only: this loader refuses any case that is not a development
case, so no sweep, calibration or release rule can ever see it.

A case directory is ``DIR/<task>_<seed>/`` with ``dicom/*.dcm``, ``truth.json`` and ``truth.npz`` (``wml``:
``devset/README.md``; ``cmb``: ``devset/README_SWI.md``); the series goes route → ``svdmark.volume.load`` exactly as
``svdmark serve`` reads it. An NCCT truth fraction is put into the loaded slice order through the SOP Instance
UIDs; an SWI truth is a list of bleed centres in patient coordinates, which need no reordering.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .data import NcctCase, SwiCase

DEV_SEEDS = range(7_330_000, 7_340_000)  # devset.build's seeds (its BASE_SEED + case index)


BUILDERS = {"wml": "devset.build", "cmb": "devset.build_swi"}  # which module writes each task's cases


def dev_case_dirs(root: Path, n: int | None = None, task: str = "wml") -> list[Path]:
    """The first ``n`` (all when None) development cases of ``task`` under ``root``, in seed order; SystemExit,
    naming the directory, for anything else there that looks like a case (a stress case, another task) or for
    none at all."""
    dirs = _case_dirs(root)
    foreign = [p.name for p in dirs if not (p.name.startswith(f"{task}_") and _seed(p.name) in DEV_SEEDS)]
    if foreign:
        raise SystemExit(f"{root}: {foreign[:3]} are not development-set {task} cases ({task}_<seed>, seeds "
                         f"{DEV_SEEDS.start}-{DEV_SEEDS.stop - 1}); the stress set is for reporting only "
                         "(stress.score)")
    if not dirs:
        raise SystemExit(f"{root}: no development cases (build them: python -m {BUILDERS[task]} --n 40 --out {root})")
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


def case_dirs(root: Path, n: int | None = None, task: str = "wml", extra: bool = False) -> list[Path]:
    """The case folders a tool was asked to read: development cases of ``task`` (:func:`dev_case_dirs`) or, with
    ``extra``, the foreign NCCT heads a net was trained on (:func:`foreign_case_dirs`), to see how well it fits them."""
    if not extra:
        return dev_case_dirs(root, n, task)
    if task != "wml":
        raise SystemExit("the extra heads are NCCT heads (train_wml --extra-ncct): --task wml")
    return foreign_case_dirs(root, n)


def _case_dirs(root: Path) -> list[Path]:
    """The case folders (those with a ``truth.json``) under ``root``, by name; none where ``root`` is no folder."""
    root = Path(root)
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / "truth.json").exists()) if root.is_dir() else []


def _seed(name: str) -> int | None:
    """The seed of a case folder ``<task>_<seed>``; None for any other name."""
    seed = name.partition("_")[2]
    return int(seed) if seed.isdigit() else None


def read_series(case: Path, task: str):
    """(truth.json, the case's series routed as ``task`` and loaded as ``svdmark serve`` loads it)."""
    import pydicom

    from svdmark import route, volume
    from svdmark.domain import RouteKind, Series

    truth = json.loads((case / "truth.json").read_text())
    datasets = tuple(pydicom.dcmread(str(f)) for f in sorted((case / "dicom").glob("*.dcm")))
    series = Series(str(datasets[0].StudyInstanceUID), str(datasets[0].SeriesInstanceUID), datasets)
    decision = route.decide(series.header)
    expected = RouteKind(task)  # the task names are the route kinds ("wml", "cmb")
    if decision.kind is not expected:
        raise ValueError(f"{case.name}: routed {decision.kind.value} ({decision.rule_id}: {decision.reason}), "
                         f"not {expected.value}")
    return truth, volume.load(series)


def read_ncct_case(case: Path) -> NcctCase:
    """One case folder of this layout (development or ``--extra-ncct``) as an ``NcctCase``: the loaded volume and
    its truth in slice order."""
    truth, vol = read_series(case, "wml")
    fraction = truth_array(case, truth, vol, "fraction").astype(np.float32)
    params = {k: truth[k] for k in ("slice_thickness", "tilt_deg", "vendor", "phenotype", "atrophy", "generator")
              if k in truth}
    contrast = (truth.get("lesion") or {}).get("contrast_hu")  # the generator's drawn lesion contrast, where it has one
    return NcctCase(int(truth["seed"]), params, vol, fraction, float(truth["wml_ml"]),
                    None if contrast is None else float(contrast))


def truth_array(case: Path, truth: dict, vol, key: str) -> np.ndarray:
    """The case's ``truth.npz[key]`` (written slice order) in the loaded volume's slice order, through the SOP
    Instance UIDs."""
    k_of = {uid: k for k, uid in enumerate(truth["sop_uids"])}
    with np.load(case / "truth.npz") as z:
        return z[key][[k_of[fr.sop_instance_uid] for fr in vol.frames]]


def read_swi_case(case: Path) -> SwiCase:
    """One SWI development case as a ``SwiCase``: the loaded volume and its bleeds (centre in patient mm, true
    diameter, location)."""
    truth, vol = read_series(case, "cmb")
    bleeds = [dict(center_mm=tuple(float(v) for v in b["center_mm"]), diameter_mm=float(b["diameter_mm"]),
                   location=str(b["location"])) for b in truth["microbleeds"]]
    params = {k: truth[k] for k in ("slice_thickness", "tilt_deg", "vendor", "field_t", "atrophy") if k in truth}
    return SwiCase(int(truth["seed"]), params, vol, bleeds, None)

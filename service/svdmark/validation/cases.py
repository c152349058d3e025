"""Run one model version on each reference case through the service's own stages.

A case is an image series under the reference folder that (1) routing sends to the model's task
and (2) has a reference. It goes through ``pipeline.analyse`` — route → ``volume.load`` →
``Runtime().run`` → ``measure.from_output`` → rules — with the registry pinned to the version
under validation (``infer.registry.Pinned``), so the figures are those of the code path a live
series takes, whatever version is active.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..domain import BurdenGrade, ModelSpec, RouteKind, Task
from . import agreement, references

MEASURED, WITHHELD, FAILED = "measured", "withheld", "failed"


@dataclass
class Case:
    series_uid: str
    study_uid: str
    reference_kind: str
    reference_source: str
    status: str = FAILED
    reason: str = ""
    model_value: float | None = None  # WML mL or CMB count; None when withheld or failed
    reference_value: float | None = None
    interval: tuple[float, float] | None = None
    dice: float | None = None
    model_grade: int | None = None
    reference_grade: int | None = None
    true_positives: int | None = None  # CMB with reference locations
    false_positives: int | None = None
    false_negatives: int | None = None
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        d = asdict(self)
        d["interval"] = list(self.interval) if self.interval else None
        return d


@dataclass
class Inventory:
    """What was found under the reference folder, and what became of it."""

    series: int = 0
    for_task: int = 0
    other_task: int = 0
    ignored: list[dict] = field(default_factory=list)  # {"series_uid", "reason"}
    no_reference: list[str] = field(default_factory=list)
    reference_without_images: list[str] = field(default_factory=list)
    unusable_files: list[dict] = field(default_factory=list)
    reference_problems: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def collect(root: Path, skip: list[Path]) -> tuple[list, references.ReferenceSet, list[dict]]:
    """Image series (``batch.discover`` groups), references, and files that are neither."""
    from ..batch.discover import discover

    groups, errors, _ = discover([root], b"svdmark-validation", skip=skip)
    refs = references.read(root, [e.file for e in errors if "!" not in e.file])
    unusable = [{"file": e.file, "reason": e.reason} for e in errors if e.file not in refs.files]
    return groups, refs, unusable


def run(config, spec: ModelSpec, runtime, root: Path, skip: list[Path],
        say: Callable[[str], None] = lambda s: None) -> tuple[list[Case], Inventory]:
    import pydicom

    from .. import route
    from ..infer.registry import Pinned
    from ..pipeline import Context
    from ..rules import RuleSet

    groups, refs, unusable = collect(root, skip)
    inv = Inventory(series=len(groups), unusable_files=unusable, reference_problems=list(refs.problems))
    table = route.RoutingTable.load(config.routing_file)
    ctx = Context(routing=table, models=Pinned(spec), runtime=runtime, rules=RuleSet.load(config.rules_file))
    todo = []
    seen = set()
    for g in groups:
        seen.add(g.series_uid)
        header = pydicom.dcmread(g.first.source.open(), stop_before_pixels=True)
        decision = route.decide(header, table)
        if decision.kind is RouteKind.IGNORED:
            inv.ignored.append({"series_uid": g.series_uid, "reason": decision.reason})
            continue
        if decision.kind.task is not Task(spec.task):
            inv.other_task += 1
            continue
        inv.for_task += 1
        if g.series_uid not in refs.by_series:
            inv.no_reference.append(g.series_uid)
            continue
        why_not = refs.by_series[g.series_uid].unusable_for(Task(spec.task).value)
        if why_not:  # known before the series is analysed, so a run on the wrong reference fails fast
            inv.no_reference.append(g.series_uid)
            inv.reference_problems.append({"file": refs.by_series[g.series_uid].source, "reason": why_not})
            continue
        todo.append(g)
    inv.reference_without_images = sorted(u for u in refs.by_series if u not in seen)
    cases = []
    for n, g in enumerate(todo, start=1):
        case = one(g, refs.by_series[g.series_uid], spec, ctx)
        cases.append(case)
        show = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        say(f"validate: {n}/{len(todo)} {g.series_uid}: {case.status}, model {show(case.model_value)},"
            f" reference {show(case.reference_value)}" + (f" ({case.reason})" if case.reason else ""))
    return cases, inv


def one(group, ref: references.Reference, spec: ModelSpec, ctx) -> Case:
    """Analyse one series and compare it with its reference (one that can judge the model: ``run`` checks
    ``Reference.unusable_for`` first); never raises for a bad case."""
    from ..errors import SvdmarkError
    from ..pipeline import Ignored, analyse, read_series

    t0 = time.perf_counter()
    case = Case(group.series_uid, group.study_uid, ref.kind, ref.source)
    try:
        result = analyse(read_series(group.series_source()), ctx)
        if isinstance(result, Ignored):
            case.status, case.reason, case.model_value = FAILED, f"Ignored: {result.reason}", None
        else:
            _compare(case, result.findings, result.volume, ref, Task(spec.task))
    except (SvdmarkError, OSError, ValueError, KeyError, AttributeError, TypeError, IndexError, RuntimeError,
            NotImplementedError) as exc:
        case.status, case.reason = FAILED, f"{type(exc).__name__}: {exc}"
        case.model_value = None
    case.seconds = round(time.perf_counter() - t0, 3)
    return case


def _compare(case: Case, findings, volume, ref: references.Reference, task: Task) -> None:
    case.warnings = list(getattr(findings, "warnings", ()) or ())
    mask = references.seg_mask(ref.seg_path, volume) if ref.kind == "mask" else None
    if task is Task.WML:
        if mask is not None:
            case.reference_value = volume.physical_ml(mask)
        else:
            case.reference_value = float(ref.wml_ml)
        model_value = float(findings.volume_ml)
    else:
        if mask is not None:
            points = references.mask_bleeds(mask, volume)
        else:
            points = ref.points
        case.reference_value = float(len(points) if ref.has_locations else ref.cmb_count)
        case.reference_grade = int(BurdenGrade.from_count(int(case.reference_value)))
        model_value = float(findings.count)
        if ref.has_locations:
            m = agreement.match_points([b.center_mm for b in findings.microbleeds], [p[0] for p in points],
                                       [p[1] for p in points])
            case.true_positives, case.false_positives, case.false_negatives = (
                m.true_positives, m.false_positives, m.false_negatives)
    if mask is not None:
        case.dice = agreement.dice(np.asarray(findings.mask), mask)
    interval = getattr(findings, "interval", None)
    if interval is not None:
        case.interval = (float(interval.low), float(interval.high))
    quality = getattr(findings, "quality", None)
    if quality is not None and not quality.measurable:
        case.status = WITHHELD
        case.reason = "; ".join(quality.reasons) or "quality gate: not measurable"
        case.model_value = None  # the service reports no number for this input
        case.true_positives = case.false_positives = case.false_negatives = None
        case.dice = None
        return
    case.status = MEASURED
    case.model_value = model_value
    if task is Task.CMB:
        case.model_grade = int(BurdenGrade.from_count(int(model_value)))

"""The order of the stages, and nothing else.

    header ─route→ decision ─volume→ Volume ─anatomy→ (a head?) ─infer→ output ─measure→ findings ─rules→ flags ─encode→ SR, SEG, SC

The anatomy check (``route.require_head``) ignores a volume whose pixels are not a head, with the reason.

Each stage's wall time goes to the ``svdmark_stage_seconds`` histogram.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from . import measure, route, volume
from .domain import AnalysisResult, RouteKind, Series
from .errors import Ignored
from .health import stage_timer as timed
from .infer import ModelRegistry, Runtime
from .rules import RuleSet


@dataclass(frozen=True)
class Context:
    routing: route.RoutingTable
    models: ModelRegistry
    runtime: Runtime
    rules: RuleSet


def analyse(series: Series, ctx: Context) -> AnalysisResult:
    """Route, load, infer, measure and apply the rules to one complete series."""
    start = time.perf_counter()
    with timed("route"):
        decision = route.decide(series.header, ctx.routing)
    if decision.kind is RouteKind.IGNORED:
        raise Ignored(decision.reason, decision.rule_id)
    with timed("volume"):
        image = volume.load(series)
    with timed("anatomy"):
        route.require_head(decision, image, ctx.routing.anatomy)
    model = ctx.models.active(decision.kind.task)
    with timed("infer"):
        output = ctx.runtime.run(model, image)
    with timed("measure"):
        findings = measure.from_output(model, image, output)
    with timed("rules"):
        flags = ctx.rules.evaluate(findings, series.header)  # only flags whose evidence population fits
    return AnalysisResult(series, decision, model, image, findings, flags, ctx.rules.info,
                          seconds=time.perf_counter() - start)

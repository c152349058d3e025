"""Shadow runs: the candidate version of a model runs beside the active one on live traffic.

The worker calls :func:`run_shadow` after the active model's results are journalled. The candidate
goes through the same pipeline (:func:`svdmark.pipeline.analyse`, its registry pinned to the
candidate); both summaries are stored in the journal (:meth:`Journal.record_shadow`), nothing is sent.
``svdmark models compare`` reports their agreement.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

from .domain import Series
from .errors import ModelError
from .failures import reason_of
from .infer.activation import installed_dir, read_state
from .infer.registry import Pinned, managed
from .journal import ShadowResult
from .journal_api import ShadowJournal
from .logs import event

log = logging.getLogger("svdmark.lifecycle")  # the logger shadow_done was always logged under


def shadow_version(data_dir: Path, model_name: str) -> str | None:
    """The version set to run in shadow of ``model_name`` (None also when the state file is unreadable:
    a broken candidate setting never disturbs the live service)."""
    try:
        return read_state(installed_dir(data_dir))["shadow"].get(model_name)
    except ModelError:
        return None


def run_shadow(context, journal: ShadowJournal, data_dir: Path, job_id: int | None, series: Series,
               result) -> ShadowResult | None:
    """Run the shadow version of ``result.model`` (if one is set) on ``series``; store both summaries."""
    from .pipeline import Ignored, analyse
    from .summary import summarise

    model = result.model
    version = shadow_version(data_dir, model.name)
    if not version or version == model.version:
        return None
    shadow_sha = shadow_summary = error = None
    try:
        registry = managed(context.models, data_dir)
        if version not in registry.versions(model.name):
            raise ModelError(f"shadow version {model.name} {version} is not installed")
        spec = registry.get(model.name, version)
        shadow_sha = spec.sha256
        out = analyse(series, dataclasses.replace(context, models=Pinned(spec)), result.routing)
        if isinstance(out, Ignored):  # the pixel check is the same for both versions: not expected
            error = f"ignored: {out.reason}"
        else:
            shadow_summary = summarise(out)
    except Exception as exc:  # a broken candidate must never disturb the live service
        error = reason_of(exc)  # never the raw text: pydicom and highdicom quote values (a name, an ID)
    row = ShadowResult(series_uid=series.series_uid, task=model.task.value, shadow_name=model.name,
                       shadow_version=version, created_at=time.time(), job_id=job_id, active_name=model.name,
                       active_version=model.version, active_sha=model.sha256, active_summary=summarise(result),
                       shadow_sha=shadow_sha, shadow_summary=shadow_summary, error=error)
    journal.record_shadow(row)
    event(log, "shadow_done", series_uid=series.series_uid, model=model.name, active=model.version,
          shadow=version, error=error or "")
    return row

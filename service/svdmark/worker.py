"""Runs queued jobs: read the series from the spool, analyse, encode, journal outputs + outbox rows."""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any, Iterable

import pydicom

from . import encode, health
from .config import Config, Destination
from .domain import JobState, Series
from .errors import Ignored, InvalidSeries, ModelError
from .journal import Journal, JobRow, ResultObject
from .logs import event
from .pipeline import Context, analyse
from .spool import Spool
from .summary import summarise

log = logging.getLogger("svdmark.worker")


def read_series(journal: Journal, job: JobRow) -> Series:
    return load_series(job.study_uid, job.series_uid, ((i.sop_uid, i.path) for i in journal.instances(job.series_uid)))


def load_series(study_uid: str, series_uid: str, instances: Iterable[tuple[str, Any]]) -> Series:
    """Read (SOP Instance UID, path or file object) pairs into a Series, ordered by SOP Instance UID.

    Shared by the service (spool files) and ``svdmark analyze`` (files and zip members),
    so both hand the pipeline the same datasets in the same order.
    """
    datasets = tuple(pydicom.dcmread(src) for _, src in sorted(instances, key=lambda i: i[0]))
    if not datasets:
        raise InvalidSeries(f"series {series_uid} has no stored instances")
    return Series(study_uid, series_uid, datasets)


def uid_seed(series: Series, model_sha: str, ruleset_version: str) -> str:
    """Same inputs → same output UIDs, so a re-run after a crash reproduces identical objects."""
    h = hashlib.sha256()
    for part in [series.series_uid, model_sha, ruleset_version, *sorted(str(d.SOPInstanceUID) for d in series.datasets)]:
        h.update(part.encode() + b"\0")
    return h.hexdigest()


@dataclass
class Worker:
    config: Config
    journal: Journal
    spool: Spool
    context: Context

    def run_one(self) -> bool:
        """Claim and run one pending job; False when there was none."""
        job = self.journal.claim_job()
        if job is None:
            return False
        with health.stage_timer("total"):
            self.process(job)
        return True

    def process(self, job: JobRow) -> None:
        try:
            series = read_series(self.journal, job)
            result = analyse(series, self.context)
        except Ignored as exc:
            self.journal.finish_job(job, JobState.IGNORED, routing="ignored", rule_id=exc.rule_id, detail=exc.reason)
            event(log, "series_ignored", series_uid=job.series_uid, rule=exc.rule_id, reason=exc.reason)
            return
        except (InvalidSeries, ModelError) as exc:
            self.journal.finish_job(job, JobState.FAILED, detail=str(exc))
            event(log, "analysis_failed", logging.WARNING, series_uid=job.series_uid, reason=str(exc))
            return
        except Exception as exc:  # a bug or an unreadable file must not stop the service
            self.journal.finish_job(job, JobState.FAILED, detail=f"internal error: {type(exc).__name__}: {exc}")
            event(log, "analysis_crashed", logging.ERROR, exc_info=True, series_uid=job.series_uid)
            return
        previous = self.journal.previous_sr(job.series_uid, job.generation)
        supersedes = pydicom.dcmread(previous.path) if previous is not None else None
        with health.stage_timer("encode"):
            encoded = encode.results(result, supersedes=supersedes,
                                     uid_seed=uid_seed(series, result.model.sha256, result.ruleset.version))
        outputs = []
        for kind, ds in encoded.items():
            path = self.spool.write(self.spool.results, str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID),
                                    str(ds.SOPInstanceUID), _to_bytes(ds))
            outputs.append(ResultObject(str(ds.SOPInstanceUID), kind, str(ds.SOPClassUID), path,
                                        previous.sop_uid if (previous and kind == "sr") else None))
        deliveries = [(o.sop_uid, d.name) for o in outputs for d in self.config.destinations if o.kind in d.outputs]
        summary = summarise(result)
        self.journal.finish_job(
            job, JobState.DONE, routing=result.routing.kind.value, rule_id=result.routing.rule_id,
            model=(result.model.name, result.model.version, result.model.sha256),
            ruleset_version=result.ruleset.version, summary=summary, outputs=outputs, deliveries=deliveries,
        )
        event(log, "analysis_done", series_uid=job.series_uid, task=summary["task"], wml_ml=summary["wml_ml"],
              cmb_count=summary["cmb_count"], seconds=summary["seconds"], outputs=len(outputs),
              supersedes=previous.sop_uid if previous else "")
        self._shadow(job, series, result)

    def _shadow(self, job: JobRow, series: Series, result) -> None:
        """Run the shadow (candidate) model version, if one is set, after the active result is journalled.

        Its summary is stored beside the active one for `svdmark models compare`; nothing is sent.
        """
        try:
            from .lifecycle import run_shadow

            run_shadow(self.context, self.journal, self.config.data_dir, job.id, series, result)
        except Exception:  # a shadow must never disturb the live service
            event(log, "shadow_failed", logging.WARNING, exc_info=True, series_uid=job.series_uid)


def _to_bytes(ds: pydicom.Dataset) -> bytes:
    from io import BytesIO

    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()



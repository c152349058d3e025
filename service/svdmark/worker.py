"""Runs queued jobs: read the series from the spool, analyse, encode, journal outputs + outbox rows.

One error policy covers everything after a job is claimed, so a job never stays ``running``
in a live process:

* ``Ignored`` → ``ignored``;
* a transient environment error (:func:`transient`: an ``OSError`` such as ENOSPC or EIO, a
  journal write that fails, no memory) → back to the queue with an exponential back-off, and
  ``failed`` after ``max_attempts`` tries;
* anything else (invalid input, a model error, an encoder refusing the data, a bug) → ``failed``
  with the reason, shown by ``svdmark jobs show``.

Each outcome is one log line naming the job, its series UID, the stage and the reason (the
reason never carries quoted values, which may be patient data). Should the journal refuse to
record an outcome, the worker keeps it and records it before claiming anything else.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pydicom

from . import encode, health
from .config import Config, Destination
from .domain import AnalysisResult, JobState, ModelSpec, Series
from .errors import Ignored, InvalidSeries, SvdmarkError
from .failures import reason_of, transient, where
from .encode.rejection import rejection_note
from .journal import Journal, JobRow, Rejection, ResultObject, StaleSupersession, Supersession
from .logs import event
from .pipeline import Context, analyse
from .spool import Spool
from .summary import summarise

log = logging.getLogger("svdmark.worker")
HEALTH_COMPONENT = "worker"  # /healthz names the worker's environment problems (a full disk) under this


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


class IncompleteSeries(SvdmarkError):
    """The assembler completed the series with parts missing and the policy is not to analyse it."""


def with_completion_warning(result: AnalysisResult, warning: str | None) -> AnalysisResult:
    """Put the assembler's ``incomplete series: N of M images`` first among the volume's warnings, which the
    SR (Qualitative Evaluations), the summary image and the job summary's ``warnings`` all show."""
    if not warning:
        return result
    return dataclasses.replace(result, volume=dataclasses.replace(
        result.volume, warnings=(warning, *(w for w in result.volume.warnings if w != warning))))


RESULT_SECTIONS = ("input", "candidates", "output", "uncertainty", "quality")  # manifest parts that shape a result


def uid_seed(series: Series, model: ModelSpec, ruleset_version: str) -> str:
    """Same inputs → same output UIDs, so a re-run after a crash reproduces identical objects.

    The inputs are the series' instances (UID and pixel data, so a replaced instance with the same UID
    gives new objects), the model file (sha256), the manifest sections that shape the result (a new
    calibration or quality-gate limit gives new objects) and the rule-set version.
    """
    h = hashlib.sha256()
    sections = json.dumps({k: model.manifest.get(k) for k in RESULT_SECTIONS}, sort_keys=True, default=str)
    for part in [series.series_uid, model.sha256, sections, ruleset_version]:
        h.update(part.encode() + b"\0")
    for d in sorted(series.datasets, key=lambda d: str(d.SOPInstanceUID)):
        h.update(str(d.SOPInstanceUID).encode() + b"\0")
        pixels = d.get("PixelData")
        h.update(hashlib.sha256(bytes(pixels) if pixels is not None else b"").digest())
    return h.hexdigest()


@dataclass(frozen=True)
class _Outcome:
    """How a job that did not end ``done`` ends; kept to be recorded again if the journal refused it."""

    job: JobRow
    state: JobState  # IGNORED, FAILED, or PENDING (retry later)
    stage: str
    reason: str
    error: str = ""
    where: str = ""
    rule_id: str = ""
    expected: bool = False  # an svdmark error (invalid series, model missing...): logged as a warning


@dataclass
class Worker:
    config: Config
    journal: Journal
    spool: Spool
    context: Context
    max_attempts: int = 5  # transient failures of one job before it is failed
    backoff_seconds: float = 30.0  # delay after the first transient failure, doubled each time
    backoff_cap_seconds: float = 600.0
    # outcomes the journal refused to record, by job id, with whether its error was transient
    _unrecorded: dict[int, tuple[_Outcome, bool]] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _claim_failing: bool = field(default=False, init=False, repr=False)

    def run_one(self) -> bool:
        """Claim and run one pending job; False when there was none (or the journal is refusing writes)."""
        if not self._record_unrecorded():
            return False
        try:
            job = self.journal.claim_job()
        except Exception as exc:
            if not transient(exc):
                raise
            if not self._claim_failing:  # one line when the journal starts refusing, one when it is back
                self._claim_failing = True
                event(log, "job_claim_failed", logging.ERROR, reason=reason_of(exc))
                health.report_problem(HEALTH_COMPONENT, f"journal refuses to hand out jobs: {reason_of(exc)}")
            return False
        if self._claim_failing:
            self._claim_failing = False
            event(log, "job_claim_recovered")
            health.clear_problem(HEALTH_COMPONENT)
        if job is None:
            return False
        with health.stage_timer("total"):
            self.process(job)
        return True

    def process(self, job: JobRow) -> None:
        """Run one claimed job to an outcome that the journal records (or that is kept until it does)."""
        stage = "read"
        written: list[Path] = []
        try:
            if job.warning and self.config.incomplete_policy == "reject":
                stage = "completion"
                raise IncompleteSeries(f"{job.warning}; not analysed ([assemble] incomplete_policy = reject)")
            series = read_series(self.journal, job)
            stage = "analyse"
            result = with_completion_warning(analyse(series, self.context), job.warning)
            stage = "encode"
            previous = self.journal.previous_sr(job.series_uid, job.generation)
            supersedes = pydicom.dcmread(previous.path) if previous is not None else None
            seed = uid_seed(series, result.model, result.ruleset.version)
            with health.stage_timer("encode"):
                encoded = encode.results(result, supersedes=supersedes, uid_seed=seed)
            summary = summarise(result)
            summary["completion_warning"] = job.warning
            stage = "write"
            outputs = []
            for kind, ds in encoded.items():
                path = self._store(ds, written)
                outputs.append(ResultObject(str(ds.SOPInstanceUID), kind, str(ds.SOPClassUID), path,
                                            previous.sop_uid if (previous and kind == "sr") else None))
            deliveries = [(o.sop_uid, d.name) for o in outputs for d in self.config.destinations
                          if o.kind in d.outputs]
            for tries_left in (2, 1, 0):  # earlier results delivered meanwhile: build the notes again
                stage = "supersede"
                supersede = self._supersession(job, seed, written, outputs) if job.generation > 1 else None
                stage = "journal"
                try:
                    self.journal.finish_job(
                        job, JobState.DONE, routing=result.routing.kind.value, rule_id=result.routing.rule_id,
                        model=(result.model.name, result.model.version, result.model.sha256),
                        ruleset_version=result.ruleset.version, summary=summary, outputs=outputs,
                        deliveries=deliveries, supersede=supersede,
                    )
                    break
                except StaleSupersession:
                    stale = {r.note.path for r in (supersede.rejections if supersede else ())} & set(written)
                    _remove(stale)
                    written[:] = [p for p in written if p not in stale]
                    if not tries_left:
                        raise
        except Ignored as exc:
            self._record(_Outcome(job, JobState.IGNORED, stage, exc.reason, rule_id=exc.rule_id))
            return
        except Exception as exc:  # every failure ends the job: failed, or retried if the environment failed
            _remove(written)  # produced for a job that is not done: nothing refers to them
            retry = transient(exc)
            self._record(_Outcome(job, JobState.PENDING if retry else JobState.FAILED, stage, reason_of(exc),
                                  error=type(exc).__name__, where=where(exc),
                                  expected=isinstance(exc, SvdmarkError)))
            return
        health.clear_problem(HEALTH_COMPONENT)  # a job went through: the environment works
        event(log, "analysis_done", job_id=job.id, series_uid=job.series_uid, task=summary["task"],
              wml_ml=summary["wml_ml"], cmb_count=summary["cmb_count"], seconds=summary["seconds"],
              outputs=len(outputs), supersedes=previous.sop_uid if previous else "",
              rejection_notes=len(supersede.rejections) if supersede else 0)
        self._shadow(job, series, result)

    def _store(self, ds: pydicom.Dataset, written: list[Path]) -> Path:
        """Write a produced object into the results spool; ``written`` collects files new to this job."""
        uids = (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))
        path = self.spool.path_for(self.spool.results, *uids)
        if not path.exists():  # an identical earlier object (same UIDs) is never ours to remove
            written.append(path)
        self.spool.write(self.spool.results, *uids, _to_bytes(ds))
        return path

    def _supersession(self, job: JobRow, seed: str, written: list[Path],
                      outputs: list[ResultObject]) -> Supersession:
        """IOCM rejection notes for the earlier results of this series that destinations hold.

        One note per distinct set of rejected objects (usually one for all destinations); each
        destination gets the note naming exactly what it received. An earlier object that this job
        produced again (same UIDs: the same instances and pixels) is this job's result, never rejected.
        """
        names = frozenset(d.name for d in self.config.destinations)
        by_dest: dict[str, list[tuple[int, ResultObject]]] = {}
        ours = {o.sop_uid for o in outputs}
        for delivery_id, dest, obj in self.journal.rejectable(job.series_uid, job.generation, sorted(names)):
            if obj.sop_uid in ours:
                continue
            by_dest.setdefault(dest, []).append((delivery_id, obj))
        groups: dict[frozenset[str], list[tuple[int, str]]] = {}
        objects: dict[str, ResultObject] = {}
        for dest, found in by_dest.items():
            groups.setdefault(frozenset(o.sop_uid for _, o in found), []).extend((i, dest) for i, _ in found)
            objects.update((o.sop_uid, o) for _, o in found)
        rejections = []
        for uids, rejects in groups.items():
            note = rejection_note([pydicom.dcmread(objects[u].path) for u in sorted(uids)], uid_seed=seed)
            path = self._store(note, written)
            rejections.append(Rejection(ResultObject(str(note.SOPInstanceUID), "rejection", str(note.SOPClassUID),
                                                     path), tuple(rejects)))
        return Supersession(names, tuple(rejections))

    # ------------------------------------------------------------------ outcomes
    def _record(self, outcome: _Outcome) -> bool:
        """Journal an outcome and log its one line; if the journal refuses, keep it for later."""
        job = outcome.job
        try:
            state = self._write(outcome)
        except Exception as exc:  # the journal itself failed (full disk, I/O error): keep the outcome
            with self._lock:
                first = job.id not in self._unrecorded
                self._unrecorded[job.id] = (outcome, transient(exc))
            if first:  # one line per job, not one per retry of the journal
                event(log, "job_outcome_unrecorded", logging.ERROR, job_id=job.id, series_uid=job.series_uid,
                      stage=outcome.stage, outcome=outcome.state.value, journal_error=reason_of(exc),
                      where=where(exc))
            return False
        with self._lock:
            self._unrecorded.pop(job.id, None)
        if state is None:  # no longer running: someone else (an admin, a recovery) has settled it
            event(log, "job_outcome_stale", logging.WARNING, job_id=job.id, series_uid=job.series_uid,
                  stage=outcome.stage, outcome=outcome.state.value)
        elif state is JobState.IGNORED:
            event(log, "series_ignored", job_id=job.id, series_uid=job.series_uid, rule=outcome.rule_id,
                  reason=outcome.reason)
        elif state is JobState.PENDING:
            health.report_problem(HEALTH_COMPONENT, f"job {job.id} will be retried after {outcome.stage}: "
                                  f"{outcome.reason}")
            event(log, "analysis_retry", logging.WARNING, job_id=job.id, series_uid=job.series_uid,
                  stage=outcome.stage, attempt=job.attempts + 1, max_attempts=self.max_attempts,
                  retry_in_s=self._delay(job), error=outcome.error, reason=outcome.reason, where=outcome.where)
        else:
            gave_up = outcome.state is JobState.PENDING  # a transient failure, but the last attempt allowed
            level = logging.WARNING if outcome.expected else logging.ERROR
            event(log, "analysis_failed", level, job_id=job.id, series_uid=job.series_uid, stage=outcome.stage,
                  error=outcome.error, reason=outcome.reason, where=outcome.where,
                  **({"gave_up_after_attempts": job.attempts + 1} if gave_up else {}))
        return True

    def _write(self, outcome: _Outcome) -> JobState | None:
        job = outcome.job
        if outcome.state is JobState.IGNORED:
            self.journal.finish_job(job, JobState.IGNORED, routing="ignored", rule_id=outcome.rule_id,
                                    detail=outcome.reason)
            return JobState.IGNORED
        if outcome.state is JobState.PENDING:
            return self.journal.retry_job_later(job, f"{outcome.stage}: {outcome.reason}", self._delay(job),
                                                self.max_attempts)
        self.journal.finish_job(job, JobState.FAILED, detail=f"{outcome.stage} failed: {outcome.reason}")
        return JobState.FAILED

    def _delay(self, job: JobRow) -> float:
        return min(self.backoff_cap_seconds, self.backoff_seconds * 2 ** job.attempts)

    def _record_unrecorded(self) -> bool:
        """Record outcomes the journal refused earlier. False while the journal still refuses one
        for a transient reason (a full disk): no new job is claimed until it takes them."""
        with self._lock:
            kept = [outcome for outcome, _ in self._unrecorded.values()]
        for outcome in kept:
            self._record(outcome)
        with self._lock:
            return not any(is_transient for _, is_transient in self._unrecorded.values())

    def _shadow(self, job: JobRow, series: Series, result) -> None:
        """Run the shadow (candidate) model version, if one is set, after the active result is journalled.

        Its summary is stored beside the active one for `svdmark models compare`; nothing is sent.
        """
        try:
            from .lifecycle import run_shadow

            run_shadow(self.context, self.journal, self.config.data_dir, job.id, series, result)
        except Exception:  # a shadow must never disturb the live service
            event(log, "shadow_failed", logging.WARNING, exc_info=True, series_uid=job.series_uid)


def _remove(paths: Iterable[Path]) -> None:
    for p in paths:
        try:
            p.unlink()
        except OSError:  # already gone, or the disk is failing: a leftover, never a referenced file
            pass


def _to_bytes(ds: pydicom.Dataset) -> bytes:
    from io import BytesIO

    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()



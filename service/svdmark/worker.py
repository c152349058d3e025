"""Runs queued jobs: claim one, run :func:`pipeline.run` on its spooled instances, store the objects,
journal them with their outbox rows (and rejection notes for earlier results).

The pipeline answers one outcome (analysed, ignored, or failed at a named stage); this module's own steps
(``store``, ``supersede``, ``journal``) turn their exceptions into the same :class:`pipeline.Failed`, so a
job never stays ``running`` in a live process:

* ignored → ``ignored``, with the routing rule and reason;
* a transient environment error (:func:`failures.transient`: an ``OSError`` such as ENOSPC or EIO, a
  journal write that fails, no memory) → back to the queue with an exponential back-off, and
  ``failed`` after ``max_attempts`` tries;
* anything else (invalid input, a model error, an encoder refusing the data, a bug) → ``failed``
  with ``<stage> failed: <reason>``, shown by ``svdmark jobs show``.

Each outcome is one log line naming the job, its series UID, the stage and the reason (the
reason never carries quoted values, which may be patient data). Should the journal refuse to
record an outcome, the worker keeps it and records it before claiming anything else.
"""
from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import pydicom

from . import encode, health, pipeline
from .config import Config
from .domain import FULL_PROFILE, JobState, OutputKind, RouteKind
from .encode.rejection import rejection_note
from .errors import SpoolDamaged
from .failures import reason_of, transient, where
from .journal import CommitOutcomeUnknown, JobRow, LeaseLost, Rejection, ResultObject, StaleSupersession, Supersession
from .journal_api import WorkJournal
from .logs import event
from .pipeline import Analysed, Context, Failed, Ignored, SeriesSource, Stage, failure
from .spool import Spool
from .summary import summarise

log = logging.getLogger("svdmark.worker")
HEALTH_COMPONENT = "worker"  # /healthz names the worker's environment problems (a full disk) under this

Unfinished = Ignored | Failed  # how a job that does not end ``done`` ends


@dataclass
class Worker:
    config: Config
    journal: WorkJournal
    spool: Spool
    context: Context
    max_attempts: int = 5  # transient failures of one job before it is failed
    backoff_seconds: float = 30.0  # delay after the first transient failure, doubled each time
    backoff_cap_seconds: float = 600.0
    # outcomes the journal refused to record, by job id: (job, outcome, whether the journal's error was transient)
    _unrecorded: dict[int, tuple[JobRow, Unfinished, bool]] = field(default_factory=dict, init=False, repr=False)
    _recording: set[int] = field(default_factory=set, init=False, repr=False)  # kept outcomes a thread records now
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _claim_failing: bool = field(default=False, init=False, repr=False)
    _running: dict[int, int] = field(default_factory=dict, init=False, repr=False)  # thread id → job id
    _retrying: set[int] = field(default_factory=set, init=False, repr=False)  # jobs /healthz names as to be retried

    @property
    def current_job(self) -> int | None:
        """A job this worker is analysing now (the oldest, when several threads are), for the process table."""
        with self._lock:
            return min(self._running.values(), default=None)

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
        with self._lock:
            self._running[threading.get_ident()] = job.id
        try:
            with health.stage_timer("total"):
                self.process(job)
        finally:
            with self._lock:
                self._running.pop(threading.get_ident(), None)
        return True

    def process(self, job: JobRow) -> None:
        """Run one claimed job to an outcome that the journal records (or that is kept until it does)."""
        outcome, previous = self._analyse(job)
        if isinstance(outcome, Analysed):
            outcome = self._finish(job, outcome, previous)
        if isinstance(outcome, (Ignored, Failed)):
            self._record(job, outcome)

    def profiles(self) -> set[encode.Profile]:
        """The distinct output profiles of the destinations (everything when there is none)."""
        return {frozenset(d.outputs) for d in self.config.destinations} or {FULL_PROFILE}

    def _analyse(self, job: JobRow) -> tuple[Analysed | Unfinished, ResultObject | None]:
        """The pipeline on the job's spooled instances, and the earlier SR that its result supersedes."""
        refused = pipeline.incomplete_refused(job.warning, self.config.incomplete_policy)
        if refused is not None:
            return refused, None
        try:
            source = SeriesSource(job.study_uid, job.series_uid,
                                  tuple((i.sop_uid, i.path) for i in self.journal.instances(job.series_uid)))
            previous = self.journal.previous_sr(job.series_uid, job.generation)
        except Exception as exc:
            return failure(Stage.READ, exc), None
        outcome = pipeline.run(source, self.context, profiles=self.profiles(), completion_warning=job.warning,
                               earlier=lambda: [pydicom.dcmread(previous.path)] if previous else [])
        if isinstance(outcome, Failed) and outcome.stage is Stage.READ and outcome.error == "FileNotFoundError":
            outcome = _missing_from_spool(source) or outcome
        return outcome, previous

    def _finish(self, job: JobRow, analysed: Analysed, previous: ResultObject | None) -> Failed | None:
        """Store the objects, build the rejection notes and journal the job as done; a :class:`Failed` if
        any of that fails (the files it wrote are removed again: nothing refers to them)."""
        result = analysed.result
        written: list[Path] = []
        outputs: dict[str, ResultObject] = {}  # by SOP Instance UID: profiles share their common objects
        deliveries: list[tuple[str, str]] = []
        stage = Stage.STORE
        try:
            for profile, encoded in analysed.encoded.items():
                for kind, ds in encoded.items():
                    uid = str(ds.SOPInstanceUID)
                    if uid not in outputs:
                        supersedes = previous.sop_uid if previous is not None and kind is OutputKind.SR else None
                        outputs[uid] = ResultObject(uid, kind, str(ds.SOPClassUID), self._store(ds, written),
                                                    supersedes)
                    deliveries += [(uid, d.name) for d in self.config.destinations if d.outputs == profile]
            stage = Stage.JOURNAL
            summary = summarise(result).for_job(job.warning)
            for tries_left in (2, 1, 0):  # earlier results delivered meanwhile: build the notes again
                stage = Stage.SUPERSEDE
                supersede = (self._supersession(job, analysed.seed, written, outputs.values())
                             if job.generation > 1 else None)
                stage = Stage.JOURNAL
                try:
                    self.journal.finish_job(
                        job, JobState.DONE, routing=result.routing.kind.value, rule_id=result.routing.rule_id,
                        detail=result.routing.reason,  # why it was analysed, as analyze's table says it
                        model=(result.model.name, result.model.version, result.model.sha256),
                        ruleset_version=result.ruleset.version, summary=summary, outputs=list(outputs.values()),
                        deliveries=deliveries, supersede=supersede,
                    )
                    break
                except StaleSupersession:
                    stale = {r.note.path for r in (supersede.rejections if supersede else ())} & set(written)
                    _remove(stale)
                    written[:] = [p for p in written if p not in stale]
                    if not tries_left:
                        raise
        except LeaseLost:  # another worker has the job now; what we wrote has its UIDs: theirs too, kept
            event(log, "job_lease_lost", logging.WARNING, job_id=job.id, series_uid=job.series_uid)
            return None
        except CommitOutcomeUnknown as exc:  # the job may be done, its outputs queued for sending: files kept
            return failure(stage, exc)  # (tried again; if it was done, that is stale; else the orphan sweep)
        except Exception as exc:  # every failure ends the job: failed, or retried if the environment failed
            _remove(written)
            return failure(stage, exc)
        with self._lock:
            self._retrying.clear()
        health.clear_problem(HEALTH_COMPONENT)  # a job went through: the environment works
        event(log, "analysis_done", job_id=job.id, series_uid=job.series_uid, task=summary.task,
              wml_ml=summary.wml_ml, cmb_count=summary.cmb_count, seconds=summary.seconds,
              outputs=len(outputs), supersedes=previous.sop_uid if previous else "",
              rejection_notes=len(supersede.rejections) if supersede else 0)
        self._shadow(job, analysed)
        return None

    def _store(self, ds: pydicom.Dataset, written: list[Path]) -> Path:
        """Write a produced object into the results spool; ``written`` collects files new to this job."""
        uids = (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))
        path = self.spool.path_for(self.spool.results, *uids)
        if not path.exists():  # an identical earlier object (same UIDs) is never ours to remove
            written.append(path)
        self.spool.write(self.spool.results, *uids, encode.to_bytes(ds))
        return path

    def _supersession(self, job: JobRow, seed: str, written: list[Path],
                      outputs: Iterable[ResultObject]) -> Supersession:
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
            rejections.append(Rejection(ResultObject(str(note.SOPInstanceUID), OutputKind.REJECTION,
                                                     str(note.SOPClassUID), path), tuple(rejects)))
        return Supersession(names, tuple(rejections))

    # ------------------------------------------------------------------ outcomes
    def _record(self, job: JobRow, outcome: Unfinished) -> bool:
        """Journal an outcome and log its one line; if the journal refuses, keep it for later."""
        stage = self._stage_of(outcome)
        try:
            state = self._write(job, outcome)
        except LeaseLost:  # its lease ran out: another worker has the job, this outcome is not recorded
            state = None
        except Exception as exc:  # the journal itself failed (full disk, I/O error): keep the outcome
            if not transient(exc) and self._record_plainly(job, outcome, exc):
                return True
            with self._lock:
                first = job.id not in self._unrecorded
                self._unrecorded[job.id] = (job, outcome, transient(exc))
            if first:  # one line per job, not one per retry of the journal
                event(log, "job_outcome_unrecorded", logging.ERROR, job_id=job.id, series_uid=job.series_uid,
                      stage=stage, outcome=self._state_of(outcome).value, journal_error=reason_of(exc),
                      where=where(exc))
            return False
        with self._lock:
            self._unrecorded.pop(job.id, None)
        if state is None:  # no longer running: someone else (an admin, a recovery) has settled it
            self._settled(job.id)
            event(log, "job_outcome_stale", logging.WARNING, job_id=job.id, series_uid=job.series_uid,
                  stage=stage, outcome=self._state_of(outcome).value)
        elif isinstance(outcome, Ignored):
            self._settled(job.id)
            event(log, "series_ignored", job_id=job.id, series_uid=job.series_uid, rule=outcome.rule_id,
                  reason=outcome.reason)
        elif state is JobState.PENDING:
            with self._lock:
                self._retrying.add(job.id)
            health.report_problem(HEALTH_COMPONENT, f"job {job.id} will be retried after {stage}: {outcome.reason}")
            event(log, "analysis_retry", logging.WARNING, job_id=job.id, series_uid=job.series_uid,
                  stage=stage, attempt=job.attempts + 1, max_attempts=self.max_attempts,
                  retry_in_s=self._delay(job), error=outcome.error, reason=outcome.reason, where=outcome.where)
        else:
            gave_up = outcome.transient  # a transient failure, but the last attempt allowed
            if not gave_up:
                self._settled(job.id)
            level = logging.WARNING if outcome.expected else logging.ERROR
            event(log, "analysis_failed", level, job_id=job.id, series_uid=job.series_uid, stage=stage,
                  error=outcome.error, reason=outcome.reason, where=outcome.where,
                  **({"gave_up_after_attempts": job.attempts + 1} if gave_up else {}))
        return True

    def _settled(self, job_id: int) -> None:
        """A job /healthz named as to be retried ended for a reason of its own (its input, its model): the problem
        it reported is over unless another job's retry stands (a job that ends done clears it in any case)."""
        with self._lock:
            if job_id not in self._retrying:
                return
            self._retrying.discard(job_id)
            if self._retrying:
                return
        health.clear_problem(HEALTH_COMPONENT)

    def _record_plainly(self, job: JobRow, outcome: Unfinished, refusal: Exception) -> bool:
        """The journal refused the outcome for what it holds, not for its own state (a value it cannot store; a
        retry would be refused again): the job fails with a plain reason instead, so that it never stays running.
        False when the journal refuses that too (the outcome is then kept, as for a full disk)."""
        stage = self._stage_of(outcome)
        detail = (f"{stage} ended as {self._state_of(outcome).value}, but the journal refused that outcome: "
                  f"{type(refusal).__name__} (the log has the reason, job_outcome_refused)")
        try:
            self.journal.finish_job(job, JobState.FAILED, detail=detail)
            name = "job_outcome_refused"
        except LeaseLost:  # another worker has the job: nothing of this run is recorded, as with any lapsed lease
            name = "job_outcome_stale"
        except Exception:
            return False
        with self._lock:
            self._unrecorded.pop(job.id, None)
        event(log, name, logging.ERROR, job_id=job.id, series_uid=job.series_uid, stage=stage,
              outcome=self._state_of(outcome).value, journal_error=reason_of(refusal), where=where(refusal))
        return True

    @staticmethod
    def _stage_of(outcome: Unfinished) -> Stage:
        """The stage an outcome ended in (an ignored series ended at routing)."""
        return outcome.stage if isinstance(outcome, Failed) else Stage.ROUTE

    @staticmethod
    def _state_of(outcome: Unfinished) -> JobState:
        if isinstance(outcome, Ignored):
            return JobState.IGNORED
        return JobState.PENDING if outcome.transient else JobState.FAILED

    def _write(self, job: JobRow, outcome: Unfinished) -> JobState | None:
        """The outcome into the journal: the job's state now (None: it was no longer running)."""
        if isinstance(outcome, Ignored):
            self.journal.finish_job(job, JobState.IGNORED, routing=RouteKind.IGNORED.value, rule_id=outcome.rule_id,
                                    detail=outcome.reason)
            return JobState.IGNORED
        if outcome.transient:
            return self.journal.retry_job_later(job, f"{outcome.stage}: {outcome.reason}", self._delay(job),
                                                self.max_attempts)
        routed = outcome.routing
        self.journal.finish_job(job, JobState.FAILED, detail=outcome.detail,  # where it was routed, when it was
                                routing=routed.kind.value if routed else None,
                                rule_id=routed.rule_id if routed else None)
        return JobState.FAILED

    def _delay(self, job: JobRow) -> float:
        return min(self.backoff_cap_seconds, self.backoff_seconds * 2 ** job.attempts)

    def _record_unrecorded(self) -> bool:
        """Record outcomes the journal refused earlier. False while the journal still refuses one
        for a transient reason (a full disk): no new job is claimed until it takes them."""
        with self._lock:  # one thread records each kept outcome: twice would journal it, then call it stale
            kept = [(job, outcome) for job, outcome, _ in self._unrecorded.values() if job.id not in self._recording]
            self._recording.update(job.id for job, _ in kept)
        try:
            for job, outcome in kept:
                self._record(job, outcome)
        finally:
            with self._lock:
                self._recording.difference_update(job.id for job, _ in kept)
        with self._lock:
            return not any(is_transient for _, _, is_transient in self._unrecorded.values())

    def _shadow(self, job: JobRow, analysed: Analysed) -> None:
        """Run the shadow (candidate) model version, if one is set, after the active result is journalled.

        Its summary is stored beside the active one for `svdmark models compare`; nothing is sent.
        """
        try:
            from .shadow import run_shadow

            run_shadow(self.context, self.journal, self.config.data_dir, job.id, analysed.series, analysed.result)
        except Exception as exc:  # a shadow must never disturb the live service; no traceback: it may quote values
            event(log, "shadow_failed", logging.WARNING, series_uid=job.series_uid, reason=reason_of(exc))


def _missing_from_spool(source: SeriesSource) -> Failed | None:
    """A read that failed on a missing file: how many of the instances the journal holds for the series are not in
    the spool (a :class:`SpoolDamaged` failure), instead of the bare FileNotFoundError of the first."""
    missing = [uid for uid, path in source.instances if not os.path.exists(path)]
    if not missing:
        return None
    return failure(Stage.READ, SpoolDamaged(
        f"{len(missing)} of the series' {len(source.instances)} stored instances are missing from the spool "
        f"(removed outside svdmark?), the first {missing[0]}; send the series again"))


def _remove(paths: Iterable[Path]) -> None:
    for p in paths:
        try:
            p.unlink()
        except OSError:  # already gone, or the disk is failing: a leftover, never a referenced file
            pass


"""``svdmark analyze``: the service's pipeline over folders and zip files, with a results table.

Per series: read the header and route it (``pipeline.read_header``, ``route.decide``) → if it would be
analysed with the same model (name, version, sha256), rule set and instances as a finished earlier run,
reuse that run's row; otherwise ``pipeline.run`` with that decision (the rest of the service's path, the
same UIDs, so the same objects; the full output profile) → write the outputs into a staging folder and
rename it into place → record the series as done. Completion is recorded only after the outputs are in
place, so Ctrl-C at any moment loses at most the series in hand, and a re-run redoes exactly those. A
failure at any stage, writing included, is the series' ``failed`` row with the reason
(``pipeline.failure``, the service's error policy).

Beside the tables: ``notes.*`` (warnings and quality reasons, one per row), ``dictionary.csv``
(every column's type, unit and meaning), ``rules.json`` (the rule constants) and ``run.json``.
Every output file gets the mode the starting umask allows (``batch.files``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from .. import __version__, logs, phi, route
from ..config import Config
from ..domain import ModelSpec, OutputKind, RouteKind, RoutingDecision, iso_utc
from ..errors import ModelError
from ..failures import reason_of
from ..infer.registry import manifest_digest
from . import table as T
from .acquisition import descriptors
from .dictionary import rules_metadata, write_beside
from .discover import FileError, SeriesGroup, discover
from .progress import Progress
from .state import RunState, key_fingerprint, resolve_key, write_json

if TYPE_CHECKING:  # pragma: no cover
    from pydicom import Dataset

    from ..rules import RuleSet

log = logging.getLogger("svdmark.analyze")


@dataclass
class RunReport:
    out_dir: Path
    rows: list[dict] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)
    counts: dict = field(default_factory=dict)
    interrupted: bool = False
    internal_failures: int = 0
    tables: list[Path] = field(default_factory=list)
    key_source: str = ""
    seconds: float = 0.0

    @property
    def nothing_analysed(self) -> bool:
        return not self.interrupted and not self.counts.get("analysed")

    def as_dict(self) -> dict:
        return {"output": str(self.out_dir), "complete": not self.interrupted, "counts": self.counts,
                "tables": [str(p) for p in self.tables], "pseudonym_key": self.key_source,
                "seconds": round(self.seconds, 2)}


# --------------------------------------------------------------------------- per-series work
_CTX = None  # the pipeline context of this process (built once per worker process)


def _context(config: Config):
    global _CTX
    if _CTX is None:
        from ..pipeline import build_context

        _CTX = build_context(config)
    return _CTX


def _init_worker(config: Config, threads: int, log_format: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what an interrupt means
    os.environ.setdefault("SVDMARK_INFER_THREADS", str(threads))
    logs.setup("ERROR", log_format)  # same one-line format as the parent; the tables tell the rest
    _context(config)


def analyse_group(group: SeriesGroup, out_dir: str, config: Config, constants: frozenset = frozenset(),
                  decision: RoutingDecision | None = None) -> dict:
    """Analyse one series (routed already when ``decision`` is given) and write its outputs; returns its
    table row, ``failed`` with the reason for any failure."""
    from .. import pipeline
    from ..pipeline import Failed, Ignored, Stage, failure
    from ..summary import summarise

    t0 = time.perf_counter()
    row = identity_row(group)
    if decision is not None:  # a failure keeps where the series was routed
        row.update(routing_row(decision))
    warning = group.completion_warning
    refused = pipeline.incomplete_refused(warning, config.incomplete_policy)
    if refused is not None:
        return _failed(row, refused)
    try:
        ctx = _context(config)
    except Exception as exc:  # the models' runtime cannot start here
        return _failed(row, failure(Stage.INFER, exc))
    outcome = pipeline.run(group.series_source(), ctx, decision=decision, completion_warning=warning)
    if isinstance(outcome, Ignored):
        row.update(status=T.IGNORED, routing=RouteKind.IGNORED.value, rule_id=outcome.rule_id, reason=outcome.reason,
                   task=None)
        return row
    if isinstance(outcome, Failed):
        return _failed(row, outcome)
    result = outcome.result
    (encoded,) = outcome.encoded.values()
    summary = summarise(result)
    T.fill_from_summary(row, summary, constants)
    row.update(routing_row(result.routing), status=T.ANALYSED, svdmark_version=__version__)
    try:
        row.update(write_outputs(Path(out_dir), group, encoded.items()))
    except Exception as exc:
        return _failed(identity_row(group) | routing_row(result.routing), failure(Stage.STORE, exc))
    row["sr_sop_uid"] = str(encoded.sr.SOPInstanceUID) if encoded.sr is not None else None
    row["analysed_at"] = iso_utc()
    row["total_seconds"] = round(time.perf_counter() - t0, 3)
    key = run_key(group, result.model, ctx.rules, result.routing, config)
    try:
        RunState(Path(out_dir)).mark_done(group.series_uid, key, row)  # only now is the series finished
    except Exception as exc:
        return _failed(identity_row(group) | routing_row(result.routing), failure(Stage.JOURNAL, exc))
    return row


def _failed(row: dict, failed) -> dict:
    """A failed row: the reason as it is for bad input or a model problem, else marked as internal."""
    cause = {"input": "data", "model": "model"}.get(failed.blame, "internal")
    row.update(status=T.FAILED, reason=failed.reason if cause != "internal" else f"internal error: {failed.reason}",
               _failure=cause)
    return row


def write_outputs(out_dir: Path, group: SeriesGroup, items: Iterable[tuple[OutputKind, Dataset]]) -> dict:
    """Write SR/SEG/summary into ``dicom/<study>/<series>/`` atomically (staging folder, then rename)."""
    from ..encode import to_bytes

    study_dir = out_dir / "dicom" / group.study_uid
    final = study_dir / group.series_uid
    staging = study_dir / f".staging-{group.series_uid}-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    files = {}
    try:
        for kind, ds in items:
            data = to_bytes(ds)
            with open(staging / f"{kind}.dcm", "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            files[f"{kind}_file"] = str(Path("dicom") / group.study_uid / group.series_uid / f"{kind}.dcm")
        old = None
        if final.exists():
            old = study_dir / f".old-{group.series_uid}-{uuid.uuid4().hex[:8]}"
            os.replace(final, old)
        os.replace(staging, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        fd = os.open(study_dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return files


def routing_row(decision: RoutingDecision) -> dict:
    """The table's routing columns of a decision."""
    task = decision.kind.task
    return {"routing": decision.kind.value, "rule_id": decision.rule_id, "reason": decision.reason,
            "task": task.value if task is not None else None}


def identity_row(group: SeriesGroup) -> dict:
    first = group.first
    return T.base_row(study_uid=group.study_uid, series_uid=group.series_uid, series_number=first.series_number,
                      series_description=first.series_description, patient_pseudonym=first.patient_pseudonym or None,
                      modality=first.modality, n_instances=len(group.instances), status=T.PENDING)


TABLE_VERSION = 3  # the row's shape; a row from another shape is not reused (the series is analysed again)


def run_key(group: SeriesGroup, model: ModelSpec, rules: RuleSet, decision: RoutingDecision, config: Config) -> dict:
    """What a finished row was made from: a row is reused only when all of it is the same now (the files' bytes,
    the model file and its manifest, the rule set's content (a site's copy may keep the version it copied), the
    routing decision, and the settings that change a row: when flags attach, and for an incomplete series what the
    policy does with it)."""
    content = json.dumps(rules_metadata(rules), sort_keys=True, default=str)
    return {"model_name": model.name, "model_version": model.version, "model_sha256": model.sha256,
            "manifest_sha256": manifest_digest(model), "ruleset_version": rules.info.version,
            "ruleset_sha256": hashlib.sha256(content.encode()).hexdigest(), "routing": routing_row(decision),
            "instances": group.fingerprint, "table_version": TABLE_VERSION,
            "flags": [config.flag_applicability, dict(sorted(config.flag_conditions.items()))],
            "incomplete_policy": config.incomplete_policy if group.completion_warning else None}


# --------------------------------------------------------------------------- the run
class Runner:
    def __init__(self, config: Config, out_dir: Path, workers: int = 1, key_file: Path | None = None,
                 progress: bool = True, force: bool = False, shift_dates: bool = False):
        self.config = config
        self.shift_dates = shift_dates
        self.out = Path(out_dir)
        self.workers = max(1, workers)
        self.key_file = key_file
        self.progress = progress
        self.force = force

    def say(self, text: str) -> None:
        if self.progress:
            print(text, file=sys.stderr, flush=True)

    def run(self, paths: list[Path]) -> RunReport:
        t_start = time.perf_counter()
        self.out.mkdir(parents=True, exist_ok=True)
        state = RunState(self.out)
        state.clean_staging()
        key, key_source = resolve_key(self.key_file, self.out / ".pseudonym.key")
        report = RunReport(self.out, key_source=key_source)

        # 1. find and check every file
        groups, file_errors, stats = find_series(state, paths, key, self.progress)
        self.say(f"analyze: {stats['files']} file(s), {len(groups)} series, {stats['unusable']} file(s) not usable")
        report.errors = [e.as_row() for e in file_errors]

        # 2. route each series from its header; reuse finished work
        from ..infer import ModelRegistry
        from ..infer.registry import managed
        from ..pipeline import read_header
        from ..rules import RuleSet

        table = route.RoutingTable.load(self.config.routing_file)
        registry = managed(ModelRegistry(self.config.models_dir), self.config.data_dir)
        rules = RuleSet.load(self.config.rules_file)
        ruleset = rules.info
        constants = frozenset(T.rule_constants(rules))
        rows: dict[str, dict] = {}
        acquisition: dict[str, dict] = {}
        todo: list[tuple[SeriesGroup, RoutingDecision]] = []
        models: dict = {}
        wanted: dict[str, dict] = {}
        for g in groups:
            row = identity_row(g)
            try:
                header = read_header(g.series_source())
            except Exception as exc:  # the file was readable a moment ago; say what happened
                row.update(status=T.FAILED, reason=f"cannot read header of {g.first.source.name}: {reason_of(exc)}")
                rows[g.series_uid] = row
                continue
            acquisition[g.series_uid] = descriptors(header, key, self.shift_dates)
            decision = route.decide(header, table)
            if decision.kind is RouteKind.IGNORED:
                row.update(routing_row(decision), status=T.IGNORED)
                rows[g.series_uid] = row
                continue
            task = decision.kind.task
            if task not in models:
                try:
                    models[task] = registry.active(task)
                except ModelError as exc:
                    models[task] = exc
            model = models[task]
            if isinstance(model, ModelError):
                row.update(routing_row(decision), status=T.FAILED, reason=str(model), _failure="model")
                rows[g.series_uid] = row
                continue
            done = None if self.force else state.done(g.series_uid)
            want = run_key(g, model, rules, decision, self.config)
            if done and done.get("key") == want and self._outputs_exist(done.get("row", {})):
                kept = dict(done["row"])
                kept["patient_pseudonym"] = row["patient_pseudonym"]  # the key may have changed
                rows[g.series_uid] = kept
                continue
            rows[g.series_uid] = row  # pending until analysed
            wanted[g.series_uid] = want
            todo.append((g, decision))
        skipped = sum(1 for r in rows.values() if r["status"] == T.ANALYSED)
        if skipped:
            self.say(f"analyze: {skipped} series already analysed with the same model; skipping them")

        # 3. analyse what is left
        bar = Progress(len(todo), "analyze", enabled=self.progress)
        if todo:
            bar.step("", n=0)  # draw the empty bar before the first (slow) series
        try:
            for row in self._execute(todo, constants):
                rows[row["series_uid"]] = row
                bar.step(_note(row))
        except KeyboardInterrupt:
            report.interrupted = True
            for uid, want in wanted.items():  # finished by a worker after the parent stopped listening
                done = state.done(uid)
                if rows[uid]["status"] == T.PENDING and done and done.get("key") == want:
                    rows[uid] = dict(done["row"], patient_pseudonym=rows[uid]["patient_pseudonym"])
        finally:
            bar.close()

        # 4. tables
        ordered = [rows[g.series_uid] for g in groups]
        for r in ordered:
            if r["status"] == T.FAILED:
                report.errors.append({"file": _series_folder(next(g for g in groups if g.series_uid == r["series_uid"])),
                                      "series_uid": r["series_uid"], "study_uid": r["study_uid"], "sop_uid": "",
                                      "reason": f"series not analysed: {r['reason']}"})
                if r.get("_failure") in ("model", "internal"):
                    report.internal_failures += 1
        for r in ordered:  # descriptors from the header read now (a reused row may predate them)
            r.update(acquisition.get(r["series_uid"], {}))
            r["svdmark_version"] = r.get("svdmark_version") or __version__  # a reused row keeps its analyser's
        clean = [{k: v for k, v in r.items() if not k.startswith("_")} for r in ordered]
        report.rows = clean
        results = T.frame(ordered, T.result_columns(rules))
        report.tables = T.write_tables(results, self.out / "results")
        report.tables += T.write_tables(T.frame(report.errors, T.ERROR_COLUMNS), self.out / "errors")
        report.tables += T.write_tables(T.frame(T.notes(ordered), T.NOTE_COLUMNS), self.out / "notes")
        report.tables += write_beside(self.out / "results", results, rules)
        counts = {s: sum(1 for r in clean if r["status"] == s) for s in (T.ANALYSED, T.IGNORED, T.FAILED, T.PENDING)}
        elsewhere = len(state.finished() - {g.series_uid for g in groups})
        if elsewhere:
            self.say(f"analyze: {elsewhere} series analysed into {self.out} by earlier runs are not in these inputs and"
                     " not in this table (their results stay under dicom/); give every input in one run for one table")
        counts.update(series=len(clean), files=stats["files"], file_errors=stats["unusable"],
                      duplicates=stats["duplicates"], reused=skipped, not_in_inputs=elsewhere)
        report.counts = counts
        report.seconds = time.perf_counter() - t_start
        write_json(self.out / "run.json", {
            "svdmark": __version__, "inputs": [str(p) for p in paths], "complete": not report.interrupted,
            "counts": counts, "ruleset": {"id": ruleset.id, "version": ruleset.version},
            "models": {t.value: (m.label + " sha256:" + m.sha256 if not isinstance(m, Exception) else str(m))
                       for t, m in models.items()},
            "pseudonym_key": key_source, "dates_shifted": self.shift_dates, "finished_at": iso_utc(),
        })
        return report

    def _outputs_exist(self, row: dict) -> bool:
        return all((self.out / row[k]).is_file() for k in ("sr_file", "seg_file", "summary_file") if row.get(k))

    def _execute(self, todo: list[tuple[SeriesGroup, RoutingDecision]], constants: frozenset):
        if not todo:
            return
        if self.workers == 1 or len(todo) == 1:
            for g, decision in todo:
                yield analyse_group(g, str(self.out), self.config, constants, decision)
            return
        pool = self._pool(len(todo))
        pending: dict[Future, tuple[SeriesGroup, RoutingDecision]] = {}
        queue = list(todo)
        suspects: list[tuple[SeriesGroup, RoutingDecision]] = []  # in flight when a worker died: each again, alone
        try:
            while queue or pending or suspects:
                alone = bool(suspects) and not pending
                broken = []
                try:
                    if alone:
                        work = suspects.pop(0)
                        pending[_submit(pool, work[0], str(self.out), self.config, constants, work[1])] = work
                    while not alone and not suspects and queue and len(pending) < 2 * self.workers:  # bounded
                        work = queue.pop(0)
                        pending[_submit(pool, work[0], str(self.out), self.config, constants, work[1])] = work
                except BrokenProcessPool:  # a worker died since the last wait: the pool takes nothing more
                    broken.append(work)
                finished = wait(pending, return_when=FIRST_COMPLETED)[0] if pending and not broken else set()
                for f in [f for f in pending if f in finished]:  # in the order submitted: suspects run in that order
                    work = pending.pop(f)
                    try:
                        yield f.result()
                    except BrokenProcessPool:
                        broken.append(work)
                if not broken:
                    continue
                if alone:  # it died with this series alone in it: this series killed it
                    g, decision = broken[0]
                    yield _worker_died(g, decision)
                else:  # one of those in flight killed it: each runs again alone to find which
                    suspects += broken + list(pending.values())
                    pending.clear()
                _stop_pool(pool)
                pool = self._pool(len(queue) + len(suspects))
        except BaseException:
            _stop_pool(pool)
            raise
        pool.shutdown(wait=True)

    def _pool(self, n: int) -> ProcessPoolExecutor:
        import multiprocessing as mp

        threads = max(1, (os.cpu_count() or 1) // self.workers)
        return ProcessPoolExecutor(max_workers=max(1, min(self.workers, n)), mp_context=mp.get_context("spawn"),
                                   initializer=_init_worker, initargs=(self.config, threads, logs.chosen_format()))


def _submit(pool: ProcessPoolExecutor, *args) -> Future:
    """``analyse_group(*args)`` in ``pool``. A worker process it starts ignores Ctrl-C from birth (the terminal
    sends SIGINT to the whole process group; this process stops the workers itself), not only once its initializer
    has run: a disposition of SIG_IGN is inherited, and Python then installs no handler of its own."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set a handler
        return pool.submit(analyse_group, *args)
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return pool.submit(analyse_group, *args)
    finally:
        signal.signal(signal.SIGINT, before)


def _stop_pool(pool: ProcessPoolExecutor) -> None:
    """Its processes terminated; its futures end as broken (not cancelled first: the executor's own thread then
    fails to set them, printing a traceback on an interrupt)."""
    for p in list(getattr(pool, "_processes", {}).values()):
        p.terminate()
    pool.shutdown(wait=False)


def _worker_died(group: SeriesGroup, decision: RoutingDecision) -> dict:
    """The row of a series whose worker process died while it alone was being analysed (killed: out of memory?)."""
    from ..pipeline import Failed, Stage

    row = identity_row(group) | routing_row(decision)
    return _failed(row, Failed(Stage.INFER, "the worker process analysing this series died (killed, or out of "
                                            "memory: try --workers 1)", "BrokenProcessPool", blame="environment"))


def find_series(state: RunState, paths: list[Path], key: bytes, progress: bool = True
                ) -> tuple[list[SeriesGroup], list[FileError], dict]:
    """Every series under ``paths`` (the output folder skipped), through the scan cache in ``state``, with a
    file counter on a terminal; returns :func:`discover`'s groups, errors and stats. An invalid UID met on the way
    (in a log line or an error row) is hashed under ``key``, so the run's tables and cache agree."""
    phi.install(key)
    key_id = key_fingerprint(key)
    counter = progress and sys.stderr.isatty()
    n_files = [0]

    def on_file(name: str) -> None:
        n_files[0] += 1
        if counter and n_files[0] % 25 == 0:
            sys.stderr.write(f"\rscan: {n_files[0]} files")
            sys.stderr.flush()

    stats: dict = {}
    groups, errors, cache = discover(paths, key, skip=[state.out], cache=state.load_scan_cache(key_id),
                                     on_file=on_file, stats=stats)
    state.save_scan_cache(key_id, cache)
    if counter:
        sys.stderr.write("\r" + " " * 40 + "\r")
    return groups, errors, stats


def _note(row: dict) -> str:
    uid = row["series_uid"]
    short = uid if len(uid) <= 24 else "…" + uid[-22:]
    if row["status"] == T.ANALYSED:
        if row.get("measurable") is False:
            what = f"not reliably measurable: {row.get('quality_reasons') or 'quality gate'}"
        elif row.get("wml_ml") is not None:
            what = f"WML {row['wml_ml']:.2f} mL"
        else:
            what = f"CMB {row.get('cmb_count')} (grade {row.get('cmb_grade')})"
        return f"{short} {what} ({row.get('seconds') or 0:.1f} s)"
    return f"{short} {row['status']}: {row.get('reason') or ''}"[:160]


def _series_folder(group: SeriesGroup) -> str:
    names = [i.source.path if i.source.member is None else i.source.name for i in group.instances]
    if len(names) == 1:
        return names[0]
    folders = [os.path.dirname(n) if "!" not in n else n.split("!")[0] for n in names]
    try:
        return os.path.commonpath(folders) or names[0]
    except ValueError:  # inputs given both ways (a/ and /abs/b): the absolute folder they share
        return os.path.commonpath([os.path.abspath(f) for f in folders])

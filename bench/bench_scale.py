"""Scaling out, as ratios measured in one run: analysis workers on one PostgreSQL journal against one process
on SQLite, and the PostgreSQL job queue alone against the SQLite one.

    .venv/bin/python bench/bench_scale.py [--studies 40] [--workers 1,2,4] [--repeats 1]
                                          [--jobs 2000] [--claimers 1,4,16] [--queue-repeats 3] [--history 0]
                                          [--parts queue,e2e] [--json FILE]

* **queue alone**: a fresh database holds ``--jobs`` empty jobs (one instance per series, queued through
  ``Journal.record_instance`` + ``Journal.queue_job``); K processes, each its own ``Journal(owner=…)``, then
  ``claim_job``, the worker's two look-ups of the series' earlier results (``previous_sr``, ``rejectable``) and
  ``finish_job(DONE)`` until none is left. Reported: jobs per second (each one claim, two look-ups and one
  completion transaction), for K = ``--claimers`` on PostgreSQL and K = 1 on SQLite (the peer); each job must
  end done exactly once. ``--history H`` first adds H done jobs, each with its series and three results, as a
  journal in service for a while has: ``claim_job`` searches the jobs table, the look-ups the results table and
  the assembler's look-up (``polls_per_s``, measured before the drain) the series table, so their cost grows.
* **end to end**: ``--studies`` generated NCCT studies (one target series each) are sent with dcmtk storescu
  to a ``svdmark serve --roles receive`` process; then the workers start: 1 all-roles process on SQLite (the
  baseline), or N ``svdmark serve --roles assemble,work`` processes on PostgreSQL with one shared spool.
  Series per minute = series / (last ``finished_at`` - first ``started_at``) read from the journal's jobs.
  ``SVDMARK_INFER_THREADS`` = max(1, cores // workers), so that workers x threads is about the core count.
  Also reported: CPU seconds per series of the worker processes (user + system, start-up included), which
  other load on the machine changes less than it changes the wall clock.
* **queue capacity / analysis rate**: the best PostgreSQL queue rate over the best end-to-end rate measured
  on this machine (target: at least 100).

Everything runs on this machine: the PostgreSQL server (tests/pgserver.py, fsync on), the claimers and
the workers share its cores, so on a small machine more workers cannot scale past its core count.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "service"))
os.environ["TCP_NODELAY"] = "1"  # dcmtk reads it; without it storescu waits on delayed ACKs

from svdmark.domain import JobState, SeriesState  # noqa: E402
from svdmark.geometry import SliceGeometry  # noqa: E402
from svdmark.journal import Journal, JournalUnavailable  # noqa: E402
from svdmark.journal_engine import Engine  # noqa: E402
from svdmark_phantom import write_study  # noqa: E402
from tests.peers import Svdmark, storescu, wait_until  # noqa: E402
from tests.pgserver import PostgresServer  # noqa: E402

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
FINISHED = (JobState.DONE.value, JobState.FAILED.value, JobState.IGNORED.value)


@dataclass(frozen=True)
class QueueRun:
    """K claimers draining ``jobs`` empty jobs from one journal."""

    engine: str
    claimers: int
    jobs: int
    seconds: float
    polls_per_s: float = 0.0  # the assembler's look-up of the series still receiving, before the drain

    @property
    def rate(self) -> float:
        """Jobs claimed and finished per second."""
        return self.jobs / self.seconds


@dataclass(frozen=True)
class EndToEndRun:
    """Workers analysing ``series`` queued series; the window runs from the first claim to the last finish."""

    journal: str
    workers: int
    threads: int  # SVDMARK_INFER_THREADS of each worker process
    series: int
    seconds: float
    states: dict[str, int]
    cpu_seconds: float  # user + system time of the worker processes, start-up included
    load: float  # the machine's 1-minute load average when the workers started

    @property
    def per_minute(self) -> float:
        return 60.0 * self.series / self.seconds

    @property
    def cpu_per_series(self) -> float:
        return self.cpu_seconds / self.series


# ------------------------------------------------------------------------------------------- queue alone
def fill_queue(url: str, n: int) -> None:
    """``n`` pending jobs, each for a one-instance series (no files behind them: nobody analyses these)."""
    journal = Journal(url, owner="bench-filler")
    try:
        for i in range(n):
            series = f"2.25.{i + 1}"
            journal.record_instance(sop_uid=f"{series}.1", study_uid=f"{series}.0", series_uid=series,
                                    sop_class=CT_IMAGE_STORAGE, transfer_syntax=EXPLICIT_VR_LE,
                                    path=Path("/dev/null"), size=0, digest=f"bench-{i}", modality="CT",
                                    geometry=SliceGeometry(), calling_ae=None)
        for series in journal.receiving_series():
            if journal.queue_job(series, "bench: empty job") is None:
                raise RuntimeError(f"series {series.series_uid} was not queued")
    finally:
        journal.close()


def add_history(url: str, n: int) -> None:
    """``n`` done jobs, each with its analysed series and its SR, SEG and summary: the past of a journal in service
    (a benchmark's shortcut, no real runs)."""
    if n <= 0:
        return
    engine, now = Engine(url), time.time()
    try:
        with engine.transaction() as db:
            db.execute(
                "INSERT INTO jobs (series_uid, study_uid, generation, state, completion, created_at, not_before,"
                " started_at, finished_at) WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)"
                " SELECT '2.25.0.9.' || i, '2.25.0.8.' || i, 1, ?, 'bench: history', ?, ?, ?, ? FROM n",
                (n, JobState.DONE.value, now, now, now, now))
            db.execute(
                "INSERT INTO series (series_uid, study_uid, modality, first_received, last_received, released, state)"
                " SELECT series_uid, study_uid, 'CT', ?, ?, 1, ? FROM jobs WHERE completion='bench: history'",
                (now, now, SeriesState.ANALYSED.value))
            db.execute(
                "INSERT INTO results (sop_uid, job_id, series_uid, kind, sop_class, path, created_at)"
                " SELECT '2.25.0.7.' || j.id || '.' || k.n, j.id, j.series_uid, k.kind, ?, '/dev/null', ? FROM jobs j"
                " CROSS JOIN (SELECT 1 AS n, 'sr' AS kind UNION ALL SELECT 2, 'seg' UNION ALL SELECT 3, 'summary') k"
                " WHERE j.completion='bench: history'", (CT_IMAGE_STORAGE, now))
    finally:
        engine.close()


def _claimer(url: str, owner: str, start, results) -> None:
    """One claiming process: open its journal, wait for the others, then claim and finish until none is left."""
    journal = Journal(url, owner=owner)
    start.wait()
    done = 0
    while (job := journal.claim_job()) is not None:
        # the look-ups a worker makes for each job: the SR it supersedes, the earlier results a destination holds
        journal.previous_sr(job.series_uid, job.generation)
        journal.rejectable(job.series_uid, job.generation, ["BENCH@127.0.0.1:104"])
        journal.finish_job(job, JobState.DONE)
        done += 1
    results.put((done, time.time()))
    journal.close()


def assembler_polls(url: str, seconds: float = 2.0) -> float:
    """How often per second one process can ask for the series still receiving (each assembler tick asks once)."""
    journal = Journal(url, owner="bench-assembler")
    try:
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            journal.receiving_series()
            n += 1
        return n / (time.perf_counter() - t0)
    finally:
        journal.close()


def drain(url: str, engine: str, claimers: int, jobs: int, history: int) -> QueueRun:
    """Time ``claimers`` processes draining the queue; every job must end done exactly once."""
    ctx = multiprocessing.get_context("fork")  # the claimers inherit the imports
    start, results = ctx.Barrier(claimers + 1), ctx.Queue()
    procs = [ctx.Process(target=_claimer, args=(url, f"bench-claimer-{k}", start, results))
             for k in range(claimers)]
    for p in procs:
        p.start()
    start.wait(timeout=120)  # every claimer has opened its journal
    t0 = time.time()
    outcomes = [results.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(60)
    claimed = sum(n for n, _ in outcomes)
    journal = Journal(url, owner="bench-checker")
    done = journal.counts()["jobs"].get(JobState.DONE.value, 0) - history
    journal.close()
    if claimed != jobs or done != jobs:
        raise RuntimeError(f"{engine}, {claimers} claimers: {claimed} claims and {done} done for {jobs} jobs")
    return QueueRun(engine, claimers, jobs, max(t for _, t in outcomes) - t0)


def queue_alone(pg: PostgresServer, work: Path, jobs: int, claimer_counts: list[int], repeats: int,
                history: int) -> list[QueueRun]:
    """The SQLite peer (1 claimer), then PostgreSQL with each claimer count; a fresh database for every run."""
    runs = []
    for r in range(repeats):
        plan = [("sqlite", 1)] + [("postgresql", k) for k in claimer_counts]
        for engine, k in plan:
            if engine == "sqlite":
                url = f"sqlite:///{work / f'queue-{r}.sqlite'}"
            else:
                url = pg.create_database(f"queue_{k}_{r}")
            t = time.perf_counter()
            fill_queue(url, jobs)
            add_history(url, history)
            filled = time.perf_counter() - t
            polls = assembler_polls(url)
            run = replace(drain(url, engine, k, jobs, history), polls_per_s=polls)
            print(f"  {engine:<10} claimers {k:>2}: {run.rate:8.1f} jobs/s ({jobs} jobs in {run.seconds:.2f} s;"
                  f" queued in {filled:.1f} s); assembler polls {run.polls_per_s:8.1f}/s", flush=True)
            runs.append(run)
    return runs


# ------------------------------------------------------------------------------------------- end to end
def generate(work: Path, studies: int, matrix: int, slices: int) -> list[Path]:
    """``studies`` NCCT studies, one target series each, without distractors; their files."""
    files: list[Path] = []
    for i in range(studies):
        st = write_study(work / "studies" / f"s{i:03d}", seed=900 + i, kind="ncct", vendor=("ge", "siemens")[i % 2],
                         distractors=False, matrix=matrix, n_slices=slices)
        files += sorted(Path(st.out_dir).rglob("*.dcm"))
    return files


def _settled(url: str, series: int) -> bool:
    try:
        jobs = Journal.read_counts(url).states["jobs"]
    except JournalUnavailable:  # not created yet
        return False
    return sum(jobs.get(s, 0) for s in FINISHED) >= series


def cpu_seconds(pid: int) -> float:
    """User + system time of a live process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def end_to_end(pg: PostgresServer | None, work: Path, label: str, files: list[Path], series: int,
               workers: int, cores: int, timeout: float) -> EndToEndRun:
    """Send every file to a receiver, then start the workers and wait until every series is finished."""
    base = work / label
    base.mkdir(parents=True)
    engine = "postgresql" if pg is not None else "sqlite"
    timing = ("--settle-seconds", "1", "--fallback-seconds", "15")
    if pg is not None:
        url = pg.create_database(label)
        shared = ("--journal", url, "--spool", str(base / "spool"), *timing)
    else:
        url = f"sqlite:///{(base / 'node' / 'journal.sqlite').resolve()}"
        shared = timing
    threads = max(1, cores // workers)
    env = {"SVDMARK_INFER_THREADS": str(threads)}
    receiver = Svdmark(base / ("receiver" if pg is not None else "node"), [], extra=shared, roles=("receive",))
    receiver.start()
    procs: list[Svdmark] = [receiver]
    try:
        storescu(files, receiver.port)
        if pg is None:  # one process owns a SQLite data directory: the all-roles process takes it over
            receiver.stop()
            procs = [Svdmark(base / "node", [], extra=shared, env=env)]
        else:
            procs += [Svdmark(base / f"worker{i}", [], extra=shared, env=env, roles=("assemble", "work"))
                      for i in range(workers)]
        starting = [p for p in procs if p.proc is None]
        load = os.getloadavg()[0]
        for p in starting:
            p.start()
        wait_until(lambda: _settled(url, series), timeout, f"{series} series analysed ({label})", interval=0.5)
        cpu = sum(cpu_seconds(p.proc.pid) for p in starting)
    finally:
        for p in procs:
            p.stop()
    journal = Journal(url, owner="bench-reader")
    history = journal.job_history()
    journal.close()
    states = dict(Counter(job.state.value for job in history))
    window = max(j.finished_at for j in history) - min(j.started_at for j in history)
    run = EndToEndRun(engine, workers, threads, len(history), window, states, cpu, load)
    print(f"  {engine:<10} workers {workers} x {threads} thread(s): {run.per_minute:6.1f} series/min"
          f" ({run.series} series in {window:.1f} s; {states}); {run.cpu_per_series:.2f} CPU s/series;"
          f" load average at start {load:.2f}", flush=True)
    return run


# ------------------------------------------------------------------------------------------- report
def _medians(runs: list, key, value) -> dict:
    """key(run) → median of value(run) over the repeats; SQLite first, then by count."""
    keys = sorted({key(r) for r in runs}, key=lambda k: (k[0] != "sqlite", k[1]))
    return {k: statistics.median(value(r) for r in runs if key(r) == k) for k in keys}


def report(queue: list[QueueRun], e2e: list[EndToEndRun], args, cores: int, load: tuple[float, ...]) -> dict:
    print(f"\n{platform.node()}, {cores} cores, {platform.processor() or platform.machine()};"
          f" load average before {load[0]:.2f}, after {os.getloadavg()[0]:.2f}")
    out: dict = {"cores": cores, "args": vars(args), "load_before": load[0], "load_after": os.getloadavg()[0]}
    best_queue = best_e2e = None
    if queue:
        rates = _medians(queue, lambda r: (r.engine, r.claimers), lambda r: r.rate)
        peer = rates[("sqlite", 1)]
        print(f"\nqueue alone: {args.jobs} empty jobs (one claim + one completion transaction each),"
              f" {args.history} done jobs already in the table, median of {args.queue_repeats}")
        print(f"{'journal':<12}{'claimers':>9}{'jobs/s':>10}{'vs SQLite, 1':>14}")
        for (engine, k), rate in rates.items():
            print(f"{engine:<12}{k:>9}{rate:10.1f}{rate / peer:14.2f}")
        best_queue = max(rate for (engine, _), rate in rates.items() if engine == "postgresql")
        out["queue"] = [asdict(r) | {"rate": r.rate} for r in queue]
    if e2e:
        key = lambda r: (r.journal, r.workers, r.threads)  # noqa: E731
        rates = _medians(e2e, key, lambda r: r.per_minute)
        cpu = _medians(e2e, key, lambda r: r.cpu_per_series)
        peer = rates[("sqlite", 1, cores)]
        print(f"\nend to end: {args.studies} NCCT series {args.matrix}x{args.matrix}x{args.slices},"
              f" median of {args.repeats}")
        print(f"{'journal':<12}{'workers':>8}{'threads':>8}{'series/min':>12}{'vs SQLite, 1':>14}{'CPU s/series':>14}")
        for k, rate in rates.items():
            engine, w, t = k
            print(f"{engine:<12}{w:>8}{t:>8}{rate:12.1f}{rate / peer:14.2f}{cpu[k]:14.2f}")
        best_e2e = max(rates.values()) / 60.0
        out["end_to_end"] = [asdict(r) | {"per_minute": r.per_minute} for r in e2e]
    analysis = best_e2e or args.analysis_rate
    if best_queue and analysis:
        ratio = best_queue / analysis
        source = "the best end-to-end rate above" if best_e2e else "--analysis-rate"
        print(f"\nqueue capacity / analysis rate: {best_queue:.1f} jobs/s / {analysis:.3f} series/s ({source})"
              f" = {ratio:.0f}x (target >= 100x)")
        out["queue_capacity_over_analysis_rate"] = ratio
    print(f"\nreproduce: .venv/bin/python bench/bench_scale.py {' '.join(sys.argv[1:])}")
    return out


def _counts(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--studies", type=int, default=40, help="NCCT series per end-to-end run")
    ap.add_argument("--matrix", type=int, default=128, help="rows and columns of the generated CT")
    ap.add_argument("--slices", type=int, default=24)
    ap.add_argument("--workers", type=_counts, default=[1, 2, 4], help="worker processes on PostgreSQL")
    ap.add_argument("--repeats", type=int, default=1, help="end-to-end runs of every configuration (median)")
    ap.add_argument("--jobs", type=int, default=2000, help="empty jobs per queue run")
    ap.add_argument("--claimers", type=_counts, default=[1, 4, 16], help="claiming processes on PostgreSQL")
    ap.add_argument("--queue-repeats", type=int, default=3, help="queue runs of every configuration (median)")
    ap.add_argument("--history", type=int, default=0, help="done jobs in the table before a queue run")
    ap.add_argument("--parts", default="queue,e2e", help="queue, e2e or both (comma-separated)")
    ap.add_argument("--analysis-rate", type=float, help="series/s to compare the queue with when e2e is not run")
    ap.add_argument("--timeout", type=float, default=900, help="seconds one end-to-end run may take")
    ap.add_argument("--json", type=Path, help="also write the runs here")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    cores = len(os.sched_getaffinity(0))
    load = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="svdmark-bench-scale-"))
    queue: list[QueueRun] = []
    e2e: list[EndToEndRun] = []
    with PostgresServer() as pg:
        if "e2e" in parts:
            print(f"generating {args.studies} NCCT studies {args.matrix}x{args.matrix}x{args.slices} in {work} ...",
                  flush=True)
            files = generate(work, args.studies, args.matrix, args.slices)
            print("end to end (series sent first, then the workers start):", flush=True)
            for r in range(args.repeats):
                e2e.append(end_to_end(None, work, f"sqlite_{r}", files, args.studies, 1, cores, args.timeout))
                for w in args.workers:
                    e2e.append(end_to_end(pg, work, f"pg_{w}_{r}", files, args.studies, w, cores, args.timeout))
        if "queue" in parts:
            print(f"queue alone ({args.jobs} empty jobs per run, {args.history} done jobs before):", flush=True)
            queue = queue_alone(pg, work, args.jobs, args.claimers, args.queue_repeats, args.history)
    out = report(queue, e2e, args, cores, load)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

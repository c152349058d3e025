"""Service benchmarks against real peers measured in the same run.

    .venv/bin/python bench/bench_service.py [--instances 400] [--repeats 3] [--ingest-only]

* ingest throughput (instances/s) for 1 and 4 concurrent dcmtk storescu associations carrying
  ``--instances`` uncompressed 512x512 CT instances in all, into three receivers:
  - ``svdmark serve --roles receive``: every instance fsynced (file and directory) and journalled
    (a committed row) before its C-STORE response;
  - dcmtk storescp set up to run as fast as it can (:data:`tests.peers.StoreSCP.FASTEST`: bit-preserving
    writes, no exec per file, no host lookup, largest PDU, a process per association), no fsync;
  - Orthanc with its default SQLite index and default storage settings;
  - with ``--floor``, also pynetdicom alone in this process: svdmark's AE, pacing and fast path
    (``receive/fastpath.py``), a C-STORE handler that answers 0x0000 and keeps nothing (the rate svdmark's
    own work is taken from).
  Every run sends instances with new UIDs (no receiver sees a duplicate) and starts with nothing
  left to write back (``sync``); the receivers take turns within each repeat in a rotating order,
  every receiver's count is checked after every run, and all senders and receivers run with
  TCP_NODELAY. The median of the repeats is reported.
* peak resident memory (VmHWM) of the receiving svdmark and Orthanc;
* unless ``--ingest-only``: end-to-end latency from the last instance sent to the SR's arrival at
  the destination, for one NCCT and one SWI series (median of repeats; settle time included), and
  the peak memory of a whole ``svdmark serve`` while it analyses.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["TCP_NODELAY"] = "1"  # dcmtk (storescu, storescp, Orthanc) reads it at every connection

import pydicom  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402

from svdmark_phantom import write_study  # noqa: E402
from tests.peers import (Orthanc, StoreSCP, Svdmark, free_port, run_storescu, storescu,  # noqa: E402
                         storescu_commands, wait_until)

CONCURRENCY = (1, 4)


@dataclass
class Receiver:
    """One receiver under test: where to send, and how many instances it holds so far."""
    name: str
    port: int
    aet: str
    stored: Callable[[], int]
    pid: int


class NullReceiver:
    """pynetdicom alone, in this process: svdmark's AE (contexts, PDU size, chunked receive, fast path) and pacing, and a
    C-STORE handler that answers 0x0000 and keeps nothing: the floor under svdmark's receive path."""

    def __init__(self, data_dir: Path):
        from pynetdicom import evt

        from svdmark.config import Config
        from svdmark.receive import pace
        from svdmark.receive.scp import build_ae

        self._count, self._pace = 0, pace.Pace()
        self.port = free_port()
        ae = build_ae(Config(host="127.0.0.1", port=self.port, data_dir=data_dir).validate())
        handlers = [(evt.EVT_C_STORE, self._store), (evt.EVT_ACCEPTED, lambda ev: self._pace.opened(ev.assoc)),
                    (evt.EVT_RELEASED, lambda ev: self._pace.closed(ev.assoc)),
                    (evt.EVT_ABORTED, lambda ev: self._pace.closed(ev.assoc))]
        self._server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=handlers,
                                       contexts=pace.shared_contexts(ae.supported_contexts))

    def _store(self, ev) -> int:
        self._count += 1
        return 0x0000

    def count(self) -> int:
        return self._count

    def stop(self) -> None:
        self._server.shutdown()


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Corpus:
    """Fresh copies of one CT series: new study, series and instance UIDs (and slice positions) per run."""

    def __init__(self, template: list[Path], out: Path):
        self.template = [pydicom.dcmread(p) for p in template]
        self.z0 = float(self.template[0].ImagePositionPatient[2])
        self.out = out

    def make(self, n: int, associations: int) -> list[list[Path]]:
        """``n`` instances split over ``associations`` series, one per association.

        The files of the run before are overwritten, never deleted: on ext4 without a journal (this VM's
        disk) every file created in a block group skips, one by one, the inodes deleted there in the last
        minutes (perf: ``find_inode_bit`` → ``recently_deleted``, a fifth of svdmark's CPU at four
        associations after the machine's own clean-ups), so the bench adds no deletions of its own between
        the receivers' runs."""
        study = generate_uid()
        sets = []
        for a in range(associations):
            series, folder = generate_uid(), self.out / f"{n}x{associations}" / f"a{a}"
            folder.mkdir(parents=True, exist_ok=True)
            files = []
            for i in range(n // associations):
                ds = self.template[i % len(self.template)]
                ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
                ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
                ds.InstanceNumber = i + 1
                ds.ImagePositionPatient = [*ds.ImagePositionPatient[:2], self.z0 + i * float(ds.SliceThickness)]
                files.append(folder / f"IM{i:05d}.dcm")
                ds.save_as(files[-1], enforce_file_format=True)
            sets.append(files)
        return sets


def ingest_rate(rx: Receiver, sets: list[list[Path]]) -> float:
    """Instances per second for len(sets) concurrent storescu associations; checks that all were stored."""
    n = sum(len(s) for s in sets)
    before = rx.stored()
    # the command lines (storescu_commands reads each file's transfer syntax) are built before the clock starts
    commands = [cmd for files in sets for cmd in storescu_commands(files, rx.port, aet=rx.aet)]
    threads = [threading.Thread(target=run_storescu, args=(cmd,)) for cmd in commands]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rate = n / (time.perf_counter() - t0)
    got = rx.stored() - before
    if got != n:
        raise SystemExit(f"{rx.name} stored {got} of {n} instances")
    return rate


def measure_ingest(receivers: list[Receiver], corpus: Corpus, n: int, repeats: int) -> dict[tuple[str, int], float]:
    """Median instances/s per (receiver, associations); receivers take turns, in a rotating order."""
    samples: dict[tuple[str, int], list[float]] = {}
    for conc in CONCURRENCY:
        for r in range(repeats):
            for rx in receivers[r % len(receivers):] + receivers[:r % len(receivers)]:
                sets = corpus.make(n, conc)
                os.sync()  # no receiver pays for the writeback of the files before it (the copies, a peer's)
                rate = ingest_rate(rx, sets)
                samples.setdefault((rx.name, conc), []).append(rate)
                print(f"  {rx.name:<9} {conc} association(s), run {r + 1}: {rate:7.1f} instances/s", flush=True)
    return {k: statistics.median(v) for k, v in samples.items()}


def measure_latency(svd: Svdmark, dest: StoreSCP, work: Path, repeats: int) -> dict[str, float]:
    latencies = {}
    for kind, vendor in (("ncct", "ge"), ("swi", "philips")):
        samples = []
        for r in range(repeats):
            st = write_study(work / f"lat-{kind}-{r}", seed=700 + r, kind=kind, vendor=vendor, distractors=False,
                             matrix=512 if kind == "ncct" else 256)
            before = set(dest.files())
            storescu(sorted(Path(st.out_dir).rglob("*.dcm")), svd.port)
            t0 = time.perf_counter()
            wait_until(lambda: any(p.name.startswith("SR") for p in set(dest.files()) - before), 600, "SR",
                       interval=0.05)
            samples.append(time.perf_counter() - t0)
        latencies[kind] = statistics.median(samples)
    return latencies


def spool_count(data_dir: Path) -> Callable[[], int]:
    incoming = data_dir / "spool" / "incoming"
    return lambda: sum(1 for _ in incoming.rglob("*.dcm")) if incoming.exists() else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--instances", type=int, default=400, help="instances per ingest run, split over the associations")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ingest-only", action="store_true", help="skip the end-to-end latency and memory figures")
    ap.add_argument("--no-orthanc", action="store_true", help="leave Orthanc out (not installed)")
    ap.add_argument("--floor", action="store_true", help="also pynetdicom alone (a handler that keeps nothing)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="svdmark-bench-"))
    print(f"generating a 512x512 NCCT series in {work} ...", flush=True)
    ct = write_study(work / "ct", seed=500, kind="ncct", vendor="siemens", distractors=False, matrix=512)
    corpus = Corpus(sorted(Path(ct.out_dir).rglob("*.dcm")), work / "send")

    scp = StoreSCP(work / "storescp", log_receptions=False, options=StoreSCP.FASTEST).start()
    rx_svd = Svdmark(work / "rx", [], roles=("receive",)).start()
    peers = [scp, rx_svd]
    receivers = [Receiver("svdmark", rx_svd.port, "SVDMARK", spool_count(rx_svd.data_dir), rx_svd.proc.pid),
                 Receiver("storescp", scp.port, scp.aet, lambda: sum(1 for _ in scp.folder.iterdir()), scp.proc.pid)]
    if not args.no_orthanc:
        orthanc = Orthanc.started(work / "orthanc")
        peers.append(orthanc)
        receivers.append(Receiver("Orthanc", orthanc.dicom_port, orthanc.aet, orthanc.instance_count, orthanc.proc.pid))
    if args.floor:
        floor = NullReceiver(work / "floor")
        peers.append(floor)
        receivers.append(Receiver("pynetdicom", floor.port, "SVDMARK", floor.count, os.getpid()))
    rows = []
    try:
        print(f"ingest: {args.instances} instances per run, {args.repeats} repeats", flush=True)
        rates = measure_ingest(receivers, corpus, args.instances, args.repeats)
        for conc in CONCURRENCY:
            ours = rates[("svdmark", conc)]
            rows.append((f"ingest, {conc} association(s)", "instances/s", ours,
                         *(rates.get((name, conc)) for name in ("storescp", "Orthanc"))))
            if args.floor:
                print(f"  pynetdicom alone, {conc} association(s): {rates[('pynetdicom', conc)]:.1f} instances/s "
                      f"(svdmark / pynetdicom alone: {ours / rates[('pynetdicom', conc)]:.2f})", flush=True)
        peak = {rx.name: peak_rss_mb(rx.pid) for rx in receivers
                if rx.name not in ("storescp", "pynetdicom")}  # storescp: per fork; pynetdicom: this process
        rows.append(("peak memory, receiving", "MiB", peak["svdmark"], None, peak.get("Orthanc")))
        if not args.ingest_only:
            dest = StoreSCP(work / "dest").start()
            peers.append(dest)
            svd = Svdmark(work / "data", [f"{dest.aet}@127.0.0.1:{dest.port}"],
                          extra=("--settle-seconds", "1", "--fallback-seconds", "30")).start()
            peers.append(svd)
            latencies = measure_latency(svd, dest, work, args.repeats)
            for kind, seconds in latencies.items():
                rows.append((f"end-to-end latency, {kind.upper()}", "s (median)", seconds, None, None))
            rows.append(("peak memory while analysing", "MiB", peak_rss_mb(svd.proc.pid), None, None))
    finally:
        for p in reversed(peers):
            p.stop()
    _print(rows)
    shutil.rmtree(work, ignore_errors=True)
    return 0


def _print(rows) -> None:
    def cell(v):
        return f"{v:10.1f}" if v is not None else f"{'-':>10}"

    def ratio(a, b):
        return f"{a / b:9.2f}" if a is not None and b else f"{'-':>9}"

    print(f"\n{'figure':<32}{'unit':<13}{'svdmark':>10}{'storescp':>10}{'Orthanc':>10}"
          f"{'/storescp':>10}{'/Orthanc':>9}")
    for name, unit, ours, scp, orthanc in rows:
        print(f"{name:<32}{unit:<13}{cell(ours)}{cell(scp)}{cell(orthanc)} {ratio(ours, scp)}{ratio(ours, orthanc)}")
    print(f"\nreproduce: .venv/bin/python bench/bench_service.py {' '.join(sys.argv[1:])}".rstrip())


if __name__ == "__main__":
    sys.exit(main())

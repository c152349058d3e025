"""Service benchmarks, each as a ratio against dcmtk storescp measured in the same run.

    .venv/bin/python bench/bench_service.py [--slices 60] [--repeats 3]

* ingest throughput (instances/s) for 1 and 4 concurrent associations, svdmark serve vs storescp,
  on the same generated 512x512 CT series (both with TCP_NODELAY);
* end-to-end latency from the last instance sent to the SR's arrival at the destination,
  for one NCCT and one SWI series (median of repeats; settle time included);
* peak resident memory (VmHWM) of svdmark serve while it analyses, vs storescp's.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["TCP_NODELAY"] = "1"  # dcmtk reads it; without it storescp waits on delayed ACKs

from svdmark_phantom import write_study  # noqa: E402
from tests.peers import StoreSCP, Svdmark, storescu, wait_until  # noqa: E402


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def ingest_rate(port: int, aet: str, series_sets: list[list[Path]]) -> float:
    """Instances per second for len(series_sets) concurrent storescu associations."""
    n = sum(len(s) for s in series_sets)
    threads = [threading.Thread(target=storescu, args=(files, port), kwargs={"aet": aet}) for files in series_sets]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return n / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slices", type=int, default=0, help="unused: the CT series has the generator's slice count")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="svdmark-bench-"))
    print(f"generating 4 NCCT series at 512x512 and 1 SWI series in {work} ...", flush=True)
    cts = [write_study(work / f"ct{i}", seed=500 + i, kind="ncct", vendor="siemens", distractors=False, matrix=512)
           for i in range(4)]
    ct_files = [sorted(Path(s.out_dir).rglob("*.dcm")) for s in cts]
    print(f"  {len(ct_files[0])} slices per CT series", flush=True)

    peer = StoreSCP(work / "peer").start()
    dest = StoreSCP(work / "dest").start()
    svd = Svdmark(work / "data", [f"{dest.aet}@127.0.0.1:{dest.port}"],
                  extra=("--settle-seconds", "1", "--fallback-seconds", "30")).start()
    try:
        rows = []
        for conc in (1, 4):
            sets = ct_files[:conc]
            peer_rate = statistics.median(ingest_rate(peer.port, peer.aet, sets) for _ in range(args.repeats))
            ours = statistics.median(ingest_rate(svd.port, "SVDMARK", sets) for _ in range(args.repeats))
            rows.append((f"ingest, {conc} association(s)", ours, peer_rate, "instances/s", ours / peer_rate, ">= 0.5"))
        wait_until(lambda: svd.cli("status", "--json").stdout.count('"pending"') == 0, 600, "queue to drain")

        latencies = {}
        for kind, vendor in (("ncct", "ge"), ("swi", "philips")):
            samples = []
            for r in range(args.repeats):
                st = write_study(work / f"lat-{kind}-{r}", seed=700 + r, kind=kind, vendor=vendor, distractors=False,
                                 matrix=512 if kind == "ncct" else 256)
                before = set(dest.files())
                storescu(sorted(Path(st.out_dir).rglob("*.dcm")), svd.port)
                t0 = time.perf_counter()
                wait_until(lambda: any(p.name.startswith("SR") for p in set(dest.files()) - before), 600, "SR",
                           interval=0.05)
                samples.append(time.perf_counter() - t0)
            latencies[kind] = statistics.median(samples)
            rows.append((f"end-to-end latency, {kind.upper()}", latencies[kind], None, "s (median)", None, "< 30 s"))
        ours_mb, peer_mb = peak_rss_mb(svd.proc.pid), peak_rss_mb(peer.proc.pid)
        rows.append(("peak memory while analysing", ours_mb, peer_mb, "MiB", ours_mb / peer_mb, "< 2048 MiB"))
    finally:
        svd.stop()
        peer.stop()
        dest.stop()

    print(f"\n{'figure':<34}{'svdmark':>12}{'storescp':>12}  {'unit':<12}{'ratio':>8}  target")
    for name, ours, peer_v, unit, ratio, target in rows:
        pv = f"{peer_v:12.1f}" if peer_v is not None else f"{'-':>12}"
        rt = f"{ratio:8.2f}" if ratio is not None else f"{'-':>8}"
        print(f"{name:<34}{ours:12.1f}{pv}  {unit:<12}{rt}  {target}")
    print("\nreproduce: .venv/bin/python bench/bench_service.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())

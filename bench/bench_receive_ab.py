"""Paired A/B of two svdmark source trees as receivers, for a change to the receive path.

    .venv/bin/python bench/bench_receive_ab.py A_SERVICE_DIR B_SERVICE_DIR [--associations 4] [--repeats 4]
        [--roles receive]

Each tree's ``service/`` directory (e.g. from ``git worktree add /tmp/base <commit>``) runs as its own
``svdmark serve --roles receive`` (``PYTHONPATH`` set to it; ``--roles receive,assemble`` adds the completion
check that each stored instance wakes, as in the default all-roles process); both take the same 400 fresh 512x512 CT instances
per run over ``--associations`` concurrent dcmtk storescu associations, A and B alternating which goes first.
Prints each run's rates and the median of the B/A ratios: on a shared machine whose speed drifts, a ratio
within one run is comparable where rates from different minutes are not (bench/README.md). Also each
receiver's CPU time (user + system) per instance: what bounds the rate where the GIL is the limit.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_service import Corpus, Receiver, ingest_rate, spool_count  # noqa: E402  (also sets TCP_NODELAY)
from svdmark_phantom import write_study  # noqa: E402
from tests.peers import Svdmark  # noqa: E402


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc): steadier than a rate on a shared machine."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", type=Path, help="service/ directory of tree A")
    ap.add_argument("b", type=Path, help="service/ directory of tree B")
    ap.add_argument("--associations", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--instances", type=int, default=400)
    ap.add_argument("--roles", default="receive",
                    help="the receivers' roles; 'receive,assemble' adds the completion check each instance wakes")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="svdmark-ab-"))
    ct = write_study(work / "ct", seed=500, kind="ncct", vendor="siemens", distractors=False, matrix=512)
    corpus = Corpus(sorted(Path(ct.out_dir).rglob("*.dcm")), work / "send")
    peers, receivers = [], {}
    try:
        for name, tree in (("A", args.a), ("B", args.b)):
            svd = Svdmark(work / name, [], roles=tuple(args.roles.split(",")),
                          env={"PYTHONPATH": str(tree.resolve())}).start()
            peers.append(svd)
            receivers[name] = Receiver(name, svd.port, "SVDMARK", spool_count(svd.data_dir), svd.proc.pid)
        rates: dict[str, list[float]] = {"A": [], "B": []}
        cpu: dict[str, list[float]] = {"A": [], "B": []}  # receiver CPU (user + system) per instance, ms
        for r in range(args.repeats):
            for name in ("A", "B") if r % 2 == 0 else ("B", "A"):
                sets = corpus.make(args.instances, args.associations)
                os.sync()
                before = cpu_seconds(receivers[name].pid)
                rates[name].append(ingest_rate(receivers[name], sets))
                cpu[name].append((cpu_seconds(receivers[name].pid) - before) / args.instances * 1000)
            print(f"run {r + 1}: A {rates['A'][-1]:.1f}  B {rates['B'][-1]:.1f} instances/s  "
                  f"B/A {rates['B'][-1] / rates['A'][-1]:.2f};  CPU per instance A {cpu['A'][-1]:.2f}  "
                  f"B {cpu['B'][-1]:.2f} ms", flush=True)
    finally:
        for p in reversed(peers):
            p.stop()
        shutil.rmtree(work, ignore_errors=True)  # two spools of every run: gigabytes
    ratios = [b / a for a, b in zip(rates["A"], rates["B"])]
    print(f"median A {statistics.median(rates['A']):.1f}  B {statistics.median(rates['B']):.1f} instances/s  "
          f"median B/A {statistics.median(ratios):.2f}  ({args.associations} association(s), {args.repeats} runs)")
    cpu_ratios = [b / a for a, b in zip(cpu["A"], cpu["B"])]
    print(f"receiver CPU per instance: median A {statistics.median(cpu['A']):.2f}  B {statistics.median(cpu['B']):.2f} ms"
          f"  median B/A {statistics.median(cpu_ratios):.2f}")
    print(f"reproduce: .venv/bin/python bench/bench_receive_ab.py {' '.join(sys.argv[1:])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

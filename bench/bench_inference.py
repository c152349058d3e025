"""Inference time per series: a 512x512 NCCT at 5 mm and at 0.625 mm, a typical and a 512x512 SWI, on CPU (and GPU).

    .venv/bin/python bench/bench_inference.py                   # CPU, 2 threads, 3 repeats
    .venv/bin/python bench/bench_inference.py --threads 2 --gpu # also CUDA/TensorRT if they load
    .venv/bin/python bench/bench_inference.py --task cmb --versus 1.4.6   # and a packaged peer, same series

Times cover ``Runtime.run`` + ``measure.from_output`` on a phantom already in
memory (volume loading / DICOM decoding excluded); the first run (session
creation) is reported separately. The thin NCCT (about 240 slices) is the slowest series a WML model meets:
read as slabs (``input.min_slice_mm``), its post-processing still runs on every source slice. The last SWI case
is the slowest development head cmb-swi 1.4.10 met in session 35 (``devset.build_swi`` case 403, built into a
temporary folder and loaded as ``svdmark serve`` loads it): 512x512x119 with about 1500 candidates, where the
svdmark_phantom series have a few hundred.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import onnxruntime as ort

import svdmark_phantom as phantom
from svdmark import measure
from svdmark.domain import Task
from svdmark.infer import ModelRegistry, Runtime
from svdmark_phantom import as_volume

def development_head(index: int):
    """``devset.build_swi`` case ``index`` (another generator than svdmark_phantom), loaded as the service loads it."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # devset/ and training/ live in the checkout
    from devset.build_swi import SEED_BASE, build_case
    from training.devcases import read_series

    with tempfile.TemporaryDirectory(prefix="svdmark-bench-") as tmp:
        build_case(SEED_BASE + index, Path(tmp))
        return read_series(Path(tmp) / f"cmb_{SEED_BASE + index}", "cmb")[1]


CASES = (  # (task, label, the series as a Volume)
    (Task.WML, "NCCT 512x512, 5 mm, tilt 15°",
     lambda: as_volume(phantom.make_ncct(seed=7, matrix=512, slice_thickness=5.0, tilt_deg=15.0, wml_ml=8.0))),
    (Task.WML, "NCCT 512x512, 0.625 mm",
     lambda: as_volume(phantom.make_ncct(seed=7, matrix=512, slice_thickness=0.625, wml_ml=8.0))),
    (Task.CMB, "SWI 256x256, 2 mm",
     lambda: as_volume(phantom.make_swi(seed=7, matrix=256, slice_thickness=2.0, n_cmb=12))),
    (Task.CMB, "SWI 512x512, 1.2 mm",
     lambda: as_volume(phantom.make_swi(seed=7, matrix=512, slice_thickness=1.2, n_cmb=12))),
    (Task.CMB, "SWI dev head 403, 512x512", lambda: development_head(403)),
)


def bench(providers, threads, repeats, tasks, versus=()):
    """Rows (model, series, shape, provider, first, median, max, median / the active model's median or None); each
    series is timed with the active model and then with each packaged version of it named in ``versus`` (the peer,
    one task only), each with a runtime of its own so that "first" always includes creating the session."""
    reg = ModelRegistry()
    if versus and len(tasks) != 1:
        raise SystemExit("--versus names versions of one model: give --task wml or --task cmb")
    unknown = [v for v in versus if v not in reg.versions(reg.active(tasks[0]).name)]
    if unknown:
        raise SystemExit(f"--versus {', '.join(unknown)}: no such packaged version of {reg.active(tasks[0]).name}")
    rows = []
    for task, label, make in (c for c in CASES if c[0] in tasks):
        active = reg.active(task)
        specs = [active] + [reg.get(active.name, v) for v in versus]
        vol = make()
        base = None
        for spec in specs:
            rt = Runtime(providers=providers, intra_op_num_threads=threads)  # sessions are cached per file
            t = time.perf_counter()
            out = rt.run(spec, vol)
            measure.from_output(spec, vol, out)
            first = time.perf_counter() - t
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                out = rt.run(spec, vol)
                measure.from_output(spec, vol, out)
                times.append(time.perf_counter() - t)
            med = statistics.median(times)
            base = base or med
            rows.append((spec.label, label, vol.shape, out.provider, first, med, max(times),
                         med / base if versus else None))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--gpu", action="store_true", help="also run with TensorRT/CUDA (falls back to CPU if absent)")
    ap.add_argument("--task", choices=["wml", "cmb", "both"], default="both")
    ap.add_argument("--versus", action="append", default=[], metavar="VERSION",
                    help="also time this packaged version of the task's model on the same series (repeatable)")
    args = ap.parse_args(argv)
    tasks = [Task.WML, Task.CMB] if args.task == "both" else [Task(args.task)]
    print(f"command: {' '.join([sys.executable.split('/')[-1]] + sys.argv)}")
    print(f"onnxruntime {ort.__version__}, {platform.processor() or platform.machine()}, threads {args.threads}")
    configs = [["CPUExecutionProvider"]]
    if args.gpu:
        configs.append(["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
        configs.append(["CUDAExecutionProvider", "CPUExecutionProvider"])
    for prov in configs:
        for name, label, shape, provider, first, med, worst, ratio in bench(prov, args.threads, args.repeats, tasks,
                                                                             args.versus):
            print(f"{name:18s} {label:30s} shape {shape}  provider {provider:8s} first {first:6.2f} s  "
                  f"median {med:6.2f} s  max {worst:6.2f} s" + (f"  x{ratio:.2f} of the active model" if ratio else ""))


if __name__ == "__main__":
    main()

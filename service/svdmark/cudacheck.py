"""Does onnxruntime's CUDA provider work here? ``python -m svdmark.cudacheck [--require-gpu]``.

Listing ``CUDAExecutionProvider`` in ``onnxruntime.get_available_providers()`` proves nothing: the
list is compiled in, and a wheel built for CUDA 13 lists it on a CUDA 12 image too, then falls back to
the CPU at the first session (``libcublas.so.13: cannot open shared object file``). Two checks:

* libraries (no GPU needed, so it runs in ``docker build``): every shared library the CUDA provider
  links against resolves (the driver's ``libcuda.so.1`` excepted: the container toolkit mounts it at
  run time), and cuDNN 9, which the provider opens at run time, is on the loader path;
* session (when a GPU is visible, or with ``--require-gpu``): a real onnxruntime session of the
  shipped WML model with the CUDA provider and CPU fallback disabled runs one input, and its output
  must match the CPU provider's.

Exit 0 when the checks that apply pass; 1 with the reason otherwise.
"""
from __future__ import annotations

import argparse
import ctypes.util
import os
import re
import subprocess
import sys
from pathlib import Path

DRIVER_LIBS = ("libcuda.so.1",)  # from the host driver, mounted at run time


def provider_library() -> Path:
    import onnxruntime as ort

    lib = Path(ort.__file__).parent / "capi" / "libonnxruntime_providers_cuda.so"
    if not lib.exists():
        raise SystemExit(f"cudacheck: {lib} is missing: this onnxruntime ({ort.__version__}) is not the GPU build")
    return lib


def missing_libraries(lib: Path) -> list[str]:
    """Libraries the CUDA provider needs that the loader cannot find (ldd), plus cuDNN 9 if absent."""
    out = subprocess.run(["ldd", str(lib)], capture_output=True, text=True, check=False).stdout
    missing = [m for m in re.findall(r"^\s*(\S+) => not found", out, re.M) if m not in DRIVER_LIBS]
    if not ctypes.util.find_library("cudnn") and not _loadable("libcudnn.so.9"):
        missing.append("libcudnn.so.9")
    return missing


def _loadable(name: str) -> bool:
    try:
        ctypes.CDLL(name)
        return True
    except OSError:
        return False


def gpu_visible() -> bool:
    return any(Path("/dev").glob("nvidia[0-9]*"))


def cuda_session_check() -> str:
    """Run the shipped WML model on CUDA (no CPU fallback) and on the CPU; return a one-line result."""
    import numpy as np
    import onnxruntime as ort

    from .domain import Task
    from .infer import ModelRegistry

    spec = ModelRegistry().active(Task.WML)
    opts = ort.SessionOptions()
    opts.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    try:
        gpu = ort.InferenceSession(str(spec.path), sess_options=opts,
                                   providers=[("CUDAExecutionProvider", {"use_tf32": 0})])
    except Exception as exc:  # onnxruntime raises RuntimeError/Fail with the loader's message
        raise SystemExit(f"cudacheck: no CUDA session: {str(exc).strip().splitlines()[0]}") from None
    if gpu.get_providers()[0] != "CUDAExecutionProvider":
        raise SystemExit(f"cudacheck: the session runs on {gpu.get_providers()}, not CUDA")
    inp = gpu.get_inputs()[0]
    shape = [d if isinstance(d, int) else (1 if i == 0 else 64) for i, d in enumerate(inp.shape)]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    (y_gpu,) = gpu.run(None, {inp.name: x})[:1]
    cpu = ort.InferenceSession(str(spec.path), providers=["CPUExecutionProvider"])
    (y_cpu,) = cpu.run(None, {inp.name: x})[:1]
    diff = float(np.max(np.abs(y_gpu - y_cpu)))
    if not np.isfinite(y_gpu).all() or diff > 1e-3:
        raise SystemExit(f"cudacheck: CUDA output differs from the CPU's (max |diff| {diff:.3g})")
    return f"CUDA session ok: {spec.label} on input {shape}, max |CUDA - CPU| = {diff:.2e}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m svdmark.cudacheck", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--require-gpu", action="store_true", help="fail unless a real CUDA session runs")
    args = ap.parse_args(argv)
    import onnxruntime as ort

    lib = provider_library()
    missing = missing_libraries(lib)
    if missing:
        print(f"cudacheck: onnxruntime {ort.__version__}'s CUDA provider cannot load here: missing "
              f"{', '.join(missing)} (match the image's CUDA/cuDNN to the onnxruntime-gpu build)", file=sys.stderr)
        return 1
    print(f"cudacheck: onnxruntime {ort.__version__}: the CUDA provider's libraries resolve")
    if not (gpu_visible() or args.require_gpu):
        print("cudacheck: no GPU visible (/dev/nvidia*), so no session was run; on a GPU host run "
              "`python -m svdmark.cudacheck --require-gpu`")
        return 0
    try:
        print("cudacheck: " + cuda_session_check())
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    os.environ.setdefault("ORT_LOGGING_LEVEL", "3")
    sys.exit(main())

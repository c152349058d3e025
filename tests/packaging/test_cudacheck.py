"""`python -m svdmark.cudacheck`, the CUDA image's build check: a clear verdict on the CUDA provider's
libraries on any machine, and a real CUDA session (matching the CPU's output) where a GPU is visible."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ort = pytest.importorskip("onnxruntime")


def _run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "svdmark.cudacheck", *args], capture_output=True, text=True,
                          timeout=300)


def test_library_verdict_names_what_is_missing():
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("the CPU build of onnxruntime is installed")
    from svdmark import cudacheck

    missing = cudacheck.missing_libraries(cudacheck.provider_library())
    r = _run()
    assert "Traceback" not in r.stderr
    if missing:  # e.g. this dev machine: a CUDA 13 wheel without CUDA 13 libraries
        assert r.returncode == 1 and all(m in r.stderr for m in missing), r.stderr
        assert "libcuda.so.1" not in missing  # the driver's library is mounted at run time, not built in
        assert _run("--require-gpu").returncode == 1
    else:
        assert "libraries resolve" in r.stdout


@pytest.mark.gpu
def test_real_cuda_session_matches_cpu():
    if not any(Path("/dev").glob("nvidia[0-9]*")):
        pytest.skip("no GPU visible")
    r = _run("--require-gpu")
    assert r.returncode == 0 and "CUDA session ok" in r.stdout, (r.stdout, r.stderr)

"""While the runtime captures a GPU provider's console noise (a process-wide redirect of fd 1 and 2), another
thread's log lines must still reach the service log, not the capture."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SERVICE = Path(__file__).resolve().parents[2] / "service"

SCRIPT = r"""
import logging, os, sys, threading, time
from svdmark import logs
from svdmark.infer.runtime import _captured_output
logs.setup("INFO")
log = logging.getLogger("svdmark.export")
started = threading.Event()

def deliver():
    started.set()
    for i in range(200):
        logs.event(log, "delivered", n=i)
        time.sleep(0.002)

t = threading.Thread(target=deliver)
t.start()
started.wait()
with _captured_output() as cap:
    os.write(2, b"C++ provider noise\n")
    time.sleep(0.3)
t.join()
print("captured:", cap.text.strip(), flush=True)
"""


def test_log_lines_of_other_threads_survive_the_capture(tmp_path):
    err = tmp_path / "stderr.log"
    with open(err, "wb") as f:
        out = subprocess.run([sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, stderr=f, timeout=60,
                             env={"PYTHONPATH": str(SERVICE), "PATH": "/usr/bin:/bin"}, text=True)
    assert out.returncode == 0, err.read_text()
    lines = err.read_text().splitlines()
    assert sum(" delivered " in ln for ln in lines) == 200, lines
    assert "C++ provider noise" not in err.read_text()  # the capture still takes what it is for
    assert out.stdout.strip() == "captured: C++ provider noise"

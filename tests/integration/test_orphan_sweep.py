"""The running service removes the spool's files that nothing refers to (a killed run's leftovers) by itself."""
from __future__ import annotations

import os
import time
from types import SimpleNamespace

from svdmark import retention
from svdmark.config import Config
from svdmark.export import FolderExporter
from svdmark.service import Service

from tests.peers import free_port, wait_until


def test_the_assembly_leader_sweeps_old_orphans_and_keeps_fresh_ones(tmp_path):
    cfg = Config(host="127.0.0.1", port=free_port(), data_dir=tmp_path / "data", metrics_port=None)
    svc = Service(cfg, exporter=FolderExporter(tmp_path / "out"), context=SimpleNamespace())
    old = svc.spool.results / "1.2" / "1.2.3" / "1.2.3.4.dcm"
    fresh = svc.spool.incoming / "1.2" / "1.2.5" / "1.2.5.6.dcm"
    for path in (old, fresh):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"DICM")
    then = time.time() - retention.ORPHAN_AGE_SECONDS - 60
    os.utime(old, (then, then))
    svc.start()
    try:
        wait_until(lambda: not old.exists() or None, 30, "the old orphan removed")
        assert fresh.exists()
    finally:
        svc.stop()

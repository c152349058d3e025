"""The running service removes the spool's files that nothing refers to (a killed run's leftovers) by itself."""
from __future__ import annotations

import time
from types import SimpleNamespace

from svdmark import retention
from svdmark.config import Config
from svdmark.export import FolderExporter
from svdmark.service import Service

from tests.peers import free_port, wait_until
from tests.unit.test_orphans import GEOM


def test_the_assembly_leader_sweeps_orphans_and_keeps_what_the_journal_names(tmp_path, monkeypatch):
    monkeypatch.setattr(retention, "ORPHAN_AGE_SECONDS", 1.0)  # a day, in the service's real clock: a second here
    cfg = Config(host="127.0.0.1", port=free_port(), data_dir=tmp_path / "data", metrics_port=None)
    svc = Service(cfg, exporter=FolderExporter(tmp_path / "out"), context=SimpleNamespace())
    orphan = svc.spool.write(svc.spool.results, "1.2", "1.2.3", "1.2.3.4", b"DICM")
    named = svc.spool.write(svc.spool.incoming, "1.2", "1.2.5", "1.2.5.6", b"DICM")
    svc.journal.record_instance(sop_uid="1.2.5.6", study_uid="1.2", series_uid="1.2.5",
                                sop_class="1.2.840.10008.5.1.4.1.1.2", transfer_syntax="1.2.840.10008.1.2.1",
                                path=named, size=4, digest="d", modality="CT", geometry=GEOM, calling_ae=None)
    time.sleep(1.5)
    svc.start()
    try:
        wait_until(lambda: not orphan.exists() or None, 30, "the orphan removed")
        assert named.exists()
    finally:
        svc.stop()

"""The service's heartbeat after a journal outage shorter than the lease: it must renew before the lease runs out
(the default back-off of a failing loop grows to a minute, the default lease)."""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace

from svdmark import service as service_mod
from svdmark.config import Config
from svdmark.export import FolderExporter
from svdmark.guarded import GuardedLoop
from svdmark.service import Service
from tests.peers import free_port


class _Longest:
    def uniform(self, a, b):
        return b  # the longest wait the jitter allows


def test_a_failing_heartbeat_tries_again_within_one_interval(tmp_path, monkeypatch):
    captured: list[GuardedLoop] = []

    class Recording(GuardedLoop):
        def run(self):  # no threads: the loop is driven here
            captured.append(self)

    monkeypatch.setattr(service_mod, "GuardedLoop", Recording)
    cfg = Config(host="127.0.0.1", port=free_port(), data_dir=tmp_path / "d", roles=("assemble",))
    svc = Service(cfg, exporter=FolderExporter(tmp_path / "out"), context=SimpleNamespace())
    svc.start()
    svc.stop()
    (heartbeat,) = [loop for loop in captured if loop.name == "heartbeat"]

    def unreachable():
        raise ConnectionError("journal unreachable")

    loop = dataclasses.replace(heartbeat, step=unreachable, rng=_Longest())
    waits = [loop.once() for _ in range(12)]  # a minute and more of failures
    assert max(waits) <= cfg.heartbeat_seconds < cfg.lease_seconds / 2, waits

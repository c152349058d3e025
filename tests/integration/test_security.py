"""Who may talk to `svdmark serve`, and how much: calling-AE allow-list with host binding,
association and dataset-size caps, UID-only spool paths; plus the health/metrics endpoint
(which must stay on localhost unless configured otherwise).

One listener for the module, configured through a TOML file as a site would.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from svdmark.spool import Spool

from tests.peers import Svdmark, associate, free_port, storescu, wait_until
from .test_tls import tiny_ct

MAX_BYTES = 100_000


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    root = tmp_path_factory.mktemp("guarded")
    cfg = root / "svdmark.toml"
    cfg.write_text(f"""
[listener]
allow_calling_ae = ["ECHOSCU", "STORESCU", "GOODAE", "BOUND@127.0.0.2"]
max_associations = 2
max_dataset_bytes = {MAX_BYTES}

[metrics]
host = "127.0.0.1"
""")
    svc = Svdmark(root / "data", [], extra=("--config", str(cfg), "--metrics-port", str(free_port()),
                                            "--settle-seconds", "1", "--fallback-seconds", "15"))
    svc.metrics_port = int(svc.extra[svc.extra.index("--metrics-port") + 1])
    svc.start()
    yield svc
    svc.stop()


def _assoc(port: int, calling: str, bind: str | None = None, contexts=(Verification,)):
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = 10
    for cx in contexts:
        ae.add_requested_context(cx, ExplicitVRLittleEndian if cx != Verification else None)
    kw = {"bind_address": (bind, 0)} if bind else {}
    return associate(ae, port, **kw)


def _echo(port: int, calling: str, bind: str | None = None) -> bool:
    assoc = _assoc(port, calling, bind)
    if not assoc.is_established:
        return False
    try:
        return assoc.send_c_echo().Status == 0x0000
    finally:
        assoc.release()


def _log_line(svc: Svdmark, *needles: str) -> str:
    def found():
        return next((ln for ln in svc.log_text().splitlines() if all(n in ln for n in needles)), None)

    return wait_until(found, 10, f"a log line with {needles}", interval=0.2)


# --------------------------------------------------------------------------- allow-list
def test_allowed_calling_ae_is_served(guarded):
    assert _echo(guarded.port, "GOODAE")


def test_unknown_calling_ae_is_refused_and_the_log_says_why(guarded):
    assert not _echo(guarded.port, "INTRUDER")
    line = _log_line(guarded, "association_rejected", 'calling_ae="INTRUDER"')
    assert 'address="127.0.0.1"' in line and "not in the allow-list" in line, line


def test_host_bound_ae_only_from_its_host(guarded):
    assert not _echo(guarded.port, "BOUND")  # from 127.0.0.1
    line = _log_line(guarded, "association_rejected", 'calling_ae="BOUND"')
    assert "allowed only from 127.0.0.2" in line and 'address="127.0.0.1"' in line, line
    assert _echo(guarded.port, "BOUND", bind="127.0.0.2")


# --------------------------------------------------------------------------- caps
def test_maximum_associations(guarded):
    held = [_assoc(guarded.port, "GOODAE", contexts=(CTImageStorage,)) for _ in range(2)]
    try:
        assert all(a.is_established for a in held)
        third = _assoc(guarded.port, "GOODAE", contexts=(CTImageStorage,))
        assert third.is_rejected
        line = _log_line(guarded, "association_rejected", "maximum associations (2) reached")
        assert 'calling_ae="GOODAE"' in line
        assert _echo(guarded.port, "GOODAE")  # an echo-only association from an allowed caller always gets through
        assert not _echo(guarded.port, "INTRUDER")  # ... but only from an allowed caller
    finally:
        for a in held:
            a.release()

    def storage_slot_free() -> bool:
        assoc = _assoc(guarded.port, "GOODAE", contexts=(CTImageStorage,))
        if assoc.is_established:
            assoc.release()
            return True
        return False

    wait_until(storage_slot_free, 10, "a free association slot after release")


def test_dataset_over_the_size_cap_is_refused(guarded, tmp_path):
    small, = tiny_ct(tmp_path / "small", 1, size=16)
    big, = tiny_ct(tmp_path / "big", 1, size=256)  # 128 KiB of pixels > MAX_BYTES
    assoc = _assoc(guarded.port, "GOODAE", contexts=(CTImageStorage,))
    assert assoc.is_established
    try:
        assert assoc.send_c_store(pydicom.dcmread(small)).Status == 0x0000
        assert assoc.send_c_store(pydicom.dcmread(big)).Status == 0xA701
    finally:
        assoc.release()
    line = _log_line(guarded, "instance_rejected", 'status="0xA701"')
    assert f"exceeds the limit of {MAX_BYTES}" in line
    assert not list(guarded.data_dir.rglob(f"{pydicom.dcmread(big).SOPInstanceUID}.dcm"))


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc status")


def test_oversized_datasets_are_refused_without_buffering(tmp_path):
    """Four concurrent 64 MiB sends against a 4 MiB cap (the issue's case): each refused with 0xA701 from
    the size of the file it was received into; the service's peak memory grows by far less than one
    dataset (before: +337 MB)."""
    import threading

    cfg = tmp_path / "svdmark.toml"
    cfg.write_text(f"[listener]\nmax_dataset_bytes = {4 * 2**20}\n")
    svc = Svdmark(tmp_path / "data", [], extra=("--config", str(cfg), "--settle-seconds", "1",
                                                "--fallback-seconds", "15")).start()
    try:
        big, = tiny_ct(tmp_path / "huge", 1, size=5800)  # 5800 x 5800 x 2 bytes = 64.2 MiB of pixels
        assert big.stat().st_size > 64 * 2**20
        before = _peak_rss_kib(svc.proc.pid)
        results: list = []
        threads = [threading.Thread(target=lambda: results.append(
            storescu([big], svc.port, check=False, extra=("-d",)))) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        statuses = [[ln for ln in r.stderr.splitlines() if "DIMSE Status" in ln] for r in results]
        assert len(results) == 4 and all("0xa701" in (r.stdout + r.stderr).lower() for r in results), statuses
        growth_mib = (_peak_rss_kib(svc.proc.pid) - before) / 1024
    finally:
        svc.stop()
    assert growth_mib < 32, f"peak RSS grew by {growth_mib:.0f} MiB receiving 4 x 64 MiB refused datasets"
    print(f"peak RSS growth for 4 concurrent 64 MiB refused sends: {growth_mib:.1f} MiB")


# --------------------------------------------------------------------------- spool paths
@pytest.mark.parametrize("bad", ["../../../etc/passwd", "1.2.3/../../x", "/tmp/x", "1.2.3\\..\\x", "1.2..3", "",
                                 "1." + "2" * 70])
def test_spool_refuses_non_uid_path_parts(tmp_path, bad):
    spool = Spool(tmp_path / "spool")
    for args in ((bad, "1.2", "1.3"), ("1.1", bad, "1.3"), ("1.1", "1.2", bad)):
        with pytest.raises(ValueError, match="not a valid DICOM UID"):
            spool.write(spool.incoming, *args, b"x")
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_traversal_uid_over_the_wire_is_refused(guarded, tmp_path):
    """A dataset whose UIDs try to climb out of the spool gets 0xA900 and writes nothing."""
    f, = tiny_ct(tmp_path / "evil", 1)
    ds = pydicom.dcmread(f)
    ds.SeriesInstanceUID = "../../../../tmp/svdmark-evil"
    ds.StudyInstanceUID = "1.2.3/../../../evil"
    ds.save_as(f, enforce_file_format=True)
    r = storescu([f], guarded.port, check=False)
    assert r.returncode == 0 or "0xa900" in (r.stdout + r.stderr).lower()
    line = _log_line(guarded, "instance_rejected", 'status="0xA900"', "is not a valid UID")
    assert "InstanceUID" in line
    assert not Path("/tmp/svdmark-evil").exists()
    assert not [p for p in guarded.data_dir.parent.rglob("*evil*")]


# --------------------------------------------------------------------------- health and metrics
def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_healthz_and_metrics(guarded, tmp_path):
    files = tiny_ct(tmp_path / "m", 2)
    storescu(files, guarded.port)
    assert not _echo(guarded.port, "NOBODY")

    code, body = _get(guarded.metrics_port, "/healthz")
    assert code == 200, body
    report = json.loads(body)
    assert report["status"] == "ok" and report["listener"] and report["journal_writable"]
    assert set(report["queue_depth"]) == {"series_receiving", "jobs_pending", "deliveries_pending"}

    code, text = _get(guarded.metrics_port, "/metrics")
    assert code == 200
    for needle in ('svdmark_instances_received_total{outcome="stored",status="0x0000"}',
                   'svdmark_associations_refused_total{reason="allow_list"}',
                   'svdmark_queue_depth{queue="jobs_pending"}',
                   "svdmark_dead_letters ",
                   "# TYPE svdmark_stage_seconds histogram",
                   "# TYPE svdmark_outbox_attempts_total counter"):
        assert needle in text, f"{needle} missing from /metrics:\n{text[:3000]}"
    assert _get(guarded.metrics_port, "/nope")[0] == 404

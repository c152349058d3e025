"""The RLE Lossless summary image reaches a real dcmtk storescp: compressed where the destination
accepts RLE, decompressed (pixel for pixel the same) where it takes uncompressed images only; the exporter
sends with Nagle's algorithm off."""
from __future__ import annotations

import socket
import subprocess

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, RLELossless

from svdmark.config import Destination
from svdmark.encode import results
from svdmark.export import CStoreExporter
from tests.peers import DCMTK, StoreSCP, free_port, wait_for_echo, wait_until
from tests.unit.test_encode_support import swi_series, cmb_result

pytestmark = pytest.mark.skipif(not (DCMTK / "storescp").exists(), reason="dcmtk is not installed")


@pytest.fixture(scope="module")
def summary_file(tmp_path_factory):
    series, vol = swi_series()
    enc = results(cmb_result(series, vol, 12), uid_seed="delivery")
    path = tmp_path_factory.mktemp("out") / "summary.dcm"
    enc.summary.save_as(path, enforce_file_format=True)
    return path


def _send(path, port: int, aet: str):
    dest = Destination(ae_title=aet, host="127.0.0.1", port=port, outputs=frozenset({"summary"}))
    return CStoreExporter("SVDMARK", timeout=20).send(dest, [path])


def test_destination_accepting_rle_gets_it_compressed(summary_file, tmp_path):
    scp = StoreSCP(tmp_path / "rle").start()
    try:
        (outcome,) = _send(summary_file, scp.port, scp.aet)
        assert outcome.ok, outcome.detail
        (ds,) = wait_until(scp.datasets, 30, "the summary in storescp's folder")
        assert ds.file_meta.TransferSyntaxUID == RLELossless
        np.testing.assert_array_equal(ds.pixel_array, pydicom.dcmread(summary_file).pixel_array)
    finally:
        scp.stop()


def test_destination_taking_uncompressed_only_gets_it_decompressed(summary_file, tmp_path):
    folder = tmp_path / "plain"
    folder.mkdir()
    port = free_port()
    # storescp's default: uncompressed transfer syntaxes only (no +xa)
    proc = subprocess.Popen([str(DCMTK / "storescp"), "-aet", "PLAINPACS", "-od", str(folder), "-uf", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_echo(port, "PLAINPACS", proc=proc)
        (outcome,) = _send(summary_file, port, "PLAINPACS")
        assert outcome.ok, outcome.detail
        (received,) = [p for p in folder.iterdir() if p.is_file()]
        ds = pydicom.dcmread(received)
        assert ds.file_meta.TransferSyntaxUID in (ExplicitVRLittleEndian, "1.2.840.10008.1.2")
        np.testing.assert_array_equal(ds.pixel_array, pydicom.dcmread(summary_file).pixel_array)
        assert ds.SOPInstanceUID == pydicom.dcmread(summary_file).SOPInstanceUID
    finally:
        proc.terminate()
        proc.wait(10)


def test_exporter_sends_with_nagle_off(summary_file, tmp_path, monkeypatch):
    """svdmark.nodelay: the exporter's socket has TCP_NODELAY while it sends (each C-STORE's last segment
    otherwise waits for the peer's delayed ACK: bench/README.md)."""
    from pynetdicom import AE

    associations, seen = [], []
    associate = AE.associate

    def keep(self, *args, **kwargs):
        associations.append(associate(self, *args, **kwargs))
        return associations[-1]

    def on_start(path) -> bool:  # called before each C-STORE, on the open association
        sock = associations[-1].dul.socket.socket
        seen.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        return True

    monkeypatch.setattr(AE, "associate", keep)
    scp = StoreSCP(tmp_path / "nodelay").start()
    try:
        dest = Destination(ae_title=scp.aet, host="127.0.0.1", port=scp.port, outputs=frozenset({"summary"}))
        (outcome,) = CStoreExporter("SVDMARK", timeout=20).send(dest, [summary_file], on_start=on_start)
        assert outcome.ok, outcome.detail
    finally:
        scp.stop()
    assert seen and all(seen), seen

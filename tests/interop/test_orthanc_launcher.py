"""The tests' one Orthanc launcher (tests/peers.Orthanc): a new Orthanc whose offered port another process took
first moves to new ports; a restart keeps its ports."""
from __future__ import annotations

import socket

import pytest

from tests import peers
from tests.peers import ORTHANC, Orthanc

pytestmark = [pytest.mark.interop,
              pytest.mark.skipif(not ORTHANC.exists(), reason="Orthanc is not installed (apt-get install orthanc)")]


@pytest.fixture
def taken(monkeypatch):
    """A port another process listens on, which ``free_port`` offers first."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    offers = iter([sock.getsockname()[1]])
    real = peers.free_port
    monkeypatch.setattr(peers, "free_port", lambda: next(offers, None) or real())
    yield sock.getsockname()[1]
    sock.close()


def test_a_port_taken_first_moves_a_new_orthanc_and_a_restart_keeps_its_ports(tmp_path, taken):
    orthanc = Orthanc.started(tmp_path / "orthanc")
    try:
        assert taken not in (orthanc.dicom_port, orthanc.http_port)
        assert "already in use" in orthanc.log_text()  # the first try met the taken port
        assert orthanc.instance_count() == 0
        ports = (orthanc.dicom_port, orthanc.http_port)
        orthanc.stop()
        orthanc.start()
        assert (orthanc.dicom_port, orthanc.http_port) == ports
        assert orthanc.instance_count() == 0
    finally:
        orthanc.stop()


def test_start_keeps_its_ports_and_says_why_it_failed(tmp_path, taken):
    """``start`` never moves: whoever sends to this Orthanc was told its ports."""
    orthanc = Orthanc(tmp_path / "orthanc")
    try:
        with pytest.raises(RuntimeError, match="already in use"):
            orthanc.start()
    finally:
        orthanc.stop()

"""Fixtures for the integration tests; the peer helpers live in tests/peers.py."""
import pytest

from tests.peers import StoreSCP


@pytest.fixture
def pacs(tmp_path):
    scp = StoreSCP(tmp_path / "pacs").start()
    yield scp
    scp.stop()

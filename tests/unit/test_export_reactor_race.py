"""A C-STORE response must reach the send that waits for it, however late the association's reactor runs.

pynetdicom's requestor runs a reactor thread beside the caller. ``send_c_store`` pauses it by clearing a
checkpoint and waiting for ``_is_paused``; but the reactor sets ``_is_paused`` just *before* it waits at the
checkpoint, so a reactor that has passed the checkpoint and not yet polled its queue counts as paused. If it
is descheduled there (a loaded machine) until the response has arrived, it takes the response, logs
"Received unexpected C-STORE service message" and drops it; the send waits out its DIMSE timeout and the
association is aborted (pynetdicom issue 875). These tests hold the reactor exactly there until a response has
arrived, and let the waiting send be a little slower to take it, as a loaded machine can.
"""
from __future__ import annotations

import queue
import threading
import time

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE

from svdmark.config import Destination
from svdmark.export import CStoreExporter
from svdmark.receive.sink import FolderSink


class _LateCheckpoint:
    """The reactor's checkpoint; the association's own thread (the reactor), once past it, waits there until a
    message is queued (or ``patience`` has passed): the window of the race, held open."""

    def __init__(self, event: threading.Event, assoc, patience: float):
        self._event, self._assoc, self._patience = event, assoc, patience

    def wait(self, timeout=None):
        passed = self._event.wait(timeout)
        if threading.current_thread() is self._assoc:
            deadline = time.monotonic() + self._patience
            while not self._assoc.dimse.msg_queue.qsize() and time.monotonic() < deadline:
                time.sleep(0.001)
        return passed

    def __getattr__(self, name):
        return getattr(self._event, name)


class _SlowWaiter(queue.Queue):
    """The DIMSE message queue, where a blocking ``get`` (the send waiting for its response) starts late."""

    def get(self, block=True, timeout=None):
        if block:
            time.sleep(0.05)
        return super().get(block, timeout)


@pytest.fixture
def late_reactor(monkeypatch):
    original = AE.associate

    def associate(self, *args, **kwargs):
        assoc = original(self, *args, **kwargs)
        if assoc.is_established:
            assoc.dimse.msg_queue = _SlowWaiter()  # nothing has been sent yet: the queue is empty
            assoc._reactor_checkpoint = _LateCheckpoint(assoc._reactor_checkpoint, assoc, 0.5)
        return assoc

    monkeypatch.setattr(AE, "associate", associate)


def _ct(folder, n: int) -> list:
    paths = []
    for k in range(n):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.Modality = "CT"
        path = folder / f"{k}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def test_every_response_reaches_its_send_when_the_reactor_runs_late(tmp_path, late_reactor):
    sink = FolderSink(tmp_path / "pacs", ae_title="PACS")
    try:
        paths = _ct(tmp_path, 6)
        outcomes = CStoreExporter("SVDMARK", timeout=3.0).send(Destination("PACS", "127.0.0.1", sink.port), paths)
        assert [o.detail for o in outcomes] == ["0x0000"] * len(paths)
        assert len(sink.files()) == len(paths)
    finally:
        sink.stop()


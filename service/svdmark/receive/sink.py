"""A minimal storage SCP that keeps whatever it receives in a folder.

Used by `svdmark demo` as its built-in destination; it is the PACS stand-in,
not part of the analysis path.
"""
from __future__ import annotations

import threading
from pathlib import Path

from pynetdicom import AE, evt
from pynetdicom.presentation import AllStoragePresentationContexts
from pynetdicom.sop_class import Verification

from ..spool import check_uid, write_durably


def received_part10(event) -> bytes:
    """A C-STORE's Part 10 bytes, whether pynetdicom received it in memory or into a temporary file
    (``STORE_RECV_CHUNKED_DATASET``, which the listener turns on process-wide)."""
    path = received_file(event)
    return path.read_bytes() if path is not None else event.encoded_dataset(include_meta=True)


def received_file(event) -> Path | None:
    """The temporary file pynetdicom received a C-STORE's dataset into, or None (received in memory)."""
    try:
        path = event.dataset_path
    except AttributeError:
        return None
    if not path:
        return None
    return path if isinstance(path, Path) else Path(path)


class FolderSink:
    def __init__(self, folder: Path, ae_title: str = "DEMOPACS", host: str = "127.0.0.1", port: int = 0):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.received = threading.Event()
        ae = AE(ae_title=ae_title)
        ae.supported_contexts = AllStoragePresentationContexts
        ae.add_supported_context(Verification)
        self._server = ae.start_server((host, port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._store)])
        self.ae_title = ae_title
        self.host = host

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def _store(self, event) -> int:
        name = check_uid(str(event.request.AffectedSOPInstanceUID), "SOP Instance UID")
        write_durably(self.folder / f"{name}.dcm", received_part10(event))
        self.received.set()
        return 0x0000

    def files(self) -> list[Path]:
        return sorted(self.folder.glob("*.dcm"))

    def stop(self) -> None:
        self._server.shutdown()

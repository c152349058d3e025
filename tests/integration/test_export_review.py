"""Delivery under the faults a hospital PACS produces, through the real outbox and exporters against real peers
(a pynetdicom SCP scripted to answer chosen statuses, abort or stall; dcmtk storescp; a scripted STOW-RS server):
every produced object is delivered when the fault clears, or dead-lettered with its reason; never marked delivered
when it was not; never sent again once confirmed; failures back off; no patient data in svdmark's log records."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification

from svdmark.config import Destination, StowDestination
from svdmark.domain import JobState
from svdmark.encode import results, to_bytes
from svdmark.export import CStoreExporter, Outbox
from svdmark.journal import Journal, ResultObject

from tests.peers import StoreSCP, free_port, wait_until
from tests.unit.test_encode_support import ct_series, wml_mask, wml_result
from tests.unit.test_journal import record

pytestmark = [pytest.mark.interop]

PHI = ("Müller", "Jörg", "SVD-TEST-1", "19500101")  # the source series' patient name, ID and birth date
BASE = 2.0  # back-off base (seconds) of every outbox here


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A real SEG, SR and RLE summary image of one analysis, as the spool holds them (kind -> path)."""
    series, vol = ct_series()
    enc = results(wml_result(series, vol, wml_mask(vol)), uid_seed="export-review")
    out = tmp_path_factory.mktemp("results")
    paths = {}
    for kind, ds in (("seg", enc.seg), ("sr", enc.sr), ("summary", enc.summary)):
        paths[kind] = out / f"{kind}.dcm"
        paths[kind].write_bytes(to_bytes(ds))
    return paths


def uid_of(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def journal_for(tmp_path: Path, files: dict[str, Path], dest_name: str) -> Journal:
    """A journal whose one finished job has the three results pending for ``dest_name`` (SEG, SR, summary)."""
    j = Journal(str(tmp_path / "j.sqlite"))
    record(j, "1.1")
    j.queue_job(j.receiving_series()[0], "test")
    outs = [ResultObject(uid_of(p), kind, str(pydicom.dcmread(p, stop_before_pixels=True).SOPClassUID), p)
            for kind, p in files.items()]
    j.finish_job(j.claim_job(), JobState.DONE, outputs=outs, deliveries=[(o.sop_uid, dest_name) for o in outs])
    return j


def by_kind(j: Journal, files: dict[str, Path]) -> dict[str, dict]:
    kind = {uid_of(p): k for k, p in files.items()}
    return {kind[r["sop_uid"]]: dict(r) for r in j.deliveries()}


def assert_no_phi(caplog) -> None:
    for rec in caplog.records:
        if rec.name.startswith("svdmark"):
            text = rec.getMessage() + json.dumps(getattr(rec, "fields", {}), default=str)
            assert not any(p in text for p in PHI), text


class ScriptedSCP:
    """A pynetdicom storage SCP. ``answer(uid, n)`` (n: how many requests for that object before this one) says
    how to answer each C-STORE: a status, ``"abort"`` (A-ABORT instead of a response), ``("sleep", s)``
    (success after s seconds) or ``("wait", event)`` (success once the event is set)."""

    def __init__(self, answer=lambda uid, n: 0x0000, aet: str = "SCRIPTED", require_called_aet: bool = False):
        self.answer = answer
        self.requests: list[str] = []  # every C-STORE request's SOP Instance UID, in order
        self.stored: list[str] = []  # those answered with success or a warning
        ae = AE(ae_title=aet)
        ae.require_called_aet = require_called_aet
        ae.add_supported_context(Verification)
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, [ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless])
        ae.network_timeout = ae.dimse_timeout = ae.acse_timeout = 60
        self.aet = aet
        self.port = free_port()
        self.server = ae.start_server(("127.0.0.1", self.port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, self._on_store)])

    def _on_store(self, event):
        uid = str(event.request.AffectedSOPInstanceUID)
        step = self.answer(uid, self.requests.count(uid))
        self.requests.append(uid)
        if step == "abort":
            event.assoc.abort()
            return 0xA700  # never reaches the requestor
        if isinstance(step, tuple):
            if step[0] == "sleep":
                time.sleep(step[1])
            else:
                step[1].wait(60)
            step = 0x0000
        if step == 0x0000 or step == 0x0001 or step in (0x0107, 0x0116) or (step >> 12) == 0xB:
            self.stored.append(uid)
        return step

    def destination(self, aet: str | None = None) -> Destination:
        return Destination(aet or self.aet, "127.0.0.1", self.port)

    def stop(self):
        self.server.shutdown()


def outbox_for(j: Journal, dest, timeout: float = 5.0, max_attempts: int = 8) -> Outbox:
    return Outbox(j, CStoreExporter("SVDMARK", timeout=timeout), (dest,), max_attempts, BASE, 300.0)


def backed_off(row: dict, j: Journal) -> bool:
    """A failed try waits at least half its back-off before the next (no hot loop)."""
    return row["next_attempt_at"] - j.now() >= BASE / 2 - 0.5


@pytest.fixture
def scp(request):
    made: list[ScriptedSCP] = []

    def make(*a, **kw) -> ScriptedSCP:
        made.append(ScriptedSCP(*a, **kw))
        return made[-1]

    yield make
    for s in made:
        s.stop()


# ------------------------------------------------------------------------------------------ C-STORE statuses
@pytest.mark.parametrize("code", [0xB000, 0xB007, 0xB006, 0x0001, 0x0107, 0x0116])
def test_a_warning_status_is_a_delivery_and_the_object_is_not_sent_again(tmp_path, files, scp, caplog, code):
    """PS3.7 Annex C: 0001, 0107, 0116 and Bxxx are warnings: the destination stored the object."""
    peer = scp(lambda uid, n: code)
    j = journal_for(tmp_path, files, peer.destination().name)
    box = outbox_for(j, peer.destination())
    assert box.flush() == 3
    assert box.flush(now=float("inf")) == 0
    assert {r["state"] for r in by_kind(j, files).values()} == {"delivered"}
    assert sorted(peer.requests) == sorted(uid_of(p) for p in files.values())  # each exactly once
    assert_no_phi(caplog)


@pytest.mark.parametrize("code, dead", [(0xA700, False), (0xA7FF, False), (0xA900, True), (0xC000, True),
                                        (0xC211, True), (0xCFFF, True)])
def test_failure_statuses_retry_out_of_resources_and_dead_letter_what_no_retry_changes(
        tmp_path, files, scp, caplog, code, dead):
    """PS3.4 B.2.3: out of resources (A7xx) is retried with back-off; data set does not match (A9xx) and cannot
    understand (Cxxx, the whole range) are dead letters at once, with the status as the reason."""
    peer = scp(lambda uid, n: code if uid == uid_of(files["seg"]) else 0x0000)
    j = journal_for(tmp_path, files, peer.destination().name)
    assert outbox_for(j, peer.destination()).flush() == 2
    seg = by_kind(j, files)["seg"]
    assert (seg["state"], seg["attempts"], seg["last_error"]) == ("dead" if dead else "pending", 1,
                                                                   f"status 0x{code:04X}")
    if not dead:
        assert backed_off(seg, j)
    assert_no_phi(caplog)


# ------------------------------------------------------------------------------- association-level faults
def test_a_rejected_association_says_why(tmp_path, files, scp, caplog):
    """A PACS that does not know the called AE title rejects the association: retried with back-off, and the
    reason an admin reads in `svdmark outbox list` (and the dead letter) says which rejection it was."""
    peer = scp(require_called_aet=True)
    dest = peer.destination("WRONGAET")
    j = journal_for(tmp_path, files, dest.name)
    assert outbox_for(j, dest, max_attempts=2).flush() == 0
    rows = by_kind(j, files)
    assert {r["state"] for r in rows.values()} == {"pending"} and all(backed_off(r, j) for r in rows.values())
    assert all("association rejected" in r["last_error"] and "called ae title not recognised"
               in r["last_error"].lower() for r in rows.values()), rows
    assert outbox_for(j, dest, max_attempts=2).flush(now=float("inf")) == 0
    assert {r["state"] for r in by_kind(j, files).values()} == {"dead"}
    assert peer.requests == []
    assert_no_phi(caplog)


def test_pacs_down_then_up_delivers_each_object_once(tmp_path, files, caplog):
    port = free_port()
    dest = Destination("CEOPACS", "127.0.0.1", port)
    j = journal_for(tmp_path, files, dest.name)
    box = outbox_for(j, dest)
    assert box.flush() == 0  # connection refused
    rows = by_kind(j, files)
    assert {r["state"] for r in rows.values()} == {"pending"} and all(backed_off(r, j) for r in rows.values())
    assert box.flush() == 0 and {r["attempts"] for r in by_kind(j, files).values()} == {1}  # not due yet
    pacs = StoreSCP(tmp_path / "pacs", port=port).start()
    try:
        assert box.flush(now=float("inf")) == 3
        assert box.flush(now=float("inf")) == 0
        wait_until(lambda: len(pacs.receptions()) == 3, 30, "three receptions")
        time.sleep(0.5)
        assert len(pacs.receptions()) == 3  # each object once
    finally:
        pacs.stop()
    assert_no_phi(caplog)


@pytest.mark.parametrize("fault", ["abort", ("sleep", 4)])
def test_an_object_the_pacs_chokes_on_does_not_starve_the_others(tmp_path, files, scp, caplog, fault):
    """A PACS that aborts the association (or stalls past the timeout) on the SEG every time: the SR and the
    summary behind it in the batch are still delivered, once; only the SEG is retried and dead-lettered."""
    seg = uid_of(files["seg"])
    peer = scp(lambda uid, n: fault if uid == seg else 0x0000)
    j = journal_for(tmp_path, files, peer.destination().name)
    box = outbox_for(j, peer.destination(), timeout=2.0, max_attempts=3)
    for _ in range(6):  # the service's outbox thread flushes again and again
        box.flush()
    rows = by_kind(j, files)
    assert (rows["sr"]["state"], rows["summary"]["state"]) == ("delivered", "delivered"), rows
    assert rows["seg"]["state"] == "pending" and backed_off(rows["seg"], j)
    for _ in range(3):
        box.flush(now=float("inf"))
    rows = by_kind(j, files)
    assert rows["seg"]["state"] == "dead" and rows["seg"]["attempts"] == 3
    assert peer.stored.count(uid_of(files["sr"])) == 1 and peer.stored.count(uid_of(files["summary"])) == 1
    assert_no_phi(caplog)


def test_a_pacs_that_aborts_as_soon_as_it_accepts_is_backed_off(tmp_path, files, caplog):
    """Nothing is tried when the association dies before the first C-STORE: every object counts a failed try
    and backs off (no association every half second)."""
    ae = AE(ae_title="ABORTS")
    ae.add_supported_context(Verification)
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax, [ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless])
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False,
                             evt_handlers=[(evt.EVT_ESTABLISHED, lambda event: event.assoc.abort())])
    try:
        dest = Destination("ABORTS", "127.0.0.1", port)
        j = journal_for(tmp_path, files, dest.name)
        box = outbox_for(j, dest, timeout=2.0)
        box.flush()
        box.flush()
        rows = by_kind(j, files)
        assert {r["state"] for r in rows.values()} == {"pending"}
        assert all(r["attempts"] == 1 and backed_off(r, j) for r in rows.values()), rows
    finally:
        server.shutdown()
    assert_no_phi(caplog)


# ------------------------------------------------------------------------------------------------ STOW-RS
class StowServer:
    """A scripted STOW-RS server: ``answer(uid, n)`` gives (HTTP status, JSON body or None, delay in seconds)."""

    def __init__(self, answer):
        self.answer = answer
        self.posts: list[str] = []
        self.stored: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                part = body[body.index(b"\r\n\r\n") + 4:]
                uid = str(pydicom.dcmread(io.BytesIO(part), stop_before_pixels=True).SOPInstanceUID)
                status, doc, delay = outer.answer(uid, outer.posts.count(uid))
                outer.posts.append(uid)
                if delay:
                    time.sleep(delay)
                payload = json.dumps(doc(uid) if callable(doc) else doc).encode() if doc is not None else b""
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/dicom+json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:  # the client gave up (its timeout)
                    return
                if status in (200, 202) and not (callable(doc) and "00081198" in doc(uid)):
                    outer.stored.append(uid)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/dicom-web/studies"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def failed(reason):
    return lambda uid: {"00081198": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": [uid]},
                                                            "00081197": {"vr": "US", "Value": [reason]}}]}}


def warned(reason):
    return lambda uid: {"00081199": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": [uid]},
                                                            "00081196": {"vr": "US", "Value": [reason]}}]}}


@pytest.fixture
def stow():
    made: list[StowServer] = []

    def make(answer) -> StowServer:
        made.append(StowServer(answer))
        return made[-1]

    yield make
    for s in made:
        s.stop()


def stow_box(j: Journal, dest: StowDestination, max_attempts: int = 8) -> Outbox:
    return Outbox(j, CStoreExporter("SVDMARK"), (dest,), max_attempts, BASE, 300.0)


def test_stow_statuses_are_judged_per_object(tmp_path, files, stow, caplog):
    """409 with a Failed SOP Sequence entry: dead letter with its reason; 202 with a warning: delivered; 202 with
    an out-of-resources failure and 5xx: retried with back-off, then delivered once."""
    uids = {k: uid_of(p) for k, p in files.items()}
    first = {uids["seg"]: (409, failed(0x0110), 0), uids["sr"]: (202, warned(0xB000), 0),
             uids["summary"]: (202, failed(0xA700), 0)}
    srv = stow(lambda uid, n: first[uid] if n == 0 else (503, None, 0) if n == 1 else (200, None, 0))
    dest = StowDestination(srv.url, timeout=5)
    j = journal_for(tmp_path, files, dest.name)
    box = stow_box(j, dest)
    assert box.flush() == 1
    rows = by_kind(j, files)
    assert (rows["seg"]["state"], rows["seg"]["last_error"]) == ("dead", "HTTP 409: STOW-RS failure reason 0x0110")
    assert rows["sr"]["state"] == "delivered"
    assert rows["summary"]["state"] == "pending" and backed_off(rows["summary"], j)
    assert box.flush(now=float("inf")) == 0  # 503
    assert by_kind(j, files)["summary"]["last_error"] == "HTTP 503 Service Unavailable"
    assert box.flush(now=float("inf")) == 1
    assert box.flush(now=float("inf")) == 0
    assert srv.posts.count(uids["sr"]) == 1 and srv.posts.count(uids["summary"]) == 3
    assert srv.posts.count(uids["seg"]) == 1
    assert_no_phi(caplog)


def test_a_stow_request_that_times_out_does_not_starve_the_others(tmp_path, files, stow, caplog):
    """A STOW-RS server that takes longer than the timeout on the SEG every time: the SR and summary behind it
    are delivered; the SEG is retried with back-off and dead-lettered."""
    seg = uid_of(files["seg"])
    srv = stow(lambda uid, n: (200, None, 3) if uid == seg else (200, None, 0))
    dest = StowDestination(srv.url, timeout=1.0)
    j = journal_for(tmp_path, files, dest.name)
    box = stow_box(j, dest, max_attempts=2)
    for _ in range(4):
        box.flush()
    rows = by_kind(j, files)
    assert (rows["sr"]["state"], rows["summary"]["state"]) == ("delivered", "delivered"), rows
    assert rows["seg"]["state"] == "pending" and rows["seg"]["last_error"] == "no response: ReadTimeout"
    assert backed_off(rows["seg"], j)
    box.flush(now=float("inf"))
    assert by_kind(j, files)["seg"]["state"] == "dead"
    assert srv.posts.count(uid_of(files["sr"])) == 1 and srv.posts.count(uid_of(files["summary"])) == 1
    assert_no_phi(caplog)


# ------------------------------------------------------------------------------------------ crash mid-send
_CHILD = """
import sys
from pathlib import Path
from svdmark.config import Destination
from svdmark.export import CStoreExporter, Outbox
from svdmark.journal import Journal
journal, port = sys.argv[1], int(sys.argv[2])
dest = Destination("SCRIPTED", "127.0.0.1", port)
Outbox(Journal(journal), CStoreExporter("SVDMARK", timeout=60), (dest,), 8, 2.0, 300.0).flush()
"""


def test_killed_mid_send_resends_only_the_object_in_flight(tmp_path, files, scp, caplog):
    """kill -9 while the SR's C-STORE waits for its response: after the restart the SEG (confirmed) is never sent
    again, the SR (in flight: maybe stored) is sent once more, the summary once; all end delivered."""
    release = threading.Event()
    sr = uid_of(files["sr"])
    peer = scp(lambda uid, n: ("wait", release) if uid == sr and n == 0 else 0x0000)
    j = journal_for(tmp_path, files, peer.destination().name)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(["service", "."]))
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(tmp_path / "j.sqlite"), str(peer.port)], env=env,
                             cwd=Path(__file__).resolve().parents[2])
    try:
        wait_until(lambda: sr in peer.requests, 60, "the SR's C-STORE at the peer")
        assert {k: r["state"] for k, r in by_kind(j, files).items()} == {
            "seg": "delivered", "sr": "sending", "summary": "pending"}
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
        release.set()
    j2 = Journal(str(tmp_path / "j.sqlite"))
    assert j2.recover()["deliveries_requeued"] == 1
    assert outbox_for(j2, peer.destination()).flush() == 2
    assert {r["state"] for r in by_kind(j2, files).values()} == {"delivered"}
    assert peer.requests.count(uid_of(files["seg"])) == 1
    assert peer.requests.count(sr) == 2 and peer.requests.count(uid_of(files["summary"])) == 1
    assert_no_phi(caplog)

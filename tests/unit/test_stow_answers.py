"""STOW-RS answers as a PACS (or a proxy in front of it) gives them, judged per PS3.18: an object is delivered only
where the answer says it was stored, a failure reason is judged as a C-STORE status is (and retried under a 5xx),
and a connection lost after the request went out is an unanswered try (the PACS may hold it: a later supersession
rejects it) whose batch's other objects are deferred. Against a real local HTTP server."""
from __future__ import annotations

import json
import logging
import socket
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from svdmark.config import StowDestination
from svdmark.export.stow import StowExporter, judge

FILES = ("CT_small.dcm", "MR_small.dcm", "SC_rgb_rle.dcm")
SCRIPT: list = []  # per request: (status, content type, body) or "reset"


class _Pacs(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        answer = SCRIPT.pop(0) if SCRIPT else (200, "application/dicom+json", b"")
        if answer == "reset":  # took the whole request, then a reset instead of an answer
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            return
        status, content_type, body = answer
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def url():
    SCRIPT.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Pacs)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/dicom-web/studies"
    server.shutdown()
    server.server_close()


def _dest(url: str, tmp_path, **more) -> StowDestination:
    return StowDestination.from_mapping({"kind": "stow", "url": url, "outputs": ["sr", "seg", "summary"],
                                         "timeout": 5, **more})


def _paths() -> list[Path]:
    return [Path(get_testdata_file(f)) for f in FILES]


def _uid(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def _sequence(tag: str, uid: str, **codes) -> dict:
    item = {"00081155": {"vr": "UI", "Value": [uid]}}
    item.update({t: {"vr": "US", "Value": [v]} for t, v in codes.items()})
    return {tag: {"vr": "SQ", "Value": [item]}}


def test_a_reset_after_the_request_went_out_is_unanswered_and_defers_the_rest(url, tmp_path):
    SCRIPT[:] = ["reset"]
    first, *rest = StowExporter().send(_dest(url, tmp_path), _paths())
    assert not first.ok and first.unanswered  # the PACS may have stored it
    assert [o.deferred for o in rest] == [True, True]  # not tried: no try counted


def test_a_refused_connection_is_no_unanswered_try(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    first, *rest = StowExporter().send(_dest(f"http://127.0.0.1:{port}/dicom-web/studies", tmp_path), _paths())
    assert not first.ok and not first.unanswered and not any(o.deferred for o in rest)


@pytest.mark.parametrize("status, doc, readable, delivered", [
    (202, {}, True, False),  # "some failed", and this one is not among those stored
    (202, "listed", True, True),
    (200, None, True, True),  # an empty 200: all stored
    (200, "listed", True, True),
    (200, {"00081199": {"vr": "SQ", "Value": []}}, True, False),  # a list of those stored without it
    (200, None, False, False),  # an HTML login page from a proxy
])
def test_an_object_is_delivered_only_where_the_answer_says_it_was_stored(status, doc, readable, delivered):
    path = _paths()[0]
    doc = _sequence("00081199", _uid(path)) if doc == "listed" else doc
    assert judge(path, _uid(path), status, "", doc, readable).ok is delivered


@pytest.mark.parametrize("status, code, permanent", [
    (503, 0x0110, False),  # a processing failure under a 5xx: retried
    (409, 0x0110, True),  # refused (Orthanc: an object of another study sent to a study's URL)
    (409, 0xA700, False),  # out of resources
    (202, 0x0110, False),  # processing failure among others stored: retried, as a C-STORE status 0x0110 is
    (202, 0xC000, True),  # cannot understand
    (202, 0x0122, True),  # SOP class not supported
])
def test_a_failure_reason_is_judged_by_the_http_status_and_as_a_c_store_status(status, code, permanent):
    path = _paths()[0]
    outcome = judge(path, _uid(path), status, "", _sequence("00081198", _uid(path), **{"00081197": code}))
    assert not outcome.ok and outcome.permanent is permanent


def test_credentials_over_plain_http_are_warned_about(url, tmp_path, caplog):
    (tmp_path / "pw").write_text("secret")
    caplog.set_level(logging.WARNING)
    StowExporter().send(_dest(url, tmp_path, username="u", password_file=str(tmp_path / "pw")), _paths()[:1])
    assert any("stow_credentials_over_http" in r.getMessage() for r in caplog.records)
    assert "secret" not in caplog.text


def test_the_stored_answer_is_read_from_json(url, tmp_path):
    path = _paths()[0]
    SCRIPT[:] = [(202, "application/dicom+json", json.dumps(_sequence("00081199", _uid(path))).encode())]
    (outcome,) = StowExporter().send(_dest(url, tmp_path), [path])
    assert outcome.ok


def test_an_answer_wrapped_in_an_array_is_read(url, tmp_path):
    path = _paths()[0]
    SCRIPT[:] = [(200, "application/dicom+json", json.dumps([_sequence("00081199", _uid(path))]).encode())]
    (outcome,) = StowExporter().send(_dest(url, tmp_path), [path])
    assert outcome.ok, outcome.detail


@pytest.mark.parametrize("pad", [" ", "\x00"])
def test_a_padded_uid_in_the_answer_is_the_instance(pad):
    path = _paths()[0]
    assert judge(path, _uid(path), 200, "", _sequence("00081199", _uid(path) + pad)).ok


def test_a_failed_item_under_429_is_retried():
    path = _paths()[0]
    outcome = judge(path, _uid(path), 429, "", _sequence("00081198", _uid(path)))
    assert not outcome.ok and not outcome.permanent


def test_a_refused_proxy_connection_is_no_unanswered_try(tmp_path, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for name in ("HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{port}")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    first, *rest = StowExporter().send(_dest("http://pacs.invalid:8042/dicom-web/studies", tmp_path), _paths())
    assert not first.ok and not first.unanswered and not any(o.deferred for o in rest)

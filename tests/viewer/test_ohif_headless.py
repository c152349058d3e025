"""The real OHIF viewer (the published @ohif/app 3.13.2 build) opens svdmark's SR from a real Orthanc.

Orthanc (Debian's package, with its DICOMweb plugin) on free localhost ports receives the source SWI
series, the SR and the SEG; the OHIF build is served by a small local web server that also forwards
``/dicom-web`` to Orthanc (same origin); headless Chromium (puppeteer-core) opens the study, loads the
SR into the viewport and accepts OHIF's offer to track its measurements. Needs Debian's ``chromium``
and ``orthanc-dicomweb`` and ``tests/viewer/ohif/package/dist`` (scripts/test.sh: ``npm pack
@ohif/app``); skipped without them. One study: it takes about a minute on a small machine.
"""
from __future__ import annotations

import http.server
import json
import shutil
import socketserver
import subprocess
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from svdmark.encode import results
from tests.peers import DICOMWEB, DICOMWEB_SETTINGS, ORTHANC, Orthanc, free_port
from tests.unit.test_encode_support import cmb_result, ct_series, swi_series, wml_mask, wml_result

HERE = Path(__file__).resolve().parent
DIST = HERE / "ohif" / "package" / "dist"
CHROMIUM = Path("/usr/bin/chromium")

pytestmark = pytest.mark.interop


def _need() -> str:
    node = shutil.which("node")
    missing = [str(p) for p in (ORTHANC, DICOMWEB, CHROMIUM, DIST / "index.html") if not p.exists()]
    if not node or not (HERE / "node_modules" / "puppeteer-core").is_dir():
        missing.append("node + npm ci --prefix tests/viewer")
    if missing:
        pytest.skip("real-OHIF test needs: " + ", ".join(missing))
    return node


def _viewer_server(orthanc_base: str) -> tuple[socketserver.TCPServer, int]:
    """The OHIF build with an app-config pointing at ``/dicom-web`` on the same origin, which is forwarded."""
    port = free_port()
    config = (DIST / "app-config.js").read_text(encoding="utf-8")
    public = "https://d14fa38qiwhyfd.cloudfront.net/dicomweb"
    assert public in config, "the OHIF build's default data source moved; update this test"
    config = config.replace(public, f"http://127.0.0.1:{port}/dicom-web").replace("staticWado: true",
                                                                                 "staticWado: false")

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(DIST), **k)

        def log_message(self, *a):  # quiet
            pass

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            path = self.path.split("?")[0]
            if path.startswith("/dicom-web"):
                req = urllib.request.Request(orthanc_base + self.path,
                                             headers={"Accept": self.headers.get("Accept", "*/*")})
                try:
                    with urllib.request.urlopen(req) as r:
                        return self._send(r.status, r.read(), r.headers.get("Content-Type", ""))
                except urllib.error.HTTPError as e:
                    return self._send(e.code, e.read(), e.headers.get("Content-Type", "text/plain"))
            if path == "/app-config.js":
                return self._send(200, config.encode(), "application/javascript")
            if not (DIST / path.lstrip("/")).is_file():
                self.path = "/index.html"  # the single-page app's routes (/viewer)
            return super().do_GET()

    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True

    srv = Server(("127.0.0.1", port), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, port


def _open_in_ohif(tmp_path: Path, result, mode: str = "track") -> tuple[dict, object]:
    """Store the result's source images, SR and SEG in Orthanc and open the SR in OHIF; node's JSON."""
    node = _need()
    enc = results(result, uid_seed=f"ohif-headless-{result.model.task.value}")
    files = []
    for n, ds in enumerate(list(result.series.datasets) + [d for _, d in enc.items()]):
        p = tmp_path / f"{n:03d}.dcm"
        ds.save_as(p, enforce_file_format=True)
        files.append(p)
    orthanc = Orthanc.started(tmp_path / "orthanc", settings={"Name": "svdmark-viewer-test", **DICOMWEB_SETTINGS})
    srv = None
    try:
        for p in files:
            orthanc.store(p)
        srv, port = _viewer_server(orthanc.base)
        url = f"http://127.0.0.1:{port}/viewer?StudyInstanceUIDs={result.series.study_uid}"
        proc = subprocess.run([node, str(HERE / "ohif_headless.mjs"), url, "svdmark measurements", mode],
                              capture_output=True, text=True, timeout=420, cwd=HERE,
                              env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                                   "SHOT": str(tmp_path / "ohif.png")})
    finally:
        if srv is not None:
            srv.shutdown()
        orthanc.stop()
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["errors"] == [], out["errors"]  # no uncaught exception (the old SR: 'ReferencedSOPSequence')
    caught = [w for w in out["warnings"] if "TypeError" in w and not w.startswith("Unable to generate tool state")]
    assert caught == [], caught
    return out, enc


def test_ohif_opens_the_sr_and_tracks_every_microbleed(tmp_path):
    series, vol = swi_series()
    out, _ = _open_in_ohif(tmp_path, cmb_result(series, vol, 5))
    assert "clicked Yes" in out["steps"], out["steps"]  # OHIF offered to track: the SR is rehydratable
    # the SR viewport draws each measurement with OHIF's labels
    shown = out["srViewport"]
    assert "Number of lesions: 5.00 {count}" in shown
    assert "Cerebral microbleed burden grade: 1.00 {grade}" in shown
    assert "5 cerebral microbleeds, Grade 1: 1-9 cerebral microbleeds" in shown
    assert "Diameter: " in shown  # the microbleeds on the slice shown
    # tracked: one measurement per microbleed in the panel, each on its source image
    assert "Additional Findings (5)" in out["tracked"] or "Measurements (5)" in out["tracked"], out["tracked"][-800:]
    tool_failures = [w for w in out["warnings"] if w.startswith("Unable to generate tool state")]
    assert len(tool_failures) == 2  # the whole-finding and the flag group: numbers, not tools


def test_ohif_shows_the_wml_volume(tmp_path):
    series, vol = ct_series()
    result = wml_result(series, vol, wml_mask(vol))
    out, _ = _open_in_ohif(tmp_path, result, mode="view")
    v = round(result.findings.volume_ml, 2)
    shown = out["srViewport"]
    assert f"Volume: {v:.2f} ml" in shown and f"WML volume {v:.2f} mL" in shown, shown[-1500:]
    assert "Measured value the flag was computed from: " + f"{v:.2f} ml" in shown

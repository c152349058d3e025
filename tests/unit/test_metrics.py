"""svdmark.metrics: /metrics and /healthz through prometheus_client's WSGI server, and svdmark_build_info."""
from __future__ import annotations

import gzip
import json
import urllib.error
import urllib.request

from prometheus_client import CollectorRegistry, Counter

import svdmark
from svdmark import metrics


def _get(port: int, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_metrics_healthz_and_build_info_over_http():
    registry = CollectorRegistry()
    metrics.register_build_info(registry)
    Counter("svdmark_test_events", "a counter", registry=registry).inc(3)
    state = {"healthy": True}
    server = metrics.Server("127.0.0.1", 0, metrics.app(registry, lambda: (state["healthy"], {"status": "x"}))).start()
    try:
        port = server.address[1]
        code, headers, body = _get(port, "/metrics")
        text = body.decode()
        assert code == 200 and headers["Content-Type"].startswith("text/plain")
        (line,) = [x for x in text.splitlines() if x.startswith("svdmark_build_info{")]
        assert f'version="{svdmark.__version__}"' in line and 'pydicom="' in line and line.endswith(" 1.0")
        assert "svdmark_test_events_total 3.0" in text
        # the library's own features: gzip on request, OpenMetrics by content negotiation
        code, headers, body = _get(port, "/metrics", {"Accept-Encoding": "gzip"})
        assert headers.get("Content-Encoding") == "gzip" and b"svdmark_build_info" in gzip.decompress(body)
        code, headers, body = _get(port, "/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"})
        assert "openmetrics" in headers["Content-Type"] and body.rstrip().endswith(b"# EOF")

        assert _get(port, "/healthz")[0] == 200 and json.loads(_get(port, "/healthz")[2]) == {"status": "x"}
        state["healthy"] = False
        assert _get(port, "/healthz")[0] == 503
        assert _get(port, "/nope")[0] == 404
    finally:
        server.stop()

"""The ``/metrics`` and ``/healthz`` HTTP server on prometheus_client's own WSGI pieces, and the
``svdmark_build_info`` metric.

``/metrics`` is ``prometheus_client.make_wsgi_app`` (content negotiation, OpenMetrics, gzip, the
``name[]`` filter come with it); ``/healthz`` is one small WSGI function around ``health.check``.
Both are served by prometheus_client's ``ThreadingWSGIServer`` (a daemon thread per request) with
its silent request handler, as ``prometheus_client.start_wsgi_server`` does, so no HTTP code is
written here. What the metrics are stays in ``svdmark.health``.

``svdmark_build_info{version, python, pydicom, pynetdicom, highdicom, onnxruntime} 1`` tells a
dashboard which software a scrape came from (versions read from the installed packages' metadata,
so no library is imported here).
"""
from __future__ import annotations

import json
import platform
import threading
from importlib import metadata
from typing import Callable
from wsgiref.simple_server import make_server

from prometheus_client import CollectorRegistry, Info, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler

from . import __version__

_LIBRARIES = ("pydicom", "pynetdicom", "highdicom", "onnxruntime")


def build_labels() -> dict[str, str]:
    labels = {"version": __version__, "python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            labels[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            labels[name] = ""
    return labels


def register_build_info(registry: CollectorRegistry) -> Info:
    """``svdmark_build_info`` in ``registry`` (once per registry)."""
    info = Info("svdmark_build", "svdmark version and the versions of its DICOM and inference libraries",
                registry=registry)
    info.info(build_labels())
    return info


def app(registry: CollectorRegistry, health: Callable[[], tuple[bool, dict]]):
    """WSGI app: ``/healthz`` (also ``/health``, ``/``) → ``health()`` as JSON, 200 or 503;
    ``/metrics`` → prometheus_client; anything else 404."""
    metrics = make_wsgi_app(registry)

    def dispatch(environ, start_response):
        path = environ.get("PATH_INFO", "/")
        if path == "/metrics":
            return metrics(environ, start_response)
        if path in ("/healthz", "/health", "/"):
            healthy, report = health()
            body = json.dumps(report).encode()
            start_response("200 OK" if healthy else "503 Service Unavailable",
                           [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        body = b"not found: try /healthz or /metrics\n"
        start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    return dispatch


class Server:
    """``app`` on (host, port) in a daemon thread; port 0 picks a free one."""

    def __init__(self, host: str, port: int, wsgi_app):
        self._httpd = make_server(host, port, wsgi_app, ThreadingWSGIServer, handler_class=_SilentHandler)
        self._httpd.timeout = 1.0
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="svdmark-health", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        return self._httpd.server_address[:2]

    def start(self) -> "Server":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

"""`svdmark serve`: run the DICOM listener, analysis and outbox until stopped."""
from __future__ import annotations

import argparse
import signal
from pathlib import Path

from .. import logs
from .common import add_config_options, load_config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the DICOM service", description=__doc__)
    add_config_options(p)
    p.add_argument("--host", help="listen address (default 0.0.0.0)")
    p.add_argument("--port", type=int, help="listen port (default 11112)")
    p.add_argument("--ae-title", help="our AE title (default SVDMARK)")
    p.add_argument("--destination", action="append", dest="destinations", metavar="AET@HOST:PORT",
                   help="send results here (repeatable)")
    p.add_argument("--allow-calling-ae", action="append", metavar="AET[@HOST]",
                   help="accept associations only from this calling AE title, optionally only from HOST (repeatable)")
    p.add_argument("--tls-cert", type=Path, metavar="PEM", help="listener certificate: the listener speaks DICOM TLS")
    p.add_argument("--tls-key", type=Path, metavar="PEM", help="private key of --tls-cert")
    p.add_argument("--tls-ca", type=Path, metavar="PEM", help="CA bundle trusted for peers' certificates")
    p.add_argument("--tls-require-client-cert", action="store_true", default=None,
                   help="mutual TLS: refuse callers without a certificate signed by --tls-ca")
    p.add_argument("--metrics-port", type=int, metavar="PORT",
                   help="serve /healthz and /metrics on this port (0 = any free port; default off)")
    p.add_argument("--metrics-host", help="address for /healthz and /metrics (default 127.0.0.1)")
    p.add_argument("--settle-seconds", type=float, help="quiet time before evidence-based completion")
    p.add_argument("--fallback-seconds", type=float, help="quiet time after which a series completes anyway")
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args, host=args.host, port=args.port, ae_title=args.ae_title,
                      destinations=args.destinations, allow_calling_ae=args.allow_calling_ae,
                      settle_seconds=args.settle_seconds, fallback_seconds=args.fallback_seconds,
                      log_level=args.log_level, tls_cert=args.tls_cert, tls_key=args.tls_key, tls_ca=args.tls_ca,
                      tls_require_client_cert=args.tls_require_client_cert, metrics_port=args.metrics_port,
                      metrics_host=args.metrics_host)
    logs.setup(cfg.log_level)
    from ..service import Service

    service = Service(cfg)

    def _terminate(signum, frame):  # graceful stop on SIGTERM, as on Ctrl-C
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    service.serve_forever()
    return 0

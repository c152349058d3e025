"""`svdmark serve`: run the DICOM listener, analysis and outbox until stopped."""
from __future__ import annotations

import argparse
import signal

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
    p.add_argument("--allow-calling-ae", action="append", metavar="AET",
                   help="accept associations only from this calling AE title (repeatable)")
    p.add_argument("--settle-seconds", type=float, help="quiet time before evidence-based completion")
    p.add_argument("--fallback-seconds", type=float, help="quiet time after which a series completes anyway")
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args, host=args.host, port=args.port, ae_title=args.ae_title,
                      destinations=args.destinations, allow_calling_ae=args.allow_calling_ae,
                      settle_seconds=args.settle_seconds, fallback_seconds=args.fallback_seconds,
                      log_level=args.log_level)
    logs.setup(cfg.log_level)
    from ..service import Service

    service = Service(cfg)

    def _terminate(signum, frame):  # graceful stop on SIGTERM, as on Ctrl-C
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    service.serve_forever()
    return 0

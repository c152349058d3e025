"""`svdmark serve`: run the DICOM listener, analysis and outbox until stopped.

Refuses to start when another `svdmark serve` holds the data directory (it names
that one's PID), and when no model is active for any task (a service that would fail
every series), unless --receive-only says that is intended.
"""
from __future__ import annotations

import argparse
import logging
import signal
from pathlib import Path

from .. import datadir, logs
from ..config import ROLES, Config
from ..domain import Task
from ..errors import ConfigError, ModelError
from ..logs import event
from .common import add_config_options, add_log_level_option, load_config, log_level

log = logging.getLogger("svdmark.serve")


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
    p.add_argument("--roles", type=_roles, metavar="ROLE[,ROLE…]",
                   help="what this process runs: receive, assemble, work, export (default: all four). Processes "
                        "sharing a --journal postgresql://… and a --spool split the roles between them")
    p.add_argument("--receive-only", action="store_true",
                   help="start even though no model is active: series are received and journalled, their jobs "
                        "fail with the reason; re-queue them (svdmark jobs retry) once a model is installed")
    add_log_level_option(p)
    p.set_defaults(func=run)


def _roles(text: str) -> tuple[str, ...]:
    roles = tuple(r.strip() for r in text.split(",") if r.strip())
    unknown = sorted(set(roles) - set(ROLES))
    if not roles or unknown:
        raise argparse.ArgumentTypeError(f"{text!r}: choose one or more of {', '.join(ROLES)}, comma-separated")
    return roles


def active_models(cfg: Config) -> tuple[dict[str, str], dict[str, str]]:
    """({task: 'name version'}, {task: why none}) for the models this service would use."""
    from ..infer.registry import ModelRegistry, managed

    found, missing = {}, {}
    registry = managed(ModelRegistry(cfg.models_dir), cfg.data_dir)
    for task in Task:
        try:
            spec = registry.active(task)
            found[task.value] = f"{spec.name} {spec.version}"
        except ModelError as exc:
            missing[task.value] = str(exc)
    return found, missing


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args, host=args.host, port=args.port, ae_title=args.ae_title,
                      destinations=args.destinations, allow_calling_ae=args.allow_calling_ae,
                      settle_seconds=args.settle_seconds, fallback_seconds=args.fallback_seconds,
                      log_level=args.log_level, tls_cert=args.tls_cert, tls_key=args.tls_key, tls_ca=args.tls_ca,
                      tls_require_client_cert=args.tls_require_client_cert, metrics_port=args.metrics_port,
                      metrics_host=args.metrics_host, roles=args.roles)
    level = log_level(cfg.log_level)
    lock = datadir.lock(cfg.data_dir)  # before anything touches the journal or service.json
    try:
        return _serve(cfg, level, args.receive_only)
    finally:
        lock.release()


def _serve(cfg: Config, level: str, receive_only: bool) -> int:
    found, missing = active_models(cfg) if "work" in cfg.roles else ({}, {})
    if not found and not receive_only and "work" in cfg.roles:
        raise ConfigError("no active model for any task, so every series would fail ("
                          + "; ".join(missing.values()) + "). Install one (svdmark models install), point "
                          "SVDMARK_MODELS_DIR or [analysis] models_dir at a model folder, or pass --receive-only "
                          "to receive and journal without analysis")
    logs.setup(level, None if logs.format_given() else cfg.log_format)
    for task, why in missing.items():
        event(log, "no_active_model", logging.WARNING, task=task, detail=why)
    from ..service import Service

    service = Service(cfg)

    def _terminate(signum, frame):  # graceful stop on SIGTERM, as on Ctrl-C
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    service.serve_forever()
    return 0

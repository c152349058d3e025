"""Options and output helpers shared by the subcommands.

Configuration file: ``--config``, else ``$SVDMARK_CONFIG``, else ``/etc/svdmark/svdmark.toml``
when it exists (the path the Dockerfiles and the systemd unit use), else built-in defaults.

Output: ``--json`` prints one JSON document on stdout (times as ISO 8601 UTC strings);
without it, plain text. Tables are plain padded columns, one line per row, so that
``grep``, ``awk`` and ``head`` work on them (a wrapping terminal table would split rows).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from .. import config as config_mod
from ..config import Config
from ..domain import iso_utc
from ..errors import ConfigError

CONFIG_ENV = config_mod.CONFIG_FILE_ENV
SYSTEM_CONFIG = Path("/etc/svdmark/svdmark.toml")
LOG_LEVELS = config_mod.LOG_LEVELS
log_level = config_mod.log_level  # the one owner of what a log level is: the configuration


def config_path(explicit: Path | None) -> Path | None:
    """``--config``, else ``$SVDMARK_CONFIG``, else /etc/svdmark/svdmark.toml if it exists, else None."""
    if explicit is not None:
        return explicit
    from_env = config_mod.config_file_from_env()
    if from_env is not None:
        return from_env
    return SYSTEM_CONFIG if SYSTEM_CONFIG.is_file() else None


def add_config_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, metavar="TOML",
                   help=f"configuration file (default: ${CONFIG_ENV}, else {SYSTEM_CONFIG} if it exists)")
    p.add_argument("--data-dir", type=Path,
                   help="journal and spool directory (default: the config's data_dir, else ./svdmark-data)")
    p.add_argument("--journal", metavar="URL",
                   help="the journal: sqlite:///PATH or postgresql://USER@HOST:PORT/DB, shared by processes on "
                        "several hosts (default: journal.sqlite under --data-dir)")
    p.add_argument("--spool", type=Path, metavar="PATH",
                   help="where received and produced objects are stored; several processes share one "
                        "(default: spool/ under --data-dir)")


def add_json_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output (one JSON document on stdout)")


def _argparse_log_level(text: str) -> str:
    try:
        return log_level(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_log_level_option(p: argparse.ArgumentParser, default: str | None = None) -> None:
    p.add_argument("--log-level", type=_argparse_log_level, default=default, metavar="LEVEL",
                   help=f"{', '.join(LOG_LEVELS[:4])} (default: {default or 'the config, else INFO'})")


def load_config(args: argparse.Namespace, **flags: Any) -> Config:
    return config_mod.load(config_path(getattr(args, "config", None)), data_dir=getattr(args, "data_dir", None),
                           journal=getattr(args, "journal", None), spool=getattr(args, "spool", None), **flags)


def open_journal(cfg: Config, hint: str):
    """The configured journal; a clear error (``hint`` says what to check) when its SQLite file does not exist."""
    from ..journal import Journal

    if cfg.journal is None and not cfg.journal_path.exists():
        raise ConfigError(f"no journal at {cfg.journal_path}; {hint}")
    return Journal(cfg.journal_url, lease_seconds=cfg.lease_seconds)


def iso(t: float | None) -> str | None:
    """Epoch seconds → ISO 8601 UTC (``2026-11-30T19:40:00Z``); None stays None."""
    if t is None:
        return None
    return iso_utc(float(t))


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2, default=str)


def emit(args: argparse.Namespace, data: Any, human: str) -> None:
    print(dumps(data) if getattr(args, "json", False) else human)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], empty: str) -> str:
    """Padded columns under a header row; the last column is not padded. ``empty`` when no rows."""
    if not rows:
        return empty
    cells = [[("-" if v is None or v == "" else str(v)).replace("\n", " ") for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths[:-1]) + ("  {}" if len(headers) > 1 else "{}")
    return "\n".join(fmt.format(*r).rstrip() for r in [list(headers), *cells])


def error_json(command: str, message: str, exit_code: int) -> str:
    """The one shape of an error under ``--json``: ``{"error": {"command", "message", "exit_code"}}``."""
    return json.dumps({"error": {"command": command, "message": message, "exit_code": exit_code}})


def fail(args: argparse.Namespace, message: str, exit_code: int = 1) -> int:
    """Report a failure (one line on stderr, or the JSON error on stdout with --json); return the exit code."""
    command = " ".join(x for x in (getattr(args, "command", None), getattr(args, "action", None)) if x)
    if getattr(args, "json", False):
        print(error_json(command, message, exit_code))
    else:
        print(f"svdmark {command}: error: {message}", file=sys.stderr)
    return exit_code

"""The `svdmark` command line. Exit codes: 0 success, 1 failure, 2 usage error.

Every error is one line (``svdmark COMMAND: error: ...`` on stderr, or the JSON error of
:func:`common.error_json` on stdout with ``--json``), never a traceback. Output cut short
by a closed pipe (``svdmark jobs list | head``) ends quietly.
"""
from __future__ import annotations

import argparse
import os
import sys

from ..journal_engine import ERRORS as JOURNAL_ERRORS
from .. import logs
from ..errors import SvdmarkError
from . import analyze, demo, journal_copy, models, ops, purge, results, routing, serve
from .common import error_json, fail

COMMANDS = (serve, demo, ops, analyze, results, models, routing, journal_copy, purge)
EXIT_BROKEN_PIPE = 141  # what a shell reports for a process ended by SIGPIPE (128 + 13)


class Parser(argparse.ArgumentParser):
    """argparse with a one-line usage error (and the JSON error shape under --json)."""

    argv: list[str] = []  # the command line being parsed (set by main)

    def error(self, message: str):  # noqa: D401 (argparse's name)
        command = self.prog.removeprefix("svdmark").strip()
        if "--json" in Parser.argv:
            print(error_json(command, message, 2))
        else:
            print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="svdmark",
        description="Cerebral small-vessel disease markers as a DICOM service: WML volume on NCCT, "
        "microbleeds on SWI. Research and decision support only; never a treatment recommendation.",
    )
    parser.add_argument("--version", action="version", version=f"svdmark {__import__('svdmark').__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.register(sub)
    _add_format_option(sub)
    return parser


def _add_format_option(sub: argparse._SubParsersAction) -> None:
    """--log-format after any subcommand, at any depth (svdmark results summary --log-format json)."""
    for command in sub.choices.values():
        nested = [a for a in command._actions if isinstance(a, argparse._SubParsersAction)]
        if nested:
            for n in nested:
                _add_format_option(n)
        else:
            logs.add_format_option(command)


def _quiet_broken_pipe() -> int:
    """stdout's reader went away: point stdout at /dev/null so the interpreter's final flush is silent."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass
    return EXIT_BROKEN_PIPE


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    Parser.argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(Parser.argv)
    try:
        logs.use_format(getattr(args, "log_format", None))
        code = int(args.func(args) or 0)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except SvdmarkError as exc:
        return fail(args, str(exc))
    except JOURNAL_ERRORS as exc:
        return fail(args, f"the journal cannot be read: {exc}")
    except OSError as exc:
        where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
        return fail(args, f"{exc.strerror or exc}{where}")
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

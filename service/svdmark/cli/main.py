"""The `svdmark` command line. Exit codes: 0 success, 1 failure, 2 usage error."""
from __future__ import annotations

import argparse
import sys

from .. import logs
from ..errors import SvdmarkError
from . import analyze, demo, models, ops, results, routing, serve

COMMANDS = (serve, demo, ops, analyze, results, models, routing)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="svdmark",
        description="Cerebral small-vessel disease markers as a DICOM service: WML volume on NCCT, "
        "microbleeds on SWI. Research and decision support only; never a treatment recommendation.",
    )
    parser.add_argument("--version", action="version", version=f"svdmark {__import__('svdmark').__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.register(sub)
    for command in sub.choices.values():  # --log-format after any subcommand (svdmark.logs)
        logs.add_format_option(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        logs.use_format(getattr(args, "log_format", None))
        return int(args.func(args) or 0)
    except SvdmarkError as exc:
        print(f"svdmark {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""The docs match the CLI: every `svdmark SUBCOMMAND ...` command line in README.md, docs/*.md and
deploy/**/*.md is accepted by the real argument parser (``svdmark.cli.main.build_parser``), without running it.

Command lines come from shell code blocks (info string bash/sh/shell/console, or none) and from inline
code spans; a backslash continues a line. Placeholders become a dummy value: ``<study id>``, shell
variables and ``$(...)`` (whose own svdmark commands are checked too), and the metavariables the help
texts use (``ID``, ``NAME``, ``VERSION``, ``PATH`` ...). Optional parts in brackets and ``...`` are
dropped. Synopses (``svdmark jobs list|show|retry``) and, in prose, the bare name of a command (``svdmark
outbox``, ``svdmark models validate``) are not command lines; in a code block they are.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from svdmark.cli.main import build_parser

from .conftest import REPO
from .test_admin_guide import FENCE

DOCS = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md"), *(REPO / "deploy").glob("**/*.md")])
SHELL_INFO = {"", "bash", "sh", "shell", "console"}
INLINE = re.compile(r"`([^`\n]+)`")
METAVARS = {"ID", "IDS", "NAME", "VERSION", "PATH", "DIR", "FILE", "REPORT_DIR", "TOML", "N"}
DUMMY = "1"  # a value every placeholder position accepts (int job ids, names, paths)
END = {"|", "||", "&", "&&", ";", ";;", "(", ")"}


def _parser_words():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, set(sub.choices)


PARSER, SUBCOMMANDS = _parser_words()


def _lift_substitutions(line: str) -> tuple[str, list[str]]:
    """``$(...)`` → DUMMY; their bodies returned as lines of their own."""
    inner, out, i = [], [], 0
    while i < len(line):
        if line.startswith("$(", i):
            depth, j = 1, i + 2
            while j < len(line) and depth:
                depth += {"(": 1, ")": -1}.get(line[j], 0)
                j += 1
            inner.append(line[i + 2:j - 1])
            out.append(DUMMY)
            i = j
        else:
            out.append(line[i])
            i += 1
    return "".join(out), inner


def svdmark_argvs(line: str) -> list[list[str]]:
    """The argument vectors of the svdmark commands on one shell line (placeholders filled in)."""
    line, inner = _lift_substitutions(line)
    found = [argv for body in inner for argv in svdmark_argvs(body)]
    if re.search(r"\w\|\w", line):  # a synopsis: svdmark jobs list|show|retry
        return found
    line = re.sub(r"<[A-Za-z][^<>]*>", DUMMY, line)  # <study id>, <data-dir>
    line = re.sub(r"\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*", DUMMY, line)  # "$DATA_DIR", ${PORT:-11112}
    line = re.sub(r"\d?>&\d|\d?>>?\s*\S+|<\s+\S+", " ", line)  # redirections
    try:
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|()")
        lexer.whitespace_split = True
        tokens = list(lexer)
    except ValueError:  # unbalanced quotes: prose, not a command
        return found
    for i, tok in enumerate(tokens[:-1]):
        if (tok == "svdmark" or tok.endswith("/svdmark")) and tokens[i + 1] in SUBCOMMANDS:
            argv, bracket = [], 0
            for t in tokens[i + 1:]:
                if t in END or t.startswith("#"):
                    break
                bracket += t.count("[") - t.count("]")
                if "[" in t or "]" in t or bracket > 0:
                    continue
                if t in ("...", "…"):  # "--data-dir …": some value; "serve ... --port": more options
                    argv += [DUMMY] if argv and argv[-1].startswith("-") else []
                    continue
                argv.append(DUMMY if t in METAVARS else t.rstrip("…"))
            found.append(argv)
    return found


def _is_command_name(argv: list[str]) -> bool:
    """``echo``, ``models validate``: the name of a (sub)command, as prose mentions it."""
    parser = PARSER
    for word in argv:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs or word not in subs[0].choices:
            return False
        parser = subs[0].choices[word]
    return True


def command_lines(markdown: str) -> list[tuple[int, str, bool]]:
    """(line number, command line, inline?) of the shell blocks and inline code spans, continuations joined."""
    found, covered = [], []
    for m in FENCE.finditer(markdown):
        covered.append(m.span())
        if (m["info"].split() or [""])[0] not in SHELL_INFO:
            continue
        first = markdown.count("\n", 0, m.start("code")) + 1
        pending, start = "", first
        for n, raw in enumerate(m["code"].splitlines(), first):
            start = start if pending else n
            if raw.rstrip().endswith("\\"):
                pending += raw.rstrip()[:-1] + " "
                continue
            found.append((start, pending + raw, False))
            pending = ""
    for m in INLINE.finditer(markdown):
        if not any(a <= m.start() < b for a, b in covered):
            found.append((markdown.count("\n", 0, m.start()) + 1, m[1], True))
    return found


def documented_commands() -> list[tuple[str, list[str]]]:
    out = []
    for doc in DOCS:
        for line_no, line, inline in command_lines(doc.read_text()):
            for argv in svdmark_argvs(line):
                if not (inline and _is_command_name(argv)):
                    out.append((f"{doc.relative_to(REPO)}:{line_no}", argv))
    return out


def parse_error(argv: list[str]) -> str | None:
    """None when the real parser accepts ``argv`` (``--help`` counts), else its message."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            PARSER.parse_args(argv)
        except SystemExit as exc:
            if exc.code not in (0, None):
                return err.getvalue().strip() or f"exit {exc.code}"
    return None


def test_extraction_and_the_parser_can_fail():
    md = ("Run `svdmark jobs list --state failed` or `svdmark outbox`; synopsis `svdmark jobs list|show`.\n"
          "```bash\nsudo -u svdmark svdmark models validate wml-ncct 1.2.0 \\\n   --reference DIR  # report\n"
          'ID=$(svdmark jobs list --json | python3 -c "x") && svdmark jobs show "$ID" > out.txt 2>&1\n'
          "svdmark serve --port 11112 [--destination ...] --data-dir …\n"
          "svdmark jobs --data-dir /var/lib/svdmark\n```\n```text\nsvdmark jobs --bad\n```\n")
    found = [(argv, inline) for _, line, inline in command_lines(md) for argv in svdmark_argvs(line)]
    argvs = [argv for argv, _ in found]
    assert argvs == [["models", "validate", "wml-ncct", "1.2.0", "--reference", "1"],
                     ["jobs", "list", "--json"], ["jobs", "show", "1"],
                     ["serve", "--port", "11112", "--data-dir", "1"],
                     ["jobs", "--data-dir", "/var/lib/svdmark"],
                     ["jobs", "list", "--state", "failed"], ["outbox"]]
    assert [a for a, inline in found if not (inline and _is_command_name(a))] == argvs[:6]
    assert _is_command_name(["models", "validate"]) and not _is_command_name(["models", "validate", "x"])
    assert parse_error(["jobs", "show", "1"]) is None and parse_error(["status", "--help"]) is None
    assert "invalid choice" in parse_error(["jobs", "--data-dir", "/var/lib/svdmark"])  # issue 12's deploy.md line
    assert "expected one argument" in parse_error(["serve", "--port", "11112", "--data-dir"])
    assert "unrecognized arguments" in parse_error(["echo", "AET@HOST:PORT", "C-ECHO", "a", "peer"])


def test_documents_hold_commands():
    commands = documented_commands()
    assert len(commands) > 40, commands
    assert {argv[0] for _, argv in commands} >= {"serve", "status", "echo", "jobs", "outbox", "models", "results",
                                                   "analyze", "demo", "routing"}


@pytest.mark.parametrize("where,argv", documented_commands(), ids=lambda v: v if isinstance(v, str) else None)
def test_documented_command_parses(where, argv):
    assert parse_error(argv) is None, f"{where}: svdmark {' '.join(argv)}\n{parse_error(argv)}"

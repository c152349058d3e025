"""batch.progress: rich's bar on a terminal, one plain line per step in a log file."""
from __future__ import annotations

import io

from svdmark.batch.progress import Progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_when_not_a_terminal():
    out = io.StringIO()
    bar = Progress(2, "analyze", stream=out)
    bar.step("", n=0)
    bar.step("1.2.3 WML 4.00 mL (0.3 s)")
    bar.step("1.2.4 ignored: localizer")
    bar.close()
    assert out.getvalue().splitlines() == ["analyze [1/2] 1.2.3 WML 4.00 mL (0.3 s)",
                                           "analyze [2/2] 1.2.4 ignored: localizer"]


def test_rich_bar_on_a_terminal():
    out = _Terminal()
    bar = Progress(3, "analyze", stream=out)
    for note in ("a", "b", "c"):
        bar.step(note)
    bar.close()
    text = out.getvalue()
    assert "analyze" in text and "3/3" in text and "\x1b[" in text  # drawn by rich, in place (escape codes)
    assert bar.done == 3


def test_disabled_writes_nothing():
    out = _Terminal()
    bar = Progress(1, "analyze", stream=out, enabled=False)
    bar.step("x")
    bar.close()
    assert out.getvalue() == "" and bar.done == 1

"""Progress of ``svdmark analyze`` on stderr: a rich progress bar on a terminal, one line per step otherwise.

On a terminal, ``rich.progress`` draws the bar (done/total, elapsed, time remaining, the last
series' note) and redraws it in place. When stderr is a file or a pipe (a batch scheduler's
log), each finished step is one plain line, ``<label> [done/total] <note>``, which rich's live
display does not give.
"""
from __future__ import annotations

import sys


class Progress:
    def __init__(self, total: int, label: str, stream=None, enabled: bool = True):
        self.total = max(0, total)
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.done = 0
        self._bar = None
        if self.tty:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                                     TextColumn("{task.fields[note]}"),
                                     console=Console(file=self.stream), transient=False)
            self._task = self._bar.add_task(label, total=self.total or None, note="")
            self._bar.start()

    def step(self, note: str = "", n: int = 1) -> None:
        self.done += n
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(self._task, advance=n, note=note[:80])
        elif note:
            self.stream.write(f"{self.label} [{self.done}/{self.total}] {note}\n")
            self.stream.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

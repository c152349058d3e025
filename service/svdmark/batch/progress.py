"""A plain progress bar on stderr: redrawn in place on a terminal, one line per step otherwise."""
from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, label: str, stream=None, enabled: bool = True, width: int = 28):
        self.total = max(0, total)
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.width = width
        self.done = 0
        self.start = time.monotonic()
        self._last = 0.0

    def step(self, note: str = "", n: int = 1) -> None:
        self.done += n
        if not self.enabled:
            return
        if self.tty:
            now = time.monotonic()
            if now - self._last < 0.1 and self.done < self.total:
                return
            self._last = now
            self.stream.write("\r" + self._bar(note)[:200].ljust(100))
            self.stream.flush()
        elif note:
            self.stream.write(f"{self.label} [{self.done}/{self.total}] {note}\n")
            self.stream.flush()

    def _bar(self, note: str) -> str:
        frac = self.done / self.total if self.total else 1.0
        filled = int(round(frac * self.width))
        elapsed = time.monotonic() - self.start
        eta = ""
        if 0 < self.done < self.total:
            eta = f" eta {_hms(elapsed / self.done * (self.total - self.done))}"
        return (f"{self.label} [{'#' * filled}{'.' * (self.width - filled)}] {self.done}/{self.total}"
                f" {_hms(elapsed)}{eta} {note}")

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"

"""Progress on stderr: a redrawn bar on a terminal, a line every 10 % otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    def __init__(self, label: str, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = self.stream.isatty()
        self.started = time.perf_counter()
        self._last = 0.0
        self._decile = -1

    def __call__(self, done: int, total: int, now_s: float) -> None:
        if not self.enabled or not total:
            return
        wall = time.perf_counter() - self.started
        if self.tty:
            if wall - self._last < 0.25 and done < total:
                return
            self._last = wall
            width = 30
            filled = int(width * done / total)
            self.stream.write(
                f"\r[{self.label:>10}] [{'#' * filled}{'.' * (width - filled)}] {done}/{total} jobs"
                f"  sim day {now_s / 86400:5.2f}  {wall:6.1f} s"
            )
            self.stream.flush()
            return
        decile = 10 * done // total
        if decile > self._decile:
            self._decile = decile
            self.stream.write(f"[{self.label}] {done}/{total} jobs done, sim day {now_s / 86400:.2f}, {wall:.1f} s\n")
            self.stream.flush()

    def close(self, summary: str = "") -> None:
        if not self.enabled:
            return
        if self.tty:
            self.stream.write("\n")
        if summary:
            self.stream.write(f"[{self.label}] {summary}\n")
        self.stream.flush()

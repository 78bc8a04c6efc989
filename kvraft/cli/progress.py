"""A small text progress bar for long commands (``snapshot save``, ``check perf``).

It draws on stderr so stdout stays exactly etcdctl's; on a terminal it redraws one line
with ``\\r``, otherwise it prints a line at each 10% step so logs stay readable.
"""

from __future__ import annotations

import time
from typing import TextIO

from kvraft.cli.goformat import humanize_bytes

__all__ = ["ProgressBar"]


class ProgressBar:
    def __init__(self, out: TextIO, total: int, *, unit: str = "bytes", width: int = 30) -> None:
        self.out = out
        self.total = total
        self.unit = unit
        self.width = width
        self.done = 0
        self._started = time.monotonic()
        self._tty = bool(getattr(out, "isatty", lambda: False)())
        self._last_step = -1

    def _amount(self, value: int) -> str:
        return humanize_bytes(value) if self.unit == "bytes" else f"{value} {self.unit}"

    def render(self) -> str:
        fraction = min(1.0, self.done / self.total) if self.total > 0 else 0.0
        filled = int(fraction * self.width)
        bar = "=" * filled + (">" if filled < self.width else "") + " " * max(0, self.width - filled - 1)
        total = self._amount(self.total) if self.total > 0 else "?"
        elapsed = time.monotonic() - self._started
        return f"[{bar}] {fraction * 100:6.2f}% {self._amount(self.done)} / {total} {elapsed:.1f}s"

    def update(self, done: int, total: int | None = None) -> None:
        self.done = done
        if total is not None:
            self.total = total
        if self._tty:
            self.out.write("\r" + self.render())
            self.out.flush()
            return
        step = int(self.done * 10 / self.total) if self.total > 0 else 0
        if step != self._last_step:
            self._last_step = step
            self.out.write(self.render() + "\n")
            self.out.flush()

    def finish(self) -> None:
        if self.total <= 0 or self.done < self.total:
            self.total = max(self.total, self.done)
        if self._tty or self._last_step != 10:
            self._last_step = -1
            self.update(self.done)
        if self._tty:
            self.out.write("\n")
            self.out.flush()

"""``ManualClock``: a clock that moves only when told to.

Simulated time is an integer count of microseconds, so that sums never drift and the same
run gives the same numbers on every machine. ``monotonic()`` offers it as float seconds,
the shape of ``time.monotonic`` that production code injects.
"""

from __future__ import annotations

__all__ = ["ManualClock"]


class ManualClock:
    """A monotonic clock for tests and the simulator. Never reads the wall clock."""

    __slots__ = ("_now_us",)

    def __init__(self, start_us: int = 0) -> None:
        if start_us < 0:
            raise ValueError("start_us must be >= 0")
        self._now_us = start_us

    @property
    def now_us(self) -> int:
        """Simulated time in microseconds."""
        return self._now_us

    def monotonic(self) -> float:
        """Simulated time in seconds (drop-in for ``time.monotonic``)."""
        return self._now_us / 1_000_000

    def advance_us(self, delta_us: int) -> int:
        """Move forward by ``delta_us`` (>= 0) and return the new time."""
        if delta_us < 0:
            raise ValueError(f"time never goes backwards (delta {delta_us} us)")
        self._now_us += delta_us
        return self._now_us

    def advance(self, seconds: float) -> int:
        """Move forward by ``seconds`` (rounded to the microsecond)."""
        return self.advance_us(round(seconds * 1_000_000))

    def set_us(self, now_us: int) -> None:
        """Jump to ``now_us``, which must not be in the past."""
        if now_us < self._now_us:
            raise ValueError(f"time never goes backwards ({now_us} < {self._now_us})")
        self._now_us = now_us

    def __repr__(self) -> str:
        return f"ManualClock(now_us={self._now_us})"

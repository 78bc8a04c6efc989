"""Per-user token buckets for ``authenticate`` (time as an input). PURE."""

from __future__ import annotations

__all__ = ["RateLimiter"]


class RateLimiter:
    """Each name may spend ``burst`` attempts at once, refilled at ``rate_per_s``."""

    def __init__(self, rate_per_s: float = 5.0, burst: int = 10, max_names: int = 100_000) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.max_names = max_names
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, name: str, now: float) -> bool:
        tokens, last = self._buckets.get(name, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate_per_s)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        if len(self._buckets) >= self.max_names and name not in self._buckets:
            self._forget_full(now)
        self._buckets[name] = (tokens, now)
        return allowed

    def _forget_full(self, now: float) -> None:
        for name, (tokens, last) in list(self._buckets.items()):
            if tokens + (now - last) * self.rate_per_s >= self.burst:
                del self._buckets[name]

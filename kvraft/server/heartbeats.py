"""``LateHeartbeats``: etcd's check that a leader keeps time (its ``contention.TimeoutDetector``
on the heartbeats it sends). Two heartbeats to one peer more than two heartbeat intervals
apart mean the leader's loop stalled (a slow disk, a long apply, a pause) and followers may
have started elections. Pure: the caller gives the time."""

from __future__ import annotations

__all__ = ["LateHeartbeats"]


class LateHeartbeats:
    def __init__(self, interval_s: float) -> None:
        self.expected_s = 2 * interval_s
        """The longest gap between two heartbeats to one peer that is on time."""
        self._sent: dict[int, float] = {}

    def sent(self, to: int, now: float) -> float:
        """A heartbeat to ``to`` goes out at ``now``: by how many seconds it is late (0.0
        when on time, or the first since ``reset``)."""
        last = self._sent.get(to)
        self._sent[to] = now
        return 0.0 if last is None else max(0.0, now - last - self.expected_s)

    def reset(self) -> None:
        """Forget every peer (etcd resets on each change of leader or role)."""
        self._sent.clear()

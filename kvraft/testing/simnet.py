"""``SimNetwork``: a seeded, ordered, fault-injecting network for simulations and tests.

Every send draws its fate from the injected ``random.Random`` in a fixed order (drop?
delay, reorder?, duplicate?), and deliveries come out of a priority queue keyed by
``(deliver_us, seq)``, ``seq`` being the send order: the same seed and the same sends give
the same deliveries, always.

Connectivity faults, in the vocabulary of raft-rs's test harness:

- ``cut(a, b)``: messages from ``a`` to ``b`` are lost (one direction: an asymmetric fault);
- ``isolate(n)``: ``n`` neither sends nor receives;
- ``partition(groups)``: symmetric split; nodes in different groups cannot talk, nodes named
  in no group form one more group together;
- ``reach_only(n, peers)``: partial connectivity, ``n`` talks only with ``peers`` (for
  example node 4 reaching only node 1, as in the Howard-Abraham topologies);
- ``heal()``: removes all of them.

A link is checked when a message is sent and again when it is delivered, so a partition
also loses what was in flight across it (as a dropped TCP connection would).
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["NetFaults", "NetStats", "SimNetwork"]


@dataclass(frozen=True, slots=True)
class NetFaults:
    """Per-message fault probabilities and latencies (microseconds)."""

    drop_p: float = 0.0
    dup_p: float = 0.0
    delay_min_us: int = 200
    delay_max_us: int = 2_000
    reorder_p: float = 0.0
    """Probability that a message gets an extra delay in ``[0, reorder_max_us]``, which lets
    later messages overtake it."""
    reorder_max_us: int = 20_000

    def __post_init__(self) -> None:
        for name in ("drop_p", "dup_p", "reorder_p"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {p}")
        if not 0 <= self.delay_min_us <= self.delay_max_us:
            raise ValueError("need 0 <= delay_min_us <= delay_max_us")
        if self.reorder_max_us < 0:
            raise ValueError("reorder_max_us must be >= 0")


@dataclass(slots=True)
class NetStats:
    sent: int = 0
    delivered: int = 0
    dropped: int = 0
    """Lost to ``drop_p``."""
    blocked: int = 0
    """Lost to a connectivity fault (at send or at delivery)."""
    duplicated: int = 0
    reordered: int = 0


class SimNetwork:
    """Point-to-point datagrams between integer node ids. ``payload`` is opaque."""

    def __init__(self, rng: random.Random, faults: NetFaults | None = None) -> None:
        self.rng = rng
        self.faults = faults or NetFaults()
        self.stats = NetStats()
        self._queue: list[tuple[int, int, int, int, Any]] = []
        self._seq = 0
        self._cuts: set[tuple[int, int]] = set()
        self._isolated: set[int] = set()
        self._group_of: dict[int, int] = {}
        self._reach: dict[int, frozenset[int]] = {}

    # -- connectivity -------------------------------------------------------------------

    def cut(self, a: int, b: int) -> None:
        """Lose messages from ``a`` to ``b`` (not the other way)."""
        self._cuts.add((a, b))

    def isolate(self, n: int) -> None:
        self._isolated.add(n)

    def partition(self, groups: Iterable[Iterable[int]]) -> None:
        """Split symmetrically into ``groups`` (replacing any earlier split)."""
        self._group_of = {}
        for gid, group in enumerate(groups, start=1):
            for n in group:
                if n in self._group_of:
                    raise ValueError(f"node {n} is in two groups")
                self._group_of[n] = gid

    def reach_only(self, n: int, peers: Iterable[int]) -> None:
        """``n`` exchanges messages only with ``peers`` (both directions)."""
        self._reach[n] = frozenset(peers)

    def heal(self) -> None:
        self._cuts.clear()
        self._isolated.clear()
        self._group_of = {}
        self._reach.clear()

    def connected(self, a: int, b: int) -> bool:
        """Whether a message from ``a`` to ``b`` may pass now."""
        if a == b:
            return True
        if (a, b) in self._cuts or a in self._isolated or b in self._isolated:
            return False
        if self._group_of and self._group_of.get(a, 0) != self._group_of.get(b, 0):
            return False
        if self._reach:
            ra, rb = self._reach.get(a), self._reach.get(b)
            if (ra is not None and b not in ra) or (rb is not None and a not in rb):
                return False
        return True

    def is_healed(self) -> bool:
        return not (self._cuts or self._isolated or self._group_of or self._reach)

    def describe(self) -> str:
        """The connectivity faults in force, as one line."""
        parts = []
        if self._cuts:
            parts.append("cut=" + ",".join(f"{a}>{b}" for a, b in sorted(self._cuts)))
        if self._isolated:
            parts.append("isolated=" + ",".join(map(str, sorted(self._isolated))))
        if self._group_of:
            groups: dict[int, list[int]] = {}
            for n, g in sorted(self._group_of.items()):
                groups.setdefault(g, []).append(n)
            parts.append("groups=" + "|".join(",".join(map(str, g)) for g in groups.values()))
        if self._reach:
            parts.append(
                "reach="
                + ";".join(
                    f"{n}:{','.join(map(str, sorted(p)))}" for n, p in sorted(self._reach.items())
                )
            )
        return " ".join(parts) or "healed"

    # -- traffic ------------------------------------------------------------------------

    def send(self, src: int, dst: int, payload: Any, now_us: int) -> int:
        """Queue ``payload`` from ``src`` to ``dst``; returns how many copies were queued
        (0 when lost, 2 when duplicated)."""
        f = self.faults
        rng = self.rng
        self.stats.sent += 1
        if not self.connected(src, dst):
            self.stats.blocked += 1
            return 0
        if f.drop_p and rng.random() < f.drop_p:
            self.stats.dropped += 1
            return 0
        copies = 1
        self._push(src, dst, payload, now_us + self._delay())
        if f.dup_p and rng.random() < f.dup_p:
            self.stats.duplicated += 1
            copies = 2
            self._push(src, dst, payload, now_us + self._delay())
        return copies

    def _delay(self) -> int:
        f = self.faults
        rng = self.rng
        d = (
            f.delay_min_us
            if f.delay_min_us == f.delay_max_us
            else rng.randint(f.delay_min_us, f.delay_max_us)
        )
        if f.reorder_p and rng.random() < f.reorder_p:
            self.stats.reordered += 1
            d += rng.randint(0, f.reorder_max_us)
        return d

    def _push(self, src: int, dst: int, payload: Any, at_us: int) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (at_us, self._seq, src, dst, payload))

    def next_delivery_us(self) -> int | None:
        """When the next queued message is due, or None when nothing is in flight."""
        return self._queue[0][0] if self._queue else None

    def deliver_due(
        self, now_us: int, lost: list[tuple[int, int, Any]] | None = None
    ) -> list[tuple[int, int, Any]]:
        """Pop every message due at or before ``now_us``, in ``(deliver_us, seq)`` order, as
        ``(src, dst, payload)``; those whose link is now cut are lost (and appended to
        ``lost`` when given, so a transport can report them)."""
        out: list[tuple[int, int, Any]] = []
        q = self._queue
        while q and q[0][0] <= now_us:
            _at, _seq, src, dst, payload = heapq.heappop(q)
            if self.connected(src, dst):
                self.stats.delivered += 1
                out.append((src, dst, payload))
            else:
                self.stats.blocked += 1
                if lost is not None:
                    lost.append((src, dst, payload))
        return out

    def pop_next(self) -> tuple[int, int, int, Any] | None:
        """Pop the next message regardless of time as ``(deliver_us, src, dst, payload)``
        (None when empty); it is returned even if its link is now cut: check
        ``connected`` when that matters."""
        if not self._queue:
            return None
        at, _seq, src, dst, payload = heapq.heappop(self._queue)
        return at, src, dst, payload

    def drop_all_to(self, dst: int) -> int:
        """Forget every queued message addressed to ``dst`` (a crashed node's buffers)."""
        keep = [e for e in self._queue if e[3] != dst]
        lost = len(self._queue) - len(keep)
        if lost:
            heapq.heapify(keep)
            self._queue = keep
        return lost

    def in_flight(self) -> int:
        return len(self._queue)

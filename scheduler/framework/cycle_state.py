"""``CycleState``: scratch space for one attempt to place one job.

Plugins write what later extension points need (the topology plugin writes the levels the
placement may try; the backfill plugin writes which reservations the job must respect and adds
that to the failure-cache ``signature``). A fresh CycleState is made for every attempt; nothing
in it survives the attempt.
"""

from __future__ import annotations

import random
from typing import TypeVar

from scheduler.model import Level
from scheduler.state import ClusterState, JobInfo

__all__ = ["CycleState"]

T = TypeVar("T")


class CycleState:
    __slots__ = (
        "state", "now_s", "rng", "info", "post", "levels", "fewest_nodes", "ignore_holds", "signature", "_data",
    )

    def __init__(self, state: ClusterState, now_s: float, rng: random.Random, info: JobInfo, post: bool = True) -> None:
        self.state = state
        self.now_s = now_s
        self.rng = rng
        self.info = info
        self.post = post  # whether a failed placement runs the PostFilter plugins
        # Topology levels the placement tries, tightest first. Without a topology plugin the
        # whole cluster is one domain.
        self.levels: tuple[Level, ...] = (Level.CLUSTER,)
        self.fewest_nodes = False
        # Reservations whose held GPUs this job may use anyway (backfill: it is expected to end
        # before the reservation starts). A job may always use the GPUs held for itself.
        self.ignore_holds: frozenset[str] = frozenset()
        # Everything besides the job's shape that decides whether a placement exists; two jobs
        # with equal shape and signature in one epoch either both fit or both fail.
        self.signature: list[object] = []
        self._data: dict[str, object] = {}

    def write(self, key: str, value: object) -> None:
        self._data[key] = value

    def read(self, key: str, kind: type[T]) -> T | None:
        value = self._data.get(key)
        if value is None:
            return None
        assert isinstance(value, kind), f"cycle state {key!r} holds {type(value).__name__}"
        return value

"""Elastic: grow on free capacity (torchrun's elastic agent restarting its workers when nodes
join, Pollux/AdaptDL's scale-out). A running elastic job (``min_available`` below its
replicas) that was bound with fewer tasks than it wants may restart larger once it has run
``grow_after_s`` in this run and no pending job at least its rank is waiting for resources:
capacity nobody ahead of it can use goes to it, each grow costs one restart, and a job just
started or just grown is left alone that long. The runtime finds the size (see
``ResizePlugin``); ``hold_s`` bounds the hold on the new placement's GPUs while the run stops.

Shrinking needs no plugin: preemption evicts an elastic gang whole, and its next run takes the
size that fits then (``Scheduler._elastic``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scheduler.framework.args import decode_args
from scheduler.framework.interfaces import Handle, ResizePlugin
from scheduler.framework.status import Code
from scheduler.model import PendingReason
from scheduler.state import ClusterState, JobInfo

__all__ = ["NAME", "Elastic", "ElasticArgs", "new"]

NAME = "elastic"

# pending jobs waiting for something capacity cannot give: they do not hold a grow back
_NOT_RESOURCES = frozenset({Code.INFEASIBLE.value, Code.UNRESOLVABLE.value, Code.WAIT.value})


@dataclass(frozen=True)
class ElasticArgs:
    grow_after_s: float = 600.0
    hold_s: float = 300.0


class Elastic:
    name = NAME

    def __init__(self, args: ElasticArgs, handle: Handle) -> None:
        if args.grow_after_s < 0 or args.hold_s <= 0:
            raise ValueError(f"{NAME}: grow_after_s must be >= 0 and hold_s > 0")
        self.grow_after_s = args.grow_after_s
        self.hold_s = args.hold_s
        self.handle = handle

    def grow_order(self, state: ClusterState, now_s: float, waiting: Mapping[str, PendingReason]) -> list[JobInfo]:
        ready = []
        for job_id in sorted(state.shrunk):
            info = state.running.get(job_id)
            if (info is None or info.evicting or info.bound_at_s is None or job_id in state.reservations
                    or now_s - info.bound_at_s < self.grow_after_s):
                continue
            ready.append(info)
        if not ready:
            return []
        rank = self.handle.rank
        ahead = [rank(p, now_s) for j, p in state.pending.items()
                 if (r := waiting.get(j)) is None or r.code not in _NOT_RESOURCES]
        top = max(ahead, default=None)
        ranked = [(rank(info, now_s), info) for info in ready]
        ranked.sort(key=lambda t: t[0], reverse=True)  # the most important first (ties: by name)
        return [info for r, info in ranked if top is None or r > top]


def new(args: Mapping[str, Any], handle: Handle) -> Elastic:
    return Elastic(decode_args(ElasticArgs, args), handle)


_check: ResizePlugin = Elastic(ElasticArgs(), None)  # type: ignore[arg-type]

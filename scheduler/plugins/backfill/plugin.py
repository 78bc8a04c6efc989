"""Backfill: reservations so that big gangs are not starved, and EASY-style backfill.

PostFilter: when a gang of at least ``min_gpus`` GPUs does not fit, has waited at least
``reserve_after_s`` and fewer than ``max_reservations`` backfill reservations exist, reserve
the domain where it can start earliest. The start is estimated from the running jobs'
estimated ends (``est_runtime_s`` or ``max_runtime_s`` minus service received; a job past its
estimate is expected to run ``overrun_factor`` x its elapsed time more; jobs without any
estimate never end, for this purpose). The reservation holds, on chosen nodes, the GPUs the
gang will need: as they free up nobody else takes them, so the domain drains for the gang.
With no estimates at all the domain closest to fitting is reserved and simply drains.

PreFilter (``backfill``): a job expected to finish before a reservation's estimated start
may use the GPUs it holds (it will be gone in time). The framework enforces holds for every
other job. CPU and memory are not projected (GPUs decide).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from scheduler.framework.args import decode_args
from scheduler.framework.cycle_state import CycleState
from scheduler.framework.interfaces import (
    Handle,
    PassPlugin,
    PostFilterPlugin,
    PostFilterResult,
    PreFilterPlugin,
)
from scheduler.framework.status import SUCCESS, Code, Status
from scheduler.model import Level
from scheduler.state import ClusterState, JobInfo, NodeInfo, Phase

__all__ = ["NAME", "Backfill", "BackfillArgs", "new"]

NAME = "backfill"
KIND = "backfill"
INF = float("inf")

NOTHING = PostFilterResult(Status.unschedulable("no reservation", NAME))


@dataclass(frozen=True)
class BackfillArgs:
    max_reservations: int = 1
    min_gpus: int = 2
    reserve_after_s: float = 0.0
    backfill: bool = True
    overrun_factor: float = 0.5


def expected_end_s(info: JobInfo, now_s: float, overrun_factor: float) -> float:
    """When a running job is expected to end (INF without an estimate)."""
    hint = info.job.runtime_hint_s
    if hint is None or not info.job.gpus:
        return INF
    done_s = info.attained_at(now_s) / info.job.gpus
    remaining = hint - done_s
    if remaining <= 0:
        remaining = overrun_factor * done_s
    return now_s + remaining


class Backfill:
    name = NAME

    def __init__(self, args: BackfillArgs, handle: Handle) -> None:
        if args.max_reservations < 0 or args.min_gpus < 0 or args.reserve_after_s < 0:
            raise ValueError("backfill: arguments must be >= 0")
        self.args = args
        self.handle = handle
        self.starts: dict[str, float] = {}

    # --- pass -------------------------------------------------------------------------------

    def begin_pass(self, state: ClusterState, now_s: float) -> None:
        """Refresh the estimated start of every backfill reservation (also its ``start_s``, which
        the pending reason shows), and of every hold that waits for another job to end (a
        preempted gang's return hold: when its preemptor ends)."""
        self.starts = {}
        for reservation in state.reservations.values():
            if reservation.after_job is not None:
                self.starts[reservation.job_id] = self._after_s(state, reservation.after_job, now_s)
                continue
            if reservation.kind != KIND:
                continue
            start = now_s
            for name, hold in reservation.holds.items():
                node = state.nodes.get(name)
                if node is None:
                    start = INF
                    break
                ready = self._ready_s(state, node, hold, now_s, reservation.job_id)
                start = max(start, ready)
            self.starts[reservation.job_id] = start
            # What the pending reason tells the user: the estimate as of now, not the one
            # made with the reservation (its blockers may have run past their estimates).
            reservation.start_s = None if start == INF else start

    def _after_s(self, state: ClusterState, job_id: str, now_s: float) -> float:
        """When ``job_id`` is expected to end: now if it is gone; if it is still pending, its
        expected run time from now (it is about to start on the GPUs it freed)."""
        after = state.jobs.get(job_id)
        if after is None:
            return now_s
        if after.phase is Phase.RUNNING:
            return expected_end_s(after, now_s, self.args.overrun_factor)
        left = after.remaining_hint_s(now_s, self.args.overrun_factor)
        return INF if left is None else now_s + left

    def _ready_s(self, state: ClusterState, node: NodeInfo, need: int, now_s: float, owner: str) -> float:
        free = node.free_gpus - sum(g for o, g in node.holds.items() if o != owner)
        if free >= need:
            return now_s
        ends = sorted(
            (expected_end_s(state.jobs[j], now_s, self.args.overrun_factor), g)
            for j, g in node.jobs.items()
        )
        for end, gpus in ends:
            free += gpus
            if free >= need:
                return end
        return INF

    # --- PreFilter --------------------------------------------------------------------------

    def pre_filter(self, cs: CycleState, info: JobInfo) -> Status:
        if not self.args.backfill or not self.starts:
            return SUCCESS
        hint = info.job.runtime_hint_s
        if hint is None:
            return SUCCESS
        done = info.attained_gpu_s / info.job.gpus if info.job.gpus else 0.0
        end = cs.now_s + max(hint - done, 0.0)
        cs.ignore_holds = frozenset(
            owner for owner, start in self.starts.items() if end <= start and owner != info.job.job_id
        )
        return SUCCESS

    # --- PostFilter -------------------------------------------------------------------------

    def post_filter(self, cs: CycleState, info: JobInfo, status: Status) -> PostFilterResult:
        args = self.args
        job = info.job
        state = cs.state
        if status.code not in (Code.UNSCHEDULABLE, Code.UNRESOLVABLE) or status.plugin == "quota":
            return NOTHING
        if job.job_id in state.reservations or job.gpus < args.min_gpus or not job.gpus_per_task:
            return NOTHING
        if cs.now_s - info.pending_since_s < args.reserve_after_s:
            return NOTHING
        if sum(1 for r in state.reservations.values() if r.kind == KIND) >= args.max_reservations:
            return NOTHING
        for level in cs.levels:
            best: tuple[float, int, str, dict[str, int]] | None = None
            for name, nodes in self._domains(cs, info, level):
                found = self._earliest(cs, info, level, nodes)
                if found is None:
                    continue
                start, free_now, holds = found
                key = (start, -free_now, name, holds)
                if best is None or key[:3] < best[:3]:
                    best = key
            if best is not None:
                start, _, name, holds = best
                return PostFilterResult(SUCCESS, (), holds, None if start == INF else start, KIND, name)
        return NOTHING

    def _domains(self, cs: CycleState, info: JobInfo, level: Level) -> list[tuple[str, list[NodeInfo]]]:
        state = cs.state
        if level <= Level.NODE:
            return [(n.name, [n]) for n in state.nodes.values()
                    if n.usable and n.node.gpus >= info.job.gpus]
        return [(d.name, d.nodes()) for d in self.handle.domains(level)
                if d.capacity_gpus >= info.job.gpus]

    def _earliest(
        self, cs: CycleState, info: JobInfo, level: Level, nodes: Sequence[NodeInfo]
    ) -> tuple[float, int, dict[str, int]] | None:
        """(estimated start, GPUs free now, holds) of the gang in this domain, or None."""
        job = info.job
        state, now = cs.state, cs.now_s
        per_task = job.gpus_per_task
        # Which nodes could ever host tasks of this job (type, selector, health)?
        empty = []
        for node in nodes:
            copy = node.copy()
            copy.free_mask, copy.free_gpus = copy.full_mask, node.node.gpus
            copy.free_cpu, copy.free_mem = node.node.cpu_milli, node.node.memory_mib
            copy.holds, copy.held_gpus = {}, 0
            empty.append(copy)
        static = {n.name: cap for n, cap in self.handle.fit_nodes(cs, info, empty)}
        if sum(static.values()) < job.tasks:
            return None
        # Never hold what other reservations hold: a node's room for this job is its GPUs less
        # the others' holds, however much frees up (two reservations on one node's 8 GPUs
        # would each wait for the other).
        free: dict[str, int] = {}
        room: dict[str, int] = {}
        releases: list[tuple[float, str, int]] = []
        for node in nodes:
            if node.name not in static:
                continue
            others = sum(g for o, g in node.holds.items() if o != job.job_id)
            room[node.name] = max(0, node.node.gpus - others)
            free[node.name] = max(0, node.free_gpus - others)
            for j, gpus in node.jobs.items():
                releases.append((expected_end_s(state.jobs[j], now, self.args.overrun_factor), node.name, gpus))
        releases.sort()
        free_now = sum(free.values())
        if sum(min(static[n], r // per_task) for n, r in room.items()) < job.tasks:
            return None

        def plan() -> dict[str, int] | None:
            tasks = {n: min(static[n], f // per_task) for n, f in free.items()}
            if level <= Level.NODE:
                return {n: job.tasks * per_task for n, t in tasks.items() if t >= job.tasks} or None
            order = sorted(tasks.items(), key=lambda nt: (-nt[1], nt[0]))
            holds: dict[str, int] = {}
            left = job.tasks
            for name, t in order:
                if not left or not t:
                    break
                take = min(t, left)
                holds[name] = take * per_task
                left -= take
            if left or (cs.fewest_nodes and len(holds) > -(-job.gpus // max(static_gpus, 1))):
                return None
            return holds

        static_gpus = max((n.node.gpus for n in nodes if n.name in static), default=0)
        holds = plan()
        if holds is not None:
            return now, free_now, holds
        for end, name, gpus in releases:
            if end == INF:
                break
            free[name] = min(free[name] + gpus, room[name])
            holds = plan()
            if holds is not None:
                return end, free_now, holds
        # No estimate says when: drain the domain, holding the nodes with the most free now.
        order = sorted(free, key=lambda n: (-free[n], n))
        holds = {}
        left = job.tasks
        for name in order:
            if not left:
                break
            take = min(static[name], room[name] // per_task, left)
            if take:
                holds[name] = take * per_task
                left -= take
        return INF, free_now, holds


def new(args: Mapping[str, Any], handle: Handle) -> Backfill:
    return Backfill(decode_args(BackfillArgs, args), handle)


def _conforms(handle: Handle) -> tuple[PassPlugin, PreFilterPlugin, PostFilterPlugin]:
    plugin = Backfill(BackfillArgs(), handle)
    return plugin, plugin, plugin

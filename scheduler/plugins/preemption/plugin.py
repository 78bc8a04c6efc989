"""Preemption: evict whole lower-ranked gangs, choosing the set that loses the fewest GPU-hours.

Runs as a PostFilter when a job is UNSCHEDULABLE. Victims must be preemptible, not already
being evicted, and rank strictly lower than the preemptor (the QueueSort plugin's rank:
priority, or priority then LAS queue). With ``reclaim_borrowed`` a job whose tenant stays
within its nominal quota may also evict gangs of tenants that are borrowing.

For each level the topology plugin allows, tightest first, and each domain of that level
(a node, a rack, ...): remove every eligible victim touching the domain; if the gang then
fits, give victims back one at a time, most expensive first, as long as it still fits. The
domain whose remaining victims lose the fewest GPU-hours wins (then fewer victims, then lower
victim rank). The cost of a victim is its GPUs x (restart overhead + work since its last
checkpoint). The preemptor gets a hold on the freed GPUs so no one else takes them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from scheduler.framework.args import decode_args
from scheduler.framework.cycle_state import CycleState
from scheduler.framework.interfaces import Handle, PassPlugin, PostFilterPlugin, PostFilterResult
from scheduler.framework.status import SUCCESS, Status
from scheduler.model import Level, Preemption
from scheduler.plugins.quota.plugin import nominal_gpus
from scheduler.state import ClusterState, JobInfo, NodeInfo

__all__ = ["NAME", "Preempt", "PreemptionArgs", "new"]

NAME = "preemption"

NOTHING = PostFilterResult(Status.unschedulable("no preemption", NAME))


@dataclass(frozen=True)
class PreemptionArgs:
    restart_overhead_s: float = 30.0
    reclaim_borrowed: bool = False


@dataclass(frozen=True, slots=True)
class _Victim:
    info: JobInfo
    cost_gpu_h: float
    rank: tuple[float, ...]


class Preempt:
    name = NAME

    def __init__(self, args: PreemptionArgs, handle: Handle) -> None:
        if args.restart_overhead_s < 0:
            raise ValueError("preemption: restart_overhead_s must be >= 0")
        self.restart_s = args.restart_overhead_s
        self.reclaim = args.reclaim_borrowed
        self.handle = handle
        self.lowest_rank: tuple[float, ...] | None = None
        self.borrowing = False

    def begin_pass(self, state: ClusterState, now_s: float) -> None:
        """Lowest rank among preemptible running gangs: a job ranked no higher cannot preempt.
        (A pass attempts jobs in rank order, so gangs it binds never rank below a later job.)"""
        ranks = [self.handle.rank(v, now_s) for v in state.running.values()
                 if v.job.preemptible and not v.evicting]
        self.lowest_rank = min(ranks) if ranks else None
        self.borrowing = self.reclaim and any(
            state.tenant_gpus.get(t, 0) > nominal_gpus(state, t) for t in state.tenant_gpus)

    def cost_gpu_h(self, victim: JobInfo, now_s: float) -> float:
        lost_s = self.restart_s
        interval = victim.job.checkpoint_interval_s
        if interval and victim.bound_at_s is not None:
            lost_s += (now_s - victim.bound_at_s) % interval
        return victim.job.gpus * lost_s / 3600.0

    def _eligible(self, cs: CycleState, info: JobInfo) -> dict[str, _Victim]:
        state, now = cs.state, cs.now_s
        mine = self.handle.rank(info, now)
        job = info.job
        reclaim = False
        if self.reclaim and state.tenants:
            usage = state.tenant_gpus.get(job.tenant, 0)
            reclaim = usage + job.gpus <= nominal_gpus(state, job.tenant)
        out: dict[str, _Victim] = {}
        for victim in state.running.values():
            if victim.evicting or not victim.job.preemptible or victim.job.job_id == job.job_id:
                continue
            rank = self.handle.rank(victim, now)
            ok = rank < mine
            if not ok and reclaim and victim.job.tenant != job.tenant:
                tenant = victim.job.tenant
                ok = state.tenant_gpus.get(tenant, 0) > nominal_gpus(state, tenant)
            if ok:
                out[victim.job.job_id] = _Victim(victim, self.cost_gpu_h(victim, now), rank)
        return out

    def post_filter(self, cs: CycleState, info: JobInfo, status: Status) -> PostFilterResult:
        if not status.preemption_may_help:
            return NOTHING
        if self.lowest_rank is None or (
            self.handle.rank(info, cs.now_s) <= self.lowest_rank and not self.borrowing
        ):
            return NOTHING
        job = info.job
        eligible = self._eligible(cs, info)
        if not eligible:
            return NOTHING
        state = cs.state
        freeable = sum(v.info.job.gpus for v in eligible.values())
        if state.free_gpus(job.gpu_type) + freeable < job.gpus:
            return NOTHING
        by_node: dict[str, list[str]] = {}
        for job_id, victim in eligible.items():
            assert victim.info.placement is not None
            for name in victim.info.placement.nodes():
                by_node.setdefault(name, []).append(job_id)
        for level in cs.levels:
            if level <= Level.NODE:
                groups = [[state.nodes[name]] for name in sorted(by_node) if name in state.nodes]
            else:
                groups = [d.nodes() for d in self.handle.domains(level)]
            best: tuple[tuple[float, int, tuple[float, ...]], list[_Victim], dict[str, int], str] | None = None
            for nodes in groups:
                touching = sorted({v for n in nodes for v in by_node.get(n.name, ())})
                if not touching:
                    continue
                found = self._minimal(cs, info, level, nodes, [eligible[v] for v in touching])
                if found is None:
                    continue
                victims, plan = found
                key = (round(sum(v.cost_gpu_h for v in victims), 9), len(victims),
                       max(v.rank for v in victims))
                if best is None or key < best[0]:
                    domain = nodes[0].name if level <= Level.NODE else nodes[0].rack.name
                    if level > Level.RACK:
                        domain = "cluster" if level == Level.CLUSTER else nodes[0].rack.spine
                    best = (key, victims, plan, domain)
            if best is not None:
                _, victims, plan, domain = best
                preemptions = tuple(
                    Preemption(v.info.job.job_id, job.job_id, v.cost_gpu_h,
                               f"preempted by {job.job_id} (rank {self.handle.rank(info, cs.now_s)} > {v.rank})")
                    for v in victims)
                holds = {name: tasks * job.gpus_per_task for name, tasks in plan.items()}
                return PostFilterResult(SUCCESS, preemptions, holds, cs.now_s, "preemption", domain)
        return NOTHING

    def _minimal(
        self, cs: CycleState, info: JobInfo, level: Level, nodes: Sequence[NodeInfo],
        victims: list[_Victim],
    ) -> tuple[list[_Victim], dict[str, int]] | None:
        removed = {v.info.job.job_id: v for v in victims}
        plan = self._fits(cs, info, level, nodes, removed)
        if plan is None:
            return None
        for victim in sorted(victims, key=lambda v: (-v.cost_gpu_h, tuple(-r for r in v.rank))):
            job_id = victim.info.job.job_id
            del removed[job_id]
            trial = self._fits(cs, info, level, nodes, removed)
            if trial is None:
                removed[job_id] = victim
            else:
                plan = trial
        return list(removed.values()), plan

    def _fits(
        self, cs: CycleState, info: JobInfo, level: Level, nodes: Sequence[NodeInfo],
        removed: Mapping[str, _Victim],
    ) -> dict[str, int] | None:
        view: list[NodeInfo] = []
        for node in nodes:
            gone = [removed[j] for j in node.jobs if j in removed]
            if not gone:
                view.append(node)
                continue
            copy = node.copy()
            for victim in gone:
                vjob = victim.info.job
                assert victim.info.placement is not None
                gpus = victim.info.placement.gpus_by_node()[node.name]
                mask = 0
                for gpu in gpus:
                    mask |= 1 << gpu
                copy.free_mask |= mask
                tasks_here = len(gpus) // vjob.gpus_per_task if vjob.gpus_per_task else 1
                copy.free_cpu += tasks_here * vjob.cpu_milli_per_task
                copy.free_mem += tasks_here * vjob.memory_mib_per_task
            copy.free_gpus = copy.free_mask.bit_count()
            view.append(copy)
        feasible = self.handle.fit_nodes(cs, info, view)
        if level <= Level.NODE:
            if feasible and feasible[0][1] >= info.job.tasks:
                return {feasible[0][0].name: info.job.tasks}
            return None
        return self.handle.assign(cs, info, feasible)


def new(args: Mapping[str, Any], handle: Handle) -> Preempt:
    return Preempt(decode_args(PreemptionArgs, args), handle)


def _conforms(handle: Handle) -> tuple[PostFilterPlugin, PassPlugin]:
    plugin = Preempt(PreemptionArgs(), handle)
    return plugin, plugin

"""Preemption: evict whole lower-ranked gangs, choosing the set that loses the fewest GPU-hours.

Runs as a PostFilter when a job is UNSCHEDULABLE. Victims must be preemptible, not already
being evicted, and rank strictly lower than the preemptor (the QueueSort plugin's rank:
priority, or priority then LAS queue), and pass the QueueSort plugin's pairwise test when it
has one (``Handle.may_evict``: ``remaining``'s ``preempt_margin``). With ``reclaim_borrowed``
a job whose tenant stays within its nominal quota may also evict gangs of tenants that are
borrowing. With
``max_evictions`` a gang already evicted that many times is not evicted again (bounds churn,
as Tiresias bounds thrashing: a long job demoted by LAS is not bounced back and forth).

The victim set is the cheapest one ``victims.search`` finds over the levels and domains the
topology plugin allows (fewest GPU-hours lost, then fewest victims, then lowest rank). The cost of a victim is its GPUs x (restart overhead + work since its last
checkpoint). The preemptor gets a hold on the freed GPUs so no one else takes them, for at
most ``hold_s`` (600 s: far more than an eviction's grace period, 30 s by default in the
daemon, and the simulator's preemptor starts in the same pass): a preemptor that can no
longer start there (its spec or quota changed, a node failed) must not keep them idle for
ever; if it still outranks gangs when the hold lapses it may preempt again.

**Shrink on contention** (``shrink_elastic``, on by default): a victim that is an elastic job
(``min_tasks``) is evicted whole, as every victim is (its workers restart, as torchrun's do on a
membership change), but keeps a ``shrink`` hold, for ``hold_s``, on the nodes of its run the
preemptor's placement does not use when they carry at least its minimum size: it restarts there
at once with that many tasks, from its checkpoint, instead of waiting in the queue behind
others. A node some other reservation holds GPUs on is not kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scheduler.framework.args import decode_args
from scheduler.framework.cycle_state import CycleState
from scheduler.framework.interfaces import Handle, PassPlugin, PostFilterPlugin, PostFilterResult
from scheduler.framework.status import SUCCESS, Status
from scheduler.model import Preemption
from scheduler.plugins.preemption.victims import Candidate, search
from scheduler.plugins.quota.plugin import Quota, nominal_gpus
from scheduler.state import ClusterEvent, ClusterState, JobInfo

__all__ = ["NAME", "Preempt", "PreemptionArgs", "new"]

NAME = "preemption"

NOTHING = PostFilterResult(Status.unschedulable("no preemption", NAME))


@dataclass(frozen=True)
class PreemptionArgs:
    restart_overhead_s: float = 30.0
    reclaim_borrowed: bool = False
    max_evictions: int | None = None
    hold_s: float = 600.0
    # Return holds: each evicted gang of at least ``return_min_gpus`` GPUs keeps a hold on the
    # GPUs it ran on, from when its preemptor is expected to end (jobs expected to end before
    # then may use them, as in backfill), for the preemptor's expected run + ``hold_s``.
    return_holds: bool = False
    return_min_gpus: int = 2
    # Remaining-work rule: a gang expected to end within ``spare_within`` x the preemptor's
    # expected run time is not a victim (None: off).
    spare_within: float | None = None
    # Ski rental: a job preempts only once it has waited ``patience`` x its expected run time
    # (1: the break-even point, where waiting has cost it as much as evicting costs a victim).
    patience: float | None = None
    # Shrink on contention: an evicted elastic victim keeps a hold on the nodes of its run the
    # preemptor does not take, when they carry at least its minimum size.
    shrink_elastic: bool = True


class Preempt:
    name = NAME

    def __init__(self, args: PreemptionArgs, handle: Handle) -> None:
        if args.restart_overhead_s < 0:
            raise ValueError("preemption: restart_overhead_s must be >= 0")
        self.restart_s = args.restart_overhead_s
        self.reclaim = args.reclaim_borrowed
        if args.max_evictions is not None and args.max_evictions < 1:
            raise ValueError("preemption: max_evictions must be >= 1 (or None)")
        self.max_evictions = args.max_evictions
        if args.hold_s <= 0:
            raise ValueError("preemption: hold_s must be > 0")
        self.hold_s = args.hold_s
        if (args.return_min_gpus < 1 or (args.spare_within is not None and args.spare_within < 0)
                or (args.patience is not None and args.patience < 0)):
            raise ValueError("preemption: return_min_gpus must be >= 1, spare_within and patience >= 0")
        self.args = args
        self.handle = handle
        self.lowest_rank: tuple[float, ...] | None = None
        self.borrowing = False
        self._pass: tuple[ClusterState, float] | None = None
        self.failed: dict[tuple[object, ...], int] = {}

    def events_to_register(self) -> frozenset[ClusterEvent]:
        return frozenset({
            ClusterEvent.PRIORITY_CHANGED,  # a running gang's rank fell (LAS demotion, a quantum
            # ended): it may now be a victim of a job whose preemption failed
        })

    def begin_pass(self, state: ClusterState, now_s: float) -> None:
        self._pass = (state, now_s)
        self.failed = {}
        self.lowest_rank = None
        self.borrowing = False

    def _lowest(self) -> tuple[float, ...] | None:
        """Lowest rank among preemptible running gangs (computed once per pass, when first
        needed): a job ranked no higher cannot preempt. A pass attempts jobs in rank order, so
        gangs it binds never rank below a later job of the same pass."""
        if self._pass is not None:
            state, now_s = self._pass
            self._pass = None
            rank = self.handle.rank
            cap = self.max_evictions
            ranks = [rank(v, now_s) for v in state.running.values()
                     if v.job.preemptible and not v.evicting and (cap is None or v.evictions < cap)]
            self.lowest_rank = min(ranks) if ranks else None
            self.borrowing = self.reclaim and any(
                state.tenant_gpus.get(t, 0) > nominal_gpus(state, t) for t in state.tenant_gpus)
        return self.lowest_rank

    def cost_gpu_h(self, victim: JobInfo, now_s: float) -> float:
        lost_s = self.restart_s
        interval = victim.job.checkpoint_interval_s
        if interval and victim.bound_at_s is not None:
            lost_s += (now_s - victim.bound_at_s) % interval
        return victim.job.gpus * lost_s / 3600.0

    def _eligible(self, cs: CycleState, info: JobInfo) -> dict[str, Candidate]:
        state, now = cs.state, cs.now_s
        mine = self.handle.rank(info, now)
        job = info.job
        reclaim = False
        if self.reclaim and state.tenants:
            usage = state.tenant_gpus.get(job.tenant, 0)
            reclaim = usage + job.gpus <= nominal_gpus(state, job.tenant)
        out: dict[str, Candidate] = {}
        spare_s = None
        if self.args.spare_within is not None:
            run_s = info.remaining_hint_s(now)
            if run_s is not None:
                spare_s = self.args.spare_within * run_s
        for victim in state.running.values():
            if victim.evicting or not victim.job.preemptible or victim.job.job_id == job.job_id:
                continue
            if self.max_evictions is not None and victim.evictions >= self.max_evictions:
                continue
            if spare_s is not None:
                left_s = victim.remaining_hint_s(now)
                if left_s is not None and left_s <= spare_s:
                    continue
            rank = self.handle.rank(victim, now)
            ok = rank < mine and self.handle.may_evict(info, victim, now)
            if not ok and reclaim and victim.job.tenant != job.tenant:
                tenant = victim.job.tenant
                ok = state.tenant_gpus.get(tenant, 0) > nominal_gpus(state, tenant)
            if ok:
                out[victim.job.job_id] = Candidate(victim, self.cost_gpu_h(victim, now), rank)
        return out

    def post_filter(self, cs: CycleState, info: JobInfo, status: Status) -> PostFilterResult:
        if not status.preemption_may_help:
            return NOTHING
        if self.args.patience is not None:
            run_s = info.remaining_hint_s(cs.now_s)
            if run_s is not None and cs.now_s - info.pending_since_s < self.args.patience * run_s:
                return NOTHING
        lowest = self._lowest()
        if lowest is None or (self.handle.rank(info, cs.now_s) <= lowest and not self.borrowing):
            return NOTHING
        job = info.job
        # A pass attempts jobs in rank order, so the victims eligible for a job never grow
        # during the pass, and capacity only shrinks until something is released: a search
        # that failed for this shape and rank fails again in the same epoch.
        # With the remaining-work rule the victims also depend on the job's expected run time.
        spares = info.remaining_hint_s(cs.now_s) if self.args.spare_within is not None else None
        key = (job.tasks, job.gpus_per_task, job.cpu_milli_per_task, job.memory_mib_per_task, job.gpu_type,
               job.node_selector, job.tenant, self.handle.rank(info, cs.now_s), cs.levels, cs.fewest_nodes, spares)
        if self.failed.get(key) == cs.state.epoch:
            return NOTHING
        eligible = self._eligible(cs, info)
        if not eligible:
            self.failed[key] = cs.state.epoch
            return NOTHING
        freeable = sum(v.info.job.gpus for v in eligible.values())
        if cs.state.free_gpus(job.gpu_type) + freeable < job.gpus:
            return NOTHING
        quota = self.handle.plugin("quota")

        def enough(removed: Mapping[str, Candidate]) -> bool:
            if not isinstance(quota, Quota) or not cs.state.tenants:
                return True
            freed: dict[str, int] = {}
            for v in removed.values():
                freed[v.info.job.tenant] = freed.get(v.info.job.tenant, 0) + v.info.job.gpus
            return quota.allows_after(cs.state, job, freed)

        found = search(self.handle, cs, info, eligible, lambda victims, plan: True, enough)
        if found is None:
            self.failed[key] = cs.state.epoch
            return NOTHING
        mine = self.handle.rank(info, cs.now_s)
        shrinks = self._shrinks(cs.state, found.victims, found.plan) if self.args.shrink_elastic else {}
        preemptions = tuple(
            Preemption(v.info.job.job_id, job.job_id, v.cost_gpu_h,
                       f"preempted by {job.job_id} (rank {mine} > {v.rank})" + shrinks.get(v.info.job.job_id, ("",))[-1])
            for v in found.victims)
        holds = {name: tasks * job.gpus_per_task for name, tasks in found.plan.items()}
        returns: tuple[tuple[str, dict[str, int]], ...] = ()
        return_hold_s = None
        run_s = info.remaining_hint_s(cs.now_s) if self.args.return_holds else None
        if run_s is not None:
            returns = tuple((v.info.job.job_id, {n: len(g) for n, g in v.info.by_node.items()})
                            for v in found.victims if v.info.job.gpus >= self.args.return_min_gpus)
            return_hold_s = run_s + self.hold_s
        return PostFilterResult(SUCCESS, preemptions, holds, cs.now_s, "preemption", found.domain,
                                hold_s=self.hold_s, returns=returns, return_hold_s=return_hold_s,
                                shrinks=tuple((victim, kept) for victim, (kept, _) in shrinks.items()))

    @staticmethod
    def _shrinks(state: ClusterState, victims: list[Candidate], plan: Mapping[str, int],
                 ) -> dict[str, tuple[dict[str, int], str]]:
        """Per elastic victim that keeps enough: the GPUs it keeps per node (the nodes of its run
        outside the preemptor's ``plan`` that no other reservation holds) and the note for its
        preemption's message."""
        out: dict[str, tuple[dict[str, int], str]] = {}
        for v in victims:
            full = v.info.full_job or v.info.job
            if not full.elastic or not full.gpus_per_task:
                continue
            kept = {name: len(gpus) for name, gpus in v.info.by_node.items()
                    if name not in plan and name in state.nodes and not state.nodes[name].holds}
            tasks = sum(gpus // full.gpus_per_task for gpus in kept.values())
            if tasks >= (full.min_tasks or 1):
                out[full.job_id] = (kept, f"; elastic: restarts with {tasks} of {full.tasks} tasks on "
                                          f"{', '.join(sorted(kept))}")
        return out


def new(args: Mapping[str, Any], handle: Handle) -> Preempt:
    return Preempt(decode_args(PreemptionArgs, args), handle)


def _conforms(handle: Handle) -> tuple[PostFilterPlugin, PassPlugin]:
    plugin = Preempt(PreemptionArgs(), handle)
    return plugin, plugin

"""Defragment: move small gangs out of the way of a gang that fits only in total.

A PostFilter for jobs that do not fit although enough GPUs are free in the cluster: the free
GPUs are scattered (say an 8-GPU job, and 12 GPUs free as 1-3 per node). It looks for the
cheapest set of small running gangs (at most ``max_victim_gpus`` GPUs, single node, priority
not above the job's, evicted fewer than ``max_moves`` times, preemptions included) whose eviction lets the job fit
(``victims.search``), but accepts a set only if every victim can restart at once on another
node: each gets a hold there, the job gets a hold on the freed GPUs. A move costs the victim
only its restart (it resumes from its checkpoint), so rank does not matter, unlike preemption.
A search that failed for a job shape is not repeated in the same pass until capacity is freed.
All these holds last at most ``hold_s`` (as preemption's: a job that cannot start where its
hold is must not keep the GPUs idle for ever).

Example: 8-GPU nodes n1 (7 GPUs free, job a: 1 GPU) and n2 (6 free, job b: 2 GPUs); a new
8-GPU job does not fit. Moving a to n2 (hold 1 GPU there) frees n1 whole: a restarts on n2,
the job starts on n1; the cost is a's restart, 30 s x 1 GPU.
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
from scheduler.plugins.remaining.history import LearnedRemaining
from scheduler.state import ClusterState, JobInfo

__all__ = ["NAME", "Defragment", "DefragArgs", "new"]

NAME = "defrag"

NOTHING = PostFilterResult(Status.unschedulable("no defragmentation", NAME))


@dataclass(frozen=True)
class DefragArgs:
    restart_overhead_s: float = 30.0
    max_victim_gpus: int = 4
    max_moves: int = 2
    min_job_gpus: int = 2
    targets_to_check: int = 64
    hold_s: float = 600.0
    # Expected room: no move for a job when some node of its GPU type is expected to have
    # room for it within ``room_within_s`` anyway (None: off): the GPUs its running gangs
    # are expected to free by then (each gang's GPUs x its chance to end by then) cover what
    # the job lacks there. The chance: ``"learned"``, from the run times of finished jobs
    # given the service each gang already had (``remaining``'s history, relative to the
    # job's own estimate); ``"hint"``, 1 if the job's own estimate says it ends by then.
    room_within_s: float | None = None
    room_estimate: str = "learned"


class Defragment:
    name = NAME

    def __init__(self, args: DefragArgs, handle: Handle) -> None:
        if args.restart_overhead_s < 0 or args.max_victim_gpus < 1 or args.max_moves < 0 or args.hold_s <= 0:
            raise ValueError("defrag: restart_overhead_s >= 0, max_victim_gpus >= 1, max_moves >= 0, hold_s > 0")
        if args.room_estimate not in ("learned", "hint"):
            raise ValueError(f"defrag: room_estimate must be 'learned' or 'hint', not {args.room_estimate!r}")
        if args.room_within_s is not None and args.room_within_s < 0:
            raise ValueError("defrag: room_within_s must be >= 0 (or None)")
        self.args = args
        self.handle = handle
        self.failed: dict[tuple[object, ...], int] = {}
        self.learned = (LearnedRemaining(relative=True)
                        if args.room_within_s is not None and args.room_estimate == "learned" else None)

    def job_finished(self, info: JobInfo, at_s: float) -> None:
        if self.learned is not None:
            self.learned.job_finished(info, at_s)

    def begin_pass(self, state: ClusterState, now_s: float) -> None:
        self.failed = {}

    def post_filter(self, cs: CycleState, info: JobInfo, status: Status) -> PostFilterResult:
        job = info.job
        state = cs.state
        if not status.preemption_may_help or job.gpus < self.args.min_job_gpus or status.plugin == "quota":
            return NOTHING  # moving gangs frees no quota
        if state.free_gpus(job.gpu_type) < job.gpus:
            return NOTHING  # not fragmentation: too few GPUs free in total
        # Within a pass, capacity only shrinks until something is released (the epoch moves):
        # a search that failed for this shape fails again.
        key = (job.tasks, job.gpus_per_task, job.cpu_milli_per_task, job.memory_mib_per_task, job.gpu_type,
               job.node_selector, job.priority, cs.levels, cs.fewest_nodes)
        if self.failed.get(key) == state.epoch:
            return NOTHING
        if self.args.room_within_s is not None and self._room_soon(state, info, cs.now_s):
            return NOTHING
        found = self._search(cs, info)
        if found is None:
            self.failed[key] = state.epoch
            return NOTHING
        return found

    def _room_soon(self, state: ClusterState, info: JobInfo, now_s: float) -> bool:
        """Whether a usable node of the job's GPU type is expected to have room for it within
        ``room_within_s`` (see ``DefragArgs``). A gang with no estimate frees nothing here."""
        job = info.job
        within = self.args.room_within_s or 0.0
        chance: dict[str, float] = {}
        for node in state.nodes.values():
            if node.node.gpus < job.gpus or not node.usable:
                continue
            if job.gpu_type is not None and node.node.gpu_type != job.gpu_type:
                continue
            need = job.gpus - max(node.free_gpus - node.held_gpus, 0)
            if need <= 0:
                return True
            freed = 0.0
            for job_id, gpus in node.jobs.items():
                p = chance.get(job_id)
                if p is None:
                    p = chance[job_id] = self._p_end(state.running.get(job_id), now_s, within)
                freed += gpus * p
            if freed >= need:
                return True
        return False

    def _p_end(self, running: JobInfo | None, now_s: float, within_s: float) -> float:
        if running is None or running.evicting:
            return 0.0
        if self.learned is not None:
            return self.learned.p_end_within(running, now_s, within_s) or 0.0
        left = running.remaining_hint_s(now_s)
        return 1.0 if left is not None and left <= within_s else 0.0

    def _search(self, cs: CycleState, info: JobInfo) -> PostFilterResult | None:
        job = info.job
        state = cs.state
        candidates: dict[str, Candidate] = {}
        for victim in state.running.values():
            vjob = victim.job
            if (
                victim.evicting or not vjob.preemptible or vjob.job_id == job.job_id
                or vjob.priority > job.priority or vjob.gpus > self.args.max_victim_gpus
                or victim.evictions >= self.args.max_moves or len(victim.by_node) != 1
            ):
                continue
            cost = vjob.gpus * self.args.restart_overhead_s / 3600.0
            candidates[vjob.job_id] = Candidate(victim, cost, (float(vjob.priority),))
        if not candidates:
            return None
        found = search(self.handle, cs, info, candidates, lambda victims, plan: self._targets(cs, victims, plan))
        if found is None:
            return None
        moves = tuple(
            Preemption(v.info.job.job_id, job.job_id, v.cost_gpu_h, f"moved to make room for {job.job_id}",
                       migration=True)
            for v in found.victims)
        holds = {name: tasks * job.gpus_per_task for name, tasks in found.plan.items()}
        return PostFilterResult(SUCCESS, moves, holds, cs.now_s, "defrag", found.domain, found.extra,
                                hold_s=self.args.hold_s)

    def _targets(
        self, cs: CycleState, victims: list[Candidate], plan: dict[str, int]
    ) -> tuple[tuple[str, dict[str, int]], ...] | None:
        """A node outside the plan for every victim (biggest first, tightest node first)."""
        state = cs.state
        taken: dict[str, int] = {}
        out: list[tuple[str, dict[str, int]]] = []
        for victim in sorted(victims, key=lambda v: (-v.info.job.gpus, v.info.job.job_id)):
            vinfo = victim.info
            vjob = vinfo.job
            vcs = CycleState(state, cs.now_s, cs.rng, vinfo)
            target = None
            checked = 0
            for node in state.index.candidates(vjob.gpus, vjob.gpu_type):
                if node.name in plan or node.name in vinfo.by_node:
                    continue
                checked += 1
                if checked > self.args.targets_to_check:
                    break
                fit = self.handle.fit_nodes(vcs, vinfo, [node])
                if fit and fit[0][1] * max(vjob.gpus_per_task, 1) - taken.get(node.name, 0) >= vjob.gpus:
                    target = node.name
                    break
            if target is None:
                return None
            taken[target] = taken.get(target, 0) + vjob.gpus
            out.append((vjob.job_id, {target: vjob.gpus}))
        return tuple(out)


def new(args: Mapping[str, Any], handle: Handle) -> Defragment:
    return Defragment(decode_args(DefragArgs, args), handle)


def _conforms(handle: Handle) -> tuple[PostFilterPlugin, PassPlugin]:
    plugin = Defragment(DefragArgs(), handle)
    return plugin, plugin

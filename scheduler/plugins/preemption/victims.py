"""Victim search shared by preemption and defragmentation: the cheapest set of whole gangs
whose removal lets a job fit in some domain.

For each level the job may use, tightest first, and each domain of that level (a node, a
rack, ...): remove every candidate touching the domain (and, when the caller's ``enough``
condition, the preemptor's quota, needs more, every other candidate too); if the job then
fits, give candidates back one at a time, most expensive first, as long as it still fits and
``enough`` holds. Among the domains of the
tightest level that works, the cheapest set wins (then fewer victims, then lower rank).

Example: a 1-GPU job, node n1 runs a (1 GPU, 0.008 GPU-h to restart) and b (4 GPUs,
0.033 GPU-h), nothing free. Removing both fits; giving b back still fits (a frees 1 GPU);
giving a back does not: the answer on n1 is {a}, cost 0.008 GPU-h.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from scheduler.framework.cycle_state import CycleState
from scheduler.framework.interfaces import Handle
from scheduler.model import Level
from scheduler.state import JobInfo, NodeInfo

__all__ = ["Candidate", "Found", "search", "without"]

E = TypeVar("E")


@dataclass(frozen=True, slots=True)
class Candidate:
    info: JobInfo
    cost_gpu_h: float
    rank: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class Found(Generic[E]):
    victims: list[Candidate]
    plan: dict[str, int]  # node -> tasks of the job
    domain: str
    extra: E


def without(nodes: Sequence[NodeInfo], removed: Mapping[str, Candidate]) -> list[NodeInfo]:
    """What-if copies of ``nodes`` with the ``removed`` gangs' resources freed."""
    view: list[NodeInfo] = []
    for node in nodes:
        gone = [removed[j] for j in node.jobs if j in removed]
        if not gone:
            view.append(node)
            continue
        copy = node.copy()
        for victim in gone:
            vjob = victim.info.job
            gpus = victim.info.by_node[node.name]
            for gpu in gpus:
                copy.free_mask |= 1 << gpu
            tasks_here = len(gpus) // vjob.gpus_per_task if vjob.gpus_per_task else 1
            copy.free_cpu += tasks_here * vjob.cpu_milli_per_task
            copy.free_mem += tasks_here * vjob.memory_mib_per_task
            del copy.jobs[vjob.job_id]
        copy.free_gpus = copy.free_mask.bit_count()
        view.append(copy)
    return view


def _fits(handle: Handle, cs: CycleState, info: JobInfo, level: Level, nodes: Sequence[NodeInfo],
          removed: Mapping[str, Candidate]) -> dict[str, int] | None:
    feasible = handle.fit_nodes(cs, info, without(nodes, removed))
    if level <= Level.NODE:
        if feasible and feasible[0][1] >= info.job.tasks:
            return {feasible[0][0].name: info.job.tasks}
        return None
    return handle.assign(cs, info, feasible)


def _minimal(handle: Handle, cs: CycleState, info: JobInfo, level: Level, nodes: Sequence[NodeInfo],
             victims: list[Candidate], enough: Callable[[Mapping[str, Candidate]], bool],
             ) -> tuple[list[Candidate], dict[str, int]] | None:
    removed = {v.info.job.job_id: v for v in victims}
    plan = _fits(handle, cs, info, level, nodes, removed)
    if plan is None or not enough(removed):
        return None
    here = {n.name for n in nodes}
    for victim in sorted(victims, key=lambda v: (-v.cost_gpu_h, tuple(-r for r in v.rank), v.info.job.job_id)):
        job_id = victim.info.job.job_id
        del removed[job_id]
        if not enough(removed):
            trial = None
        elif here.isdisjoint(victim.info.by_node):
            trial = plan  # evicted elsewhere only to free quota: the room here is unchanged
        else:
            trial = _fits(handle, cs, info, level, nodes, removed)
        if trial is None:
            removed[job_id] = victim
        else:
            plan = trial
    return list(removed.values()), plan


def search(
    handle: Handle,
    cs: CycleState,
    info: JobInfo,
    candidates: Mapping[str, Candidate],
    accept: Callable[[list[Candidate], dict[str, int]], E | None],
    enough: Callable[[Mapping[str, Candidate]], bool] = lambda removed: True,
) -> Found[E] | None:
    """The cheapest acceptable victim set, or None. ``accept(victims, plan)`` may veto a set
    (returning None) or attach extra data to it (defragmentation's re-placement targets).
    ``enough(removed)`` is a condition besides room that the removal must meet while victims
    are given back (preemption: the preemptor's quota once they are gone)."""
    state = cs.state
    job = info.job
    by_node: dict[str, list[str]] = {}
    freeable: dict[str, int] = {}
    for job_id, victim in candidates.items():
        for name, gpus in victim.info.by_node.items():
            by_node.setdefault(name, []).append(job_id)
            freeable[name] = freeable.get(name, 0) + len(gpus)
    for level in cs.levels:
        if level <= Level.NODE:
            # Necessary condition first: free GPUs plus the candidates' GPUs on the node.
            groups = [[state.nodes[name]] for name in sorted(by_node)
                      if name in state.nodes and state.nodes[name].free_gpus + freeable[name] >= job.gpus]
        else:
            groups = [nodes for nodes in (d.nodes() for d in handle.domains(level))
                      if sum(n.free_gpus + freeable.get(n.name, 0) for n in nodes) >= job.gpus]
        best: tuple[tuple[float, int, tuple[float, ...]], Found[E]] | None = None
        for nodes in groups:
            touching = sorted({v for n in nodes for v in by_node.get(n.name, ())})
            if not touching:
                continue
            victims = [candidates[v] for v in touching]
            if not enough({v.info.job.job_id: v for v in victims}):
                # Room here is not all it needs (quota): gangs elsewhere may be evicted too.
                victims += [c for j, c in sorted(candidates.items()) if j not in set(touching)]
            found = _minimal(handle, cs, info, level, nodes, victims, enough)
            if found is None:
                continue
            victims, plan = found
            if not victims:
                # It fits with nothing evicted: what blocks it (quota, a hold) is not capacity
                # here, and evicting gangs would not help.
                continue
            key = (round(sum(v.cost_gpu_h for v in victims), 9), len(victims), max(v.rank for v in victims))
            if best is not None and key >= best[0]:
                continue
            extra = accept(victims, plan)
            if extra is None:
                continue
            if level <= Level.NODE:
                domain = nodes[0].name
            elif level == Level.RACK:
                domain = nodes[0].rack.name
            else:
                domain = "cluster" if level == Level.CLUSTER else nodes[0].rack.spine
            best = (key, Found(victims, plan, domain, extra))
        if best is not None:
            return best[1]
    return None

"""Gang placement helpers: choose GPUs inside a node, split tasks over nodes.

``pick_gpus`` keeps a node's share of a gang inside one NVLink island when one has room
(the tightest such island, so big islands stay whole), else takes the fullest islands first.

Example: 8 GPUs in islands (0-3) and (4-7), GPUs 0 and 1 busy. Asking for 2 GPUs takes 2,3
(island A has exactly 2 free: tightest fit); asking for 4 takes 4-7; asking for 6 takes
4-7 then 2,3.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from heapq import heappop, heappush

from scheduler.model import Placement, TaskAssignment
from scheduler.state import JobInfo, NodeInfo

__all__ = ["assign_fewest_nodes", "assign_greedy", "build_placement", "pick_gpus"]


def _lowest_bits(mask: int, count: int) -> list[int]:
    out: list[int] = []
    while count and mask:
        low = mask & -mask
        out.append(low.bit_length() - 1)
        mask ^= low
        count -= 1
    return out


def pick_gpus(node: NodeInfo, free_mask: int, count: int) -> tuple[int, ...]:
    """``count`` GPU indices from ``free_mask`` on ``node``, island-aware."""
    if count == 0:
        return ()
    islands = node.island_masks
    best_mask = 0
    best_free = 1 << 30
    for island in islands:
        free = (free_mask & island).bit_count()
        if count <= free < best_free:
            best_mask, best_free = island, free
    if best_mask:
        return tuple(_lowest_bits(free_mask & best_mask, count))
    chosen: list[int] = []
    for island in sorted(islands, key=lambda m: -(free_mask & m).bit_count()):
        chosen.extend(_lowest_bits(free_mask & island, count - len(chosen)))
        if len(chosen) == count:
            break
    assert len(chosen) == count, f"{node.name}: wanted {count} GPUs, free mask {free_mask:b}"
    return tuple(sorted(chosen))


def build_placement(info: JobInfo, plan: dict[str, int], nodes: dict[str, NodeInfo]) -> Placement:
    """Turn ``plan`` (node -> task count, in assignment order) into per-task GPU lists."""
    job = info.job
    per_task = job.gpus_per_task
    tasks: list[TaskAssignment] = []
    for name, count in plan.items():
        node = nodes[name]
        gpus = pick_gpus(node, node.free_mask, count * per_task)
        for k in range(count):
            tasks.append(TaskAssignment(len(tasks), name, gpus[k * per_task : (k + 1) * per_task]))
    assert len(tasks) == job.tasks, f"{job.job_id}: plan {plan} is not the whole gang"
    return Placement(tuple(tasks))


Scorer = Callable[[NodeInfo, int], float]


def assign_greedy(
    tasks: int, feasible: Sequence[tuple[NodeInfo, int]], score: Scorer, ties: Sequence[float]
) -> dict[str, int] | None:
    """Give tasks one at a time to the best-scoring node, re-scoring only that node.

    ``score(node, k)`` is the score of giving the k-th task to node; ``ties[i]`` breaks ties
    between equal scores (seeded random numbers, one per feasible node).
    """
    if sum(cap for _, cap in feasible) < tasks:
        return None
    heap: list[tuple[float, float, int]] = []
    for i, (node, _) in enumerate(feasible):
        heap.append((-score(node, 1), ties[i], i))
    heap.sort()
    plan: dict[str, int] = {}
    remaining = tasks
    while remaining:
        _, tie, i = heappop(heap)
        node, cap = feasible[i]
        here = plan.get(node.name, 0) + 1
        plan[node.name] = here
        remaining -= 1
        if here < cap and remaining:
            heappush(heap, (-score(node, here + 1), tie, i))
    return plan


def assign_fewest_nodes(
    tasks: int, max_nodes: int, feasible: Sequence[tuple[NodeInfo, int]], score: Scorer
) -> dict[str, int] | None:
    """Use at most ``max_nodes`` nodes: largest capacity first, and for the last share the
    smallest node that still covers the rest (best fit), so whole nodes are not broken."""
    pool = sorted(feasible, key=lambda nc: (-nc[1], -score(nc[0], 1), nc[0].name))
    plan: dict[str, int] = {}
    remaining = tasks
    while remaining and len(plan) < max_nodes and pool:
        covering = [nc for nc in pool if nc[1] >= remaining]
        if covering:
            node, _ = min(covering, key=lambda nc: (nc[1], -score(nc[0], remaining), nc[0].name))
            plan[node.name] = remaining
            return plan
        node, cap = pool.pop(0)
        plan[node.name] = cap
        remaining -= cap
    return None

"""Extension points: one Protocol each. A plugin implements only the ones it needs.

One attempt to place one job (a gang) runs, in order::

    PreFilter -> [placement: for each level, tightest first:
                    ScoreDomain ranks racks/spines -> Filter + Capacity per node
                    -> Score orders nodes, tasks assigned one by one]
              -> Permit -> (the runtime assumes the binding)
    on failure: PostFilter (preemption, then backfill reservation)

and a pass over the queue is bracketed by ``PassPlugin.begin_pass`` and, after it, Resize
(which running elastic jobs may grow into what is left free). QueueSort orders the
pass and ranks jobs for preemption.

Threading and ownership: every method is called from the one scheduling thread; plugins read
``ClusterState`` and never mutate it (they return values, the runtime applies them). Scores are
ints in ``[0, MAX_SCORE]``; a node's score may depend only on the job, the node and the cycle
state (so the runtime may re-score one node after giving it a task). Filter and Capacity must
be monotone in free resources: a node that fits a job keeps fitting it when more is free.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from scheduler.framework.cycle_state import CycleState
from scheduler.framework.status import Status
from scheduler.model import Level, PendingReason, Placement, Preemption
from scheduler.state import ClusterEvent, ClusterState, JobInfo, NodeInfo, RackInfo

__all__ = [
    "MAX_SCORE",
    "CapacityPlugin",
    "Domain",
    "EnqueueExtensions",
    "FilterPlugin",
    "FinishPlugin",
    "ForgetPlugin",
    "Handle",
    "PassPlugin",
    "PermitPlugin",
    "Plugin",
    "PostFilterPlugin",
    "PostFilterResult",
    "PreFilterPlugin",
    "PreemptGuardPlugin",
    "QueueSortPlugin",
    "QueueingHintPlugin",
    "ResizePlugin",
    "ScoreDomainPlugin",
    "ScorePlugin",
]

MAX_SCORE = 100


@dataclass(frozen=True, slots=True)
class Domain:
    """A rack, a spine or the whole cluster, as a candidate home for a gang."""

    level: Level
    name: str
    racks: tuple[RackInfo, ...]

    @property
    def capacity_gpus(self) -> int:
        return sum(r.capacity_gpus for r in self.racks)

    @property
    def free_gpus(self) -> int:
        return sum(r.free_gpus for r in self.racks)

    def task_capacity(self, gpus_per_task: int, gpu_type: str | None) -> int:
        return sum(r.task_capacity(gpus_per_task, gpu_type) for r in self.racks)

    def nodes(self) -> list[NodeInfo]:
        return [n for r in self.racks for n in r.nodes.values()]


@dataclass(frozen=True, slots=True)
class PostFilterResult:
    """What a PostFilter decided: evict ``victims`` (whole gangs) and/or hold GPUs
    (``holds``: node -> GPUs) for the job until it can start at ``start_s``.
    ``migrations``: holds for evicted victims on the nodes they move to (defragmentation).
    ``hold_s``: how long the holds last if their job does not start (None: until it starts).
    ``returns``: return holds for evicted victims on the GPUs they ran on, from when the job
    ends (preemption's ``return_holds``), lasting ``return_hold_s``.
    ``shrinks``: holds for evicted elastic victims on the nodes of their run the job does not
    take, enough for at least their minimum size: they restart there at once, smaller (shrink
    on contention), for ``hold_s`` like the job's own hold."""

    status: Status
    victims: tuple[Preemption, ...] = ()
    holds: dict[str, int] = field(default_factory=dict)
    start_s: float | None = None
    kind: str = ""
    domain: str = ""
    migrations: tuple[tuple[str, dict[str, int]], ...] = ()
    hold_s: float | None = None
    returns: tuple[tuple[str, dict[str, int]], ...] = ()
    return_hold_s: float | None = None
    shrinks: tuple[tuple[str, dict[str, int]], ...] = ()


class Plugin(Protocol):
    name: str


@runtime_checkable
class QueueSortPlugin(Protocol):
    """Orders the queue (ascending ``sort_key``) and ranks jobs: a gang may preempt only
    gangs of strictly lower ``rank``. Exactly one per profile."""

    name: str

    def sort_key(self, info: JobInfo, now_s: float) -> tuple[float | str, ...]: ...

    def rank(self, info: JobInfo, now_s: float) -> tuple[float, ...]: ...

    def next_rank_change_s(self, info: JobInfo, now_s: float) -> float | None:
        """When this job's rank will change by time alone (LAS demotion), or None."""
        ...


@runtime_checkable
class PreemptGuardPlugin(Protocol):
    """Optional on the QueueSort plugin: a pairwise test on top of the rank order (a total
    order cannot say "at least r x more work than the preemptor"). Called only for a victim
    already ranked strictly below the preemptor; True lets it be evicted."""

    name: str

    def may_evict(self, preemptor: JobInfo, victim: JobInfo, now_s: float) -> bool: ...


@runtime_checkable
class PreFilterPlugin(Protocol):
    name: str

    def pre_filter(self, cs: CycleState, info: JobInfo) -> Status: ...


@runtime_checkable
class FilterPlugin(Protocol):
    name: str

    def filter(self, cs: CycleState, info: JobInfo, node: NodeInfo) -> Status: ...


@runtime_checkable
class CapacityPlugin(Protocol):
    """The gang extension of Filter: how many of the job's tasks fit on the node (0 = none).
    The runtime takes the minimum over all Capacity plugins."""

    name: str

    def capacity(self, cs: CycleState, info: JobInfo, node: NodeInfo) -> int: ...


@runtime_checkable
class PostFilterPlugin(Protocol):
    """Runs when the job did not fit, in profile order, until one returns a success status."""

    name: str

    def post_filter(self, cs: CycleState, info: JobInfo, status: Status) -> PostFilterResult: ...


@runtime_checkable
class ScorePlugin(Protocol):
    """Score of giving the ``tasks_here``-th task of the job to ``node`` (0..MAX_SCORE)."""

    name: str

    def score(self, cs: CycleState, info: JobInfo, node: NodeInfo, tasks_here: int) -> int: ...


@runtime_checkable
class ScoreDomainPlugin(Protocol):
    """Score of placing the whole gang in ``domain`` (0..MAX_SCORE); ``tasks_fit`` is an upper
    bound of the job's tasks the domain can take now."""

    name: str

    def score_domain(self, cs: CycleState, info: JobInfo, domain: Domain, tasks_fit: int) -> int: ...


@runtime_checkable
class PermitPlugin(Protocol):
    """Last word on a complete placement before it is assumed."""

    name: str

    def permit(self, cs: CycleState, info: JobInfo, placement: Placement) -> Status: ...


@runtime_checkable
class PassPlugin(Protocol):
    """Called once before each pass over the queue."""

    name: str

    def begin_pass(self, state: ClusterState, now_s: float) -> None: ...


@runtime_checkable
class ResizePlugin(Protocol):
    """After a pass: the running elastic jobs bound below their full size (``state.shrunk``)
    that may grow now, in the order to try them. The runtime tries each one's larger sizes
    (without PostFilter, its own GPUs counted free) and, when one fits, holds that placement's
    GPUs for it (a ``resize`` reservation lasting ``hold_s``) while its run stops to restart
    larger (``Resize``)."""

    name: str
    hold_s: float

    def grow_order(self, state: ClusterState, now_s: float, waiting: Mapping[str, PendingReason]) -> list[JobInfo]:
        """``waiting``: the last pending reason of each pending job the core has attempted."""
        ...


@runtime_checkable
class FinishPlugin(Protocol):
    """Told that a job finished (``JobFinished``; not a deletion), before the state forgets
    it, with its record as of then: plugins that learn run times from history (the
    ``remaining`` QueueSort) learn them here, so they never see a job's future."""

    name: str

    def job_finished(self, info: JobInfo, at_s: float) -> None: ...


@runtime_checkable
class ForgetPlugin(Protocol):
    """Told that a job was deleted before it finished (``JobDeleted``), before the state
    forgets it: plugins that keep something per job drop it here (``job_finished`` covers
    the jobs that finish)."""

    name: str

    def job_deleted(self, info: JobInfo) -> None: ...


@runtime_checkable
class EnqueueExtensions(Protocol):
    """Cluster events that can turn this plugin's rejection into a success."""

    name: str

    def events_to_register(self) -> frozenset[ClusterEvent]: ...


@runtime_checkable
class QueueingHintPlugin(Protocol):
    """Per-job refinement of ``events_to_register`` (Kubernetes QueueingHint): after one of
    the registered events, may this job, rejected by this plugin, now pass? Must not say
    False when it could pass (a false True only costs a retry)."""

    name: str

    def queueing_hint(self, state: ClusterState, info: JobInfo, events: set[ClusterEvent]) -> bool: ...


class Handle(Protocol):
    """What plugins may ask of the framework (given to their factories)."""

    def rank(self, info: JobInfo, now_s: float) -> tuple[float, ...]: ...

    def may_evict(self, preemptor: JobInfo, victim: JobInfo, now_s: float) -> bool:
        """For a victim already ranked strictly below ``preemptor``: the QueueSort plugin's
        pairwise test when it has one (``PreemptGuardPlugin``), else True."""
        ...

    def fit_nodes(
        self, cs: CycleState, info: JobInfo, nodes: Sequence[NodeInfo]
    ) -> list[tuple[NodeInfo, int]]:
        """Run Filter and Capacity on ``nodes``; return the feasible ones with task counts."""
        ...

    def assign(
        self, cs: CycleState, info: JobInfo, feasible: Sequence[tuple[NodeInfo, int]]
    ) -> dict[str, int] | None:
        """Choose how many tasks go on each feasible node (None if the gang does not fit)."""
        ...

    def domains(self, level: Level) -> list[Domain]: ...

    def plugin(self, name: str) -> object | None:
        """The profile's plugin named ``name`` (None when the profile does not run it)."""
        ...

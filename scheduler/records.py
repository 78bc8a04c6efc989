"""PURE mutable records kept by ``ClusterState``: jobs (``JobInfo``), reservations, and the
kinds of change (``ClusterEvent``) that queueing hints react to."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from scheduler.model import Job, Placement

__all__ = ["ClusterEvent", "JobInfo", "Phase", "Reservation"]


class ClusterEvent(Enum):
    """What changed, for queueing hints (which unschedulable jobs are worth retrying)."""

    NODE_ADDED = "node-added"  # a node joined, grew, healed or was uncordoned
    NODE_CHANGED = "node-changed"  # labels, type or other attributes changed
    RESOURCES_FREED = "resources-freed"  # a gang finished, was evicted, deleted, unbound
    TENANT_CHANGED = "tenant-changed"  # quotas changed
    PRIORITY_CHANGED = "priority-changed"  # a job's rank changed (new spec, LAS demotion)
    RESERVATION_CHANGED = "reservation-changed"  # a hold was released


class Phase(Enum):
    PENDING = "pending"
    RUNNING = "running"  # bound (assumed by us or confirmed by the store)


@dataclass(slots=True)
class JobInfo:
    """Mutable per-job record. ``attained_gpu_s`` is service banked before ``bound_at_s``."""

    job: Job
    phase: Phase = Phase.PENDING
    placement: Placement | None = None
    bound_at_s: float | None = None
    confirmed: bool = False
    first_bound_s: float | None = None
    attained_gpu_s: float = 0.0
    evictions: int = 0
    pending_since_s: float = 0.0
    evicting: bool = False  # chosen as a preemption victim, eviction not yet confirmed
    by_node: dict[str, tuple[int, ...]] = field(default_factory=dict)  # placement's GPUs per node
    full_job: Job | None = None  # an elastic job bound with fewer tasks: its full size, back on release

    def remaining_hint_s(self, now_s: float, overrun_factor: float = 1.0) -> float | None:
        """Expected run time left from the job's estimate (None without one). A job already past
        its estimate is expected to run ``overrun_factor`` x as long again as it has run (heavy
        tails: the longer a job has run, the longer it will probably still run)."""
        hint = self.job.runtime_hint_s
        if hint is None or not self.job.gpus:
            return None
        done = self.attained_at(now_s) / self.job.gpus
        left = hint - done
        return left if left > 0 else overrun_factor * done

    def attained_at(self, now_s: float) -> float:
        """GPU-seconds of service received up to ``now_s`` (Tiresias' 2D attained service)."""
        if self.phase is Phase.RUNNING and self.bound_at_s is not None:
            return self.attained_gpu_s + self.job.gpus * max(0.0, now_s - self.bound_at_s)
        return self.attained_gpu_s


@dataclass(slots=True)
class Reservation:
    """GPUs held for a pending gang on specific nodes (backfill) or after preemption.

    A node's held GPUs are taken out of what other jobs may use, up to what is free; jobs that
    are expected to finish before ``start_s`` may still use them (backfill). ``expires_s``:
    the hold is dropped then even if its job has not started (None: only when it starts or is
    removed). Holds made for a preemption or a move are always bounded: a preemptor that can
    no longer start there must not keep GPUs idle for ever. ``after_job``: the hold starts when
    that job ends (a preempted gang's return hold waits for its preemptor); until then jobs
    expected to end before it may use the GPUs (backfill).
    """

    job_id: str
    holds: dict[str, int]
    start_s: float | None
    kind: str
    created_s: float
    domain: str
    expires_s: float | None = None
    after_job: str | None = None

"""PURE scheduling queue: active, backoff and unschedulable sub-queues (Kubernetes' design).

- **active**: jobs the next pass will try.
- **backoff**: jobs whose binding failed (a store conflict); they return to active after an
  exponential backoff (``backoff_initial_s`` doubling up to ``backoff_max_s``).
- **unschedulable**: jobs that did not fit. Each remembers the cluster events that could help
  (the rejecting plugin's ``events_to_register``, refined per job by its ``queueing_hint``);
  such an event moves it back to active. A flush on every multiple of
  ``unschedulable_flush_s`` retries the jobs parked for longer than that, a safety net for
  what no hint foresaw (Kubernetes flushes pods unschedulable for 5 minutes).

Time is an input (``now_s``); nothing here reads a clock.

Example: j1 fails on "insufficient free GPUs" (resources registers RESOURCES_FREED and
NODE_ADDED); a TENANT_CHANGED event leaves it alone; a job finishing (RESOURCES_FREED) moves
it to active and the next pass tries it again.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from scheduler.framework.registry import QueueOptions
from scheduler.state import ClusterEvent

__all__ = ["HintFn", "QueueStatistics", "SchedulingQueue"]

# (job id, rejecting plugin, events) -> may the events make the job schedulable?
HintFn = Callable[[str, str, set[ClusterEvent]], bool]


@dataclass(frozen=True, slots=True)
class QueueStatistics:
    active: int
    backoff: int
    unschedulable: int


class SchedulingQueue:
    def __init__(self, options: QueueOptions) -> None:
        self.options = options
        self.active: dict[str, None] = {}
        self.backoff: dict[str, float] = {}  # job -> ready at
        self.attempts: dict[str, int] = {}  # consecutive bind failures
        self.unschedulable: dict[str, tuple[float, frozenset[ClusterEvent], str]] = {}

    def __contains__(self, job_id: str) -> bool:
        return job_id in self.active or job_id in self.backoff or job_id in self.unschedulable

    def __len__(self) -> int:
        return len(self.active) + len(self.backoff) + len(self.unschedulable)

    def add(self, job_id: str) -> None:
        """A new or returning (evicted) job: try it in the next pass."""
        self.backoff.pop(job_id, None)
        self.unschedulable.pop(job_id, None)
        self.active[job_id] = None

    def remove(self, job_id: str) -> None:
        self.active.pop(job_id, None)
        self.backoff.pop(job_id, None)
        self.unschedulable.pop(job_id, None)
        self.attempts.pop(job_id, None)

    def bound(self, job_id: str) -> None:
        self.remove(job_id)

    def bind_failed(self, job_id: str, now_s: float) -> None:
        tries = self.attempts.get(job_id, 0) + 1
        self.attempts[job_id] = tries
        wait = min(self.options.backoff_initial_s * 2 ** (tries - 1), self.options.backoff_max_s)
        self.active.pop(job_id, None)
        self.unschedulable.pop(job_id, None)
        self.backoff[job_id] = now_s + wait

    def park(self, job_id: str, now_s: float, hints: frozenset[ClusterEvent], plugin: str = "") -> None:
        """The job did not fit because of ``plugin``; wait for one of ``hints`` (or the flush
        interval)."""
        self.active.pop(job_id, None)
        old = self.unschedulable.get(job_id)
        self.unschedulable[job_id] = (old[0] if old else now_s, hints, plugin)

    def on_events(self, kinds: set[ClusterEvent], hint: HintFn | None = None) -> int:
        """Move unschedulable jobs that one of ``kinds`` may help to active; return how many.
        ``hint`` (the rejecting plugin's queueing hint) may veto a move for a specific job."""
        if not kinds or not self.unschedulable:
            return 0
        moved = [
            j for j, (_, hints, plugin) in self.unschedulable.items()
            if hints & kinds and (hint is None or hint(j, plugin, kinds))
        ]
        for job_id in moved:
            del self.unschedulable[job_id]
            self.active[job_id] = None
        return len(moved)

    def flush(self, now_s: float) -> None:
        for job_id, ready in list(self.backoff.items()):
            if ready <= now_s:
                del self.backoff[job_id]
                self.active[job_id] = None
        flush = self.options.unschedulable_flush_s
        for job_id, (since, _, _) in list(self.unschedulable.items()):
            if since + flush <= now_s:  # the same sum as next_wakeup_s's, so its tick flushes
                del self.unschedulable[job_id]
                self.active[job_id] = None

    def take_active(self) -> list[str]:
        """The active jobs (in arrival order); the caller parks or binds each one."""
        return list(self.active)

    def next_wakeup_s(self) -> float | None:
        """When the next job leaves backoff, or the next flush tick: flushes happen on multiples
        of ``unschedulable_flush_s`` so that parked jobs are retried together, one pass per
        tick, rather than one pass per job."""
        times = list(self.backoff.values())
        if self.unschedulable:
            flush = self.options.unschedulable_flush_s
            due = min(s for s, _, _ in self.unschedulable.values()) + flush
            # max: due / flush may round down onto a multiple just below due
            times.append(max(math.ceil(due / flush) * flush, due) if flush > 0 else due)
        return min(times) if times else None

    def statistics(self) -> QueueStatistics:
        return QueueStatistics(len(self.active), len(self.backoff), len(self.unschedulable))

"""PURE ``Scheduler``: events in, decisions out. The daemon and the simulator both drive it.

Usage (the daemon's loop, the simulator's loop is the same with a trace as the event source)::

    scheduler = Scheduler(default_profile(), seed=7)
    scheduler.handle(NodeAdded(node), JobAdded(job), ...)   # from watch events
    result = scheduler.schedule(now_s)                       # one pass over the queue
    for binding in result.bindings:       # already assumed in the state; write them with a
        ...                               # revision-compared txn; on conflict handle(BindFailed)
    for preemption in result.preemptions: # evict whole gangs; handle(JobEvicted) when stopped
        ...
    for resize in result.resizes:         # restart an elastic gang larger; handle(JobEvicted)
        ...                               # when stopped, and a later pass binds it
    result.pending[job_id].message        # "needs 16 GPUs in one rack; the largest free rack has 12"
    wake_at = scheduler.next_wakeup_s()   # run a pass then even if no event arrives

A pass sorts the active queue with the QueueSort plugin and attempts each job once, in order.
A job that fits is bound (assumed) at once, so later jobs see it. A job that does not fit gets
a pending reason, may trigger PostFilter decisions (preemption, a reservation) and is parked
until an event that may help. With ``strict_fifo`` the first job that does not fit blocks all
jobs behind it. After the pass the Resize plugins may grow running elastic jobs into what
is left free.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from heapq import heappop, heappush

from scheduler.framework.registry import Profile, Registry
from scheduler.framework.runtime import ALL_EVENTS, Attempt, Framework
from scheduler.framework.status import Code, Status
from scheduler.model import (
    BindFailed,
    Binding,
    Event,
    JobAdded,
    JobBound,
    JobDeleted,
    JobEvicted,
    JobFinished,
    JobUpdated,
    PendingReason,
    Preemption,
    Resize,
)
from scheduler.plugins.registry import in_tree_registry
from scheduler.queue import SchedulingQueue
from scheduler.state import ClusterEvent, ClusterState, JobInfo, Phase, Reservation

__all__ = ["CycleResult", "Scheduler", "SchedulerStatistics"]


@dataclass(frozen=True, slots=True)
class CycleResult:
    """What one pass decided. ``pending`` holds a reason for every job the pass looked at
    and left waiting; ``reservations`` the holds it created."""

    at_s: float
    bindings: tuple[Binding, ...]
    preemptions: tuple[Preemption, ...]
    reservations: tuple[Reservation, ...]
    pending: Mapping[str, PendingReason]
    attempts: int
    resizes: tuple[Resize, ...] = ()


@dataclass(frozen=True, slots=True)
class SchedulerStatistics:
    passes: int
    attempts: int
    bindings: int
    preemptions: int
    reservations: int
    pending: int
    running: int


class Scheduler:
    def __init__(self, profile: Profile, *, seed: int = 0, registry: Registry | None = None) -> None:
        self.profile = profile
        self.state = ClusterState()
        self.rng = random.Random(seed)
        self.framework = Framework(profile, registry or in_tree_registry(), self.state, self.rng)
        self.queue = SchedulingQueue(profile.queue)
        self.reasons: dict[str, PendingReason] = {}
        self._rank_changes: list[tuple[float, str, float]] = []
        self._strict_head: str | None = None
        self._passes = self._attempts = self._bindings = self._preemptions = self._reservations = 0

    # --- events -----------------------------------------------------------------------------

    def handle(self, *events: Event) -> None:
        kinds: set[ClusterEvent] = set()
        state, queue = self.state, self.queue
        finish, forget = self.framework.finish_plugins, self.framework.forget_plugins
        for event in events:
            if finish and isinstance(event, JobFinished):
                done = state.jobs.get(event.job_id)
                if done is not None:
                    self.framework.job_finished(done, event.at_s)
            elif forget and isinstance(event, JobDeleted):
                gone = state.jobs.get(event.job_id)
                if gone is not None:
                    self.framework.job_deleted(gone)
            kinds |= state.handle(event)
            if isinstance(event, JobAdded | JobUpdated):
                job_id = event.job.job_id
                info = state.jobs.get(job_id)
                if info is not None and info.phase is Phase.PENDING:
                    queue.add(job_id)
                elif info is not None:
                    self._track_rank(info, info.bound_at_s or 0.0)
            elif isinstance(event, JobEvicted):
                if event.job_id in state.pending:
                    queue.add(event.job_id)
            elif isinstance(event, BindFailed):
                if event.job_id in state.pending:
                    queue.bind_failed(event.job_id, event.at_s)
            elif isinstance(event, JobFinished | JobDeleted | JobBound):
                queue.remove(event.job_id)
                self.reasons.pop(event.job_id, None)
        queue.on_events(kinds, self._hint)

    def _hint(self, job_id: str, plugin: str, kinds: set[ClusterEvent]) -> bool:
        info = self.state.pending.get(job_id)
        if info is None:
            return False
        full = info.job
        if not full.elastic:
            return self.framework.queueing_hint(info, plugin, kinds)
        info.job = full.sized(full.min_tasks or 1)  # worth a retry when its smallest size may fit now
        try:
            return self.framework.queueing_hint(info, plugin, kinds)
        finally:
            info.job = full

    # --- one pass ---------------------------------------------------------------------------

    def schedule(self, now_s: float) -> CycleResult:
        self._passes += 1
        state, queue, fw = self.state, self.queue, self.framework
        self._fire_rank_changes(now_s)
        if state.expire_reservations(now_s):
            queue.on_events({ClusterEvent.RESERVATION_CHANGED}, self._hint)
        queue.flush(now_s)
        fw.begin_pass(now_s)
        strict = self.profile.queue.strict_fifo
        sort_key = fw.queue_sort.sort_key
        if strict:
            # Strict FIFO: every pending job keeps its place; the head is retried every pass
            # and the first job that does not fit blocks everything behind it.
            infos = list(state.pending.values())
        else:
            infos = [state.pending[j] for j in queue.take_active() if j in state.pending]
        infos.sort(key=lambda info: sort_key(info, now_s))
        bindings: list[Binding] = []
        preemptions: list[Preemption] = []
        reservations: list[Reservation] = []
        pending: dict[str, PendingReason] = {}
        attempts = 0
        self._strict_head = None
        for info in infos:
            job_id = info.job.job_id
            attempts += 1
            attempt = self._elastic(info, now_s) if info.job.elastic else fw.attempt(info, now_s)
            if attempt.placement is not None:
                state.allocate(job_id, attempt.placement, now_s)
                queue.bound(job_id)
                self.reasons.pop(job_id, None)
                bindings.append(Binding(job_id, attempt.placement, now_s))
                self._track_rank(info, now_s)
                continue
            reason = self._apply_post_filter(info, attempt, now_s, preemptions, reservations)
            pending[job_id] = self.reasons[job_id] = reason
            hints = fw.hints.get(attempt.status.plugin, ALL_EVENTS)
            if attempt.post_failed:
                hints |= fw.post_hints
            queue.park(job_id, now_s, hints, attempt.status.plugin)
            if strict:
                # Everything behind waits; pending_reason() derives their reason on demand
                # instead of rewriting one per job per pass.
                self._strict_head = job_id
                break
        resizes = self._grow(now_s, reservations) if fw.resizers and state.shrunk and not strict else []
        self._attempts += attempts
        self._bindings += len(bindings)
        self._preemptions += len(preemptions)
        self._reservations += len(reservations)
        return CycleResult(now_s, tuple(bindings), tuple(preemptions), tuple(reservations), pending, attempts,
                           tuple(resizes))

    def _elastic(self, info: JobInfo, now_s: float) -> Attempt:
        """An elastic job gets the most tasks that fit, from ``tasks`` down to ``min_tasks``
        (a binary search without PostFilter: the size found fits and one more does not; a
        profile whose rules are not monotone in the size may leave a larger one); when even
        ``min_tasks`` do not fit, the attempt at that size runs PostFilter, so it preempts or
        reserves for its smallest size only. ``ClusterState.allocate`` runs the job bound at the
        size of its placement (``info.job``) and gives it back its full size on release."""
        fw, full = self.framework, info.job
        best = fw.attempt(info, now_s, post=False)
        if best.placement is None:
            best = self._largest(info, full.min_tasks or 1, full.tasks - 1, now_s)
            if best.placement is None:
                info.job = full.sized(full.min_tasks or 1)
                best = fw.attempt(info, now_s)
            info.job = full
        return best

    def _largest(self, info: JobInfo, lo: int, hi: int, now_s: float) -> Attempt:
        """The attempt (without PostFilter) at the largest size in ``lo..hi`` that fits, found by
        binary search; a failed attempt when none does. Leaves ``info.job`` at a tried size."""
        full, best = info.job, Attempt(Status.unschedulable("no size fits", "elastic"))
        while lo <= hi:
            mid = (lo + hi) // 2
            info.job = full.sized(mid)
            got = self.framework.attempt(info, now_s, post=False)
            if got.placement is not None:
                best, lo = got, mid + 1
            else:
                hi = mid - 1
        return best

    def _grow(self, now_s: float, reservations: list[Reservation]) -> list[Resize]:
        """Let the Resize plugins' candidates grow: for each, release its run for a moment (what
        it holds counts as free), find the largest size above its own that fits, and put the run
        back as it was. A larger size is held for it (a ``resize`` reservation) and the job is
        marked evicting: the daemon stops the run and the next pass binds it at that size."""
        state, out = self.state, []
        for plugin in self.framework.resizers:
            for info in plugin.grow_order(state, now_s, self.reasons):
                job_id, sized, placement = info.job.job_id, info.job, info.placement
                if info.full_job is None or placement is None or info.bound_at_s is None or info.evicting:
                    continue
                if sized.gpus_per_task and state.free_gpus(sized.gpu_type) < sized.gpus_per_task:
                    continue  # not one task more is free (a full cluster): no need to try
                kept = (info.bound_at_s, info.attained_gpu_s, info.pending_since_s, info.confirmed)
                state.release(job_id, now_s, evicted=False)
                full = info.job
                try:
                    best = self._largest(info, sized.tasks + 1, full.tasks, now_s)
                finally:
                    info.job = full
                    state.allocate(job_id, placement, kept[0])
                    info.bound_at_s, info.attained_gpu_s, info.pending_since_s, info.confirmed = kept
                if best.placement is None:
                    continue
                holds = {node: len(gpus) for node, gpus in best.placement.gpus_by_node().items()}
                reservation = Reservation(job_id, holds, now_s, "resize", now_s, ",".join(sorted(holds)),
                                          now_s + plugin.hold_s)
                state.add_reservation(reservation)
                reservations.append(reservation)
                info.evicting = True
                out.append(Resize(job_id, sized.tasks, len(best.placement.tasks), now_s))
        return out

    def _apply_post_filter(
        self, info: JobInfo, attempt: Attempt, now_s: float,
        preemptions: list[Preemption], reservations: list[Reservation],
    ) -> PendingReason:
        job_id = info.job.job_id
        status = attempt.status
        message = status.message
        post = attempt.post
        if post is not None:
            expires = None if post.hold_s is None else now_s + post.hold_s
            for victim in post.victims:
                self.state.jobs[victim.victim_id].evicting = True
                preemptions.append(victim)
            if post.victims:
                lost = sum(v.gpu_hours_lost for v in post.victims)
                names = ", ".join(v.victim_id for v in post.victims)
                message += f"; preempting {names} ({lost:.2f} GPU-h lost)"
            if post.holds:
                reservation = Reservation(job_id, dict(post.holds), post.start_s, post.kind, now_s, post.domain,
                                          expires)
                self.state.add_reservation(reservation)
                reservations.append(reservation)
            for victim_id, holds in post.migrations:
                target = ",".join(holds)
                reservation = Reservation(victim_id, dict(holds), now_s, "migration", now_s, target, expires)
                self.state.add_reservation(reservation)
                reservations.append(reservation)
            for victim_id, holds in post.shrinks:  # an elastic victim restarts smaller on what it keeps
                reservation = Reservation(victim_id, dict(holds), now_s, "shrink", now_s, ",".join(sorted(holds)),
                                          expires)
                self.state.add_reservation(reservation)
                reservations.append(reservation)
            back = None if post.return_hold_s is None else now_s + post.return_hold_s
            for victim_id, holds in post.returns:
                reservation = Reservation(victim_id, dict(holds), None, "return", now_s, ",".join(holds), back, job_id)
                self.state.add_reservation(reservation)
                reservations.append(reservation)
        held = self.state.reservations.get(job_id)
        if (held is not None and held.kind == "preemption" and post is None
                and status.code in (Code.UNRESOLVABLE, Code.INFEASIBLE)):
            # The preemptor can no longer start for a reason preemption cannot fix (its quota
            # was taken meanwhile): drop its hold now rather than keep the GPUs idle until it
            # lapses, as Kubernetes clears a nominated pod's node when it fails again.
            self.state.drop_reservation(job_id)
            self.queue.on_events({ClusterEvent.RESERVATION_CHANGED}, self._hint)
            held = None
        if held is not None and (post is None or not post.victims):
            when = "" if held.start_s is None else f", expected start in {max(0.0, held.start_s - now_s) / 3600:.1f} h"
            message += f"; holds a {held.kind} reservation on {held.domain}{when}"
        if note := self.state.unusable_note():
            message += f"; {note}"
        return PendingReason(job_id, status.code.value, status.plugin, message)

    # --- time-driven rank changes (LAS demotion) ---------------------------------------------

    def _track_rank(self, info: JobInfo, now_s: float) -> None:
        when = self.framework.queue_sort.next_rank_change_s(info, now_s)
        if when is not None and when <= now_s:
            # A change due now that has not happened yet: a threshold a rounding error away
            # (attained service 28799.999999999996 of 28800 GPU-s, and "4e-16 s from now" is
            # now). Re-arming at now_s would spin _fire_rank_changes for ever; the next
            # representable instant always makes progress.
            when = math.nextafter(now_s, math.inf)
        if when is not None and info.bound_at_s is not None:
            heappush(self._rank_changes, (when, info.job.job_id, info.bound_at_s))

    def _fire_rank_changes(self, now_s: float) -> None:
        changed = False
        heap = self._rank_changes
        while heap and heap[0][0] <= now_s:
            _, job_id, bound_at = heappop(heap)
            info = self.state.running.get(job_id)
            if info is None or info.bound_at_s != bound_at:
                continue
            changed = True
            self._track_rank(info, now_s)
        if changed:
            self.queue.on_events({ClusterEvent.PRIORITY_CHANGED}, self._hint)

    def next_wakeup_s(self) -> float | None:
        heap = self._rank_changes
        while heap:
            _, job_id, bound_at = heap[0]
            info = self.state.running.get(job_id)
            if info is not None and info.bound_at_s == bound_at:
                break
            heappop(heap)
        times = [t for t in (self.queue.next_wakeup_s(), heap[0][0] if heap else None, self.state.next_expiry_s())
                 if t is not None]
        return min(times) if times else None

    # --- queries ----------------------------------------------------------------------------

    def pending_reason(self, job_id: str) -> PendingReason | None:
        head = self._strict_head
        if head is not None and job_id != head and job_id in self.state.pending:
            return PendingReason(job_id, Code.WAIT.value, "queue", f"behind {head} (strict FIFO)")
        return self.reasons.get(job_id)

    def statistics(self) -> SchedulerStatistics:
        return SchedulerStatistics(
            self._passes, self._attempts, self._bindings, self._preemptions, self._reservations,
            len(self.state.pending), len(self.state.running),
        )

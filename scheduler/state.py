"""PURE cluster state, built only from the events of ``model.py``.

``ClusterState.handle(event)`` applies one event and returns the ``ClusterEvent`` kinds it
caused (the queue uses them as queueing hints). The scheduling cycle reads the state and
*assumes* its own bindings with ``allocate`` so the next job of the same pass sees them; a
``JobBound`` event from the store later confirms the assumption, a ``BindFailed`` undoes it.

Aggregates kept up to date on every allocation, so that a pass never has to scan all nodes to
learn that a job cannot fit:

- ``FreeIndex``: for each GPU type, buckets of usable nodes by free GPU count (tightest-first
  candidate enumeration, O(1) updates).
- ``RackInfo.hist``: per rack and GPU type, how many usable nodes have f free GPUs. The
  capacity of a rack for tasks of G GPUs is ``sum(hist[f] * (f // G))``.
- ``epoch``: bumped whenever usable capacity can grow (a job ends, a node joins or heals, a
  hold is released). Within one epoch free capacity only shrinks, so a placement that failed
  fails again: the cycle caches failures per job shape and epoch.

Worked example (two 8-GPU nodes in one rack)::

    add n1, n2          free n1=8 n2=8   hist[rack-0][""] = [0,0,0,0,0,0,0,0,2]
    allocate j1 n1:3    free n1=5 n2=8   hist = [..., f5=1, f8=1]; rack capacity for G=4: 1+2=3
    finish j1           free n1=8        epoch += 1
"""

from __future__ import annotations

from dataclasses import replace

from scheduler.model import (
    BindFailed,
    Event,
    Job,
    JobAdded,
    JobBound,
    JobDeleted,
    JobEvicted,
    JobFinished,
    JobUpdated,
    Node,
    NodeAdded,
    NodeDeleted,
    NodeUpdated,
    Placement,
    Tenant,
    TenantDeleted,
    TenantUpdated,
)
from scheduler.nodeinfo import FreeIndex, NodeInfo, RackInfo
from scheduler.records import ClusterEvent, JobInfo, Phase, Reservation

__all__ = [
    "ClusterEvent",
    "ClusterState",
    "FreeIndex",
    "JobInfo",
    "NodeInfo",
    "Phase",
    "RackInfo",
    "Reservation",
]


class ClusterState:
    """The scheduler's whole mutable world. Single-threaded; mutated only by ``handle``,
    ``allocate``/``release`` (assume and undo) and the reservation methods."""

    def __init__(self) -> None:
        self.nodes: dict[str, NodeInfo] = {}
        self.racks: dict[str, RackInfo] = {}
        self.jobs: dict[str, JobInfo] = {}
        self.tenants: dict[str, Tenant] = {}
        self.tenant_gpus: dict[str, int] = {}
        self.allocated_gpus = 0  # sum of tenant_gpus
        self.tenants_version = 0
        self.reservations: dict[str, Reservation] = {}
        self.index = FreeIndex()
        self.epoch = 0
        self.free_by_type: dict[str, int] = {}  # free GPUs of usable nodes
        self.unusable: dict[str, str] = {}  # node -> "not Ready" or "cordoned" (for pending reasons)
        self.running: dict[str, JobInfo] = {}
        self.pending: dict[str, JobInfo] = {}
        self.shrunk: set[str] = set()  # running elastic jobs bound below their full size
        self._type_totals: dict[str, tuple[int, int, int]] | None = None
        # Counters since this state was built (an eviction budget reads them): jobs added,
        # and evictions (preemptions and defragmentation moves) of any job.
        self.jobs_added = 0
        self.evictions_total = 0

    # --- events -----------------------------------------------------------------------------

    def handle(self, event: Event) -> set[ClusterEvent]:
        """Apply one event; return what changed. Unknown ids are ignored (idempotent)."""
        if isinstance(event, NodeAdded | NodeUpdated):
            return self._put_node(event.node)
        if isinstance(event, NodeDeleted):
            return self._delete_node(event.name)
        if isinstance(event, JobAdded):
            return self._add_job(event)
        if isinstance(event, JobUpdated):
            return self._update_job(event.job)
        if isinstance(event, JobBound):
            return self._confirm(event)
        if isinstance(event, BindFailed | JobEvicted):
            if event.job_id in self.running:
                self.release(event.job_id, event.at_s, evicted=isinstance(event, JobEvicted))
                return {ClusterEvent.RESOURCES_FREED}
            return set()
        if isinstance(event, JobFinished | JobDeleted):
            return self._remove_job(event.job_id, getattr(event, "at_s", None))
        if isinstance(event, TenantUpdated):
            self.tenants[event.tenant.name] = event.tenant
            self.tenants_version += 1
            return {ClusterEvent.TENANT_CHANGED}
        if isinstance(event, TenantDeleted):
            self.tenants.pop(event.name, None)
            self.tenants_version += 1
            return {ClusterEvent.TENANT_CHANGED}
        raise TypeError(f"unknown event {event!r}")

    def _put_node(self, node: Node) -> set[ClusterEvent]:
        old = self.nodes.get(node.name)
        self._type_totals = None
        if old is None:
            rack = self._rack(node)
            info = NodeInfo(node, rack)
            self.nodes[node.name] = info
            rack.nodes[node.name] = info
            self._index_in(info)
            self._note_usable(info)
            self.epoch += 1
            return {ClusterEvent.NODE_ADDED}
        grew = (
            node.gpus > old.node.gpus
            or node.cpu_milli > old.node.cpu_milli
            or node.memory_mib > old.node.memory_mib
            or (node.healthy and node.schedulable and not old.usable)
            # moved into a rack (or spine): that domain grew, as if the node had joined it; a
            # gang that topology found no rack for may fit now (NODE_CHANGED wakes no
            # capacity plugin: the gang waited for the 300 s flush)
            or (node.rack, node.spine) != (old.node.rack, old.node.spine)
        )
        self._index_out(old)
        if node.rack != old.node.rack:
            del old.rack.nodes[node.name]
            old.rack = self._rack(node)
            old.rack.nodes[node.name] = old
        allocated = old.full_mask & ~old.free_mask
        used_cpu = old.node.cpu_milli - old.free_cpu
        used_mem = old.node.memory_mib - old.free_mem
        old.node = node
        old.island_masks = node.island_masks()
        old.full_mask = (1 << node.gpus) - 1
        old.free_mask = old.full_mask & ~allocated
        old.free_gpus = old.free_mask.bit_count()
        old.free_cpu = node.cpu_milli - used_cpu
        old.free_mem = node.memory_mib - used_mem
        self._index_in(old)
        self._note_usable(old)
        if grew:
            self.epoch += 1
            return {ClusterEvent.NODE_ADDED}
        return {ClusterEvent.NODE_CHANGED}

    def _note_usable(self, info: NodeInfo) -> None:
        if info.usable:
            self.unusable.pop(info.node.name, None)
        else:
            self.unusable[info.node.name] = "not Ready" if not info.node.healthy else "cordoned"

    def unusable_note(self) -> str:
        """Why some nodes take nothing, for a pending reason (kube-scheduler's "0/2 nodes are
        available: 2 node(s) were not ready"): "" when every node is usable."""
        if not self.unusable:
            return ""
        counts: dict[str, int] = {}
        for why in self.unusable.values():
            counts[why] = counts.get(why, 0) + 1
        parts = ", ".join(f"{n} {why}" for why, n in sorted(counts.items()))
        return f"{len(self.unusable)} of {len(self.nodes)} nodes take nothing ({parts})"

    def _delete_node(self, name: str) -> set[ClusterEvent]:
        info = self.nodes.get(name)
        if info is None:
            return set()
        self._index_out(info)
        del info.rack.nodes[name]
        del self.nodes[name]
        self.unusable.pop(name, None)
        self._type_totals = None
        for job_id in list(info.holds):
            self.drop_reservation(job_id)
        return {ClusterEvent.NODE_CHANGED}

    def _add_job(self, event: JobAdded) -> set[ClusterEvent]:
        job = event.job
        if job.job_id in self.jobs:
            return self._update_job(job)
        info = JobInfo(job=job, attained_gpu_s=event.attained_gpu_s, pending_since_s=job.submit_s)
        self.jobs[job.job_id] = info
        self.jobs_added += 1
        self.pending[job.job_id] = info
        if event.placement is not None:
            at = event.bound_at_s if event.bound_at_s is not None else job.submit_s
            self.allocate(job.job_id, event.placement, at)
            info.confirmed = True
        return set()

    def _update_job(self, job: Job) -> set[ClusterEvent]:
        info = self.jobs.get(job.job_id)
        if info is None:
            return set()
        if info.full_job is not None and _shape(job) == _shape(info.full_job):
            # a running elastic job is told in full: it keeps the size it runs with
            info.full_job, job = job, job.sized(info.job.tasks)
        old = info.job
        if info.phase is Phase.RUNNING and _shape(old) != _shape(job):
            raise ValueError(f"job {job.job_id}: cannot change the shape or tenant of a running job")
        info.job = job
        return {ClusterEvent.PRIORITY_CHANGED} if job.priority != old.priority else set()

    def _confirm(self, event: JobBound) -> set[ClusterEvent]:
        info = self.jobs.get(event.job_id)
        if info is None:
            return set()
        if info.phase is Phase.RUNNING and info.placement == event.placement:
            info.confirmed = True
            return set()
        freed = set()
        if info.phase is Phase.RUNNING:  # bound elsewhere than we assumed
            self.release(event.job_id, event.at_s, evicted=False)
            freed.add(ClusterEvent.RESOURCES_FREED)
        self.allocate(event.job_id, event.placement, event.at_s)
        info.confirmed = True
        return freed

    def _remove_job(self, job_id: str, at_s: float | None) -> set[ClusterEvent]:
        info = self.jobs.get(job_id)
        if info is None:
            return set()
        changed = set()
        if info.phase is Phase.RUNNING:
            self.release(job_id, at_s if at_s is not None else info.bound_at_s or 0.0, evicted=False)
            changed.add(ClusterEvent.RESOURCES_FREED)
        if job_id in self.reservations:
            self.drop_reservation(job_id)
            changed.add(ClusterEvent.RESERVATION_CHANGED)
        self.pending.pop(job_id, None)
        del self.jobs[job_id]
        return changed

    # --- assume / release -------------------------------------------------------------------

    def placement_problem(self, job: Job, placement: Placement) -> str:
        """Why ``allocate`` would refuse ``placement`` for ``job``, or "": a placement read from the
        store (anyone may write it) must fit the cluster as known before the core is told of it.
        What the job itself holds now counts as free (a binding that moved it)."""
        size = len(placement.tasks)
        if sorted(t.task for t in placement.tasks) != list(range(size)) or not job.sizes(size):
            sizes = f"{job.min_tasks or 1}-{job.tasks}" if job.elastic else str(job.tasks)
            return f"task indices {sorted(t.task for t in placement.tasks)} for a gang of {sizes}"
        own = self.jobs.get(job.job_id)
        held = own if own is not None and own.phase is Phase.RUNNING else None
        held_tasks = held.placement.tasks if held is not None and held.placement is not None else ()
        for node_name, gpus in placement.gpus_by_node().items():
            node = self.nodes.get(node_name)
            if node is None:
                return f"node {node_name} is not a known node"
            tasks_here = [t for t in placement.tasks if t.node == node_name]
            if any(len(t.gpus) != job.gpus_per_task for t in tasks_here) or len(set(gpus)) != len(gpus):
                return f"GPUs {list(gpus)} of {node_name} are not {len(tasks_here)} x {job.gpus_per_task} distinct GPUs"
            free, cpu, mem = node.free_mask, node.free_cpu, node.free_mem
            if held is not None and node_name in held.by_node:
                mine = sum(1 for t in held_tasks if t.node == node_name)
                for gpu in held.by_node[node_name]:
                    free |= 1 << gpu
                cpu += mine * held.job.cpu_milli_per_task
                mem += mine * held.job.memory_mib_per_task
            mask = 0
            for gpu in gpus:
                mask |= 1 << gpu
            if mask & node.full_mask != mask:
                return f"GPUs {list(gpus)} of {node_name}: it has {node.node.gpus}"
            if mask & free != mask:
                return f"GPUs {list(gpus)} of {node_name} are held by another job"
            if len(tasks_here) * job.cpu_milli_per_task > cpu or len(tasks_here) * job.memory_mib_per_task > mem:
                return f"{node_name} has not the CPU or memory left for {len(tasks_here)} task(s)"
        return ""

    def allocate(self, job_id: str, placement: Placement, at_s: float) -> None:
        """Take the placement's resources (an assumed binding). Asserts nothing is taken twice.
        An elastic job placed with fewer tasks runs as that size (``info.job``) and keeps its
        full self in ``info.full_job`` until ``release``."""
        info = self.jobs[job_id]
        assert info.phase is Phase.PENDING, f"{job_id} is already running"
        job = info.job
        if len(placement.tasks) != job.tasks and job.sizes(len(placement.tasks)):
            info.full_job, job = job, job.sized(len(placement.tasks))
            info.job = job
            self.shrunk.add(job_id)
        assert len(placement.tasks) == job.tasks, f"{job_id}: partial placement"
        by_node = placement.gpus_by_node()
        for node_name, gpus in by_node.items():
            node = self.nodes[node_name]
            mask = 0
            for gpu in gpus:
                mask |= 1 << gpu
            assert mask & node.free_mask == mask, f"{job_id}: GPUs {gpus} of {node_name} not free"
            tasks_here = len(gpus) // job.gpus_per_task if job.gpus_per_task else sum(
                1 for t in placement.tasks if t.node == node_name
            )
            self._set_free(node, node.free_mask & ~mask)
            node.free_cpu -= tasks_here * job.cpu_milli_per_task
            node.free_mem -= tasks_here * job.memory_mib_per_task
            assert node.free_cpu >= 0 and node.free_mem >= 0, f"{job_id}: overcommits {node_name}"
            node.jobs[job_id] = node.jobs.get(job_id, 0) + len(gpus)
        info.phase = Phase.RUNNING
        info.placement = placement
        info.by_node = by_node
        info.bound_at_s = at_s
        info.confirmed = False
        if info.first_bound_s is None:
            info.first_bound_s = at_s
        self.pending.pop(job_id, None)
        self.running[job_id] = info
        self.tenant_gpus[job.tenant] = self.tenant_gpus.get(job.tenant, 0) + job.gpus
        self.allocated_gpus += job.gpus
        if job_id in self.reservations:
            self.drop_reservation(job_id)

    def release(self, job_id: str, at_s: float, *, evicted: bool) -> None:
        """Free a running gang's resources; it becomes pending again (unless removed)."""
        info = self.jobs[job_id]
        assert info.phase is Phase.RUNNING and info.placement is not None
        job = info.job
        for node_name, gpus in info.by_node.items():
            node = self.nodes.get(node_name)
            if node is None:
                continue
            mask = 0
            for gpu in gpus:
                mask |= 1 << gpu
            tasks_here = len(gpus) // job.gpus_per_task if job.gpus_per_task else sum(
                1 for t in info.placement.tasks if t.node == node_name
            )
            self._set_free(node, (node.free_mask | mask) & node.full_mask)
            node.free_cpu += tasks_here * job.cpu_milli_per_task
            node.free_mem += tasks_here * job.memory_mib_per_task
            del node.jobs[job_id]
        info.attained_gpu_s = info.attained_at(at_s)
        info.phase = Phase.PENDING
        info.placement = None
        info.by_node = {}
        info.bound_at_s = None
        info.confirmed = False
        info.evicting = False
        info.pending_since_s = at_s
        if info.full_job is not None:  # an elastic job: it may start with more tasks next time
            info.job = replace(info.job, tasks=info.full_job.tasks, min_tasks=info.full_job.min_tasks)
            info.full_job = None
            self.shrunk.discard(job_id)
        if evicted:
            info.evictions += 1
            self.evictions_total += 1
        del self.running[job_id]
        self.pending[job_id] = info
        self.tenant_gpus[job.tenant] -= job.gpus
        self.allocated_gpus -= job.gpus
        self.epoch += 1

    # --- reservations -----------------------------------------------------------------------

    def add_reservation(self, reservation: Reservation) -> None:
        if reservation.job_id in self.reservations:
            self.drop_reservation(reservation.job_id)
        self.reservations[reservation.job_id] = reservation
        for name, gpus in reservation.holds.items():
            node = self.nodes[name]
            node.holds[reservation.job_id] = gpus
            node.held_gpus += gpus

    def expire_reservations(self, now_s: float) -> bool:
        """Drop the holds whose time is up; True if any was dropped."""
        expired = [j for j, r in self.reservations.items() if r.expires_s is not None and r.expires_s <= now_s]
        for job_id in expired:
            self.drop_reservation(job_id)
        return bool(expired)

    def next_expiry_s(self) -> float | None:
        times = [r.expires_s for r in self.reservations.values() if r.expires_s is not None]
        return min(times) if times else None

    def drop_reservation(self, job_id: str) -> None:
        reservation = self.reservations.pop(job_id, None)
        if reservation is None:
            return
        for name in reservation.holds:
            node = self.nodes.get(name)
            if node is not None and job_id in node.holds:
                node.held_gpus -= node.holds.pop(job_id)
        self.epoch += 1

    # --- queries ----------------------------------------------------------------------------

    def type_totals(self) -> dict[str, tuple[int, int, int]]:
        """Per GPU type over usable nodes: (total GPUs, largest node, largest NVLink island)."""
        if self._type_totals is None:
            totals: dict[str, tuple[int, int, int]] = {}
            for info in self.nodes.values():
                if not info.usable:
                    continue
                total, largest, island = totals.get(info.node.gpu_type, (0, 0, 0))
                biggest_island = max(info.node.islands or (info.node.gpus,))
                totals[info.node.gpu_type] = (
                    total + info.node.gpus, max(largest, info.node.gpus), max(island, biggest_island))
            self._type_totals = totals
        return self._type_totals

    def largest_island_gpus(self, gpu_type: str | None) -> int:
        totals = self.type_totals()
        if gpu_type is not None:
            return totals.get(gpu_type, (0, 0, 0))[2]
        return max((island for _, _, island in totals.values()), default=0)

    def largest_node_gpus(self, gpu_type: str | None) -> int:
        totals = self.type_totals()
        if gpu_type is not None:
            return totals.get(gpu_type, (0, 0, 0))[1]
        return max((largest for _, largest, _ in totals.values()), default=0)

    def total_gpus(self, gpu_type: str | None = None) -> int:
        totals = self.type_totals()
        if gpu_type is not None:
            return totals.get(gpu_type, (0, 0, 0))[0]
        return sum(total for total, _, _ in totals.values())

    def free_gpus(self, gpu_type: str | None = None) -> int:
        """Free GPUs on usable nodes (of ``gpu_type``), holds included."""
        if gpu_type is not None:
            return self.free_by_type.get(gpu_type, 0)
        by_type = self.free_by_type
        if len(by_type) == 1:
            for free in by_type.values():
                return free
        return sum(by_type.values())

    def spines(self) -> dict[str, list[RackInfo]]:
        out: dict[str, list[RackInfo]] = {}
        for rack in self.racks.values():
            out.setdefault(rack.spine, []).append(rack)
        return out

    # --- internals --------------------------------------------------------------------------

    def _rack(self, node: Node) -> RackInfo:
        rack = self.racks.get(node.rack)
        if rack is None:
            rack = self.racks[node.rack] = RackInfo(node.rack, node.spine)
        return rack

    def _index_in(self, info: NodeInfo) -> None:
        if not info.usable:
            return
        info.indexed = True
        self.index.add(info)
        rack = info.rack
        hist = rack.hist.setdefault(info.node.gpu_type, [])
        while len(hist) <= info.node.gpus:
            hist.append(0)
        hist[info.free_gpus] += 1
        rack.capacity_gpus += info.node.gpus
        rack.free_gpus += info.free_gpus
        rack.max_node_gpus = max(rack.max_node_gpus, info.node.gpus)
        kind = info.node.gpu_type
        rack.capacity_by_type[kind] = rack.capacity_by_type.get(kind, 0) + info.node.gpus
        self.free_by_type[kind] = self.free_by_type.get(kind, 0) + info.free_gpus

    def _index_out(self, info: NodeInfo) -> None:
        if not info.indexed:
            return
        info.indexed = False
        self.index.remove(info)
        rack = info.rack
        rack.hist[info.node.gpu_type][info.free_gpus] -= 1
        rack.capacity_gpus -= info.node.gpus
        rack.free_gpus -= info.free_gpus
        rack.capacity_by_type[info.node.gpu_type] -= info.node.gpus
        self.free_by_type[info.node.gpu_type] -= info.free_gpus

    def _set_free(self, info: NodeInfo, free_mask: int) -> None:
        if info.indexed:
            kind = info.node.gpu_type
            buckets = self.index.buckets[kind]
            del buckets[info.free_gpus][info.name]
            hist = info.rack.hist[kind]
            hist[info.free_gpus] -= 1
            info.rack.free_gpus -= info.free_gpus
        old_free = info.free_gpus
        info.free_mask = free_mask
        info.free_gpus = free_mask.bit_count()
        if info.indexed:
            buckets[info.free_gpus][info.name] = info
            hist[info.free_gpus] += 1
            info.rack.free_gpus += info.free_gpus
            self.free_by_type[kind] += info.free_gpus - old_free


def _shape(job: Job) -> tuple[object, ...]:
    """What a running job cannot change: its size, requests and tenant."""
    return job.tasks, job.gpus_per_task, job.cpu_milli_per_task, job.memory_mib_per_task, job.tenant

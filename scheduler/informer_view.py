"""PURE cache of everything under ``/registry/``, built from an informer's list and watch events.

``ClusterView`` keeps each kind of object parsed (node records, heartbeats, cordons, jobs,
bindings, per-node allocations, job statuses, task statuses, tenants, priority classes),
with the revisions the binder compares. Every change marks the names it touches *dirty*
(``dirty_nodes``, ``dirty_jobs``, ``dirty_tenants``); the daemon drains them once per loop and
turns them into the core's events with ``CoreFeed``, which remembers what the core was told
so the same fact is never fed twice.

Example: a heartbeat key of ``n1`` is deleted (its agent's lease expired) -> ``n1`` dirty ->
``node_model("n1")`` has ``healthy=False`` -> ``CoreFeed.sync_node`` emits ``NodeUpdated``;
every job bound on ``n1`` is dirty too, so the daemon's lifecycle step sees it lost.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from scheduler import keys
from scheduler.jobs import to_model
from scheduler.model import (
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
    TaskAssignment,
    Tenant,
    TenantDeleted,
    TenantUpdated,
)

__all__ = ["TERMINAL", "Binding", "ClusterView", "CoreFeed", "Entry"]

TERMINAL = frozenset({"Succeeded", "Failed", "Cancelled"})


@dataclass(frozen=True, slots=True)
class Entry:
    """A parsed value with the revisions of its key."""

    doc: Any
    create_revision: int
    mod_revision: int


@dataclass(frozen=True, slots=True)
class Binding:
    job: str
    tasks: tuple[dict[str, Any], ...]  # {"task", "node", "rack", "gpus", "index"}
    bound_at: float
    evicting_until: float | None
    revision: int  # create revision: the assignments' create revision too
    mod_revision: int

    def nodes(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(t["node"] for t in self.tasks))

    def placement(self) -> Placement:
        return Placement(tuple(TaskAssignment(t["index"], t["node"], tuple(t["gpus"]))
                               for t in self.tasks if t["index"] >= 0))


def _load(value: bytes) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return None


class ClusterView:
    def __init__(self) -> None:
        self.revision = 0
        self.nodes: dict[str, Entry] = {}
        self.heartbeats: dict[str, Entry] = {}
        self.cordons: dict[str, Entry] = {}
        self.jobs: dict[str, Entry] = {}
        self.bindings: dict[str, Binding] = {}
        self.alloc: dict[str, Entry] = {}
        self.status: dict[str, Entry] = {}
        self.tasks: dict[str, dict[str, Entry]] = {}  # job -> task -> status
        self.tenants: dict[str, Entry] = {}
        self.classes: dict[str, Entry] = {}
        self.jobs_on_node: dict[str, set[str]] = {}
        self.dirty_nodes: set[str] = set()
        self.dirty_jobs: set[str] = set()
        self.dirty_tenants: set[str] = set()
        # nodes the daemon suspects of a dead agent although their lease lives
        # (scheduler.suspects): NotReady for the core; not from the store, kept across replace()
        self.unreachable: set[str] = set()

    # --- informer sink ----------------------------------------------------------------------
    def replace(self, kvs: Sequence[Any], revision: int) -> None:
        before = {
            "n": set(self.nodes) | set(self.heartbeats) | set(self.cordons) | set(self.alloc),
            "j": set(self.jobs) | set(self.bindings) | set(self.status) | set(self.tasks),
            "t": set(self.tenants),
        }
        unreachable = self.unreachable
        self.__init__()  # type: ignore[misc]
        self.unreachable = unreachable
        for kv in kvs:
            self._put(kv.key.decode(), kv.value, kv.create_revision, kv.mod_revision)
        self.revision = revision
        self.dirty_nodes |= before["n"] | set(self.nodes) | set(self.heartbeats) | set(self.cordons)
        self.dirty_jobs |= before["j"] | set(self.jobs) | set(self.bindings)
        self.dirty_tenants |= before["t"] | set(self.tenants)

    def apply(self, events: Sequence[Any], revision: int) -> None:
        for ev in events:
            key = ev.kv.key.decode()
            if ev.type == "PUT":
                self._put(key, ev.kv.value, ev.kv.create_revision, ev.kv.mod_revision)
            else:
                self._delete(key)
        self.revision = max(self.revision, revision)

    # --- own writes (applied at once; the watch brings the same revisions later) -------------
    def put_local(self, key: str, doc: Any, create_revision: int, mod_revision: int) -> None:
        self._put(key, json.dumps(doc).encode(), create_revision, mod_revision)

    def delete_local(self, key: str) -> None:
        self._delete(key)

    # --- parsing ----------------------------------------------------------------------------
    def _put(self, key: str, value: bytes, create: int, mod: int) -> None:
        where = keys.split(key)
        if where is None:
            return
        prefix, rest = where
        if prefix == keys.EVENTS or prefix == keys.ASSIGNMENTS:
            return
        doc = _load(value)
        entry = Entry(doc, create, mod)
        if prefix == keys.TASKS:
            parts = rest.split("/")
            if len(parts) == 3 and parts[2] == "status" and isinstance(doc, dict):
                self.tasks.setdefault(parts[0], {})[parts[1]] = entry
                self.dirty_jobs.add(parts[0])
            return
        if "/" in rest or not rest:
            return
        if prefix == keys.NODES:
            if isinstance(doc, dict):
                self.nodes[rest] = entry
                self._node_dirty(rest)
        elif prefix == keys.LEASES:
            self.heartbeats[rest] = entry
            self._node_dirty(rest)
        elif prefix == keys.CORDONS:
            self.cordons[rest] = entry
            self._node_dirty(rest)
        elif prefix == keys.ALLOC:
            self.alloc[rest] = entry
        elif prefix == keys.JOBS:
            if isinstance(doc, dict):
                self.jobs[rest] = entry
                self.dirty_jobs.add(rest)
        elif prefix == keys.BINDINGS:
            if isinstance(doc, dict):
                old = self.bindings.get(rest)
                if old is not None:
                    self._unindex(old)
                b = Binding(rest, tuple(doc.get("tasks", ())), float(doc.get("bound_at", 0.0)),
                            doc.get("evicting_until"), create, mod)
                self.bindings[rest] = b
                for n in b.nodes():
                    self.jobs_on_node.setdefault(n, set()).add(rest)
                self.dirty_jobs.add(rest)
        elif prefix == keys.JOBSTATUS:
            self.status[rest] = entry
            self.dirty_jobs.add(rest)
        elif prefix == keys.TENANTS:
            if isinstance(doc, dict):
                self.tenants[rest] = entry
                self.dirty_tenants.add(rest)
        elif prefix == keys.PRIORITY_CLASSES and isinstance(doc, dict):
            self.classes[rest] = entry

    def _delete(self, key: str) -> None:
        where = keys.split(key)
        if where is None:
            return
        prefix, rest = where
        if prefix == keys.TASKS:
            parts = rest.split("/")
            if len(parts) == 3 and parts[0] in self.tasks:
                self.tasks[parts[0]].pop(parts[1], None)
                if not self.tasks[parts[0]]:
                    del self.tasks[parts[0]]
                self.dirty_jobs.add(parts[0])
            return
        table = {keys.NODES: self.nodes, keys.LEASES: self.heartbeats, keys.CORDONS: self.cordons,
                 keys.ALLOC: self.alloc, keys.JOBS: self.jobs, keys.JOBSTATUS: self.status,
                 keys.TENANTS: self.tenants, keys.PRIORITY_CLASSES: self.classes}.get(prefix)
        if prefix == keys.BINDINGS:
            old = self.bindings.pop(rest, None)
            if old is not None:
                self._unindex(old)
            self.dirty_jobs.add(rest)
            return
        if table is None:
            return
        table.pop(rest, None)
        if prefix in (keys.NODES, keys.LEASES, keys.CORDONS):
            self._node_dirty(rest)
        elif prefix in (keys.JOBS, keys.JOBSTATUS):
            self.dirty_jobs.add(rest)
        elif prefix == keys.TENANTS:
            self.dirty_tenants.add(rest)

    def _unindex(self, b: Binding) -> None:
        for n in b.nodes():
            jobs = self.jobs_on_node.get(n)
            if jobs is not None:
                jobs.discard(b.job)

    def _node_dirty(self, name: str) -> None:
        self.dirty_nodes.add(name)
        self.dirty_jobs |= self.jobs_on_node.get(name, set())

    # --- derived views ----------------------------------------------------------------------
    def node_ready(self, name: str) -> bool:
        """The agent's heartbeat is alive and its record says Ready."""
        rec = self.nodes.get(name)
        return rec is not None and name in self.heartbeats and bool(rec.doc.get("healthy", True))

    def node_model(self, name: str) -> Node | None:
        """The core's node: healthy when Ready and not suspected of a dead agent."""
        rec = self.nodes.get(name)
        if rec is None:
            return None
        d = rec.doc
        try:
            return Node(
                name=name, gpus=int(d.get("gpus", 0)), gpu_type=str(d.get("gpu_type", "")),
                cpu_milli=int(d.get("cpu_milli", 0)), memory_mib=int(d.get("memory_mib", 0)),
                rack=str(d.get("rack", "rack-0")), spine=str(d.get("spine", "spine-0")),
                islands=tuple(d.get("islands") or ()), labels=tuple(sorted((d.get("labels") or {}).items())),
                healthy=self.node_ready(name) and name not in self.unreachable, schedulable=name not in self.cordons,
            )
        except (ValueError, TypeError):
            return None

    def phase(self, job: str) -> str:
        st = self.status.get(job)
        return str(st.doc.get("phase", "Pending")) if st is not None and isinstance(st.doc, dict) else "Pending"

    def job_model(self, job: str) -> Job | None:
        """The core's job, or None when the job is gone, cancelled or finished."""
        entry = self.jobs.get(job)
        if entry is None or self.phase(job) in TERMINAL:
            return None
        if entry.doc.get("cancelled") and job not in self.bindings:
            return None
        try:
            return to_model(entry.doc)
        except (KeyError, TypeError, ValueError):
            return None

    def task_statuses(self, job: str, revision: int) -> dict[str, dict[str, Any]]:
        """Task statuses written for the placement with assignment ``revision``."""
        out = {}
        for task, entry in self.tasks.get(job, {}).items():
            if int(entry.doc.get("assignment_revision", 0)) == revision:
                out[task] = entry.doc
        return out

    def alloc_jobs(self, node: str) -> dict[str, Any]:
        entry = self.alloc.get(node)
        return dict(entry.doc.get("jobs", {})) if entry is not None and isinstance(entry.doc, dict) else {}

    def alloc_revision(self, node: str) -> int:
        entry = self.alloc.get(node)
        return entry.mod_revision if entry is not None else 0

    def take_dirty(self) -> tuple[set[str], set[str], set[str]]:
        out = (self.dirty_nodes, self.dirty_jobs, self.dirty_tenants)
        self.dirty_nodes, self.dirty_jobs, self.dirty_tenants = set(), set(), set()
        return out


class CoreFeed:
    """What the core has been told, and the events that bring it up to date with a view.

    Jobs carry the placement the core holds for them: the binding in the store, or one the
    core assumed in a pass (``assumed``) until the store confirms it or the bind fails.
    """

    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}
        self.jobs: dict[str, tuple[Job, Placement | None, bool]] = {}  # job, placement, confirmed
        self.tenants: dict[str, Tenant] = {}

    def assumed(self, job: str, placement: Placement) -> None:
        j = self.jobs[job]
        self.jobs[job] = (j[0], placement, False)

    def bind_failed(self, job: str) -> None:
        j = self.jobs.get(job)
        if j is not None:
            self.jobs[job] = (j[0], None, False)

    def sync_node(self, view: ClusterView, name: str) -> list[Event]:
        new = view.node_model(name)
        old = self.nodes.get(name)
        if new == old:
            return []
        sid = f"node:{name}@{view.revision}"
        if new is None:
            del self.nodes[name]
            return [NodeDeleted(name, stimulus_id=sid)]
        self.nodes[name] = new
        return [NodeAdded(new, stimulus_id=sid) if old is None else NodeUpdated(new, stimulus_id=sid)]

    def sync_tenant(self, view: ClusterView, name: str) -> list[Event]:
        entry = view.tenants.get(name)
        sid = f"tenant:{name}@{view.revision}"
        if entry is None:
            if self.tenants.pop(name, None) is None:
                return []
            return [TenantDeleted(name, stimulus_id=sid)]
        try:
            t = Tenant(entry.doc["name"], int(entry.doc["nominal_gpus"]), entry.doc.get("borrow_limit_gpus"))
        except (KeyError, TypeError, ValueError):
            return []
        if self.tenants.get(name) == t:
            return []
        self.tenants[name] = t
        return [TenantUpdated(t, stimulus_id=sid)]

    def sync_job(self, view: ClusterView, name: str, now_s: float) -> list[Event]:
        job = view.job_model(name)
        b = view.bindings.get(name)
        placement = b.placement() if b is not None and job is not None else None
        old = self.jobs.get(name)
        sid = f"job:{name}@{view.revision}"
        if job is None:
            if old is None:
                return []
            del self.jobs[name]
            if old[1] is not None:
                return [JobFinished(name, now_s, stimulus_id=sid)]
            return [JobDeleted(name, stimulus_id=sid)]
        if old is None:
            self.jobs[name] = (job, placement, placement is not None)
            return [JobAdded(job, placement=placement, bound_at_s=b.bound_at if b is not None else None,
                             stimulus_id=sid)]
        out: list[Event] = []
        old_job, old_placement, confirmed = old
        if job != old_job:
            if old_placement is not None and _shape(job) != _shape(old_job):
                return []  # the store will never hold such a change for a running job
            out.append(JobUpdated(job, stimulus_id=sid))
        if placement is None and old_placement is not None and confirmed:
            out.append(JobEvicted(name, now_s, stimulus_id=sid))
        elif placement is not None and (placement != old_placement or not confirmed):
            out.append(JobBound(name, placement, b.bound_at if b is not None else now_s, stimulus_id=sid))
        self.jobs[name] = (job, placement if placement is not None else (old_placement if not confirmed else None),
                           placement is not None)
        return out


def _shape(job: Job) -> tuple[Any, ...]:
    return (job.tasks, job.gpus_per_task, job.cpu_milli_per_task, job.memory_mib_per_task, job.tenant)

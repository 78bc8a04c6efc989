"""PURE cache of everything under ``/registry/``, built from an informer's list and watch events.

``ClusterView`` keeps each kind of object parsed (node records, heartbeats, cordons, jobs,
bindings, per-node allocations, job statuses, task statuses, tenants, priority classes,
eviction requests),
with the revisions the binder compares. Every change marks the names it touches *dirty*
(``dirty_nodes``, ``dirty_jobs``, ``dirty_tenants``); the daemon drains them once per loop and
turns them into the core's events with ``CoreFeed``, which remembers what the core was told
so the same fact is never fed twice.

Anyone may write any key, so every value is decoded (``scheduler.decode``,
``scheduler.jobs.check_stored_job``) before it is kept; one that does not decode is skipped,
its key and reason kept in ``invalid`` and logged (a warning naming the key), and nothing else
is affected: a job spec that does not decode is not a job (the daemon writes its pending reason
``InvalidSpec``, or fails its run), a node record that does not decode is not a node, a
binding that does not decode is kept with its ``problem`` so the daemon can release it (it
holds GPUs), an alloc record that does not decode makes its node unschedulable. A decoder that
raises anything but ``Malformed`` on some value is a bug, but it is that key's problem too
(``_guarded``: logged with its traceback, the value read as not decoding), never the view's:
an exception out of ``replace`` or ``apply`` makes the informer list again, which meets the
same value, for ever. And ``replace`` builds the new view apart and swaps it in whole, so a
failure leaves the last consistent view, never half of one (with the heartbeats not yet read,
every node looks lost).

Example: a heartbeat key of ``n1`` is deleted (its agent's lease expired) -> ``n1`` dirty ->
``node_model("n1")`` has ``healthy=False`` -> ``CoreFeed.sync_node`` emits ``NodeUpdated``;
every job bound on ``n1`` is dirty too, so the daemon's lifecycle step sees it lost.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from scheduler import arrays, decode, dependencies, keys
from scheduler.jobs import check_stored_job, to_model
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

log = logging.getLogger("kvraft.scheduler.view")

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
    problem: str = ""  # what did not decode ("" when nothing); ``tasks`` are the rows that did
    evicted_for: str = ""  # an operator's eviction ("drain", "requeue"), "suspend" or "resize"; "" for a preemption
    eviction_message: str = ""  # why, for the status ("node n3 drained by jobctl")

    def nodes(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(t["node"] for t in self.tasks))

    def placement(self) -> Placement:
        return Placement(tuple(TaskAssignment(t["index"], t["node"], tuple(t["gpus"]))
                               for t in self.tasks if t["index"] >= 0))


def _guarded(decoder: Callable[..., Any], *args: Any) -> Any:
    """``decoder(*args)``; any exception but ``decode.Malformed`` (a bug in a decoder, met on a
    value anyone may write) is logged with its traceback and raised as ``Malformed``."""
    try:
        return decoder(*args)
    except decode.Malformed:
        raise
    except Exception as exc:
        log.exception("a decoder failed on a stored value", extra={"fields": {"decoder": decoder.__name__}})
        raise decode.Malformed(f"could not be decoded ({type(exc).__name__}: {str(exc)[:200]}; a scheduler bug, "
                               "see its log)") from exc


def _load(value: bytes) -> tuple[Any, str]:
    """The JSON value and "", or None and why it is not JSON."""
    try:
        return decode.json_value(value), ""
    except decode.Malformed as exc:
        return None, str(exc)


class ClusterView:
    def __init__(self) -> None:
        self.revision = 0
        self.nodes: dict[str, Entry] = {}
        self.heartbeats: dict[str, Entry] = {}
        self.cordons: dict[str, Entry] = {}
        self.evictions: dict[str, Entry] = {}  # job -> its eviction request (doc: decode.EvictionRequest)
        self.jobs: dict[str, Entry] = {}  # only specs that pass check_stored_job
        self.invalid_jobs: dict[str, Entry] = {}  # the others (why: ``invalid``); only collected
        self.bindings: dict[str, Binding] = {}
        self.alloc: dict[str, Entry] = {}
        self.status: dict[str, Entry] = {}
        self.tasks: dict[str, dict[str, Entry]] = {}  # job -> task -> status
        self.tenants: dict[str, Entry] = {}
        self.classes: dict[str, Entry] = {}
        self.jobs_on_node: dict[str, set[str]] = {}
        self.dependents: dict[str, set[str]] = {}  # job -> the jobs whose spec depends on it
        self.arrays: dict[str, set[str]] = {}  # job array -> its stored elements (scheduler.arrays)
        self._turns: dict[str, set[str]] = {}  # array -> its elements whose turn it is (a cache)
        self.invalid: dict[str, str] = {}  # key -> why its value was skipped (logged once per put)
        self.dirty_nodes: set[str] = set()
        self.dirty_jobs: set[str] = set()
        self.dirty_tenants: set[str] = set()
        # nodes the daemon suspects of a dead agent although their lease lives
        # (scheduler.suspects): NotReady for the core; not from the store, kept across replace()
        self.unreachable: set[str] = set()
        self._warned: dict[str, str] = {}  # key -> the reason logged (kept across replace(): logged once)

    # --- informer sink ----------------------------------------------------------------------
    def replace(self, kvs: Sequence[Any], revision: int) -> None:
        before = {
            "n": set(self.nodes) | set(self.heartbeats) | set(self.cordons) | set(self.alloc),
            "j": set(self.jobs) | set(self.bindings) | set(self.status) | set(self.tasks) | set(self.evictions),
            "t": set(self.tenants),
        }
        fresh = type(self)()
        fresh.unreachable, fresh._warned = self.unreachable, dict(self._warned)
        for kv in kvs:
            key = fresh._key(kv.key)
            if key is not None:
                fresh._put(key, kv.value, kv.create_revision, kv.mod_revision)
                if key not in fresh.invalid:
                    fresh._warned.pop(key, None)
        fresh.revision = revision
        self.__dict__.update(fresh.__dict__)  # all or nothing: an exception above left self as it was
        self.dirty_nodes |= before["n"] | set(self.nodes) | set(self.heartbeats) | set(self.cordons)
        self.dirty_jobs |= before["j"] | set(self.jobs) | set(self.bindings) | set(self.evictions)
        self.dirty_tenants |= before["t"] | set(self.tenants)

    def apply(self, events: Sequence[Any], revision: int) -> None:
        for ev in events:
            key = self._key(ev.kv.key)
            if key is None:
                continue
            if ev.type == "PUT":
                self._put(key, ev.kv.value, ev.kv.create_revision, ev.kv.mod_revision)
            else:
                self._delete(key)
            if key not in self.invalid:
                self._warned.pop(key, None)
        self.revision = max(self.revision, revision)

    # --- own writes (applied at once; the watch brings the same revisions later) -------------
    def put_local(self, key: str, doc: Any, create_revision: int, mod_revision: int) -> None:
        self._put(key, json.dumps(doc).encode(), create_revision, mod_revision)

    def delete_local(self, key: str) -> None:
        self._delete(key)

    # --- parsing ----------------------------------------------------------------------------
    @staticmethod
    def _key(raw: bytes) -> str | None:
        try:
            return decode.key_text(raw)
        except decode.Malformed as exc:
            log.warning("key skipped", extra={"fields": {"key": repr(raw), "why": str(exc)}})
            return None

    def _invalid(self, key: str, why: str) -> None:
        if self._warned.get(key) != why:
            log.warning("malformed value skipped", extra={"fields": {"key": key, "why": why}})
            self._warned[key] = why
        self.invalid[key] = why

    def _put(self, key: str, value: bytes, create: int, mod: int) -> None:
        self._turns.clear()
        where = keys.split(key)
        if where is None:
            return
        prefix, rest = where
        if prefix == keys.EVENTS or prefix == keys.ASSIGNMENTS:
            return
        doc, why = _load(value)
        was_invalid = self.invalid.pop(key, None) is not None
        entry = Entry(doc, create, mod)
        if prefix == keys.TASKS:
            self._put_task_status(key, rest, entry, why)
            return
        if "/" in rest or rest in ("", ".", ".."):
            return
        if prefix == keys.NODES:
            try:
                if why:
                    raise decode.Malformed(why)
                _guarded(decode.node, rest, doc)
                self.nodes[rest] = entry
            except decode.Malformed as exc:
                self._invalid(key, str(exc))
                self.nodes.pop(rest, None)  # a record that does not decode: no node (NotReady)
            self._node_dirty(rest)
        elif prefix == keys.LEASES:
            self.heartbeats[rest] = entry
            self._node_dirty(rest)
        elif prefix == keys.CORDONS:
            self.cordons[rest] = entry
            self._node_dirty(rest)
        elif prefix == keys.ALLOC:
            self.alloc[rest] = entry  # kept when malformed: the bind and release txns compare its revision
            try:
                if why:
                    raise decode.Malformed(why)
                _guarded(decode.alloc_jobs, doc)
            except decode.Malformed as exc:
                self._invalid(key, f"{exc}; node {rest} unschedulable until it is fixed")
            if was_invalid != (key in self.invalid):  # schedulable or not: the core must hear of it
                self._node_dirty(rest)
        elif prefix == keys.JOBS:
            try:
                problems = [why] if why else [str(p) for p in _guarded(check_stored_job, rest, doc)]
            except decode.Malformed as exc:
                problems = [str(exc)]
            self._index_spec(rest, None)
            if problems:
                self._invalid(key, "; ".join(problems))
                self.jobs.pop(rest, None)
                self.invalid_jobs[rest] = entry
            else:
                self.jobs[rest] = entry
                self.invalid_jobs.pop(rest, None)
                self._index_spec(rest, entry.doc)
            self.dirty_jobs.add(rest)
        elif prefix == keys.BINDINGS:
            try:
                tasks, bound_at, evicting_until, problem = _guarded(decode.binding, doc) if not why else \
                    ((), 0.0, None, why)
            except decode.Malformed as exc:
                tasks, bound_at, evicting_until, problem = (), 0.0, None, str(exc)
            old = self.bindings.get(rest)
            if old is not None:
                self._unindex(old)
            try:
                evicted_for, eviction_message = _guarded(decode.binding_eviction, doc)
            except decode.Malformed as exc:
                evicted_for, eviction_message = "", ""
                problem = "; ".join(p for p in (problem, str(exc)) if p)
            if problem:
                self._invalid(key, problem)
            b = Binding(rest, tasks, bound_at, evicting_until, create, mod, problem, evicted_for, eviction_message)
            self.bindings[rest] = b
            for n in b.nodes():
                self.jobs_on_node.setdefault(n, set()).add(rest)
            self.dirty_jobs.add(rest)
        elif prefix == keys.EVICTIONS:
            try:
                if why:
                    raise decode.Malformed(why)
                self.evictions[rest] = Entry(_guarded(decode.eviction, rest, doc), create, mod)
            except decode.Malformed as exc:
                self._invalid(key, f"{exc} (the request is not acted on)")
                self.evictions.pop(rest, None)
            self.dirty_jobs.add(rest)
        elif prefix == keys.JOBSTATUS:
            try:
                fixed, problems = _guarded(decode.job_status, doc)
            except decode.Malformed as exc:
                fixed, problems = {}, [str(exc)]
            if why or problems:
                self._invalid(key, "; ".join([why] if why else problems) + " (read as missing; rewritten on the next status write)")
            self.status[rest] = Entry(fixed, create, mod)
            self.dirty_jobs.add(rest)
        elif prefix == keys.TENANTS:
            try:
                if why:
                    raise decode.Malformed(why)
                _guarded(decode.tenant, rest, doc)
                self.tenants[rest] = entry
            except decode.Malformed as exc:
                self._invalid(key, str(exc))
                self.tenants.pop(rest, None)
            self.dirty_tenants.add(rest)
        elif prefix == keys.PRIORITY_CLASSES and isinstance(doc, dict):
            self.classes[rest] = entry

    def _put_task_status(self, key: str, rest: str, entry: Entry, why: str) -> None:
        parts = rest.split("/")
        if len(parts) != 3 or parts[2] != "status" or not parts[0] or not parts[1]:
            return
        job, task = parts[0], parts[1]
        try:
            if why:
                raise decode.Malformed(why)
            _guarded(decode.task_status, entry.doc)
        except decode.Malformed as exc:
            self._invalid(key, str(exc))
            known = self.tasks.get(job, {})
            known.pop(task, None)
            if not known:
                self.tasks.pop(job, None)
        else:
            self.tasks.setdefault(job, {})[task] = entry
        self.dirty_jobs.add(job)

    def _delete(self, key: str) -> None:
        self._turns.clear()
        was_invalid = self.invalid.pop(key, None) is not None
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
                 keys.ALLOC: self.alloc, keys.JOBS: self.jobs, keys.JOBSTATUS: self.status, keys.EVICTIONS: self.evictions,
                 keys.TENANTS: self.tenants, keys.PRIORITY_CLASSES: self.classes}.get(prefix)
        if prefix == keys.BINDINGS:
            old = self.bindings.pop(rest, None)
            if old is not None:
                self._unindex(old)
            self.dirty_jobs.add(rest)
            return
        if table is None:
            return
        if prefix == keys.JOBS:
            self._index_spec(rest, None)
        table.pop(rest, None)
        if prefix == keys.JOBS:
            self.invalid_jobs.pop(rest, None)
        if prefix in (keys.NODES, keys.LEASES, keys.CORDONS) or (prefix == keys.ALLOC and was_invalid):
            self._node_dirty(rest)
        elif prefix in (keys.JOBS, keys.JOBSTATUS):
            self.dirty_jobs.add(rest)
        elif prefix == keys.TENANTS:
            self.dirty_tenants.add(rest)

    def _index_spec(self, job: str, doc: Any) -> None:
        """Index the dependencies and the array of ``job``'s spec ``doc`` (None: unindex its
        stored spec's)."""
        old = self.jobs.get(job)
        spec = old.doc if doc is None and old is not None else doc or {}
        record = arrays.member(spec)
        if record is not None:
            members = self.arrays.setdefault(record["job"], set())
            if doc is None:
                members.discard(job)
                if not members:
                    del self.arrays[record["job"]]
            else:
                members.add(job)
        for d in dependencies.parse(spec):
            if doc is None:
                names = self.dependents.get(d.job)
                if names is not None:
                    names.discard(job)
                    if not names:
                        del self.dependents[d.job]
            else:
                self.dependents.setdefault(d.job, set()).add(job)

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
        return rec is not None and name in self.heartbeats and rec.doc.get("healthy", True) is not False

    def node_model(self, name: str) -> Node | None:
        """The core's node: healthy when Ready and not suspected of a dead agent."""
        rec = self.nodes.get(name)
        if rec is None:
            return None
        try:
            node = decode.node(name, rec.doc)
        except decode.Malformed:
            return None
        return replace(node, healthy=self.node_ready(name) and name not in self.unreachable,
                       schedulable=name not in self.cordons and self.alloc_ok(name))

    def alloc_ok(self, node: str) -> bool:
        """The node's alloc record decodes (or is absent): binds may add to it."""
        return keys.alloc_key(node) not in self.invalid if node in self.alloc else True

    def phase(self, job: str) -> str:
        st = self.status.get(job)
        return str(st.doc.get("phase", "Pending")) if st is not None and isinstance(st.doc, dict) else "Pending"

    def job_model(self, job: str) -> Job | None:
        """The core's job, or None when the job is gone, cancelled or finished, or is not bound
        and is suspended, has dependencies not met (``dependency_verdict``) or is an array
        element its array's limit keeps back: the core never hears of such a job, so it holds
        no GPUs, reservation or backfill slot and heads no queue."""
        entry = self.jobs.get(job)  # only specs that passed check_stored_job
        if entry is None or self.phase(job) in TERMINAL:
            return None
        if (entry.doc.get("cancelled") or entry.doc.get("suspend")) and job not in self.bindings:
            return None
        if job not in self.bindings and entry.doc.get("depends_on"):
            verdict = self.dependency_verdict(job)
            if verdict is not None and verdict.state != "met":
                return None
        if job not in self.bindings and self.array_throttled(job) is not None:
            return None
        return to_model(entry.doc)  # an elastic job in full: the core runs it at its binding's size

    def array_throttled(self, job: str) -> str | None:
        """Why a pending element of a job array is kept back by its array's limit, or None
        (not an element, no limit, or its turn: ``scheduler.arrays.eligible``)."""
        entry = self.jobs.get(job)
        record = arrays.member(entry.doc) if entry is not None else None
        if record is None or record["parallelism"] is None:
            return None
        turn = self._turns.get(record["job"])
        if turn is None:
            turn = self._turns[record["job"]] = self._turn(record["job"], record["parallelism"])
        return None if job in turn else arrays.throttle_message(record)

    def _turn(self, array: str, parallelism: int) -> set[str]:
        """The elements of ``array`` whose turn it is (kept until the view changes:
        ``array_throttled`` asks once per element)."""
        rows = []
        for name in self.arrays.get(array, ()):
            each = self.jobs[name]
            if name in self.bindings:
                state = "running"
            elif each.doc.get("cancelled") or self.phase(name) in TERMINAL:
                state = "done"
            elif each.doc.get("suspend"):
                state = "held"  # neither runs nor waits its turn: the next index may go
            else:
                state = "pending"
            rows.append((each.doc["array"]["index"], name, state))
        return arrays.eligible(rows, parallelism)

    def _unbound_spec(self, job: str) -> Entry | None:
        """The stored spec of a job that waits to be bound: not bound, cancelled nor ended."""
        entry = self.jobs.get(job)
        if entry is None or job in self.bindings or entry.doc.get("cancelled") or self.phase(job) in TERMINAL:
            return None
        return entry

    def held(self, job: str) -> bool:
        """Whether ``job`` is suspended and not bound: Pending, reason Suspended, until
        ``jobctl resume``. (A bound one is stopped first: the daemon's lifecycle.)"""
        entry = self._unbound_spec(job)
        return entry is not None and bool(entry.doc.get("suspend"))

    def suspended_jobs(self) -> list[str]:
        """The suspended jobs that are not bound (``held``), sorted."""
        return sorted(j for j in self.jobs if self.held(j))

    def throttled_jobs(self) -> list[tuple[str, str]]:
        """``(element, why)`` of the elements of job arrays kept back by their array's limit
        (sorted), whose pending status the daemon writes (a suspended one says so instead)."""
        out = []
        for names in self.arrays.values():
            for j in names:
                entry = self._unbound_spec(j)
                if entry is None or entry.doc.get("suspend") or (why := self.array_throttled(j)) is None:
                    continue
                verdict = self.dependency_verdict(j) if entry.doc.get("depends_on") else None
                if verdict is None or verdict.state == "met":  # (one waiting for its dependencies says so instead)
                    out.append((j, why))
        return sorted(out)

    def gated_jobs(self) -> list[str]:
        """The jobs with dependencies that are neither bound, finished, cancelled nor suspended:
        those whose pending status ``scheduler.dependencies`` writes (sorted)."""
        return sorted({j for names in self.dependents.values() for j in names
                       if (entry := self._unbound_spec(j)) is not None and not entry.doc.get("suspend")})

    def dependent_records(self, job: str) -> list[tuple[str, str, dict[str, str]]]:
        """``(name, phase, recorded outcomes)`` of every job whose spec depends on ``job``."""
        out = []
        for d in sorted(self.dependents.get(job, ())):
            st = self.status.get(d)
            out.append((d, self.phase(d), dependencies.recorded(st.doc if st is not None else None)))
        return out

    def dependency_phase(self, job: str) -> str | None:
        """The phase of a job another depends on; None when its key does not exist. A job
        array's name answers for all its elements: Succeeded when all did, Failed or Cancelled
        once all ended and one did not succeed (Failed first), else Running or Pending."""
        if job not in self.jobs and job not in self.invalid_jobs:
            members = self.arrays.get(job)
            if not members:
                return None
            return arrays.phase((self.phase(m) for m in members), any(m in self.bindings for m in members))
        return self.phase(job)

    def dependency_verdict(self, job: str) -> dependencies.Verdict | None:
        """``scheduler.dependencies.decide`` for a job with dependencies, else None."""
        entry = self.jobs.get(job)
        deps = dependencies.parse(entry.doc) if entry is not None else ()
        if not deps:
            return None
        st = self.status.get(job)
        verdict = dependencies.decide(deps, dependencies.recorded(st.doc if st is not None else None),
                                      self.dependency_phase)
        if verdict.state == dependencies.WAITING:
            path = dependencies.cycle_through(job, self._waits_on)
            if path is not None:
                return dependencies.Verdict(dependencies.NEVER, "dependency cycle: " + " -> ".join(path), verdict.record)
        return verdict

    def _waits_on(self, job: str) -> list[str] | None:
        """The dependencies ``job`` still waits for, None when it is not a waiting job (no
        dependencies, bound, cancelled or ended)."""
        entry = self._unbound_spec(job)
        if entry is None:
            return None
        deps = dependencies.parse(entry.doc)
        if not deps:
            return None
        st = self.status.get(job)
        record = dependencies.recorded(st.doc if st is not None else None)
        waiting = [d.job for d in deps if dependencies.state(d, record, self.dependency_phase(d.job))[0]
                   == dependencies.WAITING]
        return waiting or None

    def job_problem(self, job: str) -> str | None:
        """Why ``/registry/jobs/<job>`` is not a job, or None (a job, or no key)."""
        return self.invalid.get(keys.JOBS + job)

    def task_statuses(self, job: str, revision: int) -> dict[str, dict[str, Any]]:
        """Task statuses written for the placement with assignment ``revision``."""
        out = {}
        for task, entry in self.tasks.get(job, {}).items():  # every one passed decode.task_status
            if entry.doc.get("assignment_revision", 0) == revision:
                out[task] = entry.doc
        return out

    def alloc_jobs(self, node: str) -> dict[str, Any]:
        """What the node's alloc record holds; raises ``decode.Malformed`` when it does not decode."""
        entry = self.alloc.get(node)
        return decode.alloc_jobs(entry.doc) if entry is not None else {}

    def alloc_revision(self, node: str) -> int:
        entry = self.alloc.get(node)
        return entry.mod_revision if entry is not None else 0

    def take_dirty(self) -> tuple[set[str], set[str], set[str]]:
        """The dirty names; a dirty job's dependents are dirty too (its end may meet their
        dependencies, or make them never met), and so are the other elements of a dirty
        element's job array (its start or end changes whose turn it is)."""
        # an element's start or end changes which of its array's elements may run, and may
        # end the array as a whole (a dependency of other jobs)
        touched = {record["job"] for j in self.dirty_jobs
                   if (entry := self.jobs.get(j)) is not None and (record := arrays.member(entry.doc)) is not None}
        for array in touched:
            self.dirty_jobs |= self.arrays.get(array, set()) | self.dependents.get(array, set())
        self.dirty_jobs |= {d for j in self.dirty_jobs for d in self.dependents.get(j, ())}
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
        self.unfit: dict[str, str] = {}  # job -> why the core cannot hold its stored placement

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
        entry = view.tenants.get(name)  # only records that passed decode.tenant
        sid = f"tenant:{name}@{view.revision}"
        if entry is None:
            if self.tenants.pop(name, None) is None:
                return []
            return [TenantDeleted(name, stimulus_id=sid)]
        t = decode.tenant(name, entry.doc)
        if self.tenants.get(name) == t:
            return []
        self.tenants[name] = t
        return [TenantUpdated(t, stimulus_id=sid)]

    def sync_job(self, view: ClusterView, name: str, now_s: float,
                 fits: Callable[[Job, Placement], str] | None = None) -> list[Event]:
        """``fits(job, placement)`` says why the core cannot hold a stored placement ("" when it
        can): such a binding is not given to the core (``unfit`` keeps why, for the daemon to
        release the run) -- the core asserts that what it is told fits."""
        job = view.job_model(name)
        b = view.bindings.get(name)
        placement = b.placement() if b is not None and job is not None and not b.problem else None
        self.unfit.pop(name, None)
        held = self.jobs.get(name)
        if job is not None and placement is not None and fits is not None and (held is None or placement != held[1]):
            why = fits(job, placement)
            if why:
                self.unfit[name] = why
                placement = None
        old = self.jobs.get(name)
        sid = f"job:{name}@{view.revision}"
        if job is None:
            if old is None:
                return []
            del self.jobs[name]
            if old[1] is not None and view.held(name):  # a suspended job's run stopped: it did not end
                return [JobEvicted(name, now_s, stimulus_id=sid), JobDeleted(name, stimulus_id=sid)]
            if old[1] is not None:
                return [JobFinished(name, now_s, stimulus_id=sid)]
            return [JobDeleted(name, stimulus_id=sid)]
        if old is None:
            self.jobs[name] = (job, placement, placement is not None)
            return [JobAdded(job, placement=placement, bound_at_s=b.bound_at if b is not None else None,
                             stimulus_id=sid)]
        out: list[Event] = []
        old_job, old_placement, confirmed = old
        released = placement is None and old_placement is not None and confirmed
        if released:
            out.append(JobEvicted(name, now_s, stimulus_id=sid))
        if job != old_job:
            if placement is not None and old_placement is not None and _shape(job) != _shape(old_job):
                return []  # the store will never hold such a change for a running job
            out.append(JobUpdated(job, stimulus_id=sid))
        if placement is not None and (placement != old_placement or not confirmed):
            out.append(JobBound(name, placement, b.bound_at if b is not None else now_s, stimulus_id=sid))
        self.jobs[name] = (job, placement if placement is not None else (old_placement if not confirmed else None),
                           placement is not None)
        return out


def _shape(job: Job) -> tuple[Any, ...]:
    return (job.tasks, job.gpus_per_task, job.cpu_milli_per_task, job.memory_mib_per_task, job.tenant)

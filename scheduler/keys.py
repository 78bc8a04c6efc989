"""The kvraft keys of the scheduler daemon and jobctl (docs/keyspace.md is the reference).

The agent's keys come from ``agent.keys`` so the two can never drift apart:

- ``/registry/nodes/<node>`` (agent) node record; ``/registry/leases/<node>`` (agent, under its
  lease) heartbeat; ``/registry/assignments/<node>/<job>/<task>`` (scheduler) what the agent
  runs; ``/registry/tasks/<job>/<task>/status`` (agent) task status.

The scheduler's own keys:

- ``/registry/jobs/<job>``: the job as submitted (validated JSON); written by ``jobctl
  submit``/``cancel``.
- ``/registry/bindings/<job>``: the placement of the job's current run; created by the
  binding txn together with the assignments, deleted when the run ends.
- ``/registry/alloc/<node>``: every GPU (and CPU, memory) bound on a node, job by job. Every
  binding and release compares its mod revision: the fence against double allocation.
- ``/registry/jobstatus/<job>``: phase, reason, restarts, placement (scheduler).
- ``/registry/events/<job>/<seq>``: events of a job (Scheduled, Preempted, Lost, ...).
- ``/registry/tenants/<name>``, ``/registry/priorityclasses/<name>``: ``jobctl apply``.
- ``/registry/cordons/<node>``: ``jobctl cordon``; present means unschedulable.
- ``/registry/evictions/<job>``: ``jobctl drain --requeue`` / ``requeue``: a request to evict
  one run of the job and requeue it (``scheduler.evictions``); deleted by the scheduler once
  acted on.
- ``/registry/scheduler/leader/<lease hex>``: the election (kvraft.client ``Election``).
"""

from __future__ import annotations

from agent.keys import (
    ASSIGNMENTS,
    CORDONS,
    LEASES,
    NODES,
    TASKS,
    assignment_key,
    lease_key,
    node_key,
    status_key,
)

__all__ = [
    "ALLOC",
    "ASSIGNMENTS",
    "BINDINGS",
    "CORDONS",
    "ELECTION",
    "EVENTS",
    "EVICTIONS",
    "JOBS",
    "JOBSTATUS",
    "LEASES",
    "NODES",
    "PRIORITY_CLASSES",
    "REGISTRY",
    "TASKS",
    "TENANTS",
    "alloc_key",
    "assignment_key",
    "binding_key",
    "check_name",
    "cordon_key",
    "event_key",
    "eviction_key",
    "job_key",
    "jobstatus_key",
    "lease_key",
    "node_key",
    "priority_class_key",
    "split",
    "status_key",
    "task_status_prefix",
    "tenant_key",
]

REGISTRY = "/registry/"
JOBS = "/registry/jobs/"
BINDINGS = "/registry/bindings/"
ALLOC = "/registry/alloc/"
JOBSTATUS = "/registry/jobstatus/"
EVENTS = "/registry/events/"
EVICTIONS = "/registry/evictions/"
TENANTS = "/registry/tenants/"
PRIORITY_CLASSES = "/registry/priorityclasses/"
ELECTION = "/registry/scheduler/leader"


def check_name(name: str, what: str = "name") -> str:
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"{what} {name!r}: must be non-empty and contain no '/'")
    return name


def job_key(job: str) -> str:
    return JOBS + check_name(job, "job")


def binding_key(job: str) -> str:
    return BINDINGS + check_name(job, "job")


def alloc_key(node: str) -> str:
    return ALLOC + check_name(node, "node")


def jobstatus_key(job: str) -> str:
    return JOBSTATUS + check_name(job, "job")


def event_key(job: str, seq: int) -> str:
    return f"{EVENTS}{check_name(job, 'job')}/{seq:020d}"


def eviction_key(job: str) -> str:
    return EVICTIONS + check_name(job, "job")


def tenant_key(name: str) -> str:
    return TENANTS + check_name(name, "tenant")


def priority_class_key(name: str) -> str:
    return PRIORITY_CLASSES + check_name(name, "priority class")


def cordon_key(node: str) -> str:
    return CORDONS + check_name(node, "node")


def task_status_prefix(job: str) -> str:
    return f"{TASKS}{check_name(job, 'job')}/"


def split(key: str) -> tuple[str, str] | None:
    """``(prefix, rest)`` for a key under one of the known prefixes, else None."""
    for prefix in (NODES, LEASES, JOBS, BINDINGS, ALLOC, JOBSTATUS, EVENTS, EVICTIONS, TENANTS,
                   PRIORITY_CLASSES, CORDONS, TASKS, ASSIGNMENTS):
        if key.startswith(prefix):
            return prefix, key[len(prefix):]
    return None

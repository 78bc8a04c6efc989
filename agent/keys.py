"""The kvraft keys the agent reads and writes (docs/keyspace.md is the reference).

- ``/registry/nodes/<node>``: the node record (inventory, labels, conditions); written by
  the agent, no lease (it outlives agent restarts, like a Kubernetes Node).
- ``/registry/leases/<node>``: the heartbeat; tiny, attached to the agent's kvraft lease, so
  it disappears when the agent stops renewing (kubelet's separate Lease object).
- ``/registry/assignments/<node>/<job>/<task>``: what the scheduler bound to this node; the
  agent only reads it. Its create_revision names the placement.
- ``/registry/tasks/<job>/<task>/status``: the task's status; written by the agent of the
  node holding the assignment, with a txn comparing the assignment's create_revision.
"""

from __future__ import annotations

__all__ = [
    "ASSIGNMENTS",
    "CORDONS",
    "LEASES",
    "NODES",
    "TASKS",
    "assignment_key",
    "assignments_prefix",
    "lease_key",
    "node_key",
    "split_assignment_key",
    "status_key",
]

NODES = "/registry/nodes/"
LEASES = "/registry/leases/"
ASSIGNMENTS = "/registry/assignments/"
TASKS = "/registry/tasks/"
CORDONS = "/registry/cordons/"


def _check(name: str, what: str) -> str:
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"{what} {name!r}: must be non-empty and contain no '/'")
    return name


def node_key(node: str) -> str:
    return NODES + _check(node, "node name")


def lease_key(node: str) -> str:
    return LEASES + _check(node, "node name")


def assignments_prefix(node: str) -> str:
    return f"{ASSIGNMENTS}{_check(node, 'node name')}/"


def assignment_key(node: str, task_key: str) -> str:
    job, _, task = task_key.partition("/")
    return f"{assignments_prefix(node)}{_check(job, 'job')}/{_check(task, 'task')}"


def split_assignment_key(node: str, key: str | bytes) -> str | None:
    """``"<job>/<task>"`` for an assignment key of ``node`` (as text or as kvraft's bytes), None
    for anything else: another prefix, bytes that are not UTF-8, names that are empty, '.',
    '..' or carry control characters (they become a task directory's path)."""
    if isinstance(key, bytes):
        try:
            key = key.decode()
        except UnicodeDecodeError:
            return None
    prefix = assignments_prefix(node)
    if not key.startswith(prefix):
        return None
    rest = key[len(prefix) :]
    parts = rest.split("/")
    if len(parts) != 2 or not all(parts) or any(p in (".", "..") or not p.isprintable() for p in parts):
        return None  # what ``_check`` refuses: "../.." would name a task directory outside the agent's
    return rest


def status_key(task_key: str) -> str:
    job, _, task = task_key.partition("/")
    return f"{TASKS}{_check(job, 'job')}/{_check(task, 'task')}/status"

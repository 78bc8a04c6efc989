"""Garbage collection of finished jobs: Kubernetes' ``ttlSecondsAfterFinished``.

A job that reached a terminal phase (Succeeded, Failed, Cancelled) is deleted
``ttl_seconds_after_finished`` seconds after its ``finished_at`` by the leader scheduler:
the job's spec field wins, else the daemon's ``--ttl-seconds-after-finished`` (default one
day; a negative value keeps finished jobs for ever). Deleted in **one txn**, guarded by the
leader's fence, the job key's and the status key's mod revisions (a job resubmitted or
changed meanwhile is not touched) and the absence of a binding:

- ``/registry/jobs/<job>`` and ``/registry/jobstatus/<job>``;
- ``/registry/events/<job>/`` and ``/registry/tasks/<job>/`` (prefixes);
- ``/jobs/<job>/`` (prefix): what the job's ranks wrote -- progress, checkpoints, the launch
  and rendezvous keys of every run.

Bindings and assignments are already gone (deleted when the run ended); logs live on the
agents' disks, not in kvraft. A job other jobs depend on waits until each of them that has not
finished has recorded its outcome (``scheduler.dependencies.collect_hold``, checked by the
daemon before ``collect``). ``due_at`` is pure; ``collect`` does the txn.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kvraft.client import Compare, Op
from scheduler import keys
from scheduler.informer_view import TERMINAL

__all__ = ["DEFAULT_TTL_S", "JOB_DATA", "collect", "collect_ops", "due_at", "ttl_of"]

DEFAULT_TTL_S = 86400.0
JOB_DATA = "/jobs/"


def ttl_of(spec: dict[str, Any], default_ttl_s: float) -> float | None:
    """Seconds a finished job is kept, or None for ever."""
    ttl = spec.get("ttl_seconds_after_finished")
    if ttl is None:
        ttl = default_ttl_s
    return None if ttl < 0 else float(ttl)


def due_at(spec: dict[str, Any], status: dict[str, Any], default_ttl_s: float) -> float | None:
    """When the job's keys are to be deleted; None while it is not finished or is kept for ever."""
    if status.get("phase") not in TERMINAL:
        return None
    ttl = ttl_of(spec, default_ttl_s)
    finished = status.get("finished_at") or status.get("updated_at")
    if ttl is None or not isinstance(finished, (int, float)):
        return None
    return float(finished) + ttl


def collect_ops(job: str) -> list[Op]:
    keys.check_name(job, "job")
    return [Op.delete(keys.job_key(job)), Op.delete(keys.jobstatus_key(job)),
            Op.delete(f"{keys.EVENTS}{job}/", prefix=True), Op.delete(keys.task_status_prefix(job), prefix=True),
            Op.delete(f"{JOB_DATA}{job}/", prefix=True)]


async def collect(client: Any, fence: Sequence[Compare], job: str, job_mod_revision: int,
                  status_mod_revision: int) -> bool:
    """Delete the finished job's keys; False when the guard failed (the job changed, a new
    run was bound, or we are no longer the leader)."""
    compares = [*fence, Compare.mod(keys.job_key(job), "=", job_mod_revision),
                Compare.mod(keys.jobstatus_key(job), "=", status_mod_revision),
                Compare.version(keys.binding_key(job), "=", 0)]
    resp = await client.txn().if_(*compares).then(*collect_ops(job)).commit()
    return bool(resp.succeeded)

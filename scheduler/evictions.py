"""PURE: requests to evict a running job and requeue it (``/registry/evictions/<job>``).

``jobctl drain NODE --requeue`` (for every job on the node) and ``jobctl requeue JOB`` put

    {"job": "train", "reason": "drain", "node": "n3", "binding_revision": 4711,
     "requested_at": 1796170000.0, "by": "jobctl"}

where ``binding_revision`` is the create revision of ``/registry/bindings/train`` that
jobctl read: it names the *run* the request is for. The leader scheduler decides with
``decide`` and then either

- **evicts** the run the way a preemption does (``Binder.evict``: the binding gets
  ``evicting_until`` and an ``eviction`` field, the assignments are deleted so the agents
  stop the tasks with SIGTERM and the grace period; when it is over the release requeues the
  job, ``status.evictions`` + 1), in the same fenced txn that deletes the request; or
- **drops** it (a fenced delete, and a log line): the job is unknown, finished, pending,
  cancelled, already being evicted, or its run is not the one the request names.

Acted on once, even across a failover: an eviction and the deletion of its request are one
txn, so no leader can evict and die before deleting; and a request names its run, so one
that survives anyhow (written late, by hand, or read before the release by a leader that
then dies) can never evict a later run -- ``decide`` drops it.

Example: ``train`` runs as binding revision 4711 on n3 and n4; ``jobctl drain n3 --requeue``
puts the request above -> ``decide`` says evict, "node n3 drained by jobctl" -> 30 s of
grace -> release, Pending, reason ``Evicted`` -> bound again on other nodes (n3 is cordoned),
binding revision 4790. The same request put again now is dropped: 4711 is not 4790.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scheduler import decode
from scheduler.decode import EVICTION_REASONS, EvictionRequest
from scheduler.informer_view import TERMINAL, Binding

__all__ = ["Prepared", "Verdict", "cause", "decide", "prepare", "request_doc"]


@dataclass(frozen=True, slots=True)
class Verdict:
    """``evict``: evict the run; ``message`` is then the cause the job's status and events
    give ("node n3 drained by jobctl"). Else drop the request; ``message`` says why."""

    evict: bool
    message: str


def request_doc(job: str, reason: str, node: str | None, binding_revision: int, by: str,
                requested_at: float) -> dict[str, Any]:
    """The value jobctl puts under ``/registry/evictions/<job>`` (``decode.eviction`` reads it)."""
    assert reason in EVICTION_REASONS and (node is not None or reason != "drain")
    return {"job": job, "reason": reason, "node": node, "binding_revision": binding_revision,
            "requested_at": requested_at, "by": by}


def cause(req: EvictionRequest) -> str:
    who = req.by or "an operator"
    if req.reason == "drain":
        return f"node {req.node} drained by {who}"
    return f"requeued by {who}"


def decide(req: EvictionRequest, binding: Binding | None, *, known: bool, cancelled: bool, phase: str,
           unfit: str = "") -> Verdict:
    """What to do with ``req``: ``binding`` is the job's current run (None when it has none),
    ``known`` whether ``/registry/jobs/<job>`` holds a job, ``phase`` its status phase, and
    ``unfit`` why the core cannot hold the run's placement ("" when it can)."""
    if not known:
        return Verdict(False, "no such job")
    if phase in TERMINAL:
        return Verdict(False, f"the job has finished ({phase})")
    if binding is None:
        return Verdict(False, f"the job is not running ({phase}): nothing to evict")
    if binding.revision != req.binding_revision:
        return Verdict(False, f"it is for the run bound at revision {req.binding_revision}, which has ended; "
                              f"the run bound at revision {binding.revision} is left alone")
    if binding.evicting_until is not None:
        return Verdict(False, "the run is already being evicted"
                              + (f" ({binding.eviction_message})" if binding.evicted_for else " (preempted)"))
    if cancelled:
        return Verdict(False, "the job is cancelled: its run is being stopped")
    if binding.problem or unfit:
        return Verdict(False, f"the run is being released: {binding.problem or unfit}")
    if req.node is not None and req.node not in binding.nodes():
        return Verdict(False, f"the run does not use node {req.node}")
    return Verdict(True, cause(req))


@dataclass(frozen=True, slots=True)
class Prepared:
    """What a requester (jobctl, the dashboard) writes: ``request`` under
    ``/registry/evictions/<job>`` in a txn that checks the binding's create revision is still
    ``binding_revision``; or None and ``message`` says why nothing is asked (``found``: whether
    the job exists at all)."""

    request: dict[str, Any] | None
    binding_revision: int
    message: str
    found: bool = True


def prepare(job: str, reason: str, node: str | None, by: str, now: float, *, spec: bytes | None,
            binding: tuple[bytes, int] | None, status: bytes | None) -> Prepared:
    """The request to ask for ``job``'s current run, from what the requester read: the job
    spec's value, the binding's (value, create revision) and the status value (None: absent)."""
    if spec is None and binding is None:
        return Prepared(None, 0, f"job/{job} not found: nothing to requeue", found=False)
    if binding is None:
        try:
            phase = decode.job_status(decode.json_value(status))[0].get("phase", "Pending") if status else "Pending"
        except decode.Malformed:
            phase = "Pending"
        return Prepared(None, 0, f"job/{job} is not running ({phase}): nothing to requeue")
    value, revision = binding
    try:
        doc = decode.json_value(value)
    except decode.Malformed:
        doc = None
    tasks, _, evicting_until, _ = decode.binding(doc)
    if evicting_until is not None:
        return Prepared(None, revision, f"job/{job} is already being stopped (evicted or preempted): "
                                        "it will be queued again")
    if node is not None and tasks and node not in {t["node"] for t in tasks}:
        return Prepared(None, revision, f"job/{job} does not run on {node}: nothing to requeue")
    return Prepared(request_doc(job, reason, node, revision, by, now), revision, f"job/{job} requeue requested")

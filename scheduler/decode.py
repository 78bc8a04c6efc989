"""PURE: the values the scheduler daemon reads from kvraft, checked before anything uses them.

Anyone with write access may put any bytes under ``/registry/`` (``kvctl put``, a buggy client,
a half-written older version), so every key and value is decoded here into what the daemon
needs, or refused with ``Malformed`` (a ``ValueError``) naming the field. The view
(``scheduler.informer_view``) skips a refused object with a log line naming its key; nothing
else in the daemon sees it. Job specs are checked by ``scheduler.jobs.check_stored_job``.

Every decoder takes any value ``json.loads`` can return and returns a checked value or raises
``Malformed``, never another exception (tests/jobctl/test_informer.py states it for random
JSON values).
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from typing import Any

from scheduler.model import Node, Tenant

__all__ = [
    "EVICTION_REASONS",
    "MAX_GPUS_PER_NODE",
    "EvictionRequest",
    "Heartbeat",
    "Malformed",
    "alloc_jobs",
    "binding",
    "binding_eviction",
    "eviction",
    "finite_number",
    "heartbeat",
    "job_status",
    "json_value",
    "key_text",
    "node",
    "shown",
    "task_status",
    "tenant",
    "too_large",
]

EVICTION_REASONS = ("drain", "requeue")
"""Why an operator asked for a run to be evicted (``/registry/evictions/<job>``): its node is
drained (``jobctl drain NODE --requeue``), or the job itself is requeued (``jobctl requeue``)."""
# the stop of a run under way, by why: an operator's request, jobctl suspend, an elastic grow,
# and the stops that end the run for good or restart the gang (``lifecycle.FINAL_STOPS``)
BINDING_EVICTION_REASONS = (*EVICTION_REASONS, "suspend", "resize", "cancel", "restart", "fail", "deadline")
"""Why a binding's run is being stopped (its ``eviction`` field): an operator's request, or its
job was suspended (``jobctl suspend``: the daemon stops the run on its own)."""
MAX_GPUS_PER_NODE = 1024  # a record claiming more is wrong (the core keeps a bit per GPU)
_MAX_INT = 1 << 53  # capacities and revisions past this are not numbers JSON carries exactly


class Malformed(ValueError):
    """A key or value the daemon cannot use; the message says which field and why."""


def key_text(key: bytes) -> str:
    try:
        return key.decode()
    except UnicodeDecodeError:
        raise Malformed(f"key {key!r} is not UTF-8") from None


def json_value(value: bytes) -> Any:
    try:
        return json.loads(value)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise Malformed(f"invalid JSON ({exc})") from None


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value or "/" in value or value in (".", ".."):
        raise Malformed(f"{what}: must be a name without '/', not {value!r}")
    return value


_MAX_FLOAT_INT = int(sys.float_info.max)  # a larger int has no float (math.isfinite raises OverflowError)


def too_large(value: Any) -> bool:
    """An int beyond any float (YAML and JSON take ``1000...0`` of any length as an int)."""
    return isinstance(value, int) and not isinstance(value, bool) and not -_MAX_FLOAT_INT <= value <= _MAX_FLOAT_INT


def finite_number(value: Any) -> bool:
    """A finite int or float: not a bool, not NaN or infinity, not an int too large for a float."""
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, int) and not isinstance(value, bool) and not too_large(value)


def shown(value: Any) -> str:
    """``repr(value)``, but not the thousand digits of an int too large."""
    return f"an integer too large ({value.bit_length()} bits)" if too_large(value) else repr(value)


def _int(doc: dict[str, Any], field: str, default: int = 0, minimum: int = 0, maximum: int = _MAX_INT) -> int:
    value = doc.get(field, default)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise Malformed(f"{field}: must be an integer in [{minimum}, {maximum}], not {value!r}")
    return value


def _number(doc: dict[str, Any], field: str, default: float | None = None) -> float | None:
    value = doc.get(field, default)
    if value is None:
        return None
    if not finite_number(value):
        raise Malformed(f"{field}: must be a finite number, not {shown(value)}")
    return float(value)


def _object(doc: Any, what: str) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise Malformed(f"{what}: must be a JSON object, not {type(doc).__name__}")
    return doc


def node(name: str, doc: Any) -> Node:
    """The core's node from the agent's record (docs/keyspace.md); ``healthy`` and
    ``schedulable`` are the caller's (they come from other keys)."""
    d = _object(doc, "node record")
    gpus = _int(d, "gpus", maximum=MAX_GPUS_PER_NODE)
    islands = d.get("islands") or []
    if not isinstance(islands, list) or not all(isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in islands):
        raise Malformed(f"islands: must be a list of positive integers, not {islands!r}")
    if islands and sum(islands) != gpus:
        raise Malformed(f"islands: {islands} do not sum to gpus {gpus}")
    labels = d.get("labels") or {}
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise Malformed(f"labels: must map names to strings, not {labels!r}")
    texts = {}
    for field, default in (("gpu_type", ""), ("rack", "rack-0"), ("spine", "spine-0")):
        value = d.get(field, default)
        if not isinstance(value, str):
            raise Malformed(f"{field}: must be a string, not {value!r}")
        texts[field] = value
    return Node(name=name, gpus=gpus, gpu_type=texts["gpu_type"], cpu_milli=_int(d, "cpu_milli"),
                memory_mib=_int(d, "memory_mib"), rack=texts["rack"] or "rack-0", spine=texts["spine"] or "spine-0",
                islands=tuple(islands), labels=tuple(sorted(labels.items())))


def _row(row: Any, i: int) -> dict[str, Any]:
    r = _object(row, f"tasks[{i}]")
    gpus = r.get("gpus")
    if not isinstance(gpus, list) or not all(isinstance(g, int) and not isinstance(g, bool)
                                             and 0 <= g < MAX_GPUS_PER_NODE for g in gpus) or len(set(gpus)) != len(gpus):
        raise Malformed(f"tasks[{i}].gpus: must be a list of distinct GPU indices, not {gpus!r}")
    rack = r.get("rack", "rack-0")
    if not isinstance(rack, str):
        raise Malformed(f"tasks[{i}].rack: must be a string, not {rack!r}")
    try:
        index = _int(r, "index", default=-2, minimum=-1)
    except Malformed as exc:
        raise Malformed(f"tasks[{i}].{exc}") from None
    return {"task": _name(r.get("task"), f"tasks[{i}].task"), "node": _name(r.get("node"), f"tasks[{i}].node"),
            "rack": rack, "gpus": list(gpus), "index": index}


def binding(doc: Any) -> tuple[tuple[dict[str, Any], ...], float, float | None, str]:
    """``(tasks, bound_at, evicting_until, problem)`` of ``/registry/bindings/<job>``. Never raises:
    a binding holds GPUs even when it is broken, so the caller must release it, not drop it;
    ``problem`` says what is wrong ("" when nothing) and ``tasks`` keeps the rows that decode."""
    if not isinstance(doc, dict):
        return (), 0.0, None, f"must be a JSON object, not {type(doc).__name__}"
    problems = []
    rows = []
    tasks = doc.get("tasks")
    if not isinstance(tasks, list) or not tasks:
        problems.append(f"tasks: must be a non-empty list, not {tasks!r}")
        tasks = []
    for i, row in enumerate(tasks):
        try:
            rows.append(_row(row, i))
        except Malformed as exc:
            problems.append(str(exc))
    times: list[float | None] = []
    for field in ("bound_at", "evicting_until"):
        try:
            times.append(_number(doc, field))
        except Malformed as exc:
            problems.append(str(exc))
            times.append(None)
    if rows and not any(r["index"] >= 0 for r in rows):
        problems.append("tasks: no row with an index >= 0")
    return tuple(rows), times[0] or 0.0, times[1], "; ".join(problems)


def binding_eviction(doc: Any) -> tuple[str, str]:
    """``(reason, message)`` of the ``eviction`` field a binding carries while an eviction an
    operator asked for, or a suspension, is under way (``reason`` one of ``BINDING_EVICTION_REASONS``); ``("", "")``
    without one (a preemption, or no eviction). Raises ``Malformed``; the view makes that the
    binding's ``problem``."""
    ev = doc.get("eviction") if isinstance(doc, dict) else None
    if ev is None:
        return "", ""
    d = _object(ev, "eviction")
    reason = d.get("reason")
    if reason not in BINDING_EVICTION_REASONS:
        raise Malformed(f"eviction.reason: must be one of {', '.join(BINDING_EVICTION_REASONS)}, not {reason!r}")
    return str(reason), _text(d, "message", "eviction.message", 500)


def _text(d: dict[str, Any], field: str, what: str, limit: int) -> str:
    value = d.get(field, "")
    if value is None:
        value = ""
    if not isinstance(value, str) or len(value) > limit or not value.isprintable():
        raise Malformed(f"{what}: must be printable text of at most {limit} characters, not {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class EvictionRequest:
    """A request to evict one run of a job and requeue it (``/registry/evictions/<job>``;
    ``scheduler.evictions`` decides what it does). ``binding_revision`` is the create revision
    of ``/registry/bindings/<job>`` of the run it was made for: no other run is ever evicted
    by it."""

    job: str
    reason: str  # one of EVICTION_REASONS
    node: str | None  # the drained node (required for "drain")
    binding_revision: int
    requested_at: float | None
    by: str  # who asked (shown in the job's status and events)


def eviction(name: str, doc: Any) -> EvictionRequest:
    """The request under ``/registry/evictions/<name>``; its ``job`` must be the key's name
    (a key a person may write must not name another person's job)."""
    d = _object(doc, "eviction request")
    if d.get("job") != name:
        raise Malformed(f"job: {d.get('job')!r} is not the key's name {name!r}")
    reason = d.get("reason")
    if reason not in EVICTION_REASONS:
        raise Malformed(f"reason: must be one of {', '.join(EVICTION_REASONS)}, not {reason!r}")
    node = d.get("node")
    if node is not None or reason == "drain":
        node = _name(node, "node")
    if "binding_revision" not in d:
        raise Malformed("binding_revision: required field is missing")
    return EvictionRequest(name, str(reason), node, _int(d, "binding_revision", minimum=1),
                           _number(d, "requested_at"), _text(d, "by", "by", 100))


def alloc_jobs(doc: Any) -> dict[str, dict[str, Any]]:
    """``{job: {gpus, cpu_milli, memory_mib}}`` of ``/registry/alloc/<node>``."""
    d = _object(doc, "alloc")
    jobs = d.get("jobs", {})
    if not isinstance(jobs, dict):
        raise Malformed(f"jobs: must be a JSON object, not {jobs!r}")
    out = {}
    for job, held in jobs.items():
        h = _object(held, f"jobs.{job}")
        gpus = h.get("gpus", [])
        if not isinstance(gpus, list) or not all(isinstance(g, int) and not isinstance(g, bool) and g >= 0 for g in gpus):
            raise Malformed(f"jobs.{job}.gpus: must be a list of GPU indices, not {gpus!r}")
        try:
            out[job] = {"gpus": list(gpus), "cpu_milli": _int(h, "cpu_milli"), "memory_mib": _int(h, "memory_mib")}
        except Malformed as exc:
            raise Malformed(f"jobs.{job}.{exc}") from None
    return out


def task_status(doc: Any) -> dict[str, Any]:
    """A task status (``/registry/tasks/<job>/<task>/status``) with the fields the daemon reads
    typed: ``assignment_revision`` an int, ``phase`` a string, ``node`` a string when present."""
    d = _object(doc, "task status")
    _int(d, "assignment_revision")
    if not isinstance(d.get("phase"), str):
        raise Malformed(f"phase: must be a string, not {d.get('phase')!r}")
    if "node" in d and not isinstance(d["node"], str):
        raise Malformed(f"node: must be a string, not {d['node']!r}")
    return d


def tenant(name: str, doc: Any) -> Tenant:
    d = _object(doc, "tenant")
    if d.get("name") != name:
        raise Malformed(f"name: {d.get('name')!r} is not the key's name {name!r}")
    if "nominal_gpus" not in d:
        raise Malformed("nominal_gpus: required field is missing")
    limit = d.get("borrow_limit_gpus")
    prefix = d.get("job_name_prefix")
    if prefix is not None and (not isinstance(prefix, str) or prefix == ""):
        raise Malformed(f"job_name_prefix: must be a non-empty string, not {prefix!r}")
    top = d.get("max_priority")
    run_as = None
    if (d.get("run_as_user") is None) != (d.get("run_as_group") is None):
        raise Malformed("run_as_user, run_as_group: they go together")
    if d.get("run_as_user") is not None:
        run_as = (_int(d, "run_as_user", 0, 0, 4294967294), _int(d, "run_as_group", 0, 0, 4294967294))
    return Tenant(name, _int(d, "nominal_gpus"), None if limit is None else _int(d, "borrow_limit_gpus"),
                  prefix, None if top is None else _int(d, "max_priority", minimum=-1000000, maximum=1000000), run_as)


def job_status(doc: Any) -> tuple[dict[str, Any], list[str]]:
    """The scheduler's own status of a job (``/registry/jobstatus/<job>``), the fields it
    reads back repaired: ``(doc, problems)``; never raises (the next status write replaces it)."""
    if not isinstance(doc, dict):
        return {}, [f"must be a JSON object, not {type(doc).__name__}"] if doc is not None else []
    out = dict(doc)
    problems = []
    for field in ("restarts", "preemptions", "evictions"):
        try:
            out[field] = _int(out, field)
        except Malformed as exc:
            problems.append(str(exc))
            out[field] = 0
    for field in ("placement", "last_placement"):
        if field in out and not isinstance(out[field], list):
            problems.append(f"{field}: must be a list, not {out[field]!r}")
            out[field] = []
    for field in ("bound_at", "finished_at", "updated_at"):
        try:
            _number(out, field)
        except Malformed as exc:
            problems.append(str(exc))
            del out[field]
    for field in ("phase", "reason", "message"):
        if field in out and not isinstance(out[field], str):
            problems.append(f"{field}: must be a string, not {out[field]!r}")
            del out[field]
    deps = out.get("dependencies")  # scheduler.dependencies: job -> the phase it was seen to end in
    if deps is not None and not (isinstance(deps, dict) and all(isinstance(v, str) for v in deps.values())):
        problems.append(f"dependencies: must be an object of strings, not {deps!r}")
        del out["dependencies"]
    return out, problems


class Heartbeat:
    """The lease facts of ``/registry/leases/<node>`` (the key's presence is what matters;
    these are read only to probe a suspect node's lease)."""

    __slots__ = ("lease_id", "renew_interval_s", "ttl_s")

    def __init__(self, lease_id: int, ttl_s: float, renew_interval_s: float) -> None:
        self.lease_id = lease_id
        self.ttl_s = ttl_s
        self.renew_interval_s = renew_interval_s


def heartbeat(doc: Any) -> Heartbeat:
    d = _object(doc, "heartbeat")
    ttl = _number(d, "ttl_s") or 10.0
    renew = _number(d, "renew_interval_s") or ttl / 3
    if not 0 < ttl <= 86400 or not 0 < renew <= ttl:
        raise Malformed(f"ttl_s {ttl:g}, renew_interval_s {renew:g}: must be 0 < renew <= ttl <= 86400")
    return Heartbeat(_int(d, "lease_id", maximum=(1 << 63) - 1), ttl, renew)

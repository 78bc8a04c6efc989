"""PURE view model of the dashboard: the informer's cache (``ClusterView``) plus member status
documents -> plain dicts, one *item* per piece of the page.

``items(...)`` returns ``{key: dict}`` where the key names the piece: ``rack/<rack>`` (its nodes
and each GPU: free, used by which job, unhealthy), ``queue/<tenant>`` (quota and use, pending
jobs with their reasons), ``job/<job>`` (phase, reason, placement, times), ``kvraft`` (the
members), ``scheduler`` (leader, queue depth, decisions/s) and ``summary`` (totals). The
server keeps the last items it sent and pushes only ``diff(old, new)`` (items set and items
deleted), so a heartbeat that changes one node resends one rack, not the page.

``job_detail`` is the panel of one job: its phase timeline (from ``/registry/events``), the
placement by rack, node and GPU, and the per-epoch loss and accuracy that the trainer wrote
to ``/jobs/<job>/progress``. No I/O, no clock: ``now`` is passed in.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from scheduler import arrays
from scheduler.informer_view import ClusterView
from scheduler.jobs import elastic_run_size

__all__ = [
    "PENDING_DEFAULT",
    "diff",
    "items",
    "job_detail",
    "job_item",
    "kvraft_item",
    "parse_metrics",
    "progress_record",
    "rack_items",
    "queue_items",
    "scheduler_item",
]

PENDING_DEFAULT = ("Queued", "waiting for the scheduler")
GPU_FREE = None
GPU_UNHEALTHY = "!"


def _doc(entry: Any) -> dict[str, Any]:
    doc = getattr(entry, "doc", None)
    return doc if isinstance(doc, dict) else {}


def _condition(doc: Mapping[str, Any], kind: str) -> bool | None:
    for c in doc.get("conditions") or ():
        if isinstance(c, dict) and c.get("type") == kind:
            return c.get("status") == "True"
    return None


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def node_item(view: ClusterView, name: str) -> dict[str, Any]:
    """One node: ``g`` lists its GPUs in index order, each ``None`` (free), a job name, or
    ``"!"`` (unhealthy: the agent's heartbeat is gone or its GPUs are reported unhealthy)."""
    doc = _doc(view.nodes.get(name))
    count = max(0, _int(doc.get("gpus")))
    ready = view.node_ready(name)
    gpu_ok = _condition(doc, "GPUHealthy") is not False and ready
    gpus: list[str | None] = [GPU_FREE if gpu_ok else GPU_UNHEALTHY] * count
    for job, held in sorted(view.alloc_jobs(name).items()):
        for i in (held or {}).get("gpus", ()) if isinstance(held, dict) else ():
            if isinstance(i, int) and 0 <= i < count:
                gpus[i] = job
    state = "Ready" if ready else "NotReady"
    return {"name": name, "state": state, "cordoned": name in view.cordons, "type": str(doc.get("gpu_type", "")),
            "g": gpus, "url": str((doc.get("agent") or {}).get("url", "")) if isinstance(doc.get("agent"), dict) else ""}


def rack_items(view: ClusterView) -> dict[str, dict[str, Any]]:
    racks: dict[str, list[dict[str, Any]]] = {}
    for name in sorted(view.nodes, key=_natural):
        rack = str(_doc(view.nodes[name]).get("rack", "rack-0"))
        racks.setdefault(rack, []).append(node_item(view, name))
    out = {}
    for rack, nodes in racks.items():
        total = sum(len(n["g"]) for n in nodes)
        used = sum(1 for n in nodes for g in n["g"] if g not in (GPU_FREE, GPU_UNHEALTHY))
        bad = sum(1 for n in nodes for g in n["g"] if g == GPU_UNHEALTHY)
        out[f"rack/{rack}"] = {"name": rack, "nodes": nodes, "gpus": total, "used": used, "unhealthy": bad}
    return out


def _natural(name: str) -> tuple[Any, ...]:
    """``n2`` before ``n10``."""
    head = name.rstrip("0123456789")
    tail = name[len(head):]
    return (head, int(tail) if tail else -1, name)


def _gpus(spec: Mapping[str, Any]) -> int:
    total = 0
    for t in spec.get("tasks") or ():
        if isinstance(t, dict):
            total += _int(t.get("replicas"), 1) * _int((t.get("resources") or {}).get("gpus"))
    return total


def job_item(view: ClusterView, name: str) -> dict[str, Any]:
    spec = _doc(view.jobs.get(name))
    st = _doc(view.status.get(name))
    phase = str(st.get("phase", "Pending"))
    placement = list(st.get("placement") or [])
    reason, message = PENDING_DEFAULT
    tasks = sum(_int(t.get("replicas"), 1) for t in spec.get("tasks") or () if isinstance(t, dict))
    rows = [p for p in placement if isinstance(p, dict) and isinstance(p.get("gpus"), list)]
    gpus, tasks = elastic_run_size(spec, rows) or (_gpus(spec), tasks)
    return {
        "name": name, "tenant": spec.get("tenant"), "priority": spec.get("priority"), "phase": phase,
        "reason": str(st.get("reason", reason)), "message": str(st.get("message", message)),
        "gpus": gpus, "tasks": tasks, "restarts": _int(st.get("restarts")),
        "cancelled": bool(spec.get("cancelled")), "suspended": spec.get("suspend") is True,
        "array": arrays.member(spec),
        "nodes": list(dict.fromkeys(str(p.get("node")) for p in placement if isinstance(p, dict))),
        "submitted_at": spec.get("submitted_at"), "bound_at": st.get("bound_at"), "finished_at": st.get("finished_at"),
    }


def queue_items(view: ClusterView, jobs: Mapping[str, Mapping[str, Any]],
                usage: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """Per tenant: quota (nominal, borrow limit), GPUs used by running jobs, and the pending
    jobs (oldest first) with their reasons; with ``usage`` (``live.month_usage``), this
    month's GPU-hours and those lost (runs that failed, were preempted or cancelled)."""
    out: dict[str, dict[str, Any]] = {}
    usage = usage or {}
    names = {str(_doc(e).get("name", n)) for n, e in view.tenants.items()}
    names |= {str(j["tenant"]) for j in jobs.values() if j.get("tenant") is not None}
    names |= set(usage)
    for tenant in sorted(names):
        t = _doc(view.tenants.get(tenant))
        mine = [j for j in jobs.values() if j.get("tenant") == tenant]
        pending = sorted((j for j in mine if j["phase"] == "Pending"),
                         key=lambda j: (j.get("submitted_at") or 0, j["name"]))
        out[f"queue/{tenant}"] = {
            "name": tenant, "defined": tenant in view.tenants, "nominal": t.get("nominal_gpus"),
            "borrow_limit": t.get("borrow_limit_gpus"),
            "used": sum(j["gpus"] for j in mine if j["phase"] == "Running"),
            "running": sum(1 for j in mine if j["phase"] == "Running"),
            "pending": _fold_held(pending),
        }
        row = usage.get(tenant)
        if row is not None:
            out[f"queue/{tenant}"]["month"] = {
                "gpu_hours": round(row["gpu_hours"], 2),
                "lost_gpu_hours": round(row["gpu_hours"] - row["completed_gpu_hours"], 2)}
    return out


def _held_groups(jobs: Iterable[Mapping[str, Any]]) -> list[list[Mapping[str, Any]]]:
    """The elements each job array's limit keeps back, in the given order, for the arrays with
    two or more such elements: each group is shown as one entry."""
    held: dict[str, list[Mapping[str, Any]]] = {}
    for j in jobs:
        record = j.get("array")
        if (isinstance(record, Mapping) and j["phase"] == "Pending" and j["reason"] == arrays.THROTTLED
                and arrays.record_ok(record, str(j["name"]))):
            held.setdefault(str(record["job"]), []).append(j)
    return [group for group in held.values() if len(group) > 1]


def _folded(group: list[Mapping[str, Any]]) -> dict[str, Any]:
    """One entry for a group of held elements: named as squeue names them (``sweep_[4-15%4]``),
    with ``count`` and ``job`` (the first element, whose panel its link opens)."""
    first, record = group[0], group[0]["array"]
    return {"name": arrays.folded_name(record["job"], (g["array"]["index"] for g in group), record["parallelism"]),
            "job": first["name"], "count": len(group), "gpus": first["gpus"], "reason": first["reason"],
            "message": first["message"]}


def _fold_held(pending: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The queue card's pending list, each array's held elements one entry where the first
    would be."""
    folded = {id(j): group for group in _held_groups(pending) for j in group}
    out = []
    for j in pending:
        group = folded.get(id(j))
        if group is None:
            out.append({"name": j["name"], "gpus": j["gpus"], "reason": j["reason"], "message": j["message"]})
        elif j is group[0]:
            out.append(_folded(group))
    return out


def kvraft_item(members: Iterable[Mapping[str, Any]], alarms: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """``members``: per member ``{"id", "name", "endpoint"}`` and either a ``status`` (the
    fields of maintenance/status: leader, raft_term, raft_index, raft_applied_index, db_size,
    db_size_in_use, errors, is_learner) or an ``error`` string (unreachable)."""
    rows = []
    leader = 0
    for m in members:
        st = m.get("status")
        row: dict[str, Any] = {"id": f"{_int(m.get('id')):x}", "name": str(m.get("name", "")),
                               "endpoint": str(m.get("endpoint", ""))}
        if isinstance(st, Mapping):
            leader = leader or _int(st.get("leader"))
            row.update({"term": _int(st.get("raft_term")), "commit": _int(st.get("raft_index")),
                        "applied": _int(st.get("raft_applied_index")), "db_size": _int(st.get("db_size")),
                        "db_in_use": _int(st.get("db_size_in_use")), "learner": bool(st.get("is_learner")),
                        "errors": list(st.get("errors") or ()), "up": True})
        else:
            row.update({"up": False, "error": str(m.get("error", "unreachable"))})
        rows.append(row)
    for row in rows:
        row["leader"] = bool(leader) and row["id"] == f"{leader:x}"
    by_id = {r["id"]: r["name"] for r in rows}
    alarm_rows = [{"member": by_id.get(f"{_int(a.get('member_id')):x}", f"{_int(a.get('member_id')):x}"),
                   "alarm": str(a.get("alarm"))} for a in alarms if str(a.get("alarm")) != "NONE"]
    return {"members": rows, "leader": by_id.get(f"{leader:x}", "") if leader else "", "alarms": alarm_rows}


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> ``{"name{labels}": value}`` (comments, and values that are not
    finite numbers, skipped)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            number = float(value)
        except ValueError:
            continue
        if math.isfinite(number):
            out[name.strip()] = number
    return out


def scheduler_item(leader: str | None, metrics: Mapping[str, float] | None, previous: Mapping[str, float] | None,
                   interval_s: float, jobs: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Leader from ``/registry/scheduler/leader/``; queue depth from the leader's /metrics when
    reachable (else the pending jobs the store shows); decisions/s from the change of
    ``kvraft_scheduler_decisions_total`` between two scrapes ``interval_s`` apart."""
    pending = sum(1 for j in jobs.values() if j["phase"] == "Pending")
    item: dict[str, Any] = {"leader": leader or "", "pending": pending, "metrics": metrics is not None}
    if metrics is not None:
        item["queue"] = {q: int(metrics.get(f'kvraft_scheduler_queue_depth{{queue="{q}"}}', 0))
                         for q in ("active", "backoff", "unschedulable")}
        item["decisions_total"] = int(metrics.get("kvraft_scheduler_decisions_total", 0))
        if previous is not None and interval_s > 0:
            delta = metrics.get("kvraft_scheduler_decisions_total", 0) - previous.get("kvraft_scheduler_decisions_total", 0)
            item["decisions_per_s"] = round(max(0.0, delta) / interval_s, 2)
    return item


def summary_item(racks: Mapping[str, Mapping[str, Any]], jobs: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    phases: dict[str, int] = {}
    for j in jobs.values():
        phases[j["phase"]] = phases.get(j["phase"], 0) + 1
    return {"nodes": sum(len(r["nodes"]) for r in racks.values()),
            "ready": sum(1 for r in racks.values() for n in r["nodes"] if n["state"] == "Ready"),
            "gpus": sum(r["gpus"] for r in racks.values()), "used": sum(r["used"] for r in racks.values()),
            "unhealthy": sum(r["unhealthy"] for r in racks.values()), "jobs": dict(sorted(phases.items()))}


def items(view: ClusterView, kv: Mapping[str, Any] | None = None, sched: Mapping[str, Any] | None = None,
          *, max_jobs: int = 500, usage: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """Every item of the page. Finished jobs beyond the newest ``max_jobs`` are left out, and the
    elements a job array's limit keeps back are one item ``held/<array>`` (the job list's row
    for them, as the queue card's entry) instead of one ``job/`` item each: a sweep of a
    thousand elements is not a thousand rows."""
    jobs = {name: job_item(view, name) for name in view.jobs}
    racks = rack_items(view)
    out: dict[str, dict[str, Any]] = {}
    out.update(racks)
    out.update(queue_items(view, jobs, usage))
    live = [j for j in jobs.values() if j["phase"] not in ("Succeeded", "Failed", "Cancelled")]
    done = sorted((j for j in jobs.values() if j["phase"] in ("Succeeded", "Failed", "Cancelled")),
                  key=lambda j: (-(j.get("finished_at") or 0), j["name"]))
    groups = _held_groups(sorted(live, key=lambda j: _natural(str(j["name"]))))
    held = {str(j["name"]) for group in groups for j in group}
    for j in live + done[:max(0, max_jobs - len(live))]:
        if j["name"] not in held:
            out[f"job/{j['name']}"] = j
    for group in groups:
        first = group[0]
        out[f"held/{first['array']['job']}"] = dict(_folded(group), tenant=first["tenant"], phase="Pending",
                                                   submitted_at=first["submitted_at"])
    out["summary"] = summary_item(racks, jobs)
    if kv is not None:
        out["kvraft"] = dict(kv)
    if sched is not None:
        out["scheduler"] = dict(sched)
    return out


def diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any] | None:
    """``{"set": {key: item}, "del": [key]}`` turning ``old`` into ``new``; None when equal."""
    changed = {k: v for k, v in new.items() if old.get(k) != v}
    gone = sorted(k for k in old if k not in new)
    if not changed and not gone:
        return None
    return {"set": changed, "del": gone}


def progress_record(value: bytes) -> dict[str, Any] | None:
    """One record the trainer wrote to ``/jobs/<job>/progress`` (examples/train_digits.py).
    A number that is not finite (``NaN``, ``Infinity``: what Python's json.dumps writes for a
    diverged loss; ``1e999``) is None: the page's JSON.parse takes no NaN."""
    try:
        doc = json.loads(value, parse_constant=_no_number, parse_float=_finite)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _no_number(_constant: str) -> None:
    return None


def _finite(text: str) -> float | None:
    number = float(text)
    return number if math.isfinite(number) else None


def _series(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per-epoch points of the latest run (a restart that resumes replaces later epochs)."""
    by_epoch: dict[int, dict[str, Any]] = {}
    for r in records:
        if "loss" not in r or r.get("done"):
            continue
        e = _int(r.get("epoch"), -1)
        if e < 0:
            continue
        for later in [k for k in by_epoch if k >= e]:
            del by_epoch[later]
        by_epoch[e] = {"epoch": e, "loss": r.get("loss"), "train_acc": r.get("train_acc"),
                       "test_acc": r.get("test_acc"), "seconds": r.get("seconds")}
    return [by_epoch[e] for e in sorted(by_epoch)]


def job_detail(view: ClusterView, name: str, events: Iterable[Mapping[str, Any]],
               progress: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The job's panel: summary, timeline (submitted, then each event), placement rows
    (rack, node, GPUs, task; the last run's when it is not running), per-epoch series."""
    if name not in view.jobs:
        return None
    j = job_item(view, name)
    spec = _doc(view.jobs.get(name))
    st = _doc(view.status.get(name))
    timeline = []
    if j["submitted_at"] is not None:
        timeline.append({"at": j["submitted_at"], "type": "Submitted", "message": f"tenant {j['tenant']}"})
    for e in events:
        timeline.append({"at": e.get("at"), "type": str(e.get("type", "")), "message": str(e.get("message", ""))})
    if j["phase"] in ("Succeeded", "Failed", "Cancelled") and j["finished_at"] is not None \
            and not any(t["type"] == j["phase"] for t in timeline):
        timeline.append({"at": j["finished_at"], "type": j["phase"], "message": j["message"]})
    placement = st.get("placement") or st.get("last_placement") or []
    rows = sorted(({"rack": str(p.get("rack", "")), "node": str(p.get("node", "")), "gpus": list(p.get("gpus") or ()),
                    "task": str(p.get("task", ""))} for p in placement if isinstance(p, dict)),
                  key=lambda r: (str(r["rack"]), _natural(str(r["node"])), str(r["task"])))
    tasks = {t: _doc(e) for t, e in view.tasks.get(name, {}).items()}
    records = list(progress)
    last = records[-1] if records else None
    return {**j, "timeline": timeline, "placement": rows, "last_run": not st.get("placement") and bool(rows),
            "commands": [{"task": t.get("name"), "replicas": t.get("replicas"), "command": t.get("command")}
                         for t in spec.get("tasks") or () if isinstance(t, dict)],
            "task_status": {t: {"phase": d.get("phase"), "node": d.get("node"), "exit_code": d.get("exit_code")}
                            for t, d in sorted(tasks.items())},
            "series": _series(records), "progress": dict(last) if last else None}

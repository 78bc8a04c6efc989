"""``jobctl describe job NAME``: spec summary, placement by rack, node and GPU, the pending
reason, its dependencies and where each stands, the training progress the job's rank 0
reports, and the job's events (oldest first), like ``kubectl describe``.

Progress is the record the trainer writes to ``/jobs/<job>/progress`` (the key the dashboard's
loss curve reads; examples/train_digits.py): once the world is formed (``started``), after
every epoch (``epoch``, ``loss``, ``train_acc``, ``test_acc``) and at the end (``done``)."""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from typing import Any, TextIO

from kvraft.client import Op
from scheduler import dependencies, keys
from scheduler.cli.common import NotFound, job_view, stored_status
from scheduler.cli.printers import age, render_table

__all__ = ["add_parser", "dependency_lines", "events", "progress", "progress_lines", "progress_key", "run"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser("describe", help="show a job in detail, with its pending reason and events")
    p.add_argument("noun", choices=["job", "jobs"])
    p.add_argument("name")
    p.set_defaults(run=run)


def events(client: Any, name: str) -> list[dict[str, Any]]:
    out = []
    for kv in client.get(f"{keys.EVENTS}{name}/", prefix=True).kvs:
        try:
            doc = json.loads(kv.value)
        except ValueError:
            continue
        if isinstance(doc, dict):  # anyone may write the key: what is not an event is left out
            out.append(doc)
    return out


def _ago(at: Any, now: float) -> str:
    ok = isinstance(at, int | float) and not isinstance(at, bool) and math.isfinite(at)
    return age(now - float(at)) if ok else "?"


def progress_key(job: str) -> str:
    return f"/jobs/{keys.check_name(job, 'job')}/progress"


def progress(client: Any, name: str) -> dict[str, Any] | None:
    got = client.get(progress_key(name)).kvs
    if not got:
        return None
    try:
        doc = json.loads(got[0].value)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def task_states(client: Any, name: str) -> dict[str, str]:
    """Each task of the job's current run -> what its status says (``kubectl describe``'s
    container state): the phase, and the reason where it tells more (``Pending
    (WaitingForGPUs)``, ``Failed (Killed)``). Statuses of earlier runs are left out."""
    got = client.get(keys.binding_key(name))
    if not got.kvs:
        return {}
    run = got.kvs[0].create_revision
    out: dict[str, str] = {}
    for kv in client.get(keys.task_status_prefix(name), prefix=True).kvs:
        try:
            doc = json.loads(kv.value)
        except ValueError:
            continue
        if not isinstance(doc, dict) or doc.get("assignment_revision") != run or not isinstance(doc.get("task"), str):
            continue
        phase, reason = str(doc.get("phase", "")), doc.get("reason")
        out[doc["task"]] = phase + (f" ({reason})" if reason and isinstance(reason, str) and reason != "Completed" else "")
    return out


def dependency_lines(spec: dict[str, Any], status: dict[str, Any], phase_of: Callable[[str], str | None]) -> list[str]:
    """One line per dependency: ``prep (succeeded): met, Succeeded (recorded)``, ``waiting,
    Running``, ``never, Failed``, ``never, not found`` (pure; ``phase_of(job)`` is its phase,
    None when it does not exist)."""
    record = dependencies.recorded(status)
    out = []
    for dep in dependencies.parse(spec):
        done = record.get(dep.job)
        kept = done is not None and dependencies.state(dep, record, done)[0] == "met"
        phase = done if kept else phase_of(dep.job)
        verdict, _ = dependencies.state(dep, record, phase)
        out.append(f"{dep.job} ({dep.condition}): {verdict}, {phase or 'not found'}" + (" (recorded)" if kept else ""))
    return out


def _phase_of(client: Any) -> Callable[[str], str | None]:
    def phase(job: str) -> str | None:
        resp = client.txn().then(Op.get(keys.job_key(job)), Op.get(keys.jobstatus_key(job))).commit()
        if not getattr(resp.responses[0], "kvs", ()):
            return None
        kvs = getattr(resp.responses[1], "kvs", ())
        return str(stored_status(kvs[0].value if kvs else None).get("phase", "Pending"))
    return phase


def _num(value: Any, fmt: str) -> str:
    return format(value, fmt) if isinstance(value, (int, float)) and not isinstance(value, bool) else "?"


def progress_lines(doc: dict[str, Any] | None, now: float) -> list[str]:
    """The ``Progress:`` block of a trainer's latest record (pure; ``now`` is passed in)."""
    if not doc:
        return ["<none reported>"]
    at = doc.get("at")
    when = f"reported {_ago(at, now)} ago" if _ago(at, now) != "?" else "reported at an unknown time"
    if doc.get("done"):
        head = f"finished: epoch {doc.get('epoch', '?')}, test acc {_num(doc.get('test_acc'), '.4f')}"
        if "loss" in doc:
            head += f", last loss {_num(doc.get('loss'), '.4f')}"
    elif doc.get("started"):
        head = f"world formed at epoch {doc.get('epoch', '?')}, no epoch finished yet"
    else:
        head = (f"epoch {doc.get('epoch', '?')}, loss {_num(doc.get('loss'), '.4f')}, "
                f"train acc {_num(doc.get('train_acc'), '.4f')}, test acc {_num(doc.get('test_acc'), '.4f')}")
        if isinstance(doc.get("seconds"), (int, float)):
            head += f", {doc['seconds']:.1f} s/epoch"
    detail = [f"{doc['ranks']} ranks" if "ranks" in doc else "", str(doc.get("backend") or ""),
              f"run {doc['run']}" if doc.get("run") else "",
              f"restarts {doc['restarts']}" if "restarts" in doc else "",
              f"resumed from epoch {doc['resumed_from']}" if doc.get("resumed_from") else ""]
    return [f"{head} ({when})", ", ".join(d for d in detail if d)]


def run(args: argparse.Namespace, client: Any, out: TextIO) -> int:
    items = job_view(client, args.name)
    if not items:
        raise NotFound("jobs", args.name)
    j = items[0]
    spec, s = j["spec"], j["status"]
    now = time.time()
    w = out.write
    w(f"Name:           {j['name']}\n")
    w(f"Tenant:         {j['tenant']}\n")
    w(f"Priority:       {j['priority']}" + (f" (class {j['priority_class']})" if j["priority_class"] else "") + "\n")
    w(f"Submitted:      {age(now - (s['submitted_at'] or now))} ago\n")
    w(f"Phase:          {s['phase']}\n")
    w(f"Reason:         {s['reason']}\n")
    w(f"Message:        {s['message']}\n")
    w(f"Restarts:       {s['restarts']} (policy {spec.get('restart_policy')}, max {spec.get('max_restarts')})\n")
    w(f"Preemptions:    {s['preemptions']}\n")
    w(f"Evictions:      {s['evictions']} (drain, requeue)\n")
    if spec.get("min_available") is not None:  # an elastic job (one task group)
        w(f"Elastic:        at least {spec['min_available']} of {spec['tasks'][0]['replicas']} tasks; "
          f"restarted larger {s['resizes']} time(s)\n")
    record = spec.get("array")
    if record:  # an element of a job array (scheduler.arrays)
        limit = "no limit" if record["parallelism"] is None else f"at most {record['parallelism']} at a time"
        w(f"Array:          {record['job']}, index {record['index']} of {record['count']} elements ({limit})\n")
    topo = spec.get("topology")
    w(f"Topology:       {'any' if not topo else topo['mode'] + ' ' + topo['level']}\n")
    w(f"Checkpoints:    {spec.get('checkpoint_dir') or '<none>'}\n")
    ttl = spec.get("ttl_seconds_after_finished")
    finished = s.get("finished_at") if s["phase"] in ("Succeeded", "Failed", "Cancelled") else None
    w(f"TTL after end:  {'the scheduler default' if ttl is None else f'{ttl:g} s'}"
      + (f" (finished {_ago(finished, now)} ago)" if finished is not None else "") + "\n")
    deps = dependency_lines(spec, s, _phase_of(client))
    w("Depends on:     " + (deps[0] if deps else "<none>") + "\n" + "".join(f"                {d}\n" for d in deps[1:]))
    w("Tasks:\n")
    for t in spec["tasks"]:
        r = t["resources"]
        gt = f" {r['gpu_type']}" if r.get("gpu_type") else ""
        w(f"  {t['name']} x{t['replicas']}: {r['gpus']} GPU{gt}, {r['cpu_milli']}m CPU, {r['memory_mib']} MiB"
          f"{', RDMA' if r.get('rdma') else ''}; {' '.join(t['command'])}\n")
    placement = s["placement"] or s.get("last_placement") or []
    w("Placement:" + ("" if s["placement"] else " (last run)" if placement else " <none>") + "\n")
    if placement:
        head = ["rack", "node", "gpus", "task"]
        rows = [[p["rack"], p["node"], ",".join(map(str, p["gpus"])) or "-", p["task"]]
                for p in sorted(placement, key=lambda p: (p["rack"], p["node"], p["task"]))]
        if s["placement"]:  # the current run: each task's state as its agent reports it
            states = task_states(client, j["name"])
            head.append("state")
            rows = [row + [states.get(row[3], "-")] for row in rows]
        out.write("".join("  " + line + "\n" for line in render_table(head, rows).splitlines()))
    lines = [line for line in progress_lines(progress(client, j["name"]), now) if line]
    w(f"Progress:       {lines[0]}\n" + "".join(f"                {line}\n" for line in lines[1:]))
    evs = events(client, j["name"])
    w("Events:" + (" <none>\n" if not evs else "\n"))
    if evs:
        rows = [[e.get("type", ""), _ago(e.get("at"), now), e.get("scheduler", ""), e.get("message", "")]
                for e in evs]
        out.write("".join("  " + line + "\n" for line in render_table(["type", "age", "from", "message"], rows).splitlines()))
    if s["phase"] == "Pending" and s["reason"] not in ("Queued", ""):
        w(f"\nWhy pending: {s['message']}\n")
    return 0



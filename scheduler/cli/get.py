"""``jobctl get jobs|nodes|queues|priorityclasses [NAME] [-o wide|json|yaml]``.

``get job NAME -o json`` prints one object with ``name``, ``tenant``, ``status.phase``,
``status.reason``, ``status.restarts`` and ``status.placement`` (``task, node, rack, gpus``).
The name of a job array lists its elements, by index (``-o json``: a ``List``). In the tables,
the elements an array's limit keeps back are one row, as squeue shows them
(``sweep_[4-15%4]``, reason JobArrayTaskLimit); ``-r``/``--array`` lists them one per row.

A named job that is not ``--tenant``'s is not found (``Error from server (NotFound)``, exit
1), as ``kubectl get pod x -n other``; an empty name is refused before connecting."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, TextIO

from scheduler import arrays, decode, keys
from scheduler.cli.common import CliError, NotFound, job_view, key_of, skip
from scheduler.cli.printers import job_header, job_row, print_docs, render_table
from scheduler.cli.watch_jobs import watch
from scheduler.jobs import validate_priority_class

__all__ = ["add_parser", "nodes_view", "run", "tenants_view"]

NOUNS = {"job": "jobs", "jobs": "jobs", "node": "nodes", "nodes": "nodes", "queue": "queues", "queues": "queues",
         "tenant": "queues", "tenants": "queues", "priorityclass": "priorityclasses", "priorityclasses": "priorityclasses",
         "pc": "priorityclasses"}


def add_parser(sub: Any) -> None:
    p = sub.add_parser("get", help="list jobs, nodes, queues (tenants) or priority classes")
    p.add_argument("noun", help="jobs | nodes | queues | priorityclasses")
    p.add_argument("name", nargs="?")
    p.add_argument("-o", "--output", choices=["wide", "json", "yaml"])
    p.add_argument("--tenant", help="only jobs of this tenant")
    p.add_argument("-r", "--array", action="store_true",
                   help="one row per element of a job array, also those its limit keeps back (squeue -r)")
    p.add_argument("-w", "--watch", action="store_true",
                   help="after the list, print a job again each time it changes (kubectl get -w; Ctrl-C ends)")
    p.set_defaults(run=run, prepare=prepare)


def prepare(args: argparse.Namespace) -> None:
    """Before connecting: an empty name is no name (it listed every job), as kubectl says."""
    if args.name == "":
        raise CliError("error: resource name may not be empty")


def _load(v: bytes) -> Any:
    try:
        return json.loads(v)
    except ValueError:
        return None


def _decoded(key: str, value: bytes, fn: Any) -> Any:
    """``fn(the JSON value)``, or None with a warning naming ``key`` when it does not decode."""
    try:
        return fn(decode.json_value(value))
    except decode.Malformed as exc:
        skip(key, str(exc))
        return None


def nodes_view(client: Any) -> list[dict[str, Any]]:
    resp = client.get("/registry/", prefix=True)
    nodes: dict[str, dict[str, Any]] = {}
    beats, cordons, alloc = set(), set(), {}
    for kv in resp.kvs:
        k = key_of(kv)
        where = keys.split(k) if k is not None else None
        if k is None or where is None:
            continue
        prefix, rest = where
        if "/" in rest or not rest:
            continue
        if prefix == keys.NODES:
            if _decoded(k, kv.value, lambda d, n=rest: decode.node(n, d)) is not None:
                nodes[rest] = json.loads(kv.value)
        elif prefix == keys.LEASES:
            beats.add(rest)
        elif prefix == keys.CORDONS:
            cordons.add(rest)
        elif prefix == keys.ALLOC:
            jobs = _decoded(k, kv.value, decode.alloc_jobs)
            alloc[rest] = jobs if jobs is not None else {}
    out = []
    for name, doc in sorted(nodes.items()):
        ready = name in beats and doc.get("healthy", True) is not False
        jobs = alloc.get(name, {})
        used = sum(len(j.get("gpus", [])) for j in jobs.values())
        status = ("Ready" if ready else "NotReady") + (",SchedulingDisabled" if name in cordons else "")
        out.append({"name": name, "status": status, "ready": ready, "cordoned": name in cordons,
                    "rack": doc.get("rack"), "gpu_type": doc.get("gpu_type"), "gpus": doc.get("gpus", 0),
                    "gpus_used": used, "cpu_milli": doc.get("cpu_milli", 0), "memory_mib": doc.get("memory_mib", 0),
                    "cpu_milli_used": sum(j.get("cpu_milli", 0) for j in jobs.values()),
                    "memory_mib_used": sum(j.get("memory_mib", 0) for j in jobs.values()),
                    "jobs": sorted(jobs), "agent_url": _agent_url(doc)})
    return out


def _agent_url(record: dict[str, Any]) -> str:
    agent = record.get("agent")
    url = agent.get("url", "") if isinstance(agent, dict) else ""
    return url if isinstance(url, str) else ""


def tenants_view(client: Any) -> list[dict[str, Any]]:
    tenants = {}
    for kv in client.get(keys.TENANTS, prefix=True).kvs:
        key = key_of(kv)
        name = key[len(keys.TENANTS):] if key is not None else ""
        if key is not None and _decoded(key, kv.value, lambda d, n=name: decode.tenant(n, d)) is not None:
            tenants[name] = json.loads(kv.value)
    jobs = job_view(client)
    usage: dict[str, dict[str, int]] = {}
    for j in jobs:
        u = usage.setdefault(j["tenant"], {"running": 0, "pending": 0, "gpus_used": 0, "gpus_pending": 0})
        phase = j["status"]["phase"]
        if phase == "Running":
            u["running"] += 1
            u["gpus_used"] += j["gpus"]
        elif phase == "Pending":
            u["pending"] += 1
            u["gpus_pending"] += j["gpus"]
    out = []
    for name in sorted(set(tenants) | set(usage)):
        t = tenants.get(name) or {}
        u = usage.get(name, {"running": 0, "pending": 0, "gpus_used": 0, "gpus_pending": 0})
        out.append({"name": name, "nominal_gpus": t.get("nominal_gpus"), "borrow_limit_gpus": t.get("borrow_limit_gpus"),
                    "job_name_prefix": t.get("job_name_prefix"), "max_priority": t.get("max_priority"),
                    "run_as_user": t.get("run_as_user"), "run_as_group": t.get("run_as_group"),
                    "defined": name in tenants, **u})
    return out


def _order(j: dict[str, Any]) -> tuple[float, int]:
    """Oldest first; the elements of a job array (submitted together) by index."""
    return j["spec"].get("submitted_at") or 0, (j["spec"].get("array") or {}).get("index", -1)


def _job_rows(items: list[dict[str, Any]], fmt: str | None, now: float, expand: bool) -> list[list[Any]]:
    """The table's rows. Unless ``expand``, the elements of one array that its limit keeps
    back (two or more) are one row where the first of them would be, named as squeue names
    them: ``sweep_[4-15%4]``."""
    held: dict[str, list[dict[str, Any]]] = {}
    for j in items:
        record = arrays.member(j["spec"])
        if not expand and record is not None and arrays.record_ok(record, j["name"]) \
                and j["status"]["phase"] == "Pending" and j["status"]["reason"] == arrays.THROTTLED:
            held.setdefault(record["job"], []).append(j)
    folded = {id(j): group for group in held.values() if len(group) > 1 for j in group}
    rows = []
    for j in items:
        group = folded.get(id(j))
        if group is None:
            rows.append(job_row(j, fmt, now))
        elif j is group[0]:
            record = j["spec"]["array"]
            name = arrays.folded_name(record["job"], (g["spec"]["array"]["index"] for g in group), record["parallelism"])
            rows.append([name, *job_row(j, fmt, now)[1:]])
    return rows


def run(args: argparse.Namespace, client: Any, out: TextIO) -> int:
    noun = NOUNS.get(args.noun)
    if noun is None:
        raise CliError(f'error: the server doesn\'t have a resource type "{args.noun}" '
                       "(jobs, nodes, queues, priorityclasses)")
    now = time.time()
    fmt = args.output
    if args.watch and noun != "jobs":
        raise CliError("error: --watch is for jobs (jobctl get jobs -w)")
    if noun == "jobs":
        start = client.get(keys.JOBS, keys_only=True, limit=1).header.revision  # (the watch goes on from here)
        items = job_view(client, args.name)
        array = False
        if args.name and not items:
            # the name of a job array: its elements (squeue -j ARRAYID), a List as for no name
            items = [j for j in job_view(client) if (j["spec"].get("array") or {}).get("job") == args.name]
            array = bool(items)
            if not items:
                raise NotFound("jobs", args.name)
        if args.tenant:
            items = [j for j in items if j["tenant"] == args.tenant]
            if args.name and not items:  # (kubectl get pod x -n other: not found, not an empty list)
                raise NotFound("jobs", args.name)
        if fmt in ("json", "yaml"):
            for j in items:
                j.pop("revision", None)
            print_docs(sorted(items, key=_order) if array else items, fmt, out, named=bool(args.name) and not array)
        else:
            rows = _job_rows(sorted(items, key=_order), fmt, now, args.array)
            out.write(render_table(job_header(fmt), rows) if rows else "No jobs found.\n")
        if args.watch:
            return watch(args, client, out, start, items)
        return 0
    if noun == "nodes":
        items = nodes_view(client)
        if args.name:
            items = [n for n in items if n["name"] == args.name]
            if not items:
                raise NotFound("nodes", args.name)
        if fmt in ("json", "yaml"):
            print_docs(items, fmt, out, named=bool(args.name))
            return 0
        header = ["name", "status", "rack", "gpu_type", "gpus", "used"]
        if fmt == "wide":
            header += ["cpu", "memory", "jobs"]
        rows = []
        for n in items:
            row = [n["name"], n["status"], n["rack"], n["gpu_type"], n["gpus"], n["gpus_used"]]
            if fmt == "wide":
                row += [f"{n['cpu_milli'] // 1000}", f"{n['memory_mib'] // 1024}Gi", ",".join(n["jobs"]) or "<none>"]
            rows.append(row)
        out.write(render_table(header, rows) if rows else "No nodes found.\n")
        return 0
    if noun == "queues":
        items = tenants_view(client)
        if args.name:
            items = [t for t in items if t["name"] == args.name]
            if not items:
                raise NotFound("queues", args.name)
        if fmt in ("json", "yaml"):
            print_docs(items, fmt, out, named=bool(args.name))
            return 0
        rows = [[t["name"], "-" if t["nominal_gpus"] is None else t["nominal_gpus"],
                 "-" if t["borrow_limit_gpus"] is None else t["borrow_limit_gpus"], t["gpus_used"], t["running"],
                 t["pending"], t["gpus_pending"]] for t in items]
        header = ["name", "nominal_gpus", "borrow_limit", "gpus_used", "running", "pending", "gpus_pending"]
        if fmt == "wide":  # what the tenant admits (scheduler/admission.py), and who its tasks run as
            header += ["job_name_prefix", "max_priority", "run_as"]
            for row, t in zip(rows, items, strict=True):
                row += ["-" if t["job_name_prefix"] is None else t["job_name_prefix"],
                        "-" if t["max_priority"] is None else t["max_priority"],
                        "root" if t["run_as_user"] is None else f"{t['run_as_user']}:{t['run_as_group']}"]
        out.write(render_table(header, rows) if rows else "No queues found.\n")
        return 0
    items = []
    for kv in client.get(keys.PRIORITY_CLASSES, prefix=True).kvs:
        key, doc = key_of(kv), _load(kv.value)
        problems = [str(p) for p in validate_priority_class(doc)]
        if key is not None and not problems and doc["name"] != key[len(keys.PRIORITY_CLASSES):]:
            problems = [f"name: {doc['name']!r} is not the key's name"]
        if key is not None and problems:
            skip(key, "; ".join(problems))
        elif key is not None:
            items.append(doc)
    if args.name:
        items = [c for c in items if c and c.get("name") == args.name]
        if not items:
            raise NotFound("priorityclasses", args.name)
    if fmt in ("json", "yaml"):
        print_docs(items, fmt, out, named=bool(args.name))
        return 0
    rows = [[c["name"], c["value"], c.get("preemptible", True), c.get("description", "")] for c in items if c]
    out.write(render_table(["name", "value", "preemptible", "description"], rows) if rows else "No priority classes found.\n")
    return 0

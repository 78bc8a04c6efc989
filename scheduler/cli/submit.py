"""``jobctl submit -f job.yaml`` (``-`` for stdin): validate, resolve the priority class, store.

Prints ``job/<name> submitted`` per job (``-o name``: just the name). ``--dry-run`` (or
``--dry-run=client``) checks the file without connecting (``job/<name> valid (dry run)``);
``--dry-run=server`` also runs every check against the cluster (priority classes,
dependencies, names taken, admission) and writes nothing: ``job/<name> created (server dry
run)``, or the error a real submit would print, with its exit code. Every problem of every
document is reported before anything is written; an existing job name is refused, and so is a
job its tenant does not admit (``scheduler.admission``: name prefix, priority cap).

Dependencies (``depends_on``, ``scheduler.dependencies``): each named job must exist, or be
submitted in the same file; the jobs of a file may not depend on one another in a cycle; and
they are written dependencies first, so a scheduler that reads the first ones of a file before
the rest never finds a dependency missing (which would fail the job).

Job arrays (``array: "0-15%4"``, ``scheduler.arrays``): the job is stored as its elements,
``<name>_<index>``, up to TXN_JOBS of them per txn; each says ``job/<name>_<i> submitted``.
An array is refused when its name is a job's or an array's, or an element's name is taken. A
job may depend on a whole array by its name (``depends_on: [{job: sweep}]``: all elements)."""

from __future__ import annotations

import argparse
import time
from typing import Any, TextIO

from kvraft.client import Compare, Op
from kvraft.client.completion import complete_files
from scheduler import arrays, decode, keys
from scheduler.admission import admission_problem
from scheduler.cli.common import CliError, array_elements, key_of, read_input
from scheduler.dependencies import cycle, submit_order
from scheduler.jobs import load_documents, normalize_job, validate_job, validate_priority_class
from scheduler.model import Tenant

__all__ = ["add_parser", "priority_class_value", "run", "stored_tenants"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser("submit", help="submit jobs from a YAML file")
    complete_files(p.add_argument("-f", "--filename", required=True, help="job YAML file, or - for stdin"))
    p.add_argument("-o", "--output", choices=["name"], help="print only the job names")
    p.add_argument("--dry-run", nargs="?", const="client", default=None, type=_dry_run, metavar="client|server",
                   help="client (the default of a bare --dry-run): validate the file only, without connecting; "
                        "server: also every check against the cluster, writing nothing")
    p.set_defaults(run=run, prepare=prepare)


def _dry_run(value: str) -> str | None:
    """kubectl's --dry-run values: client, server, or none (a real submit)."""
    if value not in ("client", "server", "none"):
        raise argparse.ArgumentTypeError(f'invalid dry-run value ({value}); must be "none", "server", or "client"')
    return None if value == "none" else value


def validated_jobs(text: str, source: str) -> list[dict[str, Any]]:
    try:
        docs = load_documents(text, source)
    except ValueError as exc:
        raise CliError(f"error: {exc}") from None
    if not docs:
        raise CliError(f"error: no objects passed to submit ({source} is empty)")
    problems = []
    for i, doc in enumerate(docs):
        kind = doc.get("kind", "Job") if isinstance(doc, dict) else "Job"
        label = f"{source}: document {i + 1}" + (f" (job {doc.get('name')})" if isinstance(doc, dict) and doc.get("name") else "")
        if kind != "Job":
            problems.append(f"{label}: kind: must be Job, not {kind!r} (use jobctl apply for {kind})")
            continue
        problems += [f"{label}: {p}" for p in validate_job(doc)]
    if problems:
        raise CliError("error: invalid job\n" + "\n".join(f"  {p}" for p in problems))
    _no_name_twice(docs, source)
    loop = cycle(_graph(docs))
    if loop is not None:
        raise CliError(f"error: {source}: dependency cycle: {' -> '.join(loop)}")
    return docs


def _no_name_twice(docs: list[dict[str, Any]], source: str) -> None:
    """Each job of the file, and each element of its arrays (``<name>_<index>``), has a name of
    its own: checked before anything is written (and by ``--dry-run``), else the second of them
    was refused after the first had been stored."""
    where: dict[str, tuple[int, str]] = {}
    for i, d in enumerate(docs):
        names = [(d["name"], f"job {d['name']}")]
        if d.get("array") is not None:
            names += [(arrays.element_name(d["name"], k), f"an element of array {d['name']}")
                      for k in arrays.parse(d["array"]).indices]
        for name, what in names:
            if name in where:
                first_i, first = where[name]
                raise CliError(f"error: {source}: job name {name} appears twice: {first} (document {first_i + 1}) "
                               f"and {what} (document {i + 1}); nothing was submitted")
            where[name] = (i, what)


def _graph(docs: list[dict[str, Any]]) -> dict[str, list[str]]:
    """job -> the jobs it depends on, for the jobs of one file."""
    return {d["name"]: [dep["job"] for dep in d.get("depends_on") or []] for d in docs}


def prepare(args: argparse.Namespace) -> None:
    """Read and validate before connecting: bad input never needs a cluster."""
    text, source = read_input(args.filename)
    args.docs, args.source = validated_jobs(text, source), source


def stored_tenants(client: Any) -> dict[str, Tenant]:
    """The tenant records that decode (the scheduler skips the others too)."""
    out = {}
    for kv in client.get(keys.TENANTS, prefix=True).kvs:
        key = key_of(kv)
        if key is None:
            continue
        name = key[len(keys.TENANTS):]
        try:
            out[name] = decode.tenant(name, decode.json_value(kv.value))
        except decode.Malformed:
            continue
    return out


def priority_class_value(client: Any, job: str, name: str) -> int:
    """The value of priority class ``name``, which job ``job`` names; ``CliError`` when there
    is no such class or its record is not one."""
    import json

    resp = client.get(keys.priority_class_key(name))
    if not resp.kvs:
        raise CliError(f'error: job {job}: priority_class: no priority class "{name}" '
                       f"(jobctl get priorityclasses lists them)")
    try:
        pc = json.loads(resp.kvs[0].value)
    except ValueError:
        pc = None
    problems = [str(p) for p in validate_priority_class(pc)]
    if problems:
        raise CliError(f"error: job {job}: priority_class: {keys.priority_class_key(name)} is not a priority class "
                       f'({"; ".join(problems)})')
    return int(pc["value"])


def run(args: argparse.Namespace, client: Any, out: TextIO) -> int:
    docs = args.docs
    names = [d["name"] for d in docs]
    missing = sorted({(d["name"], dep["job"]) for d in docs for dep in d.get("depends_on") or []
                      if dep["job"] not in names and not client.get(keys.job_key(dep["job"])).kvs
                      and not array_elements(client, dep["job"])[1]},
                     key=lambda m: (names.index(m[0]), m[1]))
    if missing:
        raise CliError("\n".join(f'error: job {job}: depends_on: no job "{dep}" (jobctl get jobs lists them; '
                                 f"a job of the same file may be named too)" for job, dep in missing))
    order = submit_order(_graph(docs))
    docs = sorted(docs, key=lambda d: order.index(d["name"]))
    stored = []
    for doc in docs:
        priority = priority_class_value(client, doc["name"], doc["priority_class"]) if doc.get("priority_class") else None
        stored.append(normalize_job(doc, priority=priority, submitted_at=time.time()))
    stored = _expand_arrays(client, stored, {d["name"]: d.get("array") for d in docs})
    tenants = stored_tenants(client)
    refused = [f"job {d['name']}: {why}" for d in stored
               if (why := admission_problem(d["name"], d["tenant"], d["priority"], tenants)) is not None]
    if refused:
        raise CliError("error: not admitted\n" + "\n".join(f"  {r}" for r in refused))
    if args.dry_run == "server":  # (kubectl apply --dry-run=server: every check, nothing written)
        for batch in _batches(stored):
            taken = [d["name"] for d in batch if client.get(keys.job_key(d["name"])).kvs]
            if taken:
                raise CliError(f'Error from server (AlreadyExists): jobs "{", ".join(taken)}" already exists')
        for d in stored:
            out.write(f"{d['name']}\n" if args.output == "name" else f"job/{d['name']} created (server dry run)\n")
        return 0
    import json

    done = 0
    for batch in _batches(stored):
        names = [keys.job_key(d["name"]) for d in batch]
        txn = client.txn().if_(*(Compare.create(k, "=", 0) for k in names))
        resp = txn.then(*(Op.put(k, json.dumps(d).encode()) for k, d in zip(names, batch, strict=True))).commit()
        if not resp.succeeded:
            taken = [d["name"] for d in batch if client.get(keys.job_key(d["name"])).kvs]
            more = f" ({done} submitted before it: {', '.join(d['name'] for d in stored[:done])})" if done else ""
            raise CliError(f'Error from server (AlreadyExists): jobs "{", ".join(taken) or batch[0]["name"]}" '
                           f"already exists{more}")
        for d in batch:
            out.write(f"{d['name']}\n" if args.output == "name" else f"job/{d['name']} submitted\n")
        done += len(batch)
    return 0


def _batches(stored: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The jobs of one txn each: one job, or up to TXN_JOBS elements of one array (etcd's
    --max-txn-ops is 128)."""
    out: list[list[dict[str, Any]]] = []
    for d in stored:
        record, last = arrays.member(d), out[-1] if out else None
        head = arrays.member(last[0]) if last else None
        if last is not None and record is not None and head is not None and head["job"] == record["job"] \
                and len(last) < TXN_JOBS:
            last.append(d)
        else:
            out.append([d])
    return out


TXN_JOBS = 100


def _expand_arrays(client: Any, stored: list[dict[str, Any]], specs: dict[str, Any]) -> list[dict[str, Any]]:
    """Each job with ``array`` becomes its elements (``scheduler.arrays.expand``); an array whose
    name is a job's, or an array's already, or whose element names are taken, is refused."""
    out: list[dict[str, Any]] = []
    for d in stored:
        text = specs.get(d["name"])
        if text is None:
            out.append(d)
            continue
        name = d["name"]
        if client.get(keys.job_key(name)).kvs:
            raise CliError(f'Error from server (AlreadyExists): jobs "{name}" already exists (a job array may not '
                           f"take a job's name)")
        elements = arrays.expand(d, text)
        taken, members = array_elements(client, name)
        if members:
            raise CliError(f'Error from server (AlreadyExists): job array "{name}" already exists '
                           f"({members[0]} is one of its elements)")
        clash = [e["name"] for e in elements if e["name"] in taken]
        if clash:
            raise CliError(f'Error from server (AlreadyExists): jobs "{", ".join(clash)}" already exist '
                           f"(the names of array {name}'s elements)")
        out.extend(elements)
    return out

"""``jobctl requeue NAME...``: stop running jobs and put them back in the queue, from their
checkpoints (Slurm's ``scontrol requeue``); ``drain NODE --requeue`` does it for every job on
a node. Each is a request under ``/registry/evictions/<job>`` naming the run it is for (the
create revision of the job's binding); the leader scheduler evicts that run as it evicts a
preemption victim, deletes the request, and the job is bound again (``scheduler.evictions``).
A job that is not running is said so, not an error."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, TextIO

from kvraft.client import Compare, Op
from scheduler import decode, evictions, keys
from scheduler.cli.common import NotFound

__all__ = ["add_parser", "request", "requester", "run"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser("requeue", help="stop running jobs and queue them again (they resume from their checkpoints)")
    p.add_argument("names", nargs="+")
    p.set_defaults(run=run)


def requester(args: argparse.Namespace) -> str:
    """Who asks, as the job's status will say it: ``jobctl``, with the kvraft user if any."""
    user = (getattr(args, "user", None) or "").split(":", 1)[0]
    return f"jobctl (user {user})" if user else "jobctl"


def request(client: Any, job: str, reason: str, node: str | None, by: str, out: TextIO) -> bool:
    """Ask the scheduler to evict ``job``'s current run (on ``node`` for a drain); say what was
    asked, or why nothing was. True when a request was written."""
    resp = client.txn().then(Op.get(keys.job_key(job)), Op.get(keys.binding_key(job)),
                             Op.get(keys.jobstatus_key(job))).commit()
    spec, bound, status = (list(getattr(r, "kvs", ())) for r in resp.responses)
    if not spec and not bound:
        if reason == "requeue":
            raise NotFound("jobs", job)
        out.write(f"job/{job} not found: nothing to requeue\n")
        return False
    if not bound:
        try:
            phase = decode.job_status(decode.json_value(status[0].value))[0].get("phase", "Pending") if status \
                else "Pending"
        except decode.Malformed:
            phase = "Pending"
        out.write(f"job/{job} is not running ({phase}): nothing to requeue\n")
        return False
    kv = bound[0]
    try:
        doc = decode.json_value(kv.value)
    except decode.Malformed:
        doc = None
    tasks, _, evicting_until, _ = decode.binding(doc)
    if evicting_until is not None:
        out.write(f"job/{job} is already being stopped (evicted or preempted): it will be queued again\n")
        return False
    if node is not None and tasks and node not in {t["node"] for t in tasks}:
        out.write(f"job/{job} does not run on {node}: nothing to requeue\n")
        return False
    value = evictions.request_doc(job, reason, node, kv.create_revision, by, time.time())
    key = keys.eviction_key(job)
    put = client.txn().if_(Compare.create(keys.binding_key(job), "=", kv.create_revision)) \
        .then(Op.put(key, json.dumps(value).encode())).commit()
    if not put.succeeded:
        out.write(f"job/{job} is no longer running: nothing to requeue\n")
        return False
    out.write(f"job/{job} requeue requested\n")
    return True


def run(args: argparse.Namespace, client: Any, out: TextIO) -> int:
    by = requester(args)
    for name in args.names:
        keys.check_name(name, "job")
        request(client, name, "requeue", None, by, out)
    return 0

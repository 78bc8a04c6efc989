"""``jobctl requeue NAME...``: stop running jobs and put them back in the queue, from their
checkpoints (Slurm's ``scontrol requeue``); ``drain NODE --requeue`` does it for every job on
a node. Each is a request under ``/registry/evictions/<job>`` naming the run it is for (the
create revision of the job's binding); the leader scheduler evicts that run as it evicts a
preemption victim, deletes the request, and the job is bound again (``scheduler.evictions``).
A job that is not running is said so, not an error. The name of a job array requeues its
running elements (``scontrol requeue`` of an array id)."""

from __future__ import annotations

import argparse
import io
import json
import time
from typing import Any, TextIO

from kvraft.client import Compare, Op
from scheduler import evictions, keys
from scheduler.cli.common import NotFound, targets

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
    asked, or why nothing was (``evictions.prepare``). True when a request was written."""
    resp = client.txn().then(Op.get(keys.job_key(job)), Op.get(keys.binding_key(job)),
                             Op.get(keys.jobstatus_key(job))).commit()
    spec, bound, status = (list(getattr(r, "kvs", ())) for r in resp.responses)
    prepared = evictions.prepare(job, reason, node, by, time.time(), spec=spec[0].value if spec else None,
                                 binding=(bound[0].value, bound[0].create_revision) if bound else None,
                                 status=status[0].value if status else None)
    if not prepared.found and reason == "requeue":
        raise NotFound("jobs", job)
    if prepared.request is not None:
        put = client.txn().if_(Compare.create(keys.binding_key(job), "=", prepared.binding_revision)) \
            .then(Op.put(keys.eviction_key(job), json.dumps(prepared.request).encode())).commit()
        if not put.succeeded:
            out.write(f"job/{job} is no longer running: nothing to requeue\n")
            return False
    out.write(prepared.message + "\n")
    return prepared.request is not None


def run(args: argparse.Namespace, client: Any, out: TextIO) -> int:
    by = requester(args)
    for name in args.names:
        jobs, whole = targets(client, name)
        if not whole:
            request(client, name, "requeue", None, by, out)
            continue
        # the name of a job array (Slurm's scontrol requeue ARRAYID): its running elements
        asked = 0
        for job in jobs:
            said = io.StringIO()
            if request(client, job, "requeue", None, by, said):
                out.write(said.getvalue())
                asked += 1
        if not asked:
            out.write(f"job array {name}: no element is running: nothing to requeue\n")
    return 0

"""``jobctl cordon|uncordon|drain NODE``: keep new jobs off a node (``/registry/cordons/``);
drain also lists the jobs still running there so the operator can cancel or wait;
``--cancel`` cancels them, ``--requeue`` has the scheduler evict them and queue them again
(``jobctl requeue``: they resume elsewhere from their checkpoints, as ``kubectl drain``
evicts pods)."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, TextIO

from scheduler import decode, keys
from scheduler.cli.common import CliError, NotFound

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    for verb, help_ in (("cordon", "mark a node unschedulable"), ("uncordon", "mark a node schedulable"),
                        ("drain", "cordon a node and list, cancel or requeue the jobs running on it")):
        p = sub.add_parser(verb, help=help_)
        p.add_argument("node")
        if verb == "drain":
            what = p.add_mutually_exclusive_group()
            what.add_argument("--cancel", action="store_true", help="cancel the jobs running on the node")
            what.add_argument("--requeue", action="store_true",
                              help="stop the jobs running on the node and queue them again: they resume on other "
                                   "nodes from their checkpoints")
        p.set_defaults(run=run, verb=verb)


def run(args: argparse.Namespace, client: Any, out: TextIO) -> int:
    if not client.get(keys.node_key(args.node)).kvs:
        raise NotFound("nodes", args.node)
    key = keys.cordon_key(args.node)
    if args.verb == "uncordon":
        client.delete(key)
        out.write(f"node/{args.node} uncordoned\n")
        return 0
    existed = bool(client.get(key).kvs)
    client.put(key, json.dumps({"node": args.node, "at": time.time(), "by": args.verb}).encode())
    out.write(f"node/{args.node} {'already cordoned' if existed else 'cordoned'}\n")
    if args.verb == "drain":
        alloc = client.get(keys.alloc_key(args.node))
        try:
            jobs = sorted(decode.alloc_jobs(decode.json_value(alloc.kvs[0].value))) if alloc.kvs else []
        except decode.Malformed as exc:
            raise CliError(f"error: node/{args.node} cordoned, but {keys.alloc_key(args.node)} does not decode "
                           f"({exc}): which jobs run there is unknown") from None
        if args.cancel and jobs:
            from scheduler.cli import cancel

            cancel.run(argparse.Namespace(names=jobs), client, out)
        elif args.requeue and jobs:
            from scheduler.cli import requeue

            by = requeue.requester(args)
            for job in jobs:
                requeue.request(client, job, "drain", args.node, by, out)
        elif jobs:
            out.write(f"jobs still running on {args.node}: {', '.join(jobs)} (jobctl cancel or requeue, or drain "
                      "--cancel or --requeue)\n")
        out.write(f"node/{args.node} drained\n" if args.cancel or args.requeue or not jobs else "")
    return 0

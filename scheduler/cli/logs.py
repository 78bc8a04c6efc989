"""``jobctl logs NAME [--task T] [-f] [--tail N]``: the task's output, from the agent that
runs it (its ``/logs/<job>/<task>`` endpoint, found through the node record's agent URL)."""

from __future__ import annotations

import argparse
import codecs
import json
import urllib.error
import urllib.request
from typing import Any, TextIO

from scheduler import keys
from scheduler.cli.common import CliError, NotFound, job_view

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser("logs", help="print a task's output (through its node's agent)")
    p.add_argument("name")
    p.add_argument("--task", help="task name (default: the first task)")
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("--tail", type=int, default=-1)
    p.set_defaults(run=run)


def run(args: argparse.Namespace, client: Any, out: TextIO) -> int:
    if args.tail < -1:  # kubectl logs' own check (-1: every line)
        raise CliError("error: --tail must be greater than or equal to -1")
    items = job_view(client, args.name)
    if not items:
        raise NotFound("jobs", args.name)
    s = items[0]["status"]
    placement = s["placement"] or s.get("last_placement") or []
    if not placement:
        raise CliError(f"error: job {args.name} has not run yet ({s['phase']}: {s['message']})")
    tasks = {p["task"]: p for p in placement}
    task = args.task or placement[0]["task"]
    if task not in tasks:
        raise CliError(f"error: job {args.name} has no task {task!r} (tasks: {', '.join(sorted(tasks))})")
    node = tasks[task]["node"]
    rec = client.get(keys.node_key(node))
    try:
        record = json.loads(rec.kvs[0].value) if rec.kvs else {}
    except ValueError:
        record = {}
    agent = record.get("agent") if isinstance(record, dict) else None
    url = agent.get("url", "") if isinstance(agent, dict) else ""
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        # anyone may write the record: only an agent's http(s) endpoint is asked (not file://...)
        raise CliError(f"error: node {node} advertises no agent URL ({url!r}); logs of {args.name}/{task} are on "
                       "that node")
    q = f"?tail={args.tail}" + ("&follow=1" if args.follow else "")
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/logs/{args.name}/{task}{q}", timeout=None if args.follow else 30) as r:
            text = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a read may cut a character
            for chunk in iter(lambda: r.read(8192), b""):
                out.write(text.decode(chunk))
                out.flush()
            out.write(text.decode(b"", final=True))
    except urllib.error.HTTPError as exc:
        if exc.code == 404 and s["phase"] == "Running" and s["reason"] == "Starting":  # as kubectl says it
            raise CliError(f"error: task {task} of job {args.name} is waiting to start on {node}: "
                           f"{s['message']}") from None
        raise CliError(f"error: agent on {node}: {exc.code} {exc.read().decode(errors='replace').strip()}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise CliError(f"error: cannot reach the agent of {node} at {url}: {exc}") from None
    return 0

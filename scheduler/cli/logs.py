"""``jobctl logs NAME [--task T] [-f] [--tail N] [--since 10m | --since-time T] [--timestamps]
[-p]``: the task's output, from the agent that runs it (its ``/logs/<job>/<task>`` endpoint,
found through the node record's agent URL), with kubectl logs' flags."""

from __future__ import annotations

import argparse
import codecs
import math
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime
from typing import Any, TextIO

from kvraft.client.goduration import parse_duration
from scheduler.cli.agentcall import agent_tls, bearer, locate
from scheduler.cli.common import CliError

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser("logs", help="print a task's output (through its node's agent)")
    p.add_argument("name")
    p.add_argument("--task", help="task name (default: the first task)")
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("--tail", type=int, default=-1, help="lines from the end (default -1: all)")
    p.add_argument("--since", help="only lines newer than this, e.g. 10m or 2h (Go's durations)")
    p.add_argument("--since-time", help="only lines since this RFC 3339 time, e.g. 2026-12-05T10:00:00Z")
    p.add_argument("--timestamps", action="store_true", help="each line with its RFC 3339 time")
    p.add_argument("-p", "--previous", action="store_true", help="the task's attempt before the latest")
    p.set_defaults(run=run, prepare=prepare)


def prepare(args: argparse.Namespace) -> None:
    """kubectl logs' checks, before connecting: the agent's query string from the flags."""
    if args.tail < -1:  # -1: every line
        raise CliError("error: --tail must be greater than or equal to -1")
    if args.since is not None and args.since_time is not None:
        raise CliError("error: at most one of --since-time or --since may be specified")
    query = [f"tail={args.tail}"]
    if args.since is not None:
        try:
            seconds = parse_duration(args.since)
        except ValueError as exc:
            raise CliError(f"error: --since: {exc}") from None
        if seconds <= 0:
            raise CliError("error: --since must be greater than 0")
        query.append(f"since_seconds={max(1, math.ceil(seconds))}")  # whole seconds, as kubectl sends them
    if args.since_time is not None:
        try:
            when = datetime.fromisoformat(args.since_time)
        except ValueError:
            when = None
        if when is None or when.tzinfo is None:
            raise CliError(f"error: --since-time: {args.since_time!r} is not an RFC 3339 time such as "
                           "2026-12-05T10:00:00Z")
        query.append("since_time=" + urllib.parse.quote(when.isoformat()))
    query += ["follow=1"] * args.follow + ["timestamps=1"] * args.timestamps + ["previous=1"] * args.previous
    args.query = "?" + "&".join(query)


def run(args: argparse.Namespace, client: Any, out: TextIO) -> int:
    where = locate(client, args.name, args.task)
    task, node, s = where.task, where.node, where.status
    with bearer(client, where, args.name, write=False) as headers:
        request = urllib.request.Request(f"{where.url}/logs/{args.name}/{task}{args.query}", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=None if args.follow else 30, context=agent_tls(args)) as r:
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
            raise CliError(f"error: cannot reach the agent of {node} at {where.url}: {exc}") from None
    return 0

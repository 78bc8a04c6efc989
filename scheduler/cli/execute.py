"""``jobctl exec NAME [--task T] [--timeout-s S] -- COMMAND [ARG...]``: run a command in a
running task (kubectl exec, without a terminal): through the agent that runs it
(``POST /exec/<job>/<task>``: ``runc exec``, Docker exec, or the task's environment and user
on the process runtime). Its output is printed as it was written, stdout to stdout and stderr
to stderr, once it has ended, and jobctl exits with its exit code (126 when the task does
not run, 124 when the command ran past ``--timeout-s`` and was killed). With kvraft's auth
on, the user must be allowed to write the job."""

from __future__ import annotations

import argparse
import base64
import json
import math
import sys
import urllib.error
import urllib.request
from typing import Any, TextIO

from scheduler.cli.agentcall import agent_tls, bearer, locate
from scheduler.cli.common import CliError

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser("exec", help="run a command in a running task (through its node's agent)",
                       description="jobctl exec NAME [--task T] [--timeout-s S] -- COMMAND [ARG...]")
    p.add_argument("name")
    p.add_argument("--task", help="task name (default: the first task)")
    p.add_argument("--timeout-s", type=float, default=30.0, help="kill the command after this long (default 30)")
    p.add_argument("argv", nargs="*", metavar="COMMAND [ARG...]", help="after --, as kubectl exec")
    p.set_defaults(run=run, prepare=prepare)


def prepare(args: argparse.Namespace) -> None:
    argv = list(args.argv)
    if not argv:
        raise CliError("error: you must specify at least one command for the task (jobctl exec NAME -- COMMAND)")
    if not (math.isfinite(args.timeout_s) and args.timeout_s > 0):
        raise CliError(f"error: --timeout-s must be a number of seconds > 0, not {args.timeout_s}")
    args.argv = argv


def run(args: argparse.Namespace, client: Any, out: TextIO) -> int:
    where = locate(client, args.name, args.task)
    if where.status["phase"] != "Running":
        raise CliError(f"error: job {args.name} is not running ({where.status['phase']}): nothing to exec in")
    body = json.dumps({"argv": args.argv, "timeout_s": args.timeout_s}).encode()
    with bearer(client, where, args.name, write=True) as headers:
        request = urllib.request.Request(f"{where.url}/exec/{args.name}/{where.task}", data=body,
                                         headers={**headers, "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=args.timeout_s + 30, context=agent_tls(args)) as r:
                answer = json.loads(r.read())
        except urllib.error.HTTPError as exc:
            raise CliError(f"error: agent on {where.node}: {exc.code} "
                           f"{exc.read().decode(errors='replace').strip()}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise CliError(f"error: cannot reach the agent of {where.node} at {where.url}: {exc}") from None
    stdout = base64.b64decode(answer.get("stdout_b64", "")) if answer.get("stdout_b64") else answer.get("stdout", "").encode()
    if out is sys.stdout:
        out.flush()
        sys.stdout.buffer.write(stdout)
        sys.stdout.buffer.flush()
    else:
        out.write(stdout.decode(errors="replace"))
    sys.stderr.write(answer.get("stderr", ""))
    return int(answer.get("exit_code", 1))

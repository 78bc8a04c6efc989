"""``jobctl wait NAME... [--for succeeded|finished|running] [--timeout 1h]``: block until jobs
reach a condition, for scripts and pipelines run from a shell (``kubectl wait``, Slurm's
``sbatch --wait``).

- ``succeeded`` (the default): the job ended Succeeded; exit 1 as soon as one ends otherwise
  (``error: job/train ended Failed: ...``);
- ``finished``: the job ended, whichever way (exit 0, each job's phase printed);
- ``running``: the job is running (or ran: it ended Succeeded or Failed); exit 1 if it was
  cancelled before it ran.

The name of a job array (``scheduler.arrays``) stands for all its elements, their phases
combined as for ``depends_on``. Each job met prints ``job/<name> <phase>`` once; a job that is
not found, or is deleted while waited for, is an error; ``--timeout`` (Go's durations: ``90s``,
``30m``, ``2h``; default none) ends with kubectl's ``error: timed out waiting for the
condition on jobs/<names>``. The statuses are read once a second (``--interval``): for a job
array, all its elements' in one range read.
"""

from __future__ import annotations

import argparse
import time
from typing import Any, TextIO

from kvraft.client.goduration import parse_duration
from scheduler import arrays, keys
from scheduler.cli.common import CliError, NotFound, array_elements, stored_status

__all__ = ["CONDITIONS", "add_parser", "judge", "run"]

CONDITIONS = ("succeeded", "finished", "running")
TERMINAL = ("Succeeded", "Failed", "Cancelled")


def add_parser(sub: Any) -> None:
    p = sub.add_parser("wait", help="wait until jobs succeed, finish or run (exit 1 if they cannot)")
    p.add_argument("names", nargs="+")
    p.add_argument("--for", dest="condition", choices=CONDITIONS, default="succeeded",
                   help="the condition (default succeeded)")
    p.add_argument("--timeout", default="0", help="give up after this long, e.g. 30m (default 0: never)")
    p.add_argument("--interval", default="1s", help="how often the statuses are read (default 1s)")
    p.set_defaults(run=run, prepare=prepare)


def prepare(args: argparse.Namespace) -> None:
    for flag in ("timeout", "interval"):
        try:
            value = parse_duration(getattr(args, flag))
        except ValueError as exc:
            raise CliError(f"error: --{flag}: {exc}") from None
        if value < 0 or (flag == "interval" and value == 0):
            raise CliError(f"error: --{flag}: must be {'> 0' if flag == 'interval' else '>= 0'}, not {getattr(args, flag)}")
        setattr(args, f"{flag}_s", value)


def judge(condition: str, phase: str, ran: bool) -> str:
    """PURE: ``met``, ``waiting`` or ``never`` for one job's (or array's) ``phase``; ``ran``: it
    was bound at least once (so a Failed job ran, and a Cancelled one may have)."""
    if condition == "finished":
        return "met" if phase in TERMINAL else "waiting"
    if condition == "succeeded":
        return "met" if phase == "Succeeded" else "never" if phase in TERMINAL else "waiting"
    if phase in ("Running", "Succeeded", "Failed") or (phase == "Cancelled" and ran):
        return "met"
    return "never" if phase == "Cancelled" else "waiting"


def _phase(client: Any, name: str) -> tuple[str, bool, str] | None:
    """``(phase, ran, message)`` of a job or a job array now; None when neither exists."""
    if client.get(keys.job_key(name), keys_only=True).kvs:
        members = [name]
        kvs = client.get(keys.jobstatus_key(name)).kvs
    else:
        members = array_elements(client, name)[1]
        if not members:
            return None
        kvs = client.get(keys.jobstatus_key(name) + "_", prefix=True).kvs  # every element's, one read
    values = {kv.key.decode("utf-8", "replace")[len(keys.JOBSTATUS):]: kv.value for kv in kvs}
    phases, ran, message = [], False, ""
    for job in members:
        status = stored_status(values.get(job))
        phase = str(status.get("phase", "Pending"))
        phases.append(phase)
        ran = ran or bool(status.get("bound_at")) or phase in ("Running", "Succeeded", "Failed")
        if phase in ("Failed", "Cancelled") and not message:
            why = f"{status.get('reason', phase)}: {status.get('message', '')}".rstrip(": ")
            message = why if job == name else f"element {job}: {why}"
    if members == [name]:
        return phases[0], ran, message
    return arrays.phase(phases, "Running" in phases), ran, message


def run(args: argparse.Namespace, client: Any, out: TextIO) -> int:
    for name in args.names:
        keys.check_name(name, "job")
    waiting = list(dict.fromkeys(args.names))
    seen: set[str] = set()
    deadline = time.monotonic() + args.timeout_s if args.timeout_s else None
    while True:
        for name in list(waiting):
            got = _phase(client, name)
            if got is None:
                if name in seen:
                    raise CliError(f"error: job/{name} was deleted while waiting for it to be {args.condition}")
                raise NotFound("jobs", name)
            seen.add(name)
            phase, ran, message = got
            verdict = judge(args.condition, phase, ran)
            if verdict == "never":
                raise CliError(f"error: job/{name} ended {phase}" + (f": {message}" if message else "")
                               + f"; it can never be {args.condition}")
            if verdict == "met":
                out.write(f"job/{name} {phase}\n")
                out.flush()
                waiting.remove(name)
        if not waiting:
            return 0
        if deadline is not None and time.monotonic() >= deadline:
            raise CliError(f"error: timed out waiting for the condition on jobs/{','.join(waiting)}")
        pause = args.interval_s if deadline is None else min(args.interval_s, max(0.0, deadline - time.monotonic()))
        time.sleep(pause)

"""``jobctl update NAME... [--priority N | --priority-class PC] [--max-run D] [--estimate D]``:
Slurm's ``scontrol update JobId=... Priority= TimeLimit=``, for jobs that have not ended.

The stored spec is changed in a txn that compares its revision. A pending job is queued by
its new priority at the next pass (it may then preempt, or be passed by others); a running
one keeps running, and its new priority counts when preemption looks for victims; a new
``--max-run`` moves its deadline (``bound_at + max_run_s``: a run already past it is stopped,
DeadlineExceeded); ``--estimate`` is what shortest-job-first and backfill plan with. The new
priority must be admitted by the job's tenant (``max_priority``) as at submit. The name of a
job array updates each element that has not ended. Durations are Go's (``90m``, ``2h30m``).
"""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from kvraft.client.goduration import parse_duration
from scheduler.admission import admission_problem
from scheduler.cli.cancel import Check, mark_all
from scheduler.cli.common import CliError
from scheduler.cli.submit import priority_class_value, stored_tenants
from scheduler.jobs import check_stored_job

__all__ = ["add_parser", "run"]

MAX_PRIORITY = 1_000_000  # as a job file's priority (scheduler.jobs.JOB_SCHEMA)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("update", help="change the priority, time limit or run-time estimate of jobs (scontrol update)")
    p.add_argument("names", nargs="+", help="jobs, or job arrays (all their elements that have not ended)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--priority", type=int, help="the new priority")
    which.add_argument("--priority-class", help="the new priority: this class's value")
    p.add_argument("--max-run", help="the new max_run_s, a duration (2h30m): the run is stopped past it")
    p.add_argument("--estimate", help="the new estimate_s, a duration: what SJF and backfill plan with")
    p.set_defaults(run=run)


def _seconds(flag: str, text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise CliError(f"error: {flag}: {exc}") from None
    if value <= 0:
        raise CliError(f"error: {flag}: must be a positive duration, not {text!r}")
    return value


def run(args: argparse.Namespace, client: Any, out: TextIO) -> int:
    changes: dict[str, Any] = {}
    if args.priority is not None:
        if abs(args.priority) > MAX_PRIORITY:
            raise CliError(f"error: --priority: must be between {-MAX_PRIORITY} and {MAX_PRIORITY}")
        changes.update(priority=args.priority, priority_class=None)
    if (max_run := _seconds("--max-run", args.max_run)) is not None:
        changes["max_run_s"] = max_run
    if (estimate := _seconds("--estimate", args.estimate)) is not None:
        changes["estimate_s"] = estimate
    if not changes and args.priority_class is None:
        raise CliError("error: nothing to update: give --priority, --priority-class, --max-run or --estimate")
    tenants = stored_tenants(client)

    def plan(job: str) -> tuple[dict[str, Any], Check]:
        mine = dict(changes)
        if args.priority_class is not None:
            mine.update(priority=priority_class_value(client, job, args.priority_class), priority_class=args.priority_class)

        def check(doc: dict[str, Any]) -> None:
            problems = [str(p) for p in check_stored_job(job, doc)]
            if doc.get("estimate_s") is not None and doc.get("max_run_s") is not None \
                    and doc["estimate_s"] > doc["max_run_s"]:
                problems.append(f"estimate_s: must be <= max_run_s ({doc['max_run_s']:g})")
            if (why := admission_problem(job, str(doc.get("tenant")), int(doc["priority"]), tenants)) is not None:
                problems.append(f"not admitted: {why}")
            if problems:
                raise CliError(f"error: job {job}: " + "; ".join(problems) + " (nothing changed)")

        return mine, check

    for job, outcome in mark_all(client, args.names, plan, ": nothing to update"):
        out.write(f"job/{job} {'updated' if outcome == 'changed' else 'unchanged'}\n")
    return 0

"""``jobctl report [--month 2026-12 | --since 2026-10 [--until 2026-12]] [--by tenant|job]
[--tenant T] [-o json|yaml]``: GPU time used, per tenant or per job, from the accounting
records the scheduler writes as each run ends (``scheduler.accounting``; Slurm's ``sreport``
and ``sacct``). Default: this month (UTC), by tenant.

Each row: ``JOBS`` (distinct jobs with a run that ended in the months asked), ``RUNS``,
``GPU-HOURS``, then the hours of each outcome: ``COMPLETED`` (runs that finished their job),
``FAILED`` (failures, restarts after one, deadlines), ``PREEMPTED`` (preemptions and
operators' evictions: resumed elsewhere from a checkpoint) and ``CANCELLED``. Runs still going
are not counted until they end. A record that does not decode is skipped with a warning."""

from __future__ import annotations

import argparse
import re
import time
from typing import Any, TextIO

from scheduler import accounting
from scheduler.cli.common import CliError, json_values, skip
from scheduler.cli.printers import print_docs, render_table

__all__ = ["add_parser", "run"]

_MONTH = re.compile(r"\d{4}-(0[1-9]|1[0-2])\Z")


def add_parser(sub: Any) -> None:
    p = sub.add_parser("report", help="GPU-hours used per tenant or job, and how the runs ended (sreport)")
    p.add_argument("--month", help="one month, YYYY-MM (default: this month, UTC)")
    p.add_argument("--since", help="the first month, YYYY-MM")
    p.add_argument("--until", help="the last month, YYYY-MM (default: this month)")
    p.add_argument("--by", choices=["tenant", "job"], default="tenant")
    p.add_argument("--tenant", help="only this tenant's runs")
    p.add_argument("-o", "--output", choices=["json", "yaml"])
    p.set_defaults(run=run, prepare=prepare)


def prepare(args: argparse.Namespace) -> None:
    if args.month and (args.since or args.until):
        raise CliError("error: --month or --since/--until, not both")
    now = accounting.month_of(time.time())
    for flag in ("month", "since", "until"):
        value = getattr(args, flag)
        if value is not None and not _MONTH.match(value):
            raise CliError(f"error: --{flag}: {value!r} is not a month (YYYY-MM)")
    first = args.month or args.since or now
    last = args.month or args.until or now
    if first > last:
        raise CliError(f"error: --since {first} is after --until {last}")
    args.first, args.last = first, last


def run(args: argparse.Namespace, client: Any, out: TextIO) -> int:
    # one range read: keys sort by month, so [first, the month after last) holds them all
    start = accounting.PREFIX + args.first
    end = accounting.PREFIX + args.last + "0"  # where the prefix "<last>/" ends ("/" + 1 is "0")
    records = []
    for key, doc in json_values(client.get(start, range_end=end).kvs):
        if not accounting.is_record(doc):
            skip(key, "not an accounting record (job, tenant, gpu_seconds)")
            continue
        if args.tenant and doc["tenant"] != args.tenant:
            continue
        records.append(doc)
    rows = accounting.summarize(records, by=args.by)
    span = args.first if args.first == args.last else f"{args.first} to {args.last}"
    if args.output:
        print_docs([dict(r, months=span) for r in rows], args.output, out, named=False)
        return 0
    if not rows:
        out.write(f"No runs ended in {span}.\n")
        return 0
    header = [args.by, "jobs", "runs", "gpu-hours", "completed", "failed", "preempted", "cancelled"]
    table = [[r[args.by], r["jobs"], r["runs"], f"{r['gpu_hours']:.2f}", f"{r['completed_gpu_hours']:.2f}",
              f"{r['failed_gpu_hours']:.2f}", f"{r['preempted_gpu_hours']:.2f}", f"{r['cancelled_gpu_hours']:.2f}"]
             for r in rows]
    out.write(f"GPU-hours of the runs that ended in {span} (UTC)\n")
    out.write(render_table(header, table))
    return 0

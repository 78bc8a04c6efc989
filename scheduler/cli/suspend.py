"""``jobctl suspend NAME...`` and ``jobctl resume NAME...``: Kubernetes' Job ``.spec.suspend``.

``suspend`` marks the stored spec ``suspend: true``. A pending job is held: the scheduler does
not consider it (Pending, reason ``Suspended``; it holds no GPUs, reservation or queue place).
A running one is stopped as a preempted one is, with its grace period (reason ``Suspending``),
so it checkpoints, and is then held; its run counts as ``preempted`` in ``jobctl report``.
``resume`` clears the mark and the job is queued again, from its checkpoint. Unlike Slurm's
``scontrol suspend`` (SIGSTOP, the GPUs stay allocated), a suspended job frees its GPUs; a
pending job suspended and resumed is Slurm's ``scontrol hold`` / ``release``. A job may be
submitted suspended (``suspend: true``, ``sbatch --hold``). The name of a job array suspends or
resumes its elements that have not ended. A job that has ended is an error (exit 1).
"""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from scheduler.cli.cancel import mark_all

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    for verb, help_text in (("suspend", "stop jobs and hold them, freeing their GPUs, until resume"),
                            ("resume", "queue suspended jobs again (from their checkpoints)")):
        p = sub.add_parser(verb, help=help_text)
        p.add_argument("names", nargs="+", help="jobs, or job arrays (all their elements that have not ended)")
        p.set_defaults(run=run, verb=verb)


def run(args: argparse.Namespace, client: Any, out: TextIO) -> int:
    value = args.verb == "suspend"
    done, same = ("suspended", "already suspended") if value else ("resumed", "not suspended")
    for job, outcome in mark_all(client, args.names, lambda job: ({"suspend": value}, None), f": nothing to {args.verb}"):
        out.write(f"job/{job} {done}\n" if outcome == "changed" else f"job/{job} unchanged ({same})\n")
    return 0

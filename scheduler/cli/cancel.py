"""``jobctl cancel NAME...``: mark jobs cancelled; the scheduler stops their tasks. The name
of a job array (``scheduler.arrays``) cancels its elements that have not ended, as Slurm's
``scancel ARRAYID``."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TextIO

from kvraft.client import Compare, Op
from scheduler import decode, keys
from scheduler.cli.common import CliError, NotFound, stored_status, targets
from scheduler.jobs import check_stored_job

__all__ = ["ENDED", "Check", "add_parser", "mark", "mark_all", "run"]

ENDED = ("Succeeded", "Failed", "Cancelled")


def add_parser(sub: Any) -> None:
    p = sub.add_parser("cancel", help="cancel jobs")
    p.add_argument("names", nargs="+")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, client: Any, out: TextIO) -> int:
    for job, _ in mark_all(client, args.names, lambda job: ({"cancelled": True}, None), ""):
        out.write(f"job/{job} cancelled\n")
    return 0


def mark_all(client: Any, names: Sequence[str], changes: Callable[[str], tuple[Mapping[str, Any], Check | None]],
             refusal: str) -> Iterator[tuple[str, str]]:
    """``mark`` each job named, or each element of a job array named (``targets``), with the
    ``(changes, check)`` for it: ``(job, "changed" | "unchanged")``. A job that has ended is an
    error (``refusal`` ends its message); an array's elements that have ended are left out. A
    name not found does not stop the names after it (as ``kubectl delete``): the error is raised
    once they are done."""
    missing: list[NotFound] = []
    for name in names:
        try:
            jobs, whole = targets(client, name)
        except NotFound as exc:
            missing.append(exc)
            continue
        for job in jobs:
            outcome = mark(client, job, *changes(job))
            if outcome not in ENDED:
                yield job, outcome
            elif not whole:
                raise CliError(f"error: job {job} already finished ({outcome}){refusal}")
    if missing:
        raise CliError("\n".join(str(exc) for exc in missing))


Check = Callable[[dict[str, Any]], None]
"""Sees a job's changed spec before it is written; raises ``CliError`` to refuse it."""


def mark(client: Any, name: str, changes: Mapping[str, Any], check: Check | None = None) -> str:
    """Set fields of job ``name``'s stored spec (a txn that compares the spec's revision,
    retried; ``check`` sees the changed spec first and raises ``CliError`` to refuse it):
    ``"changed"``, ``"unchanged"`` (it was so already) or the phase of a job that has ended
    (one of ``ENDED``: nothing written)."""
    key = keys.job_key(name)
    for _ in range(5):
        resp = client.get(key)
        if not resp.kvs:
            raise NotFound("jobs", name)
        kv = resp.kvs[0]
        try:
            doc = decode.json_value(kv.value)
        except decode.Malformed as exc:
            doc, problems = None, [str(exc)]
        else:
            problems = [str(p) for p in check_stored_job(name, doc)]
        if problems:
            raise CliError(f"error: job {name}: {key} is not a job ({'; '.join(problems)}); "
                           f"the scheduler does not run it (kvctl del {key} removes it)")
        st = client.get(keys.jobstatus_key(name)).kvs
        phase = str(stored_status(st[0].value if st else None).get("phase", "Pending"))
        if phase in ENDED:
            return phase
        if all(doc.get(k, False if isinstance(v, bool) else None) == v for k, v in changes.items()):
            return "unchanged"
        doc.update(changes)
        if check is not None:
            check(doc)
        txn = client.txn().if_(Compare.mod(key, "=", kv.mod_revision)).then(Op.put(key, json.dumps(doc).encode()))
        if txn.commit().succeeded:
            return "changed"
    raise CliError(f"error: job {name}: its spec kept changing; try again")

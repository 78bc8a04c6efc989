"""``jobctl cancel NAME...``: mark jobs cancelled; the scheduler stops their tasks."""

from __future__ import annotations

import argparse
import json
from typing import Any, TextIO

from kvraft.client import Compare, Op
from scheduler import decode, keys
from scheduler.cli.common import CliError, NotFound
from scheduler.jobs import check_stored_job

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser("cancel", help="cancel jobs")
    p.add_argument("names", nargs="+")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, client: Any, out: TextIO) -> int:
    for name in args.names:
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
            st = client.get(keys.jobstatus_key(name))
            try:
                phase = decode.job_status(decode.json_value(st.kvs[0].value))[0].get("phase") if st.kvs else "Pending"
            except decode.Malformed:
                phase = "Pending"  # the scheduler rewrites a status that does not decode
            if phase in ("Succeeded", "Failed", "Cancelled"):
                raise CliError(f"error: job {name} already finished ({phase})")
            if doc.get("cancelled"):
                break
            doc["cancelled"] = True
            txn = client.txn().if_(Compare.mod(key, "=", kv.mod_revision)).then(Op.put(key, json.dumps(doc).encode()))
            if txn.commit().succeeded:
                break
        out.write(f"job/{name} cancelled\n")
    return 0

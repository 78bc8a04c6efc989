"""``jobctl cancel NAME...``: mark jobs cancelled; the scheduler stops their tasks."""

from __future__ import annotations

import argparse
import json
from typing import Any, TextIO

from kvraft.client import Compare, Op
from scheduler import keys
from scheduler.cli.common import CliError, NotFound

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
            doc = json.loads(kv.value)
            st = client.get(keys.jobstatus_key(name))
            phase = json.loads(st.kvs[0].value).get("phase") if st.kvs else "Pending"
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

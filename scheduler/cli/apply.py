"""``jobctl apply -f tenants.yaml``: create or update Tenants and PriorityClasses.

Every document is validated first (all problems reported, nothing written on error); then
each is written and reported ``tenant/<name> created|configured|unchanged``."""

from __future__ import annotations

import argparse
import json
from typing import Any, TextIO

from kvraft.client.completion import complete_files
from scheduler import keys
from scheduler.cli.common import CliError, read_input
from scheduler.jobs import load_documents, validate_priority_class, validate_tenant

__all__ = ["add_parser", "run"]

KINDS = {"Tenant": (validate_tenant, keys.tenant_key, "tenant"),
         "PriorityClass": (validate_priority_class, keys.priority_class_key, "priorityclass")}


def add_parser(sub: Any) -> None:
    p = sub.add_parser("apply", help="create or update tenants and priority classes from YAML")
    complete_files(p.add_argument("-f", "--filename", required=True))
    p.set_defaults(run=run, prepare=prepare)


def run(args: argparse.Namespace, client: Any, out: TextIO) -> int:
    for doc in args.docs:
        _, key_of, noun = KINDS[doc["kind"]]
        key = key_of(doc["name"])
        body = json.dumps(doc, sort_keys=True).encode()
        old = client.get(key)
        if old.kvs and old.kvs[0].value == body:
            out.write(f"{noun}/{doc['name']} unchanged\n")
            continue
        client.put(key, body)
        out.write(f"{noun}/{doc['name']} {'configured' if old.kvs else 'created'}\n")
    return 0


def prepare(args: argparse.Namespace) -> None:
    text, source = read_input(args.filename)
    try:
        docs = load_documents(text, source)
    except ValueError as exc:
        raise CliError(f"error: {exc}") from None
    problems = []
    for i, doc in enumerate(docs):
        kind = doc.get("kind") if isinstance(doc, dict) else None
        label = f"{source}: document {i + 1}" + (f" ({kind} {doc.get('name')})" if kind else "")
        if kind == "Job":
            problems.append(f"{label}: kind: Job is submitted with jobctl submit -f")
        elif kind not in KINDS:
            problems.append(f"{label}: kind: must be one of {', '.join(KINDS)}, not {kind!r}")
        else:
            problems += [f"{label}: {p}" for p in KINDS[kind][0](doc)]
    if problems:
        raise CliError("error: invalid objects\n" + "\n".join(f"  {p}" for p in problems))
    args.docs = docs

"""What ``jobctl logs`` and ``jobctl exec`` share: the agent that runs a job's task, and a
token that tells it who asks (``agent.endpoint_auth``)."""

from __future__ import annotations

import contextlib
import json
import ssl
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from agent.endpoint_auth import caller_token
from kvraft.client import ClientError, TLSConfig
from scheduler import keys
from scheduler.cli.common import CliError, NotFound, job_view

__all__ = ["TaskAgent", "agent_tls", "bearer", "locate"]


@dataclass(frozen=True)
class TaskAgent:
    task: str
    node: str
    url: str
    """The agent's endpoint (http or https), without a trailing slash."""
    status: dict[str, Any]
    """The job's status (phase, reason, message)."""


def locate(client: Any, name: str, task: str | None) -> TaskAgent:
    """The node and agent of job ``name``'s ``task`` (its first by default), or the error a
    user gets: no such job, it has not run, no such task, no agent URL on the node."""
    items = job_view(client, name)
    if not items:
        raise NotFound("jobs", name)
    s = items[0]["status"]
    placement = s["placement"] or s.get("last_placement") or []
    if not placement:
        raise CliError(f"error: job {name} has not run yet ({s['phase']}: {s['message']})")
    tasks = {p["task"]: p for p in placement}
    task = task or placement[0]["task"]
    if task not in tasks:
        raise CliError(f"error: job {name} has no task {task!r} (tasks: {', '.join(sorted(tasks))})")
    node = tasks[task]["node"]
    rec = client.get(keys.node_key(node))
    try:
        record = json.loads(rec.kvs[0].value) if rec.kvs else {}
    except ValueError:
        record = {}
    agent = record.get("agent") if isinstance(record, dict) else None
    url = agent.get("url", "") if isinstance(agent, dict) else ""
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        # anyone may write the record: only an agent's http(s) endpoint is asked (not file://...)
        raise CliError(f"error: node {node} advertises no agent URL ({url!r}); {name}/{task} is on that node")
    return TaskAgent(task, node, url.rstrip("/"), s)


def agent_tls(args: Any) -> ssl.SSLContext | None:
    """For an https agent: jobctl's ``--cacert`` (the agents' CA is the cluster's, as a rule)
    and ``--insecure-skip-tls-verify``; the system's CAs without them."""
    tls = TLSConfig.from_flags(args.cacert, args.cert, args.key, args.insecure_skip_tls_verify)
    return tls.context() if tls is not None else ssl.create_default_context()


@contextlib.contextmanager
def bearer(client: Any, where: TaskAgent, job: str, *, write: bool) -> Iterator[dict[str, str]]:
    """The request's headers: with kvraft's auth on, a token of this user scoped to the job's
    record (READ, READWRITE for ``write``), revoked when the block ends."""
    name = f"jobctl-{'exec' if write else 'logs'}-{uuid.uuid4().hex[:12]}"
    try:
        token = client.call(lambda c: caller_token(c, job, write=write, name=name))
    except ClientError as exc:
        raise CliError(f"error: no token for the agent of {where.node} (kvraft refused: {exc})") from None
    try:
        yield {"Authorization": f"Bearer {token}"} if token else {}
    finally:
        if token:
            with contextlib.suppress(ClientError):
                client.scoped_token_revoke(name)

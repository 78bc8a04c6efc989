"""PURE: the rank and placement environment the agent adds to a task of a gang.

The scheduler's assignment carries ``KVRAFT_JOB``, ``KVRAFT_TASK``, ``KVRAFT_RANK``,
``KVRAFT_WORLD_SIZE``, ``KVRAFT_RESTARTS`` and ``KVRAFT_PEERS`` (``task@node,...`` in rank
order). The agent that starts the task knows more: its own node and rack, the kvraft
endpoints, and (read once at start from ``/registry/bindings/<job>``) the rack and GPUs of
every rank. ``rank_env`` turns that into the variables a training program needs:

=============================  =============================================================
``KVRAFT_NODE``                this node's name
``KVRAFT_RACK``                this node's rack
``KVRAFT_PLACEMENT``           node of every rank (``n1,n1,n2,n2``): the collective's
                               hierarchical mode follows it
``KVRAFT_PLACEMENT_RACKS``     rack of every rank, same order
``KVRAFT_LOCAL_RANK``          this rank's index among the ranks on this node
``KVRAFT_LOCAL_SIZE``          ranks on this node
``KVRAFT_NODE_RANK``           index of this node among the job's nodes (first-rank order)
``KVRAFT_NUM_NODES``           nodes of the job
``KVRAFT_RUN_ID``              ``<job>-<job uid>-<run>``: one namespace per run of the gang;
                               ``<run>`` is the assignment's ``KVRAFT_RUN`` (the runs ended
                               before this one: restarts, preemptions, evictions, resizes,
                               suspensions), so a preempted, requeued, resized or resumed
                               gang never meets its last run's rendezvous keys
``KVRAFT_JOB_UID``             create revision of ``/registry/jobs/<job>`` (a resubmitted job
                               of the same name gets a new one); the scheduler's assignment
                               carries it, else the agent reads it
``KVRAFT_ENDPOINTS``           kvraft client URLs (rendezvous, progress, checkpoints)
``KVRAFT_COLLECTIVE_HOST``     the address this node's ranks listen on (the agent's)
``KVRAFT_TOKEN``               with auth on: a kvraft scoped token, the agent's permissions
                               narrowed to ``/jobs/<job>/`` for this attempt (docs/design/auth.md)
``KVRAFT_CACERT``              TLS to kvraft: the agent's CA bundle (etcdctl's ``--cacert``)
``KVRAFT_CERT``                without a token only: the agent's own certificate and key,
``KVRAFT_KEY``                 for a ``--client-cert-auth`` cluster with auth off; with a
                               token, a rank needs no certificate and never gets the agent's
``KVRAFT_INSECURE_SKIP_TLS_VERIFY``  ``true`` when the agent runs with it
=============================  =============================================================

A task that is not part of a gang (no ``KVRAFT_PEERS``) gets only the node, rack and
endpoints. Values the job's own ``env`` sets are never overwritten.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["NodeFacts", "parse_peers", "rank_env"]


@dataclass(frozen=True, slots=True)
class NodeFacts:
    node: str
    rack: str
    endpoints: tuple[str, ...]
    host: str = ""  # the address tasks of this node listen on ("" = leave the default)
    cacert: str = ""  # the agent's TLS files for kvraft, passed on to the ranks
    cert: str = ""
    key: str = ""
    insecure_skip_tls_verify: bool = False
    token: str = ""  # the attempt's scoped token (auth on); replaces the agent's certificate


def parse_peers(text: str) -> list[tuple[str, str]]:
    """``"worker-0@n1,worker-1@n2"`` -> ``[("worker-0", "n1"), ("worker-1", "n2")]``."""
    out = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        task, sep, node = item.rpartition("@")
        if not sep or not task or not node:
            raise ValueError(f"KVRAFT_PEERS: {item!r} is not task@node")
        out.append((task, node))
    return out


def rank_env(spec_env: Mapping[str, str], facts: NodeFacts, binding: Mapping[str, Any] | None = None,
             job_uid: int = 0) -> dict[str, str]:
    """The variables to add to ``spec_env`` (only those it does not already set)."""
    add: dict[str, str] = {"KVRAFT_NODE": facts.node, "KVRAFT_RACK": facts.rack,
                           "KVRAFT_ENDPOINTS": ",".join(facts.endpoints)}
    if facts.host:
        add["KVRAFT_COLLECTIVE_HOST"] = facts.host
    files = (("KVRAFT_CACERT", facts.cacert),) if facts.token else (
        ("KVRAFT_CACERT", facts.cacert), ("KVRAFT_CERT", facts.cert), ("KVRAFT_KEY", facts.key))
    for name, value in files:
        if value:
            add[name] = value
    if facts.token:
        add["KVRAFT_TOKEN"] = facts.token
    if facts.insecure_skip_tls_verify:
        add["KVRAFT_INSECURE_SKIP_TLS_VERIFY"] = "true"
    job = spec_env.get("KVRAFT_JOB", "")
    if job:
        # the scheduler names the run (KVRAFT_RUN: the runs ended before it) and the
        # job uid; an older scheduler gave only the restarts, and the agent read the uid
        run = spec_env.get("KVRAFT_RUN") or spec_env.get("KVRAFT_RESTARTS", "0") or "0"
        uid = spec_env.get("KVRAFT_JOB_UID") or str(job_uid)
        add["KVRAFT_JOB_UID"] = uid
        add["KVRAFT_RUN_ID"] = f"{job}-{uid}-{run}"
    peers_text = spec_env.get("KVRAFT_PEERS", "")
    try:
        peers = parse_peers(peers_text) if peers_text else []
        rank = int(spec_env.get("KVRAFT_RANK", "-1"))
    except ValueError:
        peers, rank = [], -1
    if peers and 0 <= rank < len(peers):
        nodes = [node for _, node in peers]
        racks_by_task = _racks(binding)
        racks = [racks_by_task.get(task, facts.rack if node == facts.node else "") for task, node in peers]
        me = nodes[rank]
        order: list[str] = []
        for n in nodes:
            if n not in order:
                order.append(n)
        add.update({
            "KVRAFT_PLACEMENT": ",".join(nodes),
            "KVRAFT_PLACEMENT_RACKS": ",".join(racks),
            "KVRAFT_LOCAL_RANK": str(sum(1 for n in nodes[:rank] if n == me)),
            "KVRAFT_LOCAL_SIZE": str(nodes.count(me)),
            "KVRAFT_NODE_RANK": str(order.index(me)),
            "KVRAFT_NUM_NODES": str(len(order)),
        })
    return {k: v for k, v in add.items() if k not in spec_env}


def _racks(binding: Mapping[str, Any] | None) -> dict[str, str]:
    if not binding:
        return {}
    rows = binding.get("tasks") if isinstance(binding, Mapping) else None
    if not isinstance(rows, Sequence) or isinstance(rows, str):
        return {}
    out = {}
    for row in rows:
        if isinstance(row, Mapping) and isinstance(row.get("task"), str):
            out[row["task"]] = str(row.get("rack", ""))
    return out

"""Simulated clients: put, get and compare-and-swap against the cluster, recorded as a history.

Each client has at most one operation outstanding. It sends it to the member it believes
leads (a get goes to a random member with ``follower_read_p``: a follower serves it by
ReadIndex too); a ``redirect`` (``NotLeaderError``/``ProposalDroppedError``: the operation
definitely did not happen) makes it resend the same operation to the named leader, or to a
random member when none is named. Gets are ReadIndex reads, served once the read index is
applied. An operation with no answer within ``op_timeout_us`` of its call is recorded with an
unknown outcome and left open to the end of the history (it may still take effect); the
client moves on. Every put writes a fresh value (``v<request id>``), and a cas expects the
value the client last saw for the key, so histories are easy to check.
"""

from __future__ import annotations

import random
from typing import Any

from kvraft.sim.cluster import Request, SimCluster
from kvraft.testing.linearizability import UNKNOWN, KvInput, Operation

__all__ = ["Workload"]


class Workload:
    def __init__(self, cluster: SimCluster, rng: random.Random) -> None:
        self.cluster = cluster
        self.rng = rng
        self.plan = cluster.plan
        self.keys = [f"k{i}" for i in range(self.plan.keys)]
        self.history: list[Operation] = []
        self.running = False
        self._next_req = 1  # 0 is the liveness probe
        self._leader: dict[int, int] = {}
        self._seen: dict[tuple[int, str], str | None] = {}
        self.stats = {"ok": 0, "timeout": 0, "redirect": 0}
        self._outstanding: dict[int, Request] = {}
        cluster.reply = self._on_reply

    def start(self) -> None:
        self.running = True
        for c in range(1, self.plan.clients + 1):
            self.cluster.schedule(self.rng.randint(*self.plan.think_us), self._issue, c)

    def stop(self) -> None:
        """Issue no new operations; those in flight still complete or time out."""
        self.running = False

    def finish(self) -> list[Operation]:
        """End of the run: operations still unanswered get unknown outcomes (they may yet
        take effect); returns the complete history."""
        for req in list(self._outstanding.values()):
            self._give_up(req)
        return self.history

    # -- operations --------------------------------------------------------------------

    def _issue(self, client: int) -> None:
        if not self.running:
            return
        p, r = self.plan, self.rng
        key = r.choice(self.keys)
        x = r.random()
        rid = self._next_req
        self._next_req += 1
        if x < p.get_p:
            req = Request(rid, client, "get", key)
        elif x < p.get_p + p.cas_p:
            req = Request(rid, client, "cas", key, f"v{rid}", self._seen.get((client, key)))
        else:
            req = Request(rid, client, "put", key, f"v{rid}")
        req.call_us = self.cluster.now
        self._outstanding[rid] = req
        if self.cluster.trace.on:
            self.cluster.trace.emit(
                req.call_us,
                f"c{client}",
                "call",
                f"req={rid} {req.kind} {key} {req.value} {req.expect}",
            )
        target = self._target(client)
        if req.kind == "get" and r.random() < p.follower_read_p:
            target = r.choice(sorted(self.cluster.members))
        self.cluster.client_send(target, req)
        self.cluster.schedule(p.op_timeout_us, self._timeout, req)

    def _target(self, client: int) -> int:
        lead = self._leader.get(client, 0)
        if lead and lead in self.cluster.members and not self.cluster.members[lead].retired:
            return lead
        return self.rng.choice(sorted(m.id for m in self.cluster.members.values() if not m.retired))

    def _on_reply(self, req: Request, outcome: str, payload: Any) -> None:
        if req.done:
            return
        now = self.cluster.now
        if outcome == "redirect":
            self.stats["redirect"] += 1
            self._leader[req.client] = payload
            target = self._target(req.client)
            backoff = self.rng.randint(100, 2_000) if payload else self.rng.randint(5_000, 30_000)
            self.cluster.schedule(backoff, self._resend, req, target)
            return
        req.done = True
        del self._outstanding[req.id]
        self.stats["ok"] += 1
        if req.kind == "get":
            inp, out = KvInput("get", req.key), payload
            self._seen[(req.client, req.key)] = payload
        elif req.kind == "put":
            inp, out = KvInput("put", req.key, req.value), None
            self._seen[(req.client, req.key)] = req.value
        else:
            inp, out = KvInput("cas", req.key, req.value, req.expect), bool(payload)
            if payload:
                self._seen[(req.client, req.key)] = req.value
        self.history.append(Operation(req.client, inp, req.call_us, out, now))
        if self.cluster.trace.on:
            self.cluster.trace.emit(now, f"c{req.client}", "return", f"req={req.id} -> {out}")
        self._next(req.client)

    def _resend(self, req: Request, target: int) -> None:
        if not req.done:
            self.cluster.client_send(target, req)

    def _timeout(self, req: Request) -> None:
        if req.done:
            return
        self._give_up(req)
        if self.cluster.trace.on:
            self.cluster.trace.emit(self.cluster.now, f"c{req.client}", "timeout", f"req={req.id}")
        self._next(req.client)

    def _give_up(self, req: Request) -> None:
        req.done = True
        del self._outstanding[req.id]
        self.stats["timeout"] += 1
        if req.kind != "get":  # a read that never answered constrains nothing
            if req.kind == "put":
                inp = KvInput("put", req.key, req.value)
            else:
                inp = KvInput("cas", req.key, req.value, req.expect)
            self.history.append(Operation(req.client, inp, req.call_us, UNKNOWN, None))
        self._leader.pop(req.client, None)
        self._seen.pop((req.client, req.key), None)

    def _next(self, client: int) -> None:
        if self.running:
            self.cluster.schedule(self.rng.randint(*self.plan.think_us), self._issue, client)

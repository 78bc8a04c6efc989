"""Keepalives reach the primary lessor (etcd's ``EtcdServer.LeaseRenew``).

On the leader, ``Lessor.keepalive`` extends the deadline in memory and no log entry of its
own is written: the lease loop replicates the new remaining TTL in a batched checkpoint
within one loop period, and the keepalive is answered once that checkpoint has committed
(``checkpoint_proposed`` hands the lease loop the keepalives a checkpoint carries; it
settles them when its proposal ends). So a TTL a client was told is known to every later
leader: one acknowledged by a leader that died before its checkpoint committed would have
been lost with it, and the new leader, starting from the previous checkpoint, could
expire the lease up to TTL/3 early (docs/design/lease.md). A checkpoint that fails
(timeout, leadership lost) answers nothing: its keepalives renew again, at whoever leads.
On a follower, keepalives are forwarded to the
leader over the peer connection (``wire.LEASE_RENEW``), coalesced: every keepalive that
arrives in one event-loop turn travels in one frame, and the leader answers them in one
``LEASE_RENEW_RESP``. While there is no leader, or the leader has not yet taken over the
leases (it promotes its lessor only after applying what the old leader committed), the
keepalive waits until the leader or this lessor's role changes (``poke``, called every
lease-loop turn), at most 250 ms, and tries again, until the request deadline; then it
fails with etcd's "request timed out" / "no leader". (Waiting on the change rather than
polling: during an election at 5,000 agents hundreds of keepalives wait at once.)

What etcd's ``LeaseRenew`` gets from a ReadIndex round before renewing
(``ensureLeadership``, etcd-io/etcd#15247; ``waitAppliedIndex``, etcd-io/etcd#13675), the
checkpoint's commit gives here, so a keepalive waits for one round trip, not two (until
2026-12-02 it took a ReadIndex round first, then, for a while, the commit as well):

- a deposed leader that has not stepped down yet hands out no TTL: the answer requires
  that this member still leads **in the term it renewed in** once the checkpoint has
  committed. An entry it appended in that term and saw committed while still leading it
  is in every later leader's log, applied before that leader promotes its lessor. (Without
  the term check a checkpoint a deposed leader queued would be forwarded by the driver to
  the new leader and committed in its term, after its promotion: applied on a primary it
  moves no deadline, and the TTL handed out would not be honoured. A ReadIndex round
  before the renewal left the same window between the round and the proposal.)
- a lease whose revocation was committed is answered without a TTL: the checkpoint is
  applied after every entry committed before it, so a lease it finds gone is answered 0;
- a lease this leader does not know is looked for again after a ReadIndex round (its
  grant may be committed and answered by a member that applied it first): only that rare
  answer pays for the round.

The router hooks the peer frames it serves in front of the driver's ``on_frame`` (every
other frame goes on to the driver unchanged). A malformed answer ends the keepalives it
answered (they ask again) before the transport closes that connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kvraft.apply.errors import Unavailable
from kvraft.apply.feature_appliers import LeaseRenewResult
from kvraft.lease import LeaseNotFound, Lessor
from kvraft.raft.types import NONE, StateRole
from kvraft.server import wire

__all__ = ["KeepaliveRouter", "RenewStats"]

RENEW_TIMEOUT_S = 7.0
"""As a proposal's: the whole keepalive, retries included."""
FORWARD_TIMEOUT_S = 2.0
"""One forwarded batch unanswered this long is asked again (the leader may have died)."""
CHECKPOINT_TIMEOUT_S = 1.5
"""The longest a checkpoint carrying keepalives may take to commit (shorter than
``FORWARD_TIMEOUT_S``, so a forwarding follower gets an answer); then they ask again."""
RETRY_S = 0.25
"""The longest a waiting keepalive goes without trying again (the leader's own promotion
is not visible to a follower)."""


@dataclass(slots=True)
class RenewStats:
    renewed_here: int = 0
    forwarded: int = 0
    served_for_peers: int = 0
    retries: int = 0
    forward_timeouts: int = 0
    """Forwarded keepalives given up on after ``FORWARD_TIMEOUT_S`` (then asked again)."""
    renews: int = 0
    renew_seconds: float = 0.0
    """Summed time ``renew`` took, retries included (this member's side of a keepalive)."""


_Batch = list[tuple[int, "asyncio.Future[tuple[int, int] | None]"]]


class KeepaliveRouter:
    def __init__(self, node: Any, lessor: Lessor, clock: Callable[[], float] = time.monotonic) -> None:
        self.node = node
        self.lessor = lessor
        self.clock = clock
        self.stats = RenewStats()
        self._pending: dict[int, _Batch] = {}
        """Leader id -> keepalives waiting for this turn's frame to it."""
        self._inflight: dict[int, tuple[_Batch, asyncio.TimerHandle]] = {}
        self._next_id = 0
        self._state: tuple[int, bool] = (NONE, False)
        self._changed: asyncio.Future[None] | None = None
        self._serving: set[asyncio.Task[None]] = set()
        self._awaiting: dict[int, list[asyncio.Future[bool]]] = {}
        """Lease id -> renewals waiting for the checkpoint that will carry them."""
        self.on_parked: Callable[[], None] | None = None
        """Called when a renewal starts waiting for its checkpoint (the lease loop's owner
        proposes one soon rather than at its next turn)."""
        driver = node.driver
        inner = driver.on_frame

        def on_frame(source: int, kind: int, body: Any) -> None:
            if kind == wire.LEASE_RENEW:
                self._serve(source, body)
            elif kind == wire.LEASE_RENEW_RESP:
                self._answered(body)
            else:
                inner(source, kind, body)

        driver.on_frame = on_frame

    # -- the leader -----------------------------------------------------------------------
    def renew_here(self, lease_ids: list[int]) -> list[int] | None:
        """TTLs (0: no such lease) if this member leads and its lessor is primary, else
        None."""
        if self.node.driver.role != StateRole.LEADER or not self.lessor.primary:
            return None
        now = self.clock()
        out = []
        for lease_id in lease_ids:
            try:
                out.append(self.lessor.keepalive(lease_id, now))
            except LeaseNotFound:
                out.append(0)
        return out

    async def renew_durably(self, lease_ids: list[int]) -> list[int] | None:
        """``renew_here``, answered once the checkpoint carrying every renewal has
        committed; None if this member does not lead, or a checkpoint failed (ask again)."""
        driver = self.node.driver
        term = driver.term
        ttls = self.renew_here(lease_ids)
        if ttls is not None and 0 in ttls:
            # unknown here: perhaps granted by an entry committed but not applied here yet
            # (its grant answered by a member that applied it first): apply what is
            # committed, as etcd's waitAppliedIndex (etcd-io/etcd#13675), and look again
            try:
                await driver.read_barrier(timeout_s=CHECKPOINT_TIMEOUT_S)
            except Unavailable:
                return None
            ttls = self.renew_here(lease_ids)
        if ttls is None:
            return None
        loop = asyncio.get_running_loop()
        waits = []
        for lease_id, ttl in zip(lease_ids, ttls, strict=True):
            if ttl > 0:
                future: asyncio.Future[bool] = loop.create_future()
                self._awaiting.setdefault(lease_id, []).append(future)
                waits.append(future)
        if waits and self.on_parked is not None:
            self.on_parked()
        for future in waits:
            if not await future:
                return None
        if driver.term != term or not self._leads():
            return None  # the checkpoint may have been committed by a later leader: ask again
        leases = self.lessor.leases
        return [ttl if lease_id in leases else 0 for lease_id, ttl in zip(lease_ids, ttls, strict=True)]

    def checkpoint_proposed(self, lease_ids: list[int]) -> list[asyncio.Future[bool]]:
        """The lease loop is about to propose a checkpoint of ``lease_ids`` (the leases
        ``Lessor.checkpoints_due`` took): the renewals waiting for them, for the loop to
        settle (True once it committed, False if it failed). Renewals of a lease the
        lessor no longer has pending (revoked, demoted, taken by a checkpoint that left it
        out) fail now, so none waits for a checkpoint that will not come."""
        awaiting = self._awaiting
        if not awaiting:
            return []
        taken: list[asyncio.Future[bool]] = []
        for lease_id in lease_ids:
            futures = awaiting.pop(lease_id, None)
            if futures:
                taken.extend(futures)
        if awaiting:
            pending = self.lessor.renewal_pending
            for lease_id in [i for i in awaiting if not pending(i)]:
                self.settle(awaiting.pop(lease_id), False)
        return taken

    def parked(self) -> bool:
        """Whether renewals wait for a checkpoint not proposed yet."""
        return bool(self._awaiting)

    @staticmethod
    def settle(futures: list[asyncio.Future[bool]], committed: bool) -> None:
        for future in futures:
            if not future.done():
                future.set_result(committed)

    def _fail_awaiting(self) -> None:
        awaiting, self._awaiting = self._awaiting, {}
        for futures in awaiting.values():
            self.settle(futures, False)

    def _leads(self) -> bool:
        return bool(self.node.driver.role == StateRole.LEADER and self.lessor.primary)

    def _serve(self, source: int, body: Any) -> None:
        request_id, lease_ids = body[0], [int(i) for i in body[1]]
        task = asyncio.get_running_loop().create_task(self._serve_durably(source, request_id, lease_ids))
        self._serving.add(task)
        task.add_done_callback(self._serving.discard)

    async def _serve_durably(self, source: int, request_id: Any, lease_ids: list[int]) -> None:
        ttls = await self.renew_durably(lease_ids) if self._leads() else None
        if ttls is not None:
            self.stats.served_for_peers += len(lease_ids)
        self.node.transport.send_frame(source, wire.LEASE_RENEW_RESP, [request_id, ttls, self.node.state.store.rev])

    # -- a follower -----------------------------------------------------------------------
    def _answered(self, body: Any) -> None:
        entry = self._inflight.pop(int(body[0]), None)
        if entry is None:
            return  # answered after we gave up on it
        batch, timer = entry
        timer.cancel()
        answers: list[tuple[int, int] | None] = [None] * len(batch)  # None: ask again
        try:
            ttls, revision = body[1], int(body[2])
            if ttls is not None:
                answers = [(int(ttls[i]), revision) for i in range(len(batch))]
        finally:  # (a malformed answer raises on: the transport closes the connection)
            for (_lease_id, future), answer in zip(batch, answers, strict=True):
                if not future.done():
                    future.set_result(answer)

    def _forward(self, leader: int, lease_id: int) -> asyncio.Future[tuple[int, int] | None]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[int, int] | None] = loop.create_future()
        batch = self._pending.get(leader)
        if batch is None:
            batch = self._pending[leader] = []
            loop.call_soon(self._flush, leader)
        batch.append((lease_id, future))
        return future

    def _flush(self, leader: int) -> None:
        batch = self._pending.pop(leader, None)
        if not batch:
            return
        self._next_id += 1
        request_id = self._next_id
        timer = asyncio.get_running_loop().call_later(FORWARD_TIMEOUT_S, self._give_up, request_id)
        self._inflight[request_id] = (batch, timer)
        self.stats.forwarded += len(batch)
        if not self.node.transport.send_frame(leader, wire.LEASE_RENEW, [request_id, [i for i, _ in batch]]):
            self._give_up(request_id)

    def _give_up(self, request_id: int) -> None:
        entry = self._inflight.pop(request_id, None)
        if entry is None:
            return
        self.stats.forward_timeouts += len(entry[0])
        entry[1].cancel()
        for _lease_id, future in entry[0]:
            if not future.done():
                future.set_result(None)

    # -- the API --------------------------------------------------------------------------
    async def renew(self, lease_id: int) -> LeaseRenewResult:
        """Renew ``lease_id`` at the primary; ``ttl`` 0 when the lease does not exist."""
        started = time.monotonic()
        try:
            return await self._renew(lease_id, started + RENEW_TIMEOUT_S)
        finally:
            self.stats.renews += 1
            self.stats.renew_seconds += time.monotonic() - started

    async def _renew(self, lease_id: int, deadline: float) -> LeaseRenewResult:
        driver = self.node.driver
        while True:
            ttls = await self.renew_durably([lease_id]) if self._leads() else None
            if ttls is not None:
                self.stats.renewed_here += 1
                return LeaseRenewResult(lease_id, ttls[0], self.node.state.store.rev)
            leader = driver.leader
            if leader not in (NONE, driver.member_id):
                answer = await self._forward(leader, lease_id)
                if answer is not None:
                    return LeaseRenewResult(lease_id, answer[0], answer[1])
            left = deadline - time.monotonic()
            if left <= 0:
                reason = "request timed out" if driver.leader != NONE else "no leader"
                raise Unavailable(f"etcdserver: {reason}")
            self.stats.retries += 1
            await self._wait_change(min(left, RETRY_S))

    def poke(self) -> None:
        """Wake the waiting keepalives if the leader or this lessor's role changed; fail
        the renewals waiting for a checkpoint once this lessor is no longer primary."""
        if self._awaiting and not self.lessor.primary:
            self._fail_awaiting()
        state = (self.node.driver.leader, self.lessor.primary)
        if state == self._state:
            return
        self._state = state
        future, self._changed = self._changed, None
        if future is not None and not future.done():
            future.set_result(None)

    async def _wait_change(self, timeout_s: float) -> None:
        if self._changed is None:
            self._changed = asyncio.get_running_loop().create_future()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await asyncio.shield(self._changed)

    def close(self) -> None:
        self._fail_awaiting()
        for task in self._serving:
            task.cancel()
        if self._changed is not None and not self._changed.done():
            self._changed.set_result(None)
        for request_id in list(self._inflight):
            self._give_up(request_id)
        for batch in self._pending.values():
            for _lease_id, future in batch:
                if not future.done():
                    future.set_result(None)
        self._pending.clear()

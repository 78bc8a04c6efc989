"""What locks and elections share, built the way etcd's ``concurrency`` package builds them.

A participant owns the key ``<name>/<lease hex>``, created (if absent) under its lease in
one txn; its place in line is that key's create revision. It goes first once every key
under ``<name>/`` created before it is gone (``wait_predecessors``: watch the newest older
key for its DELETE, repeat). When a holder's lease ends its key is deleted and the next
waiter proceeds. After waiting, the participant checks its own key still exists (its
lease may have ended meanwhile; etcd fixed that check after Jepsen's report).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

from kvraft.aio import cancel_and_wait
from kvraft.apply.errors import EtcdError, NotFound, Unknown
from kvraft.apply.ops import CREATE, EQUAL, Compare, DeleteRangeOp, PutOp, RangeOp, TxnOp
from kvraft.watch import NO_PUT, WatchCreate

__all__ = ["ClientGone", "Participant", "client_errors", "prefix_end", "session_lease", "until_disconnect"]

SORT_ASCEND, SORT_DESCEND = 1, 2
SORT_BY_CREATE = 2
SESSION_TTL_S = 60  # etcd's concurrency.NewSession default
DISCONNECT_CHECK_S = 0.5


@contextlib.contextmanager
def client_errors() -> Iterator[None]:
    """etcd 3.4's v3lock and v3election servers do their work through an in-process client,
    whose errors reach the gateway without their gRPC status: every failure after decoding
    (a missing key or leader field, an unknown lease, 'election: no leader', a permission)
    is Unknown (code 2, HTTP 500) with the same message. Decoding errors stay code 3."""
    try:
        yield
    except EtcdError as exc:
        if exc.code == Unknown.code:
            raise
        raise Unknown(exc.message) from None


class ClientGone(Exception):
    """The client of a blocking lock or campaign went away before it was answered."""


async def session_lease(features: Any, lease: int) -> int:
    """The lease a lock or campaign runs under. etcd's v3lock and v3election open an orphaned
    session: a request without a lease gets a new one of 60 s that nobody keeps alive, so a
    lock taken without a lease ends by itself (kvraft used lease 0: a key that never went)."""
    if lease:
        return lease
    result = await features.grant(0, SESSION_TTL_S)
    return int(result.id)


async def until_disconnect(request: Any, waiting: Any) -> Any:
    """Await ``waiting`` (a participant's ``wait_turn``); if the client goes away first,
    cancel it, so the participant withdraws its key as etcd's do when their context is
    cancelled, and raise ``ClientGone``. (aiohttp does not cancel a handler whose client
    left: without this a waiter that timed out stayed in line and then held the lock.)"""
    task = asyncio.ensure_future(waiting)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_CHECK_S)
            if done:
                return task.result()
            transport = request.transport
            if transport is None or transport.is_closing():
                await cancel_and_wait(task)
                raise ClientGone()
    except asyncio.CancelledError:
        await cancel_and_wait(task)
        raise


def prefix_end(prefix: bytes) -> bytes:
    for i in range(len(prefix) - 1, -1, -1):
        if prefix[i] < 0xFF:
            return prefix[:i] + bytes([prefix[i] + 1])
    return b"\0"


class Participant:
    """One lock holder / election candidate: ``node`` is the member (writes go through
    Raft with the caller attached), ``hub`` its watch hub."""

    def __init__(self, node: Any, hub: Any, name: bytes, lease: int) -> None:
        self.node = node
        self.hub = hub
        self.prefix = name + b"/"
        self.key = self.prefix + f"{lease:x}".encode()
        self.lease = lease
        self.rev = 0
        self.value = b""

    async def enter(self, value: bytes = b"") -> int:
        """Create (or find) our key; returns the header revision."""
        txn = TxnOp(
            compare=[Compare(EQUAL, CREATE, self.key, create_revision=0)],
            success=[PutOp(self.key, value, self.lease)],
            failure=[RangeOp(self.key)],
        )
        result = await self.node.txn(txn)
        if result.succeeded:
            self.rev = result.revision
            self.value = value
        else:
            kv = result.responses[0].kvs[0]
            self.rev = kv.create_revision
            self.value = kv.value
        revision: int = result.revision  # the txn's TxnResult
        return revision

    async def wait_turn(self) -> None:
        """Block until every older participant's key is deleted; on cancellation (client
        went away) withdraw our key, as etcd's Mutex does."""
        try:
            await self._wait_predecessors()
        except asyncio.CancelledError:
            await asyncio.shield(self._withdraw())
            raise
        current = await self.node.range(RangeOp(self.key))
        if not current.kvs or current.kvs[0].create_revision != self.rev:
            raise NotFound("etcdserver: requested lease not found")

    async def _withdraw(self) -> None:
        with contextlib.suppress(EtcdError):
            await self.node.delete_range(DeleteRangeOp(self.key))

    async def _wait_predecessors(self) -> None:
        # Local (serializable) reads suffice here: keys older than ours can only go away,
        # and a DELETE seen by the watch is applied locally. The final ownership check in
        # ``wait_turn`` stays linearizable.
        while True:
            older = await self.node.range(RangeOp(
                self.prefix, prefix_end(self.prefix), limit=1, sort_order=SORT_DESCEND,
                sort_target=SORT_BY_CREATE, max_create_revision=self.rev - 1, serializable=True,
            ))
            if not older.kvs:
                return
            await wait_deleted(self.hub, older.kvs[0].key, older.revision + 1)


async def wait_deleted(hub: Any, key: bytes, from_revision: int) -> None:
    """Return once ``key`` is deleted at or after ``from_revision`` (or its watch was
    cancelled by compaction: the caller re-checks)."""
    stream = hub.open()
    try:
        stream.create(WatchCreate(key, start_revision=from_revision, filters=(NO_PUT,)))
        while True:
            response = await stream.recv()
            if response is None or response.canceled or response.events:
                return
    finally:
        stream.close()

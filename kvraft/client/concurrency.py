"""Distributed lock and leader election, by etcd's ``clientv3/concurrency`` recipe.

Both are built from KV, watch and a kept-alive lease, and use etcd's key layout
(``<name>/<lease id in hex>``), so a ``kvraft.client`` lock and an ``etcdctl lock`` on
the same name exclude each other. Waiters queue by create revision: each waits for the
deletion of the key created just before its own, so there is no thundering herd.

As with etcd, a lock is only as safe as its lease: if the lease is lost (``Lease.lost``)
the lock is gone, and a holder paused for longer than the TTL can overlap with the next
holder (Jepsen, etcd 3.4.3). Guard writes with the lock key's revision when it matters.

Example::

    async with client.lock("locks/scheduler", ttl=10) as mutex:
        ...  # mutex.key is held; mutex.lease.lost fires if it is lost
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from kvraft.client.errors import ClientError
from kvraft.client.kv import Compare, Key, Op, prefix_range_end, to_bytes
from kvraft.client.lease import Lease
from kvraft.client.types import GetResponse, KeyValue

__all__ = ["ConcurrencyMixin", "Election", "Mutex"]


async def _wait_deletes(client: Any, prefix: bytes, max_create_revision: int) -> None:
    """Wait until no key under ``prefix`` has create revision <= ``max_create_revision``."""
    while True:
        response = await client.get(
            prefix, range_end=prefix_range_end(prefix), max_create_revision=max_create_revision,
            sort_target="CREATE", sort_order="DESCEND", limit=1,
        )
        if not response.kvs:
            return
        last = response.kvs[0]
        async with client.watch(last.key, start_revision=response.header.revision + 1) as watcher:
            async for event_batch in watcher:
                if any(e.type == "DELETE" for e in event_batch.events):
                    break


async def _create_own_key(client: Any, key: bytes, value: bytes, lease: Lease) -> tuple[int, bytes]:
    """Put ``key`` unless it exists; returns (its create revision, its value)."""
    response = await (
        client.txn()
        .if_(Compare.create(key, "=", 0))
        .then(Op.put(key, value, lease=lease.id))
        .else_(Op.get(key))
        .commit()
    )
    if response.succeeded:
        return response.header.revision, value
    existing = response.responses[0]
    assert isinstance(existing, GetResponse) and existing.kvs
    return existing.kvs[0].create_revision, existing.kvs[0].value


class _OwnKey:
    """What a lock and a campaign share: the key ``<name>/<lease id in hex>`` under a lease
    (the caller's, or one of ``ttl`` seconds owned here), created once, and its turn after
    every key under ``name`` created before it."""

    def __init__(self, client: Any, name: Key, *, ttl: int = 60, lease: Lease | None = None) -> None:
        self._client = client
        self.prefix = to_bytes(name) + b"/"
        self._own_lease = lease is None
        self.lease = lease or client.lease(ttl)
        self.key = b""
        self.revision = 0

    async def _create(self, value: bytes) -> bytes:
        """Create the key with ``value`` unless it exists (granting the lease first if
        needed); sets ``key`` and ``revision``, returns the value it holds."""
        if not self.lease.id:
            await self.lease.grant()
        self.key = self.prefix + f"{self.lease.id:x}".encode()
        self.revision, current = await _create_own_key(self._client, self.key, value, self.lease)
        return current

    async def _wait_turn(self) -> None:
        """Until every key created before ours is deleted."""
        await _wait_deletes(self._client, self.prefix, self.revision - 1)

    async def _give_up(self) -> None:
        """Delete the key, and revoke the lease if it is ours."""
        if self.key:
            await self._client.delete(self.key)
            self.key = b""
        if self._own_lease:
            await self.lease.close(revoke=True)

    async def _first(self) -> GetResponse:
        """The oldest key under the name (at most one kv)."""
        response: GetResponse = await self._client.get(
            self.prefix, range_end=prefix_range_end(self.prefix), sort_target="CREATE",
            sort_order="ASCEND", limit=1,
        )
        return response


class Mutex(_OwnKey):
    async def acquire(self) -> Mutex:
        """Block until the lock is held. ``self.key`` is the held key."""
        await self._create(b"")
        try:
            await self._wait_turn()
        except BaseException:
            await self._client.delete(self.key)
            raise
        if self.lease.lost.is_set():
            raise ClientError("lock lost its lease while waiting")
        return self

    async def release(self) -> None:
        await self._give_up()

    async def __aenter__(self) -> Mutex:
        return await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        await self.release()


class Election(_OwnKey):
    """Campaign for leadership of ``name``; observe who leads."""

    async def campaign(self, value: Key) -> None:
        """Block until elected; then ``self.key`` holds ``value``."""
        current = await self._create(to_bytes(value))
        if current != to_bytes(value):
            await self.proclaim(value)
        try:
            await self._wait_turn()
        except BaseException:
            await self.resign()
            raise

    async def proclaim(self, value: Key) -> None:
        """Change the leader's value without an election (only while leader)."""
        response = await (
            self._client.txn()
            .if_(Compare.create(self.key, "=", self.revision))
            .then(Op.put(self.key, value, lease=self.lease.id))
            .commit()
        )
        if not response.succeeded:
            raise ClientError("election: not leader")

    async def resign(self) -> None:
        await self._give_up()

    async def leader(self) -> KeyValue | None:
        """The current leader's key-value, or ``None`` when nobody leads."""
        response = await self._first()
        return response.kvs[0] if response.kvs else None

    async def observe(self) -> AsyncIterator[GetResponse]:
        """Yield a ``GetResponse`` (one kv: the leader) each time leadership or its value changes."""
        client = self._client
        while True:
            response = await self._first()
            if not response.kvs:
                async with client.watch(self.prefix, prefix=True,
                                        start_revision=response.header.revision + 1) as watcher:
                    async for batch in watcher:
                        if any(e.type == "PUT" for e in batch.events):
                            break
                continue
            leader = response.kvs[0]
            yield GetResponse(response.header, (leader,), False, 1)
            async with client.watch(leader.key, start_revision=response.header.revision + 1) as watcher:
                async for batch in watcher:
                    deleted = False
                    for event in batch.events:
                        if event.type == "DELETE":
                            deleted = True
                            break
                        yield GetResponse(batch.header, (event.kv,), False, 1)
                    if deleted:
                        break


class ConcurrencyMixin:
    def lock(self, name: Key, *, ttl: int = 60, lease: Lease | None = None) -> Mutex:
        """A ``Mutex`` on ``name`` (use ``async with``)."""
        return Mutex(self, name, ttl=ttl, lease=lease)

    def election(self, name: Key, *, ttl: int = 60, lease: Lease | None = None) -> Election:
        return Election(self, name, ttl=ttl, lease=lease)

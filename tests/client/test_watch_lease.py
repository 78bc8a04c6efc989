"""Watch, leases, lock and election on the shared single-member cluster of each runtime."""

from __future__ import annotations

import asyncio

import pytest
from kvclusters import Runtime, require

from kvraft.client import Client, LeaseLostError, WatchCompactedError, WatchResponse


async def _collect(watcher, count: int) -> list:  # type: ignore[no-untyped-def]
    events = []
    async for response in watcher:
        assert isinstance(response, WatchResponse)
        events.extend(response.events)
        if len(events) >= count:
            return events
    raise AssertionError("watch ended early")


async def test_watch_prefix_with_prev_kv(request, runtime: Runtime, client: Client, prefix: str) -> None:  # type: ignore[no-untyped-def]
    require(request, runtime, "watch")
    start = await client.put(prefix + "seed", b"0")
    async with client.watch(prefix, prefix=True, prev_kv=True, start_revision=start.header.revision + 1) as watcher:
        await client.put(prefix + "a", b"1")
        await client.put(prefix + "a", b"2")
        await client.delete(prefix + "a")
        events = await asyncio.wait_for(_collect(watcher, 3), 30)
    assert [e.type for e in events] == ["PUT", "PUT", "DELETE"]
    assert events[1].prev_kv is not None and events[1].prev_kv.value == b"1"
    assert events[2].kv.key == (prefix + "a").encode() and events[2].prev_kv.value == b"2"
    revisions = [e.kv.mod_revision for e in events]
    assert revisions == sorted(revisions) and len(set(revisions)) == 3


async def test_watch_from_now_sees_only_later_events(request, runtime: Runtime, client: Client, prefix: str) -> None:  # type: ignore[no-untyped-def]
    require(request, runtime, "watch")
    await client.put(prefix + "k", b"before")
    watcher = client.watch(prefix + "k")
    iterator = watcher.__aiter__()
    first = asyncio.ensure_future(iterator.__anext__())
    while watcher.next_revision == 0 and not first.done():  # created: it knows where "now" is
        await asyncio.sleep(0.05)
    await client.put(prefix + "k", b"after")
    response = await asyncio.wait_for(first, 30)
    await watcher.close()
    assert [e.kv.value for e in response.events] == [b"after"]


async def test_watch_on_compacted_revision_raises(request, runtime: Runtime, client: Client, prefix: str) -> None:  # type: ignore[no-untyped-def]
    require(request, runtime, "watch")
    old = await client.put(prefix + "k", b"1")
    now = await client.put(prefix + "k", b"2")
    await client.compact(now.header.revision, physical=True)
    with pytest.raises(WatchCompactedError) as info:
        async with client.watch(prefix + "k", start_revision=old.header.revision) as watcher:
            await asyncio.wait_for(_collect(watcher, 1), 30)
    assert info.value.compact_revision >= now.header.revision
    assert info.value.start_revision == old.header.revision


async def test_lease_grant_ttl_keys_and_revoke_deletes_keys(request, runtime: Runtime, client: Client, prefix: str) -> None:  # type: ignore[no-untyped-def]
    require(request, runtime, "lease")
    grant = await client.lease_grant(60)
    assert grant.ttl == 60 and grant.id != 0
    await client.put(prefix + "l1", b"x", lease=grant.id)
    ttl = await client.lease_time_to_live(grant.id, keys=True)
    assert ttl.granted_ttl == 60 and 0 < ttl.ttl <= 60 and ttl.keys == ((prefix + "l1").encode(),)
    assert grant.id in (await client.lease_leases()).leases
    kept = await client.lease_keep_alive_once(grant.id)
    assert kept.ttl == 60
    await client.lease_revoke(grant.id)
    assert (await client.get(prefix + "l1")).count == 0
    gone = await client.lease_time_to_live(grant.id)
    assert gone.ttl == -1
    assert (await client.lease_keep_alive_once(grant.id)).ttl == 0


async def test_lease_handle_keeps_alive_then_reports_loss(request, runtime: Runtime, client: Client, prefix: str) -> None:  # type: ignore[no-untyped-def]
    require(request, runtime, "lease")
    lost: list[LeaseLostError] = []
    async with client.lease(2, on_lost=lost.append) as lease:
        await client.put(prefix + "alive", b"1", lease=lease.id)
        while lease.keepalives < 4:  # more than a TTL of renewals: the key must survive
            await asyncio.sleep(0.2)
        assert (await client.get(prefix + "alive")).count == 1
        await client.lease_revoke(lease.id)  # someone else revokes it
        with pytest.raises(LeaseLostError):
            await asyncio.wait_for(lease.wait_lost(), 30)
    assert lost and lost[0].lease_id == lease.id


async def test_lock_excludes_and_hands_over(request, runtime: Runtime, client: Client, prefix: str) -> None:  # type: ignore[no-untyped-def]
    require(request, runtime, "lease")
    order: list[str] = []
    first = client.lock(prefix + "lock", ttl=10)
    await first.acquire()
    order.append("first-acquired")

    async def second_holder() -> None:
        async with client.lock(prefix + "lock", ttl=10) as second:
            order.append("second-acquired")
            assert second.key != first.key

    task = asyncio.ensure_future(second_holder())
    await asyncio.sleep(0.5)
    assert not task.done()  # still waiting while the first holds the lock
    order.append("first-released")
    await first.release()
    await asyncio.wait_for(task, 30)
    assert order == ["first-acquired", "first-released", "second-acquired"]


async def test_election_campaign_leader_observe_resign(request, runtime: Runtime, client: Client, prefix: str) -> None:  # type: ignore[no-untyped-def]
    require(request, runtime, "lease")
    alice = client.election(prefix + "elect", ttl=10)
    await alice.campaign(b"alice")
    leader = await alice.leader()
    assert leader is not None and leader.value == b"alice"
    bob = client.election(prefix + "elect", ttl=10)
    bob_task = asyncio.ensure_future(bob.campaign(b"bob"))
    observed = []

    async def observe() -> None:
        async for resp in alice.observe():
            observed.append(resp.kvs[0].value)
            if resp.kvs[0].value == b"bob":
                return

    observer = asyncio.ensure_future(observe())
    await alice.proclaim(b"alice-2")
    await asyncio.sleep(0.2)
    assert not bob_task.done()
    await alice.resign()
    await asyncio.wait_for(bob_task, 30)
    await asyncio.wait_for(observer, 30)
    assert observed[-1] == b"bob" and b"alice" in observed[0]
    await bob.resign()

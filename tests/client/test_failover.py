"""The member the client talks to is killed mid-watch and mid-keepalive (3-member
clusters, etcd and kvraft). Nothing is timed: the assertions are about which events
arrive and whether the lease survives."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from kvclusters import RUNTIMES, Runtime, start_runtime

from kvraft.client import Client, EndpointError, Op


@pytest.fixture(scope="module", params=RUNTIMES)
def cluster3_shared(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    rt = start_runtime(request.param, tmp_path_factory.mktemp("cluster3"), size=3)
    yield rt
    rt.stop()


@pytest.fixture
def cluster3(cluster3_shared: Runtime) -> Iterator[Runtime]:
    """The shared 3-member cluster, healed after each test (killed members restarted)."""
    yield cluster3_shared
    for name, member in cluster3_shared.cluster.members.items():
        if not member.alive():
            cluster3_shared.restart(name)
    cluster3_shared.cluster.wait_ready(90)


def _follower_first(rt: Runtime) -> tuple[str, list[str], list[str]]:
    """(a follower's name, endpoints starting with it, the other members' endpoints)."""
    leader = rt.leader()
    victim = next(name for name in rt.cluster.members if name != leader)
    first = rt.cluster.url(victim)
    others = [rt.cluster.url(n) for n in rt.cluster.members if n != victim]
    return victim, [first, *others], others


async def test_watch_and_keepalive_survive_killing_their_member(cluster3: Runtime) -> None:
    """One follower serves both a watch stream and a lease's keepalives; it is killed."""
    victim, endpoints, others = _follower_first(cluster3)
    async with Client(endpoints[:1], request_timeout_s=20) as client, Client(others, request_timeout_s=20) as writer:
        assert sorted(await client.sync_endpoints()) == sorted(endpoints)  # learn the other members
        assert client.endpoint == endpoints[0]
        start = await writer.put("w/seed", b"0")
        watcher = client.watch("w/", prefix=True, start_revision=start.header.revision + 1)
        iterator = watcher.__aiter__()
        seen: list[tuple[bytes, int]] = []
        async with client.lease(3, revoke_on_exit=False) as lease:
            await client.put("l/key", b"held", lease=lease.id)
            await writer.put("w/k", b"1")
            while not seen:
                response = await asyncio.wait_for(iterator.__anext__(), 30)
                seen.extend((e.kv.value, e.kv.mod_revision) for e in response.events)
            assert client.endpoint == endpoints[0]

            cluster3.kill(victim)  # mid-watch and mid-keepalive
            for value in (b"2", b"3", b"4"):
                await writer.put("w/k", value)
            while len(seen) < 4:
                response = await asyncio.wait_for(iterator.__anext__(), 60)
                seen.extend((e.kv.value, e.kv.mod_revision) for e in response.events)
            before = lease.keepalives
            while lease.keepalives < before + 4 and not lease.lost.is_set():  # > one TTL of renewals
                await asyncio.sleep(0.3)
            assert not lease.lost.is_set(), lease.error
            assert (await writer.lease_time_to_live(lease.id)).ttl > 0
            assert (await writer.get("l/key")).kvs[0].value == b"held"
            await writer.lease_revoke(lease.id)
        await watcher.close()
    assert [value for value, _ in seen] == [b"1", b"2", b"3", b"4"]
    revisions = [rev for _, rev in seen]
    assert revisions == sorted(set(revisions))  # no repeats, in order
    assert watcher.reconnects >= 1
    assert client.endpoint != endpoints[0]


async def test_after_a_kill_reads_fail_over_and_a_lost_write_is_never_replayed(cluster3: Runtime) -> None:
    victim, endpoints, others = _follower_first(cluster3)
    async with Client(endpoints, request_timeout_s=20) as client, Client(others) as checker:
        await client.put("u/k", b"v")
        await client.put("r/k", b"v")
        cluster3.kill(victim)
        try:
            await client.do(Op.put("u/k", b"v2"))
            outcome = "applied"
        except EndpointError as exc:  # the pooled connection died under the request
            assert "may have been applied" in str(exc)
            outcome = "unknown"
        assert client.endpoint != endpoints[0]  # either way the next request goes elsewhere
        current = (await checker.get("u/k")).kvs[0]
        assert current.value == b"v2" if outcome == "applied" else current.value in (b"v", b"v2")
        assert current.version <= 2  # never written twice
        # a read is safe to retry: it reaches a live member whatever happened to its socket
        assert (await client.get("r/k")).kvs[0].value == b"v"
        await client.put("r/k", b"v2")
        assert (await checker.get("r/k")).kvs[0].value == b"v2"


async def test_auto_sync_takes_the_members_client_urls(cluster3: Runtime) -> None:
    """clientv3's ``AutoSyncInterval``: a client given one member finds the other two."""
    first = cluster3.cluster.url(next(iter(cluster3.cluster.members)))
    async with Client([first], auto_sync_interval_s=0.2, request_timeout_s=10) as client:
        for _ in range(100):
            if len(client.endpoints) == 3:
                break
            await asyncio.sleep(0.1)
        assert sorted(client.endpoints) == sorted(cluster3.endpoints)
        assert client.endpoint == first  # (the one in use stays first)

"""The client retries a write whose answer was lost when the members take request ids, and
the cluster applies it once (kvraft.apply.sessions). The answers are lost by a proxy in
front of one member: it passes the write on, lets the member apply it, then drops the
connection instead of answering."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from kvraft.client import Client, Compare, EndpointError, Op
from kvraft.server.local import LocalCluster
from tests.server.conftest import FAST_FLAGS, start_cluster

pytestmark = pytest.mark.asyncio


class LosingProxy:
    """Forwards every request to ``upstream``; the answers to the first ``lose`` writes are
    dropped after the member answered them. ``hide_ids`` strips ``kvraft_features`` from
    ``/version`` (the member then looks like an older kvraft)."""

    def __init__(self, upstream: str, lose: int, hide_ids: bool = False) -> None:
        self.upstream = upstream
        self.lose = lose
        self.hide_ids = hide_ids
        self.writes_seen: list[str | None] = []  # the Kvraft-Request-Id of each write
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with aiohttp.ClientSession() as session, session.request(
            request.method, self.upstream + request.path_qs, data=body, headers=headers
        ) as upstream:
            payload = await upstream.read()
            status, ctype = upstream.status, upstream.headers.get("Content-Type", "application/json")
        if request.path == "/version" and self.hide_ids:
            doc = json.loads(payload)
            doc.pop("kvraft_features", None)
            payload = json.dumps(doc).encode()
        if request.path in ("/v3/kv/put", "/v3/kv/txn", "/v3/kv/deleterange", "/v3/lease/grant",
                            "/v3/kv/lease/revoke", "/v3/kv/compaction") or request.path.startswith("/v3/auth/user/") \
                and request.path not in ("/v3/auth/user/get", "/v3/auth/user/list") \
                or request.path.startswith("/v3/auth/role/") and request.path not in ("/v3/auth/role/get", "/v3/auth/role/list"):
            self.writes_seen.append(request.headers.get("Kvraft-Request-Id"))
            if self.lose > 0:
                self.lose -= 1
                assert request.transport is not None
                request.transport.close()  # applied, and the answer never arrives
                return web.Response(status=200)
        return web.Response(body=payload, status=status, headers={"Content-Type": ctype})


@pytest.fixture
def cluster(tmp_path: Path):  # type: ignore[no-untyped-def]
    cluster = start_cluster(tmp_path, size=3, extra=FAST_FLAGS)
    try:
        cluster.wait_ready(60)
        yield cluster
    finally:
        cluster.stop()


async def _proxied(cluster: LocalCluster, lose: int, hide_ids: bool = False,
                   alone: bool = False) -> AsyncIterator[tuple[LosingProxy, Client]]:
    """A client whose first endpoint is the proxy (``alone``: its only one)."""
    names = list(cluster.members)
    proxy = LosingProxy(cluster.url(names[0]), lose, hide_ids)
    await proxy.start()
    others = [] if alone else [cluster.url(n) for n in names[1:]]
    client = Client([proxy.url, *others], request_timeout_s=20)
    try:
        await client.open()
        yield proxy, client
    finally:
        await client.close()
        await proxy.stop()


async def _versions(cluster: LocalCluster, key: str) -> list[tuple[bytes, int]]:
    """Each member's own (value, version) of ``key``, once it has applied a later write."""
    async with Client([cluster.url(n) for n in cluster.members]) as client:
        fence = (await client.put("fence", "f")).header.revision
    out = []
    for name in cluster.members:
        async with Client([cluster.url(name)]) as member:
            for _ in range(100):
                got = await member.get(key, serializable=True)
                if got.header.revision >= fence:
                    break
                await asyncio.sleep(0.1)
            (kv,) = got.kvs
            out.append((kv.value, kv.version))
    return out


async def test_a_put_whose_answer_was_lost_is_retried_and_applied_once(cluster: LocalCluster) -> None:
    async for proxy, client in _proxied(cluster, lose=1):
        answer = await client.put("k", "v", prev_kv=True)
        assert answer.prev_kv is None
        assert len(proxy.writes_seen) == 1 and proxy.writes_seen[0] is not None  # numbered
        assert client.statistics().requests >= 1
        # the retry went to another member, which answered the first copy's revision
        got = await client.get("k")
        assert got.kvs[0].mod_revision == answer.header.revision
    assert await _versions(cluster, "k") == [(b"v", 1)] * 3


async def test_a_compare_and_swap_whose_answer_was_lost_reports_its_success(cluster: LocalCluster) -> None:
    async for _proxy, client in _proxied(cluster, lose=1):
        start = await client.put("counter", "0")
        response = await (client.txn().if_(Compare.mod("counter", "=", start.header.revision))
                          .then(Op.put("counter", "1")).commit())
        assert response.succeeded  # a plain retry's compare would have failed
    assert await _versions(cluster, "counter") == [(b"1", 2)] * 3


async def test_without_request_ids_a_lost_answer_is_not_retried(cluster: LocalCluster) -> None:
    """A member that does not list ``request-ids`` (an older kvraft, etcd) gets the write
    plain, and a lost answer is the caller's to handle, as before."""
    async for proxy, client in _proxied(cluster, lose=1, hide_ids=True, alone=True):
        with pytest.raises(EndpointError, match="may have been applied"):
            await client.put("plain", "v")
        assert proxy.writes_seen == [None]
    assert await _versions(cluster, "plain") == [(b"v", 1)] * 3


async def test_concurrent_writes_carry_the_lowest_unanswered_seq(cluster: LocalCluster) -> None:
    async for proxy, client in _proxied(cluster, lose=0):
        await asyncio.gather(*(client.put(f"c{i}", str(i)) for i in range(20)))
        await client.put("last", "x")
        ids = [w for w in proxy.writes_seen if w is not None]
        assert len(ids) == 21
        clients = {w.split(":")[0] for w in ids}
        assert len(clients) == 1
        seqs = [int(w.split(":")[1]) for w in ids]
        firsts = [int(w.split(":")[2]) for w in ids]
        assert sorted(seqs) == list(range(1, 22))
        assert all(f <= s for f, s in zip(firsts, seqs, strict=True))
        assert firsts[-1] == 21  # every earlier write answered: the table may drop them


async def test_a_lease_grant_whose_answer_was_lost_makes_one_lease(cluster: LocalCluster) -> None:
    """Without the number, the retry through another member would grant a second lease (each
    member picks the ID of a grant that names none)."""
    async for proxy, client in _proxied(cluster, lose=1):
        granted = await client.lease_grant(30)
        assert proxy.writes_seen[0] is not None
        leases = await client.lease_leases()
        assert list(leases.leases) == [granted.id], leases


async def test_a_lease_revoke_whose_answer_was_lost_reports_success(cluster: LocalCluster) -> None:
    """Without the number, the retry would answer "requested lease not found": the first copy
    had revoked it."""
    async for proxy, client in _proxied(cluster, lose=0):
        granted = await client.lease_grant(30)
        await client.put("leased", "v", lease=granted.id)
        proxy.lose = 1
        await client.lease_revoke(granted.id)  # answer lost, sent again, answered from the table
        assert len(proxy.writes_seen) == 3 and proxy.writes_seen[2] is not None
        assert (await client.get("leased")).kvs == ()
        assert list((await client.lease_leases()).leases) == []


async def test_user_and_role_changes_whose_answers_were_lost_are_applied_once(cluster: LocalCluster) -> None:
    """Without the number, each retry would answer the first copy's change as an error: "user
    name already exists", "role name already exists", "user not found"."""
    changes: list[Callable[[Client], Awaitable[object]]] = [
        lambda c: c.user_add("alice", "pw"), lambda c: c.role_add("readers"),
        lambda c: c.role_grant_permission("readers", "READ", "app/", "app0"),
        lambda c: c.user_grant_role("alice", "readers"), lambda c: c.user_delete("alice")]
    for change in changes:
        async for proxy, client in _proxied(cluster, lose=1):
            await change(client)  # answer lost, sent again through another member, answered from the table
            assert len(proxy.writes_seen) == 1 and proxy.writes_seen[0] is not None, proxy.writes_seen
    async with Client([cluster.url(n) for n in cluster.members]) as client:
        assert (await client.user_list()).users == ()
        assert [p.key for p in (await client.role_get("readers")).perm] == [b"app/"]


async def test_a_compaction_whose_answer_was_lost_reports_success(cluster: LocalCluster) -> None:
    """Without the number, the retry would answer "required revision has been compacted"."""
    async for proxy, client in _proxied(cluster, lose=0):
        revision = (await client.put("before", "v")).header.revision
        await client.put("after", "w")
        proxy.lose = 1
        assert await client.compact(revision) >= revision
        assert proxy.writes_seen[-1] is not None


async def test_an_endpoint_that_said_no_is_asked_again_later(cluster: LocalCluster,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A member upgraded in place lists ``request-ids`` after its restart: a long-lived client
    (a scheduler, an agent) asks again after RECHECK_S instead of writing plain for ever."""
    from kvraft.client import _transport

    async for proxy, client in _proxied(cluster, lose=0, hide_ids=True, alone=True):
        await client.put("u", "1")
        proxy.hide_ids = False  # "upgraded"
        await client.put("u", "2")
        assert proxy.writes_seen == [None, None]  # the no is still believed
        monkeypatch.setattr(_transport, "RECHECK_S", 0.0)
        await client.put("u", "3")
        assert proxy.writes_seen[2] is not None

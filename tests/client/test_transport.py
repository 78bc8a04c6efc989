"""Transport behaviour against scripted fake servers: failover, which requests are retried,
jittered backoff, token refresh, encoding detection, stream framing. No cluster needed."""

from __future__ import annotations

import asyncio
import base64
import json
import random
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgpack
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from kvraft.client import (
    Client,
    EndpointError,
    RetryPolicy,
    ServerError,
    UnauthenticatedError,
    UnavailableError,
)
from kvraft.client._codec import JSON_CODEC, MSGPACK_CODEC

HEADER = {"cluster_id": "1", "member_id": "2", "revision": "5", "raft_term": "3"}
FAST = RetryPolicy(base_delay_s=0.001, max_delay_s=0.002, max_attempts=50)


def dead_endpoint() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"  # nothing listens once closed


class Fake:
    """A scripted member: ``routes[path]`` returns (status, body dict) per call."""

    def __init__(self, version: dict[str, Any] | None = None) -> None:
        self.version = version or {"etcdserver": "3.4.23", "etcdcluster": "3.4.0"}
        self.calls: list[tuple[str, dict[str, Any], str | None, str]] = []
        self.routes: dict[str, Callable[[dict[str, Any]], tuple[int, Any]]] = {}

    def app(self) -> web.Application:
        app = web.Application()

        async def version(_request: web.Request) -> web.Response:
            return web.json_response(self.version)

        async def gateway(request: web.Request) -> web.StreamResponse:
            path = request.path[len("/v3") :]
            raw = await request.read()
            packed = request.content_type == "application/x-msgpack"
            body = msgpack.unpackb(raw) if packed else json.loads(raw or b"{}")
            self.calls.append((path, body, request.headers.get("Authorization"), request.content_type))
            status, doc = self.routes[path](body)
            if status == "stream":
                response = web.StreamResponse(headers={"Content-Type": "application/json"})
                await response.prepare(request)
                for message in doc:
                    await response.write(json.dumps({"result": message}).encode() + b"\n")
                return response
            if status == "drop":
                assert request.transport is not None
                request.transport.close()  # the answer is lost after the request arrived
                raise ConnectionResetError
            if packed:
                return web.Response(status=status, body=msgpack.packb(doc), content_type="application/x-msgpack")
            return web.json_response(doc, status=status)

        app.router.add_get("/version", version)
        app.router.add_post("/v3/{tail:.*}", gateway)
        return app


@pytest.fixture
async def fake() -> AsyncIterator[tuple[Fake, str]]:
    member = Fake()
    server = TestServer(member.app(), host="127.0.0.1")
    await server.start_server()
    yield member, str(server.make_url("")).rstrip("/")
    await server.close()


def ok_range(_body: dict[str, Any]) -> tuple[int, Any]:
    return 200, {"header": HEADER, "kvs": [{"key": "YQ==", "value": "MQ==", "mod_revision": "5"}], "count": "1"}


async def test_failover_skips_a_refused_endpoint_for_any_request(fake) -> None:  # type: ignore[no-untyped-def]
    member, url = fake
    member.routes["/kv/put"] = lambda _b: (200, {"header": HEADER})
    dead = dead_endpoint()
    async with Client([dead, url], retry=FAST) as client:
        assert client.endpoint == url
        client._transport._pinned = 0  # as if the dead member had been the pinned one
        await client.put("a", b"1")  # refused connect: never sent, so even a put moves on
        assert client.statistics().failovers == 1
    assert client.endpoint == url
    assert [c[0] for c in member.calls] == ["/kv/put"]


async def test_unavailable_is_retried_for_reads_only(fake) -> None:  # type: ignore[no-untyped-def]
    member, url = fake
    answers = iter([(503, {"error": "etcdserver: leader changed", "message": "etcdserver: leader changed", "code": 14})] * 2)
    member.routes["/kv/range"] = lambda b: next(answers, None) or ok_range(b)
    member.routes["/kv/put"] = lambda _b: (503, {"error": "etcdserver: no leader", "message": "etcdserver: no leader", "code": 14})
    async with Client([url], retry=FAST) as client:
        got = await client.get("a")
        assert got.kvs[0].value == b"1"
        assert sum(1 for c in member.calls if c[0] == "/kv/range") == 3
        stats = client.statistics()
        assert (stats.requests, stats.retries, stats.failovers) == (1, 2, 0)
        with pytest.raises(UnavailableError) as info:
            await client.put("a", b"2")
        assert info.value.message == "etcdserver: no leader"
    assert sum(1 for c in member.calls if c[0] == "/kv/put") == 1  # a write is not retried


async def test_lost_answer_retries_reads_elsewhere_but_never_writes(fake) -> None:  # type: ignore[no-untyped-def]
    member, url = fake
    other = Fake()
    other.routes["/kv/range"] = ok_range
    other.routes["/kv/put"] = lambda _b: (200, {"header": HEADER})
    server = TestServer(other.app(), host="127.0.0.1")
    await server.start_server()
    try:
        member.routes["/kv/range"] = lambda _b: ("drop", None)
        member.routes["/kv/put"] = lambda _b: ("drop", None)
        async with Client([url, str(server.make_url("")).rstrip("/")], retry=FAST) as client:
            assert (await client.get("a")).kvs[0].value == b"1"
            assert len(other.calls) == 1
            client._transport._pinned = 0
            with pytest.raises(EndpointError, match="may have been applied"):
                await client.put("a", b"2")
            assert [c[0] for c in other.calls] == ["/kv/range"]  # the put was not replayed
            assert client.endpoint != url  # but the next request goes to the other member
    finally:
        await server.close()


async def test_backoff_is_full_jitter_within_bounds() -> None:
    policy = RetryPolicy(base_delay_s=0.1, max_delay_s=0.5)
    rng = random.Random(7)
    delays = [policy.delay_s(n, rng) for n in range(10) for _ in range(20)]
    assert all(0.0 <= d <= 0.5 for d in delays)
    assert all(policy.delay_s(0, rng) <= 0.1 for _ in range(50))
    assert len({round(d, 6) for d in delays}) > 100  # jittered, not a fixed schedule
    again = random.Random(7)
    assert [policy.delay_s(n, again) for n in range(10) for _ in range(20)] == delays  # seeded: reproducible


async def test_every_endpoint_refused_is_an_endpoint_error() -> None:
    with pytest.raises(EndpointError, match="context deadline exceeded"):
        await Client([dead_endpoint(), dead_endpoint()], dial_timeout_s=0.5).open()


async def test_login_and_token_refresh_on_invalid_token(fake) -> None:  # type: ignore[no-untyped-def]
    member, url = fake
    tokens = iter(["tok1", "tok2"])
    member.routes["/auth/authenticate"] = lambda b: (
        (200, {"header": HEADER, "token": next(tokens)}) if b == {"name": "alice", "password": "pw"}
        else (400, {"error": "bad", "message": "etcdserver: authentication failed, invalid user ID or password", "code": 3})
    )
    seen_tokens: list[str | None] = []

    def guarded(_body: dict[str, Any]) -> tuple[int, Any]:
        token = member.calls[-1][2]
        seen_tokens.append(token)
        if token != "tok2":
            return 401, {"error": "etcdserver: invalid auth token", "message": "etcdserver: invalid auth token", "code": 16}
        return ok_range(_body)

    member.routes["/kv/range"] = guarded
    async with Client([url], user="alice", password="pw") as client:
        assert client.token == "tok1"
        await client.get("a")  # tok1 rejected (expired): log in again, retry once with tok2
        assert client.token == "tok2"
        assert client.statistics().logins == 2
    assert seen_tokens == ["tok1", "tok2"]
    with pytest.raises(ServerError, match="authentication failed"):
        await Client([url], user="alice", password="wrong").open()


async def test_rejected_token_without_credentials_surfaces(fake) -> None:  # type: ignore[no-untyped-def]
    member, url = fake
    member.routes["/kv/range"] = lambda _b: (401, {"error": "x", "message": "etcdserver: invalid auth token", "code": 16})
    async with Client([url]) as client:
        with pytest.raises(UnauthenticatedError):
            await client.get("a")


async def test_msgpack_when_the_server_says_kvraft_json_otherwise(fake) -> None:  # type: ignore[no-untyped-def]
    member, url = fake
    member.routes["/kv/range"] = lambda _b: (200, {"header": {"revision": 9}, "kvs": [{"key": b"k", "value": b"\xff"}], "count": 1})
    member.version = {"etcdserver": "3.4.0", "etcdcluster": "3.4.0", "kvraft": "0.1.0"}
    async with Client([url]) as client:
        got = await client.get(b"k")
    assert client.encoding == "msgpack" and member.calls[-1][3] == "application/x-msgpack"
    assert member.calls[-1][1] == {"key": b"k"} and got.kvs[0].value == b"\xff" and got.header.revision == 9
    member.version = {"etcdserver": "3.4.23", "etcdcluster": "3.4.0"}
    member.routes["/kv/range"] = ok_range
    async with Client([url]) as client:
        await client.get(b"k")
    assert client.encoding == "json" and member.calls[-1][1] == {"key": "aw=="}


def test_stream_decoders_accept_any_chunking() -> None:
    messages = [{"result": {"header": HEADER, "events": [{"kv": {"key": "YQ=="}}]}}, {"result": {"created": True}}]
    text = b"".join(json.dumps(m).encode() + b"\n" for m in messages)
    for size in (1, 2, 7, len(text)):
        decoder = JSON_CODEC.stream_decoder()
        out = []
        for i in range(0, len(text), size):
            out.extend(decoder.feed(text[i : i + size]))
        assert out == messages
    packed = b"".join(msgpack.packb(m) for m in messages)
    decoder = MSGPACK_CODEC.stream_decoder()
    out = []
    for i in range(0, len(packed), 3):
        out.extend(decoder.feed(packed[i : i + 3]))
    assert out == messages


async def test_watch_resumes_elsewhere_after_a_no_leader_cancel(fake) -> None:  # type: ignore[no-untyped-def]
    member, url = fake
    member.routes["/watch"] = lambda _b: ("stream", [
        {"header": HEADER, "created": True},
        {"header": HEADER, "events": [{"kv": {"key": "YQ==", "value": "MQ==", "mod_revision": "6"}}]},
        {"header": HEADER, "canceled": True, "cancel_reason": "etcdserver: no leader"},
    ])
    other = Fake()
    other.routes["/watch"] = lambda _b: ("stream", [
        {"header": HEADER, "created": True},
        {"header": HEADER, "events": [{"kv": {"key": "YQ==", "value": "Mg==", "mod_revision": "7"}}]},
    ])
    server = TestServer(other.app(), host="127.0.0.1")
    await server.start_server()
    try:
        async with Client([url, str(server.make_url("")).rstrip("/")], retry=FAST) as client:
            values = []
            async with client.watch("a", start_revision=6) as watcher:
                async for response in watcher:
                    values.extend(e.kv.value for e in response.events)
                    if len(values) == 2:
                        break
        assert values == [b"1", b"2"]
        assert other.calls[0][1] == {"create_request": {"key": "YQ==", "start_revision": 7}}  # resumed after 6
    finally:
        await server.close()


async def test_watch_joins_fragments_into_one_response(fake) -> None:  # type: ignore[no-untyped-def]
    member, url = fake
    events = [{"kv": {"key": "YQ==", "value": base64.b64encode(bytes([i])).decode(), "mod_revision": "9"}} for i in range(3)]
    member.routes["/watch"] = lambda _b: ("stream", [
        {"header": HEADER, "created": True},
        {"header": HEADER, "fragment": True, "events": events[:1]},
        {"header": HEADER, "fragment": True, "events": events[1:2]},
        {"header": HEADER, "events": events[2:]},
    ])
    async with Client([url]) as client, client.watch("a", start_revision=9) as watcher:
        async for response in watcher:
            assert [e.kv.value for e in response.events] == [b"\x00", b"\x01", b"\x02"]
            assert watcher.next_revision == 10
            break


async def test_an_endpoint_that_answers_version_with_no_object_is_skipped() -> None:
    """Something else on a member's old port (the cluster was stopped) answered /version with
    an empty body: the client raised TypeError ("argument of type 'NoneType' is not iterable")
    out of discovery instead of moving on to the next endpoint."""
    other = web.Application()

    async def empty(_request: web.Request) -> web.Response:
        return web.Response(body=b"")

    other.router.add_get("/version", empty)
    impostor = TestServer(other, host="127.0.0.1")
    await impostor.start_server()
    member = Fake()
    member.routes["/kv/range"] = ok_range
    real = TestServer(member.app(), host="127.0.0.1")
    await real.start_server()
    bad, good = (str(s.make_url("")).rstrip("/") for s in (impostor, real))
    try:
        async with Client([bad, good], retry=FAST) as client:
            assert client.endpoint == good and (await client.get("a")).count == 1
        with pytest.raises(EndpointError, match="/version answered null, not an etcd or kvraft member's version"):
            async with Client([bad], retry=FAST):
                pass
    finally:
        await impostor.close()
        await real.close()


async def test_open_when_reachable_waits_out_dead_endpoints_until_stopped_or_open(fake) -> None:  # type: ignore[no-untyped-def]
    retries: list[tuple[str, float]] = []
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(1.0, stop.set)
    client = Client([dead_endpoint()], dial_timeout_s=0.2)
    assert await client.open_when_reachable(stop, on_retry=lambda e, d: retries.append((type(e).__name__, d)),
                                            rng=random.Random(1)) is False
    assert len(retries) >= 2 and {n for n, _ in retries} == {"EndpointError"}
    assert [d for _, d in retries[:3]] == [0.2, 0.4, 0.8][:len(retries[:3])]  # doubling from 200 ms
    member, url = fake
    member.routes["/auth/authenticate"] = lambda b: (
        400, {"error": "bad", "message": "etcdserver: authentication failed, invalid user ID or password", "code": 3})
    async with Client([url]) as opened:  # an endpoint that answers: open at once, no retry
        assert await opened.open_when_reachable(asyncio.Event(), on_retry=lambda e, d: retries.append(("again", d)))
    assert ("again", 0.2) not in retries
    with pytest.raises(ServerError, match="authentication failed"):  # waiting cannot mend a refused login
        await Client([url], user="alice", password="wrong").open_when_reachable(asyncio.Event())


async def test_open_when_reachable_retries_a_probe_that_needs_a_leader(fake) -> None:  # type: ignore[no-untyped-def]
    """A member answers /version before it has a leader; kvraft-dashboard's first request then
    failed and it exited 1 (the full suite met it). The probe is retried as an open is."""
    member, url = fake
    retries: list[str] = []
    no_leader = (503, {"error": "etcdserver: no leader", "message": "etcdserver: no leader", "code": 14})
    member.routes["/auth/status"] = lambda _b: no_leader if len(retries) < 2 else (200, {"header": HEADER, "enabled": False})
    async with Client([url], request_timeout_s=0.3) as client:  # the client's own retries give up
        assert await client.open_when_reachable(asyncio.Event(), probe=client.auth_status,
                                                on_retry=lambda e, d: retries.append(type(e).__name__))
    assert len(retries) == 2 and set(retries) <= {"UnavailableError", "EndpointError"}, retries


async def test_is_open_after_a_successful_open_until_close(fake) -> None:  # type: ignore[no-untyped-def]
    """kvraft-scheduler and kvraft-dashboard wait for kvraft with open_when_reachable, then
    started with a second open (another /version and another login); they now ask is_open."""
    member, url = fake
    member.routes["/auth/authenticate"] = lambda b: (200, {"header": HEADER, "token": "tok.1"})
    client = Client([url], user="alice", password="pw")
    assert not client.is_open
    assert await client.open_when_reachable(asyncio.Event())
    assert client.is_open and [c[0] for c in member.calls] == ["/auth/authenticate"]
    await client.close()
    assert not client.is_open
    member.routes["/auth/authenticate"] = lambda b: (
        400, {"error": "bad", "message": "etcdserver: authentication failed, invalid user ID or password", "code": 3})
    with pytest.raises(ServerError):
        await client.open()
    assert not client.is_open


async def test_open_asks_the_next_endpoint_when_the_first_does_not_answer(fake) -> None:  # type: ignore[no-untyped-def]
    """Happy eyeballs: a first endpoint that accepts the connection and never answers (a
    frozen member) does not hold ``open()`` for its request timeout (60 s here, keepalive off):
    the next endpoint is asked after DISCOVER_STAGGER_S and pinned while the first request
    still waits. One that answers is pinned even when a later one answers too."""
    _member, url = fake
    hang = asyncio.Event()
    entered: list[bool] = []

    async def frozen(_request: web.Request) -> web.Response:
        entered.append(True)
        await hang.wait()
        return web.Response(status=500)

    silent_app = web.Application()
    silent_app.router.add_get("/version", frozen)
    silent = TestServer(silent_app, host="127.0.0.1")
    await silent.start_server()
    frozen_url = str(silent.make_url("")).rstrip("/")
    try:
        client = Client([frozen_url, url], retry=FAST, request_timeout_s=60, keepalive_time_s=None)
        await asyncio.wait_for(client.open(), 30)  # (sequential: 60 s)
        try:
            assert client.endpoint == url and entered == [True] and not hang.is_set()
        finally:
            await client.close()
        async with Client([url, frozen_url], retry=FAST) as client:
            assert client.endpoint == url
    finally:
        hang.set()
        await silent.close()


async def test_etcds_gateway_closing_its_connection_moves_any_request_on(fake) -> None:  # type: ignore[no-untyped-def]
    """etcd 3.4's gateway, while its member stops, answers "grpc: the client connection is
    closing" (code 1): the request never reached the member, so even a put goes to the next
    endpoint (``python -m kvraft.bench rolling-restart --compare-etcd``: ~290 failed puts per
    member restarted before)."""
    member, url = fake
    other = Fake()
    other.routes["/kv/put"] = lambda _b: (200, {"header": HEADER})
    server = TestServer(other.app(), host="127.0.0.1")
    await server.start_server()
    closing = {"error": "grpc: the client connection is closing", "message": "grpc: the client connection is closing",
               "code": 1}
    try:
        member.routes["/kv/put"] = lambda _b: (408, closing)
        async with Client([url, str(server.make_url("")).rstrip("/")], retry=FAST) as client:
            client._transport._pinned = 0
            await client.put("a", b"1")
            assert [c[0] for c in other.calls] == ["/kv/put"] and client.endpoint != url
            assert client.statistics().failovers == 1
            with pytest.raises(ServerError, match="connection is closing"):  # (one pinned endpoint: no other)
                await client._transport.unary("/kv/put", {"key": "YQ=="}, safe=False, endpoint=url)
    finally:
        await server.close()

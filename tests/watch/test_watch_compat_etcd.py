"""The same watch streams to a real etcd 3.4 and to kvraft, after the same writes and the
same compaction; the responses are compared field by field (JSON without ids and terms).

Left out on purpose (docs/design/watch.md): bodies that do not decode (etcd's gateway
answers status 500 with an empty body, kvraft an ``{"error": ...}`` line) and streams with
no response yet (etcd sends no headers until its first response). Skipped without etcd.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from tests.server.conftest import etcd_and_kvraft, needs_etcd

from .cluster_helpers import watch

pytestmark = needs_etcd

IGNORED = {"cluster_id", "member_id", "raft_term"}


def b(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def post(url: str, path: str, doc: dict[str, Any]) -> dict[str, Any]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=15)
    try:
        conn.request("POST", path, body=json.dumps(doc))
        response = conn.getresponse()
        body: dict[str, Any] = json.loads(response.read())
    finally:
        conn.close()
    assert response.status == 200, body
    return body


def scrub(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items() if k not in IGNORED}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return value


async def stream(url: str, requests: list[dict[str, Any]], count: int,
                 after_created: Callable[[], object] | None = None) -> list[Any]:
    """The first ``count`` results of one stream; ``after_created`` runs once there is a
    result for each request (each a ``created``)."""
    out: list[Any] = []
    async with aiohttp.ClientSession() as session:
        async for result in watch(session, url, requests):
            out.append(scrub(result))
            if len(out) == len(requests) and after_created is not None:
                after_created()
            if len(out) >= count:
                break
    return out


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    with etcd_and_kvraft(tmp_path_factory) as (etcd, kvraft):
        for url in (etcd, kvraft):
            for i in range(5):
                post(url, "/v3/kv/put", {"key": b("a"), "value": b(str(i))})  # revisions 2-6
            post(url, "/v3/kv/put", {"key": b("b"), "value": b("x")})  # 7
            post(url, "/v3/kv/deleterange", {"key": b("a")})  # 8
            post(url, "/v3/kv/compaction", {"revision": 3})
        yield {"etcd": etcd, "kvraft": kvraft}


def create(**fields: Any) -> dict[str, Any]:
    return {"create_request": fields}


# name -> (requests, responses to read)
CASES: dict[str, tuple[list[dict[str, Any]], int]] = {
    "history with prev_kv": ([create(key=b("a"), start_revision=4, prev_kv=True)], 2),
    "from the compacted revision": ([create(key=b("a"), start_revision=3)], 2),
    "below the compacted revision": ([create(key=b("a"), start_revision=2)], 2),
    "every key from \\0": ([create(key="AA==", range_end="AA==", start_revision=4)], 2),
    "NOPUT filter": ([create(key=b("a"), range_end=b("c"), start_revision=4, filters=["NOPUT"])], 2),
    "NODELETE filter by number": ([create(key=b("a"), range_end=b("c"), start_revision=4, filters=[1])], 2),
    "a future revision": ([create(key=b("a"), start_revision=100)], 1),
    "a duplicate id": ([create(key=b("a"), watch_id=5), create(key=b("b"), watch_id=5)], 2),
    "a negative id": ([create(key=b("a"), watch_id=-5)], 1),
    "the empty key": ([create(key="")], 1),
    "range_end before key": ([create(key=b("b"), range_end=b("a"))], 1),
    "range_end equal to key": ([create(key=b("b"), range_end=b("b"), watch_id=2)], 1),
    "a negative start revision, after a compaction": ([create(key=b("a"), start_revision=-3)], 2),
    "start revision as a string": ([create(key=b("a"), start_revision="5")], 2),
    "fragment": ([create(key=b("a"), start_revision=4, fragment=True)], 2),
    "cancel": ([create(key=b("a"), watch_id=2), {"cancel_request": {"watch_id": 2}}], 2),
    "progress": ([create(key=b("zz")), {"progress_request": {}}], 2),
    "an unknown field": ([create(key=b("a"), bogus=1)], 1),
}


@pytest.mark.parametrize("name", list(CASES))
def test_same_responses_as_etcd(servers: dict[str, str], name: str) -> None:
    requests, count = CASES[name]
    got = {who: asyncio.run(asyncio.wait_for(stream(url, requests, count), 20)) for who, url in servers.items()}
    assert got["kvraft"] == got["etcd"]


def test_live_events_reach_two_watchers_of_one_stream(servers: dict[str, str]) -> None:
    got = {}
    for who, url in servers.items():
        def write(url: str = url) -> None:
            post(url, "/v3/kv/put", {"key": b("live"), "value": b("1")})

        requests = [create(key=b("live")), create(key=b("live"), prev_kv=True)]
        responses = asyncio.run(asyncio.wait_for(stream(url, requests, 4, after_created=write), 20))
        # the two watchers' events may come in either order (etcd walks a Go map)
        got[who] = responses[:2] + sorted(responses[2:], key=lambda r: json.dumps(r, sort_keys=True))
    assert got["kvraft"] == got["etcd"]


# etcd 3.4's gateway decodes a watch body one request at a time before it sends anything:
# a first request that does not decode is answered as a bare error (HTTP 500, code 2, the
# decoder's text); a later one stops the reading of the body, and the stream and its
# watchers go on. kvraft answered 200 and an in-stream error, and a later bad request ended
# the stream with its watchers.
FIRST_BAD = [
    b"{bad",
    b'{"create_request":{"key":"!!"}}',
    b"[]",
    b'{"create_request":{"key":"YQ==","filters":["BOGUS"]}}',
    b'{"create_request":{"key":"YQ==","start_revision":"9223372036854775808"}}',
    b'{"create_request":',
]


@pytest.mark.parametrize("body", FIRST_BAD)
def test_a_first_request_that_does_not_decode_is_a_bare_error(servers: dict[str, str], body: bytes) -> None:
    got = {}
    for who, url in servers.items():
        parts = urlsplit(url)
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=15)
        try:
            conn.request("POST", "/v3/watch", body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            got[who] = (response.status, json.loads(response.read()))
        finally:
            conn.close()
    assert got["kvraft"] == got["etcd"]


async def stream_body(url: str, body: bytes, key: str) -> list[Any]:
    """The first two results of a stream with this raw body: the create's, then the event
    of a put of ``key`` made once it is created."""
    out: list[Any] = []
    async with aiohttp.ClientSession() as session, session.post(
            url + "/v3/watch", data=body, timeout=aiohttp.ClientTimeout(total=None, sock_read=None)) as response:
        assert response.status == 200
        async for line in response.content:
            if not line.strip():
                continue
            doc = json.loads(line)
            out.append(scrub(doc))
            if len(out) == 1:
                await asyncio.to_thread(post, url, "/v3/kv/put", {"key": b(key), "value": b("v")})
            if len(out) == 2 or "result" not in doc:
                return out
    return out


@pytest.mark.parametrize("bad", [b"{bad", b'{"create_request":{"key":"!!"}}', b"[1]", b"x"])
def test_a_later_request_that_does_not_decode_leaves_the_watchers_running(
        servers: dict[str, str], bad: bytes) -> None:
    got = {}
    for who, url in servers.items():
        key = f"later-{who}"
        body = json.dumps(create(key=b(key))).encode() + bad
        got[who] = asyncio.run(asyncio.wait_for(stream_body(url, body, key), 20))
        for r in got[who]:
            for ev in r.get("result", {}).get("events", []):
                ev["kv"].pop("key")
    assert got["kvraft"] == got["etcd"]
    assert "events" in got["kvraft"][1]["result"]


async def ws_session(url: str, messages: list[str], key: str) -> list[Any]:
    """The WebSocket watch: ``messages`` sent, then what comes back, a put of ``key`` made
    after the first answer; until two answers, the socket closes, or 3 s pass quietly."""
    out: list[Any] = []
    async with aiohttp.ClientSession() as session, session.ws_connect(url.replace("http", "ws") + "/v3/watch") as ws:
        for message in messages:
            await ws.send_str(message)
        while len(out) < 2:
            try:
                msg = await ws.receive(timeout=3)
            except TimeoutError:
                break
            if msg.type != aiohttp.WSMsgType.TEXT:
                out.append("closed")  # (etcd drops the connection, kvraft sends a close frame)
                break
            doc = scrub(json.loads(msg.data))
            for ev in doc.get("result", {}).get("events", []):
                ev["kv"].pop("key")
            out.append(doc)
            if len(out) == 1:
                await asyncio.to_thread(post, url, "/v3/kv/put", {"key": b(key), "value": b("v")})
    return out


# grpc-websocket-proxy writes each message into the gateway's request body: two requests
# in one message are two requests, a first one that does not decode is the bare error as
# a message (then the socket closes), a later one leaves the watchers running. kvraft read
# one request per message, and a bad one broke the socket (an HTTP answer written into it).
WS_CASES: dict[str, list[str]] = {
    "two requests in one message": ['{"create_request":{"key":"eA==","watch_id":4}}{"create_request":{"key":"KEY"}}'],
    "a request cut across messages": ['{"create_request":', '{"key":"KEY"}}'],
    "a first message that does not decode": ['{"create_request":{"key":"!!"}}'],
    "a later message that does not decode": ['{"create_request":{"key":"KEY"}}', "{bad"],
}


@pytest.mark.parametrize("name", list(WS_CASES))
def test_websocket_messages_are_one_request_stream(servers: dict[str, str], name: str) -> None:
    got = {}
    for who, url in servers.items():
        key = f"ws-{who}"
        messages = [m.replace("KEY", b(key)) for m in WS_CASES[name]]
        got[who] = asyncio.run(asyncio.wait_for(ws_session(url, messages, key), 30))
    assert got["kvraft"] == got["etcd"]

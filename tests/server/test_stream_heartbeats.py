"""Heartbeats on kvraft's idle streams (``Kvraft-Keepalive``, kvraft.server.api.stream): a
watch or election observe stream that asked for them gets the interval granted in the answer's
headers and a heartbeat (JSON whitespace, a msgpack nil) whenever it was idle that long; one
that did not ask (etcd's clients) gets neither. The shortest interval granted is the member's
``--grpc-keepalive-min-time`` (100 ms here, etcd's 5 s by default). Real members, raw HTTP."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import msgpack
import pytest

from kvraft.server.api.stream import HEARTBEAT_RANGE_S, KEEPALIVE
from kvraft.server.local import LocalCluster
from tests.server.conftest import FAST_FLAGS, start_cluster

WATCH = {"create_request": {"key": "aGI=", "range_end": "aGM="}}  # hb .. hc


@pytest.fixture(scope="module")
def member(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    cluster: LocalCluster = start_cluster(tmp_path_factory.mktemp("heartbeats"), size=1,
                                          extra=[*FAST_FLAGS, "--grpc-keepalive-min-time=100ms"])
    try:
        cluster.wait_leader(60)
        yield cluster.url("m0")
    finally:
        cluster.stop()


async def _chunks(url: str, path: str, body: bytes, headers: dict[str, str],
                  seconds: float) -> tuple[dict[str, str], list[bytes]]:
    """The answer's headers and every chunk that came within ``seconds``."""
    chunks: list[bytes] = []
    async with aiohttp.ClientSession() as session, session.post(url + path, data=body, headers=headers) as response:
        assert response.status == 200
        try:
            async with asyncio.timeout(seconds):
                async for chunk in _any(response):
                    chunks.append(chunk)
        except TimeoutError:
            pass
        return dict(response.headers), chunks


async def _any(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    while chunk := await response.content.readany():
        yield chunk


async def test_an_idle_json_watch_gets_whitespace_heartbeats(member: str) -> None:
    headers, chunks = await _chunks(member, "/v3/watch", json.dumps(WATCH).encode(),
                                    {"Content-Type": "application/json", KEEPALIVE: "0.3"}, 2.0)
    assert headers[KEEPALIVE] == "0.3"
    data = b"".join(chunks)
    first, _, rest = data.partition(b"\n")
    assert json.loads(first)["result"]["created"] is True
    assert rest.count(b"\n") >= 3 and not rest.strip()  # heartbeats only: nothing else happened


async def test_an_idle_msgpack_watch_gets_nil_heartbeats(member: str) -> None:
    body = msgpack.packb({"create_request": {"key": b"hb", "range_end": b"hc"}})
    headers, chunks = await _chunks(member, "/v3/watch", body,
                                    {"Content-Type": "application/x-msgpack", KEEPALIVE: "0.3"}, 2.0)
    assert headers[KEEPALIVE] == "0.3"
    messages = list(msgpack.Unpacker(io.BytesIO(b"".join(chunks)), raw=False))
    assert messages[0]["result"]["created"] is True
    assert len(messages) >= 4 and all(m is None for m in messages[1:])


@pytest.mark.parametrize("asked", [None, "abc", "-1", "0", "nan"])
async def test_no_heartbeats_unless_asked_with_a_positive_interval(member: str, asked: str | None) -> None:
    headers = {"Content-Type": "application/json"}
    if asked is not None:
        headers[KEEPALIVE] = asked
    got, chunks = await _chunks(member, "/v3/watch", json.dumps(WATCH).encode(), headers, 1.0)
    assert KEEPALIVE not in got
    assert b"".join(chunks).count(b"\n") == 1  # the created answer alone


@pytest.mark.parametrize(("asked", "granted"), [("0.001", HEARTBEAT_RANGE_S[0]), ("1e9", HEARTBEAT_RANGE_S[1])])
async def test_the_interval_is_clamped(member: str, asked: str, granted: float) -> None:
    got, _ = await _chunks(member, "/v3/watch", json.dumps(WATCH).encode(),
                           {"Content-Type": "application/json", KEEPALIVE: asked}, 0.3)
    assert float(got[KEEPALIVE]) == granted


async def test_events_still_arrive_between_heartbeats(member: str) -> None:
    async def put_later() -> None:
        await asyncio.sleep(0.5)
        async with aiohttp.ClientSession() as session:
            await session.post(member + "/v3/kv/put", json={"key": "aGIx", "value": "dg=="})

    task = asyncio.create_task(put_later())
    _, chunks = await _chunks(member, "/v3/watch", json.dumps(WATCH).encode(),
                              {"Content-Type": "application/json", KEEPALIVE: "0.2"}, 1.5)
    await task
    messages = [json.loads(line) for line in b"".join(chunks).split(b"\n") if line.strip()]
    assert [m["result"].get("created", False) for m in messages] == [True, False]
    assert messages[1]["result"]["events"][0]["kv"]["key"] == "aGIx"


async def test_an_idle_election_observe_gets_heartbeats(member: str) -> None:
    headers, chunks = await _chunks(member, "/v3/election/observe", json.dumps({"name": "ZWw="}).encode(),
                                    {"Content-Type": "application/json", KEEPALIVE: "0.3"}, 1.5)
    assert headers[KEEPALIVE] == "0.3"
    assert b"".join(chunks).count(b"\n") >= 2 and not b"".join(chunks).strip()  # no leader: heartbeats only


def test_the_default_floor_is_etcds_keepalive_min_time(tmp_path: Path) -> None:
    cluster = start_cluster(tmp_path, size=1, extra=FAST_FLAGS)
    try:
        cluster.wait_leader(60)
        got, _ = asyncio.run(_chunks(cluster.url("m0"), "/v3/watch", json.dumps(WATCH).encode(),
                                     {"Content-Type": "application/json", KEEPALIVE: "1"}, 0.3))
    finally:
        cluster.stop()
    assert float(got[KEEPALIVE]) == 5.0

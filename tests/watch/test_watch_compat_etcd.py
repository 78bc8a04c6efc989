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

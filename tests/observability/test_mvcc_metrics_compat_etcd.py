"""``etcd_mvcc_{range,put,delete,txn}_total`` (and their ``etcd_debugging_mvcc_*`` twins)
and ``etcd_debugging_mvcc_total_put_size_in_bytes`` move as a real etcd 3.4's do, request by
request: puts with and without the old value, deletes, txns with compares, checks and
nested txns, refused requests, a lease revocation, a compaction, and watchers with and
without prev_kv (etcd reads each event's previous value per watcher, one range each, except
for a put that created its key). The same requests go to etcd and to kvraft; each request's
change of every figure is compared. Skipped without the ``etcd`` binary."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import aiohttp
import pytest

from tests.server.conftest import etcd_and_kvraft, needs_etcd
from tests.watch.cluster_helpers import b64, watch

pytestmark = needs_etcd

NAMES = [f"{prefix}_{kind}_total" for prefix in ("etcd_mvcc", "etcd_debugging_mvcc")
         for kind in ("range", "put", "delete", "txn")] + ["etcd_debugging_mvcc_total_put_size_in_bytes"]


def value_is(key: str, value: str) -> dict[str, Any]:
    return {"key": b64(key), "target": "VALUE", "result": "EQUAL", "value": b64(value)}


def put(key: str, value: str = "", **flags: Any) -> dict[str, Any]:
    return {"key": b64(key), **({"value": b64(value)} if value else {}), **flags}


SCRIPT: list[tuple[str, dict[str, Any]]] = [
    ("/v3/kv/put", put("a", "1")),
    ("/v3/kv/put", put("a", "22", prev_kv=True)),
    ("/v3/kv/put", put("a", ignore_value=True)),
    ("/v3/kv/put", put("zz", ignore_value=True)),  # key not found
    ("/v3/kv/put", put("", "1")),  # empty key: refused before the store
    ("/v3/kv/range", {"key": b64("a")}),
    ("/v3/kv/range", {"key": b64("a"), "revision": 99}),
    ("/v3/kv/range", {"key": b64("a"), "serializable": True}),
    ("/v3/kv/deleterange", {"key": b64("q")}),
    ("/v3/kv/deleterange", {"key": b64("a"), "prev_kv": True}),
    ("/v3/kv/txn", {"compare": [value_is("a", "1"), value_is("b", "2")],
                    "success": [{"request_put": put("x", "1")}]}),
    ("/v3/kv/txn", {"compare": [value_is("a", "1")],
                    "failure": [{"request_put": put("x", "1")}, {"request_range": {"key": b64("x")}}]}),
    ("/v3/kv/txn", {"success": [{"request_range": {"key": b64("x")}}]}),
    ("/v3/kv/txn", {"compare": [value_is("x", "1"), value_is("x", "1")],
                    "success": [{"request_put": put("x", ignore_value=True)},
                                {"request_delete_range": {"key": b64("y"), "prev_kv": True}}]}),
    ("/v3/kv/txn", {"compare": [value_is("x", "0")],
                    "success": [{"request_txn": {"compare": [value_is("x", "1"), value_is("x", "1")],
                                                 "success": [{"request_range": {"key": b64("x")}}]}}],
                    "failure": [{"request_txn": {"compare": [value_is("x", "1")],
                                                 "success": [{"request_put": put("y", "v")}]}}]}),
    ("/v3/kv/txn", {"success": [{"request_put": put("zz", ignore_value=True)}]}),
    ("/v3/kv/txn", {"success": [{"request_put": put("x", "1", lease="77")}]}),
    ("/v3/kv/put", put("x", "1", lease="77")),
    ("/v3/lease/grant", {"TTL": "60", "ID": "500"}),
    ("/v3/kv/put", put("l1", "1", lease="500")),
    ("/v3/kv/put", put("l2", "1", lease="500")),
    ("/v3/lease/revoke", {"ID": "500"}),
    ("/v3/kv/compaction", {"revision": "3"}),
    ("/v3/kv/compaction", {"revision": "3"}),  # compacted already: no read
    ("/v3/kv/range", {"key": b64("a"), "revision": 2}),
    ("/v3/kv/txn", {"success": [{"request_range": {"key": b64("x"), "revision": 2}}]}),
    ("/v3/kv/txn", {"compare": [value_is("x", "1")],
                    "success": [{"request_range": {"key": b64("x"), "revision": 2}},
                                {"request_put": put("y", "v")}]}),
]


async def figures(session: aiohttp.ClientSession, url: str) -> dict[str, float]:
    async with session.get(url + "/metrics") as response:
        text = await response.text()
    out = {}
    for name in NAMES:
        found = re.search(rf"^{name} (\S+)$", text, re.M)
        assert found, f"{name} missing at {url}"
        out[name] = float(found.group(1))
    return out


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before[name] for name in NAMES if after[name] != before[name]}


async def post(session: aiohttp.ClientSession, url: str, path: str, doc: dict[str, Any]) -> None:
    async with session.post(url + path, data=json.dumps(doc)) as response:
        await response.read()


async def events(stream: Any, count: int) -> int:
    """Read results until ``count`` events arrived; the revision of the first."""
    seen, first = 0, 0
    async for result in stream:
        for event in result.get("events", []):
            first = first or int(event["kv"]["mod_revision"])
            seen += 1
        if seen >= count:
            return first
    raise AssertionError("the watch ended")


async def run(url: str) -> list[dict[str, float]]:
    changes = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        for path, doc in SCRIPT:
            before = await figures(session, url)
            await post(session, url, path, doc)
            changes.append(delta(await figures(session, url), before))
        # three watchers of "w": prev_kv on the key, prev_kv on the prefix, none
        streams = [watch(session, url, [{"create_request": request}]) for request in (
            {"key": b64("w"), "prev_kv": True},
            {"key": b64("w"), "range_end": b64("x"), "prev_kv": True},
            {"key": b64("w")})]
        for stream in streams:
            assert (await anext(stream)).get("created"), "the created response first"
        before = await figures(session, url)
        await post(session, url, "/v3/kv/put", put("w", "1"))  # creates w: no previous value read
        await post(session, url, "/v3/kv/put", put("w", "2"))
        await post(session, url, "/v3/kv/deleterange", {"key": b64("w")})
        first = 0
        for stream in streams:
            first = await asyncio.wait_for(events(stream, 3), 15)
        changes.append(delta(await figures(session, url), before))
        # a watcher catching up from the past reads the same previous values
        before = await figures(session, url)
        late = watch(session, url, [{"create_request": {"key": b64("w"), "prev_kv": True,
                                                        "start_revision": str(first)}}])
        assert (await anext(late)).get("created")
        await asyncio.wait_for(events(late, 3), 15)
        changes.append(delta(await figures(session, url), before))
        for stream in [*streams, late]:
            await stream.aclose()
    return changes


async def test_the_mvcc_counters_move_as_etcds(tmp_path_factory: pytest.TempPathFactory) -> None:
    with etcd_and_kvraft(tmp_path_factory) as (etcd_url, kvraft_url):
        expected = await run(etcd_url)
        got = await run(kvraft_url)
    steps = [*(f"{path} {json.dumps(doc)}" for path, doc in SCRIPT), "three watchers", "a late watcher"]
    for step, want, have in zip(steps, expected, got, strict=True):
        assert have == want, step
    assert expected[-2]["etcd_mvcc_range_total"] == 4  # 2 prev_kv watchers x (update, delete)
    assert expected[-1]["etcd_mvcc_range_total"] == 2

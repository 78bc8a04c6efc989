"""etcd's maintenance figures move as a real etcd 3.4's do for the same requests: health
checks (``etcd_server_health_success``), hashes (``etcd_mvcc_hash_duration_seconds``,
``_hash_rev_``), a snapshot and a defragmentation (``etcd_disk_backend_*_duration_seconds``,
``etcd_disk_defrag_inflight`` back at 0), a compaction (the records it deleted, one total
and one pause of each kind), watch events sent; and both export ``etcd_cluster_version``,
``etcd_debugging_mvcc_db_total_size_in_bytes`` and ``os_fd_*``. Durations are compared by
their counts (how many were observed), not their values. Skipped without ``etcd``."""

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

COUNTED = [
    "etcd_server_health_success", "etcd_server_health_failures",
    "etcd_mvcc_hash_duration_seconds_count", "etcd_mvcc_hash_rev_duration_seconds_count",
    "etcd_disk_backend_snapshot_duration_seconds_count", "etcd_disk_backend_defrag_duration_seconds_count",
    "etcd_disk_defrag_inflight", "etcd_debugging_mvcc_db_compaction_keys_total",
    "etcd_debugging_mvcc_db_compaction_total_duration_milliseconds_count",
    "etcd_debugging_mvcc_db_compaction_pause_duration_milliseconds_count",
    "etcd_debugging_mvcc_index_compaction_pause_duration_milliseconds_count",
    "etcd_debugging_mvcc_events_total", "etcd_debugging_mvcc_pending_events_total",
]
PRESENT = ["etcd_cluster_version", "etcd_debugging_mvcc_db_total_size_in_bytes", "os_fd_used", "os_fd_limit"]


async def scrape(session: aiohttp.ClientSession, url: str) -> tuple[dict[str, float], str]:
    async with session.get(url + "/metrics") as response:
        text = await response.text()
    out = {}
    for name in COUNTED:
        found = re.search(rf"^{name} (\S+)$", text, re.M)
        # etcd registers its health counters on the first health check
        assert found or name.startswith("etcd_server_health_"), f"{name} missing at {url}"
        out[name] = float(found.group(1)) if found else 0.0
    return out, text


async def call(session: aiohttp.ClientSession, method: str, url: str, body: Any = None) -> None:
    async with session.request(method, url, data=None if body is None else json.dumps(body)) as response:
        await response.read()


async def run(url: str) -> tuple[dict[str, float], str]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        before, _ = await scrape(session, url)
        for _ in range(3):
            await call(session, "GET", url + "/health")
        await call(session, "POST", url + "/v3/maintenance/hash", {})
        await call(session, "POST", url + "/v3/maintenance/snapshot", {})
        stream = watch(session, url, [{"create_request": {"key": b64("w"), "range_end": b64("x")}}])
        assert (await anext(stream)).get("created")
        for i in range(5):  # 5 events at revisions 2..6: w0, w1, w0 again, w1 deleted, w2
            key = f"w{i % 2}" if i < 4 else "w2"
            await call(session, "POST", url + ("/v3/kv/deleterange" if i == 3 else "/v3/kv/put"),
                       {"key": b64(key), **({} if i == 3 else {"value": b64(str(i))})})
        seen = 0
        async for result in stream:
            seen += len(result.get("events", []))
            if seen >= 5:
                break
        await stream.aclose()
        # compacting at 6 drops the older revision of w0 and both of w1 (its put and its
        # deletion, before the compaction point; kvraft keeps a tombstone at exactly the
        # compaction point, where etcd drops it: docs/design/storage.md)
        await call(session, "POST", url + "/v3/kv/compaction", {"revision": "6", "physical": True})
        await call(session, "POST", url + "/v3/maintenance/defragment", {})
        await asyncio.sleep(0.5)  # the compaction's background part has finished (physical)
        after, text = await scrape(session, url)
    return {k: after[k] - before[k] for k in COUNTED if after[k] != before[k]}, text


async def test_the_maintenance_figures_move_as_etcds(tmp_path_factory: pytest.TempPathFactory) -> None:
    with etcd_and_kvraft(tmp_path_factory) as (etcd_url, kvraft_url):
        expected, etcd_text = await run(etcd_url)
        got, kvraft_text = await run(kvraft_url)
        # HashKV (not in etcd 3.4's gateway; kvraft's route, and the corruption checks' hash)
        async with aiohttp.ClientSession() as session:
            before, _ = await scrape(session, kvraft_url)
            await call(session, "POST", kvraft_url + "/v3/maintenance/hashkv", {"revision": "0"})
            after, _ = await scrape(session, kvraft_url)
    assert got == expected, json.dumps([got, expected], indent=0)
    assert after["etcd_mvcc_hash_rev_duration_seconds_count"] == before["etcd_mvcc_hash_rev_duration_seconds_count"] + 1
    assert expected["etcd_server_health_success"] == 3 and expected["etcd_debugging_mvcc_events_total"] == 5
    for text in (etcd_text, kvraft_text):
        for name in PRESENT:
            assert re.search(rf"^{name}(\{{[^}}]*\}})? \S+$", text, re.M), name
        assert re.search(r'^etcd_cluster_version\{cluster_version="3.4"\} 1(\.0)?$', text, re.M)

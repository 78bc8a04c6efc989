"""A watcher that stops reading only slows itself: with its TCP buffers and its stream's
queue full, writes keep committing and another watcher keeps receiving everything; when it
reads again it gets every event, in order, caught up from history."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.request
from urllib.parse import urlsplit

import aiohttp
import pytest

from .cluster_helpers import b64, call, start_cluster, unb64, watch

PUTS = 600  # ~18 MB: more than loopback TCP buffers plus the stream's 128-response queue
VALUE = b"x" * 30000


@pytest.fixture
def one_member(tmp_path):
    c = start_cluster(tmp_path / "slow", size=1)
    yield c
    c.stop()


def _stalled_stream(url: str, key: str) -> socket.socket:
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port))
    body = json.dumps({"create_request": {"key": b64(key)}}).encode()
    sock.sendall(b"POST /v3/watch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    return sock


def _drain_events(sock: socket.socket, want: int) -> list[dict]:
    sock.settimeout(60)
    pending = b""
    events: list[dict] = []
    while len(events) < want:
        chunk = sock.recv(1 << 20)
        assert chunk, "stream closed early"
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()
        for line in lines:
            start = line.find(b'{"result"')
            if start >= 0:
                events.extend(json.loads(line[start:])["result"].get("events", []))
    return events


async def test_stalled_watcher_does_not_hold_back_writes_or_other_watchers(one_member) -> None:
    url = one_member.url(one_member.wait_leader())
    slow = await asyncio.to_thread(_stalled_stream, url, "slow/k")
    try:
        fast_events: list[dict] = []
        async with aiohttp.ClientSession() as session:
            async def follow() -> None:
                async for r in watch(session, url, [{"create_request": {"key": b64("slow/k")}}]):
                    fast_events.extend(r.get("events", []))
                    if len(fast_events) >= PUTS:
                        return

            fast = asyncio.get_running_loop().create_task(follow())
            await asyncio.sleep(0.5)
            revisions = []
            for i in range(PUTS):
                status, doc = await asyncio.to_thread(
                    call, url, "/v3/kv/put", {"key": b64("slow/k"), "value": b64(VALUE + str(i).encode())})
                assert status == 200, doc
                revisions.append(int(doc["header"]["revision"]))
            await asyncio.wait_for(fast, 120)
        assert [int(e["kv"]["mod_revision"]) for e in fast_events] == revisions
        with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
            metrics = dict(line.rsplit(" ", 1) for line in response.read().decode().splitlines()
                           if line.startswith("kvraft_watch_"))
        assert float(metrics["kvraft_watch_victims_total"]) >= 1, metrics  # the hub did park it
        slow_events = await asyncio.to_thread(_drain_events, slow, PUTS)
        assert [int(e["kv"]["mod_revision"]) for e in slow_events] == revisions
        assert unb64(slow_events[-1]["kv"]["value"]).endswith(str(PUTS - 1).encode())
    finally:
        slow.close()

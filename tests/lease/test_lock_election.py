"""Locks and elections over HTTP: mutual exclusion while a holder crashes (its lease ends,
the next waiter gets the lock), and the election life cycle with observe."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from tests.watch.cluster_helpers import b64, call, unb64

CLIENT = Path(__file__).with_name("lock_client.py")


def _spawn(urls: str, name: str, me: str, iterations: int, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(CLIENT), urls, name, me, str(iterations), mode],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _read_until(proc: subprocess.Popen[str], word: str, lines: list[str], timeout_s: float) -> bool:
    done = threading.Event()

    def pump() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.append(line.strip())
            if line.startswith(word):
                done.set()
                return

    threading.Thread(target=pump, daemon=True).start()
    return done.wait(timeout_s)


def test_lock_safety_when_the_holder_crashes(cluster) -> None:
    urls = ",".join(m.client_url for m in cluster.running())
    crasher = _spawn(urls, "lk", "crasher", 1, "crash")
    others: list[subprocess.Popen[str]] = []
    try:
        lines: list[str] = []
        assert _read_until(crasher, "HOLDING", lines, 120), lines
        others = [_spawn(urls, "lk", f"c{i}", 3, "normal") for i in range(3)]
        time.sleep(3)  # the holder's lease is kept alive: nobody else may get in meanwhile
        status, doc = call(cluster.url(cluster.wait_leader()), "/v3/kv/range", {"key": b64("lk-holder")})
        assert unb64(doc["kvs"][0]["value"]) == b"crasher"
        crasher.kill()  # SIGKILL: no unlock, no revoke; only the lease's end frees the lock
        crasher.wait(30)
        for proc in others:
            out, _ = proc.communicate(timeout=150)
            assert proc.returncode == 0, out
            assert "VIOLATION" not in out and out.count("ACQUIRED") == 3, out
    finally:
        for proc in [crasher, *others]:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def test_election_campaign_observe_proclaim_resign(cluster) -> None:
    url = cluster.url(cluster.wait_leader())
    la = call(url, "/v3/lease/grant", {"TTL": "30"})[1]["ID"]
    lb = call(url, "/v3/lease/grant", {"TTL": "30"})[1]["ID"]
    status, doc = call(url, "/v3/election/campaign", {"name": b64("el"), "lease": la, "value": b64("a")})
    assert status == 200, doc
    leader_a = doc["leader"]
    assert unb64(leader_a["name"]) == b"el" and leader_a["lease"] == la
    b_result: dict = {}
    campaign_b = threading.Thread(target=lambda: b_result.update(
        doc=call(url, "/v3/election/campaign", {"name": b64("el"), "lease": lb, "value": b64("b")}, timeout_s=120)[1]))
    campaign_b.start()

    async def observe(n: int) -> list[bytes]:
        seen: list[bytes] = []
        async with aiohttp.ClientSession() as session, session.post(
            url + "/v3/election/observe", data=json.dumps({"name": b64("el")})
        ) as response:
            async for line in response.content:
                if line.strip():
                    seen.append(unb64(json.loads(line)["result"]["kv"]["value"]))
                    if len(seen) == 1:
                        await asyncio.to_thread(call, url, "/v3/election/proclaim", {"leader": leader_a, "value": b64("a2")})
                    if len(seen) == 2:
                        await asyncio.to_thread(call, url, "/v3/election/resign", {"leader": leader_a})
                    if len(seen) >= n:
                        return seen
        return seen

    seen = asyncio.run(asyncio.wait_for(observe(3), 120))
    assert seen == [b"a", b"a2", b"b"]
    campaign_b.join(120)
    assert b_result["doc"]["leader"]["lease"] == lb
    status, doc = call(url, "/v3/election/leader", {"name": b64("el")})
    assert unb64(doc["kv"]["value"]) == b"b"
    status, doc = call(url, "/v3/election/proclaim", {"leader": leader_a, "value": b64("stale")})
    assert doc["message"] == "election: not leader"


def _keys(url: str, prefix: str) -> list[dict]:
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    status, doc = call(url, "/v3/kv/range", {"key": b64(prefix), "range_end": b64(end)})
    assert status == 200, doc
    return doc.get("kvs", [])


def _gives_up(url: str, path: str, doc: dict) -> None:
    """A blocking request whose client stops waiting after 2 s."""
    try:
        call(url, path, doc, timeout_s=2)
    except TimeoutError:
        return
    raise AssertionError(f"{path} answered while it should have waited")


def test_waiters_that_leave_leave_the_line_and_a_lock_without_a_lease_ends(cluster) -> None:
    """etcd's v3lock and v3election: a waiter whose client goes away withdraws its key (it
    used to stay in line, then hold the lock for nobody, forever: its key had no lease), and a
    lock or campaign without a lease runs under a new 60 s lease that nobody renews."""
    url = cluster.url(cluster.wait_leader())
    held = call(url, "/v3/lease/grant", {"TTL": "30"})[1]["ID"]
    for path, name, extra in (("/v3/lock/lock", "gone", {}), ("/v3/election/campaign", "gonel", {"value": b64("v")})):
        status, doc = call(url, path, {"name": b64(name), "lease": held, **extra})
        assert status == 200, doc
        _gives_up(url, path, {"name": b64(name), **extra})
        _gives_up(url, path, {"name": b64(name), **extra})
        deadline = time.monotonic() + 30
        while len(_keys(url, name + "/")) > 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert [unb64(kv["key"]) for kv in _keys(url, name + "/")] == [f"{name}/{int(held):x}".encode()]
    assert call(url, "/v3/lease/revoke", {"ID": held})[0] == 200
    status, doc = call(url, "/v3/lock/lock", {"name": b64("gone")}, timeout_s=10)
    assert status == 200, doc
    (kv,) = _keys(url, "gone/")
    assert unb64(kv["key"]) == unb64(doc["key"]) and int(kv.get("lease", 0)) != 0
    status, ttl = call(url, "/v3/lease/timetolive", {"ID": kv["lease"]})
    assert ttl["grantedTTL"] == "60" and int(ttl["TTL"]) <= 60
    status, doc = call(url, "/v3/election/campaign", {"name": b64("gonel"), "value": b64("w")}, timeout_s=10)
    assert status == 200, doc
    assert int(doc["leader"]["lease"]) != 0


def _watch_streams(url: str) -> float:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("kvraft_watch_streams "):
                return float(line.split()[1])
    raise AssertionError("no kvraft_watch_streams in /metrics")


def test_an_observe_whose_client_left_ends(cluster) -> None:
    """An observe of an election nobody leads waits for an event on its prefix: it did not
    notice its client going away, so its watch stream stayed open (one more per such client)
    and the member's shutdown waited 60 s for the handler."""
    url = cluster.url(cluster.wait_leader())
    before = _watch_streams(url)
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        body = json.dumps({"name": b64("nobody-leads")}).encode()
        sock.sendall(b"POST /v3/election/observe HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        deadline = time.monotonic() + 30
        while _watch_streams(url) <= before and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _watch_streams(url) == before + 1  # the observe's
    deadline = time.monotonic() + 30
    while _watch_streams(url) > before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _watch_streams(url) == before

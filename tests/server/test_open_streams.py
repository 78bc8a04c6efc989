"""A member stopping ends its long-lived requests at once (kvraft/server/api/open_streams.py).

Before, a member with one watch stream open did not exit on SIGTERM for aiohttp's whole
shutdown timeout (60 s): a ``systemctl stop`` or ``docker stop`` waited a minute, or killed
it (etcd 3.4 exits in 0.01 s with the same watch open)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import threading
import urllib.error
import urllib.request

from kvraft.client import Client
from kvraft.server.local import LocalCluster, post

STOP_BOUND_S = 30.0
"""Half of aiohttp's shutdown timeout: past it, the member waited for its streams."""


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _lease(url: str) -> int:
    code, doc = post(url, "/v3/lease/grant", {"TTL": 60})
    assert code == 200, doc
    return int(doc["ID"])


def test_a_member_with_streams_and_waits_open_stops_at_once(tmp_path) -> None:
    """A raw watch stream, a lock waiting behind another's, a campaign waiting behind another
    leader and an observe stream, all on one follower: it exits on SIGTERM, the streams end,
    and the waiters are answered etcd's "server stopped" (Unavailable)."""
    with LocalCluster(3, tmp_path) as cluster:
        cluster.start()
        leader = cluster.wait_ready()
        follower = next(name for name in sorted(cluster.members) if name != leader)
        url = cluster.url(follower)
        holder = _lease(cluster.url(leader))
        code, _ = post(cluster.url(leader), "/v3/lock/lock", {"name": _b64("lk"), "lease": holder})
        assert code == 200
        code, _ = post(cluster.url(leader), "/v3/election/campaign",
                       {"name": _b64("el"), "lease": holder, "value": _b64("a")})
        assert code == 200
        waiter = _lease(url)
        answers: dict[str, object] = {}

        def call(name: str, path: str, body: dict[str, object]) -> None:
            request = urllib.request.Request(url + path, data=json.dumps(body).encode())
            try:
                with urllib.request.urlopen(request, timeout=120) as answer:
                    answers[name] = ("ended", answer.read().decode())
            except urllib.error.HTTPError as exc:
                answers[name] = (exc.code, json.loads(exc.read()))
            except OSError as exc:
                answers[name] = ("lost", repr(exc))

        calls = [
            ("watch", "/v3/watch", {"create_request": {"key": _b64("w")}}),
            ("lock", "/v3/lock/lock", {"name": _b64("lk"), "lease": waiter}),
            ("campaign", "/v3/election/campaign", {"name": _b64("el"), "lease": waiter, "value": _b64("b")}),
            ("observe", "/v3/election/observe", {"name": _b64("el")}),
        ]
        threads = [threading.Thread(target=call, args=c, daemon=True) for c in calls]
        for thread in threads:
            thread.start()
        asyncio.run(asyncio.sleep(1.0))  # (each request reached its wait)
        member = cluster.members[follower]
        assert member.process is not None
        os.kill(member.process.pid, signal.SIGTERM)
        member.process.wait(STOP_BOUND_S)  # (raises TimeoutExpired when it waited for its streams)
        for thread in threads:
            thread.join(10)
        assert answers["watch"][0] == "ended", answers
        assert '"created":true' in str(answers["watch"][1]), answers
        assert answers["observe"][0] == "ended", answers
        for waited in ("lock", "campaign"):
            status, doc = answers[waited]
            assert status == 503, answers
            assert doc["message"] == "etcdserver: server stopped" and doc["code"] == 14, doc


def test_a_watch_goes_on_through_another_member_when_its_member_stops(tmp_path) -> None:
    """kvraft's client, on a member that stops: the stream (HTTP and WebSocket) ends, it resumes
    on the next endpoint, and every event comes once."""
    with LocalCluster(3, tmp_path) as cluster:
        cluster.start()
        leader = cluster.wait_ready()
        follower = next(name for name in sorted(cluster.members) if name != leader)
        others = [cluster.url(name) for name in sorted(cluster.members) if name != follower]

        async def run() -> tuple[list[bytes], list[bytes]]:
            async with Client([cluster.url(follower), *others]) as client, \
                    Client(others) as writer:
                seen: list[bytes] = []
                session_seen: list[bytes] = []
                watcher = client.watch("k/", prefix=True)
                session = client.watch_session()
                async with watcher, session:
                    await session.create("k/", prefix=True)

                    async def follow() -> None:
                        async for response in watcher:
                            seen.extend(event.kv.value for event in response.events)
                            if len(seen) >= 6:
                                return

                    async def follow_session() -> None:
                        async for response in session:
                            session_seen.extend(event.kv.value for event in response.events)
                            if len(session_seen) >= 6:
                                return
                    tasks = [asyncio.create_task(follow()), asyncio.create_task(follow_session())]
                    await asyncio.sleep(0.5)
                    for i in range(3):
                        await writer.put(f"k/{i}", f"v{i}")
                    await asyncio.sleep(0.5)
                    await asyncio.to_thread(cluster.stop_member, follower, signal.SIGTERM, STOP_BOUND_S)
                    for i in range(3, 6):
                        await writer.put(f"k/{i}", f"v{i}")
                    await asyncio.wait_for(asyncio.gather(*tasks), 60)
                return seen, session_seen

        seen, session_seen = asyncio.run(run())
        want = [f"v{i}".encode() for i in range(6)]
        assert seen == want
        assert session_seen == want


def test_a_request_that_does_not_finish_is_cut_after_the_request_timeout(tmp_path) -> None:
    """Any other request is waited for up to etcd's request timeout (7 s), as etcd's graceful
    stop of its gRPC server, not aiohttp's 60 s: here a snapshot download whose client stopped
    reading (the member cannot write the rest)."""
    with LocalCluster(1, tmp_path) as cluster:
        cluster.start()
        cluster.wait_ready()
        url = cluster.url("m0")
        value = _b64("x" * 100_000)
        for i in range(300):  # (30 MB: more than the socket buffers of both ends hold)
            code, _ = post(url, "/v3/kv/put", {"key": _b64(f"big/{i}"), "value": value})
            assert code == 200
        request = urllib.request.Request(url + "/v3/maintenance/snapshot", data=b"{}")
        with urllib.request.urlopen(request, timeout=120) as answer:
            assert answer.read(1000)  # the download started; nothing more is read
            member = cluster.members["m0"]
            assert member.process is not None
            asyncio.run(asyncio.sleep(1.0))  # (the member fills the buffers and waits)
            os.kill(member.process.pid, signal.SIGTERM)
            member.process.wait(STOP_BOUND_S)  # (raises TimeoutExpired: it waited for the download)

"""The auth gate and a lagging follower, deterministically: three members in one event loop;
one follower's incoming Raft traffic is held back, so a simple token issued through the
leader is unknown to it; the token presented to that follower at once still works, because
the gate looks an unknown token up again after a linearizable barrier (which here releases
the held traffic, as the follower catching up would). A token nobody issued is still
refused after the barrier."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from kvraft.apply.errors import EtcdError
from kvraft.server.api import make_app
from kvraft.server.api.feature_state import FEATURES
from kvraft.server.config import parse_config
from kvraft.server.local import free_port
from kvraft.server.node import Node


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def _post(session: aiohttp.ClientSession, url: str, path: str, doc: dict[str, Any],
                token: str | None = None) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": token} if token else {}
    async with session.post(url + "/v3" + path, json=doc, headers=headers,
                            timeout=aiohttp.ClientTimeout(total=60)) as response:
        return response.status, await response.json(content_type=None)


async def _wait(predicate: Any, what: str, timeout_s: float = 90.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        value = await predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def test_a_token_issued_through_the_leader_works_at_once_on_a_lagging_follower(tmp_path) -> None:
    names = ["a", "b", "c"]
    peers = {n: f"http://127.0.0.1:{free_port()}" for n in names}
    clients = {n: f"http://127.0.0.1:{free_port()}" for n in names}
    cluster = ",".join(f"{n}={peers[n]}" for n in names)
    nodes: dict[str, Node] = {}
    apps: dict[str, web.Application] = {}
    runners: list[web.AppRunner] = []
    try:
        for n in names:
            config = parse_config([
                "--name", n, "--data-dir", str(tmp_path / n), "--listen-client-urls", clients[n],
                "--advertise-client-urls", clients[n], "--listen-peer-urls", peers[n],
                "--initial-advertise-peer-urls", peers[n], "--initial-cluster", cluster,
                # a long election timeout: the held-back follower must not start elections
                "--heartbeat-interval", "100", "--election-timeout", "10000", "--bcrypt-cost", "4",
            ])  # fmt: skip
            nodes[n] = Node(config)
            apps[n] = make_app(nodes[n])
            runner = web.AppRunner(apps[n], access_log=None, handle_signals=False)
            await runner.setup()
            runners.append(runner)
            port = int(clients[n].rsplit(":", 1)[1])
            await web.TCPSite(runner, "127.0.0.1", port, reuse_address=True).start()

        async with aiohttp.ClientSession() as session:
            async def leader() -> str | None:
                for n in names:
                    code, doc = await _post(session, clients[n], "/maintenance/status", {})
                    if code == 200 and doc.get("leader") and int(doc["leader"]) == int(doc["header"]["member_id"]):
                        return n
                return None

            lead = await _wait(leader, "a leader")
            url = clients[lead]
            for path, doc in (("/auth/user/add", {"name": "root", "password": "pw"}),
                              ("/auth/user/grant", {"user": "root", "role": "root"}),
                              ("/auth/enable", {})):
                code, body = await _post(session, url, path, doc)
                assert code == 200, (path, body)
            follower = next(n for n in names if n != lead)
            node = nodes[follower]

            async def follower_has_auth_on() -> bool:
                return bool(apps[follower][FEATURES].auth.enabled)

            await _wait(follower_has_auth_on, "the follower to apply auth enable")

            # hold back everything the follower receives from its peers
            held: list[tuple[int, int, Any]] = []
            deliver = node.driver.on_frame
            holding = True

            def on_frame(source: int, kind: int, body: Any) -> None:
                if holding:
                    held.append((source, kind, body))
                else:
                    deliver(source, kind, body)

            node.driver.on_frame = on_frame  # type: ignore[method-assign]
            code, body = await _post(session, url, "/auth/authenticate", {"name": "root", "password": "pw"})
            assert code == 200, body
            token = body["token"]
            with pytest.raises(EtcdError) as refused:  # the follower really does not know it yet
                apps[follower][FEATURES].resolve(token)
            assert refused.value.code == 16

            barriers = 0
            barrier = node.driver.read_barrier

            async def read_barrier(*args: Any, **kwargs: Any) -> None:
                nonlocal holding, barriers
                barriers += 1
                holding = False  # the follower catches up
                for frame in held:
                    deliver(*frame)
                held.clear()
                await barrier(*args, **kwargs)

            node.driver.read_barrier = read_barrier  # type: ignore[method-assign]
            code, body = await _post(session, clients[follower], "/kv/put", {"key": _b64("k"), "value": _b64("v")},
                                     token=token)
            assert code == 200, body
            assert barriers == 1
            read = {"key": _b64("k"), "serializable": True}  # a read that takes no barrier itself
            code, body = await _post(session, clients[follower], "/kv/range", read, token=token)
            assert code == 200 and body["kvs"][0]["value"] == _b64("v"), body
            assert barriers == 1  # a known token needs no barrier

            code, body = await _post(session, clients[follower], "/kv/range", read, token="never-issued.1")
            assert code == 401 and body["code"] == 16, body
            assert barriers == 2
    finally:
        for runner in reversed(runners):
            await runner.cleanup()

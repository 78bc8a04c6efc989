"""The auth gate and a lagging follower, deterministically: three members in one event loop;
one follower's incoming Raft traffic is held back until it takes a read barrier (which
releases it, as the follower catching up would).

- A simple token issued through the leader is unknown to the follower; presented there at
  once it still works, because the gate looks an unknown token up again after a barrier. A
  token nobody issued is still refused.
- A token revoked through the leader (password change) is still valid in the follower's
  stale state; a linearizable read presented with it there is refused, because the gate
  resolves the caller of a linearizable read after its barrier, as etcd does."""

from __future__ import annotations

import asyncio
import base64
import ssl
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
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
from kvraft.server.tls import client_ssl_context

ROOT = Path(__file__).resolve().parents[2]


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def _post(session: aiohttp.ClientSession, url: str, path: str, doc: dict[str, Any],
                token: str | None = None, ssl_context: ssl.SSLContext | None = None) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": token} if token else {}
    async with session.post(url + "/v3" + path, json=doc, headers=headers, ssl=ssl_context or True,
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


@dataclass
class Cluster:
    session: aiohttp.ClientSession
    clients: dict[str, str]
    nodes: dict[str, Node]
    apps: dict[str, web.Application]
    leader: str = ""
    follower: str = ""
    barriers: int = 0
    held: list[tuple[int, int, Any]] = field(default_factory=list)
    holding: bool = False
    admin_ssl: ssl.SSLContext | None = None  # with TLS: the admin's certificate (ca_ssl: the CA alone)
    ca_ssl: ssl.SSLContext | None = None

    async def call(self, name: str, path: str, doc: dict[str, Any], token: str | None = None,
                   certificate: bool = True) -> tuple[int, Any]:
        context = self.admin_ssl if certificate else self.ca_ssl
        return await _post(self.session, self.clients[name], path, doc, token, context)

    def hold_follower(self) -> None:
        """From now on the follower receives nothing from its peers until its next read
        barrier, which releases what was held (in order) and lets traffic through again."""
        node = self.nodes[self.follower]
        deliver, barrier = node.driver.on_frame, node.driver.read_barrier
        self.holding = True

        def on_frame(source: int, kind: int, body: Any) -> None:
            if self.holding:
                self.held.append((source, kind, body))
            else:
                deliver(source, kind, body)

        async def read_barrier(*args: Any, **kwargs: Any) -> None:
            self.barriers += 1
            if self.holding:
                self.holding = False
                for frame in self.held:
                    deliver(*frame)
                self.held.clear()
            await barrier(*args, **kwargs)

        node.driver.on_frame = on_frame  # type: ignore[method-assign]
        node.driver.read_barrier = read_barrier  # type: ignore[method-assign]

    def follower_knows(self, token: str) -> bool:
        try:
            return self.apps[self.follower][FEATURES].resolve(token) is not None
        except EtcdError as exc:
            assert exc.code == 16
            return False


@asynccontextmanager
async def secured_cluster(tmp_path: Path, tls: bool = False) -> AsyncIterator[Cluster]:
    """Three in-process members with auth on (root/pw; user ro/ro with READ on app/). With
    ``tls``, the client URLs are https with ``--client-cert-auth`` (deploy/make-certs.sh)."""
    names = ["a", "b", "c"]
    peers = {n: f"http://127.0.0.1:{free_port()}" for n in names}
    scheme = "https" if tls else "http"
    clients = {n: f"{scheme}://127.0.0.1:{free_port()}" for n in names}
    pki = tmp_path / "pki"
    admin_ssl = ca_ssl = None
    if tls:
        subprocess.run(["bash", str(ROOT / "deploy" / "make-certs.sh"), "-o", str(pki), "-d", "2", "-c", "admin",
                        *(f"{n}=127.0.0.1" for n in names)], check=True, capture_output=True)
        ca_ssl = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        admin_ssl = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        admin_ssl.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    initial = ",".join(f"{n}={peers[n]}" for n in names)
    nodes: dict[str, Node] = {}
    apps: dict[str, web.Application] = {}
    runners: list[web.AppRunner] = []
    try:
        for n in names:
            config = parse_config([
                "--name", n, "--data-dir", str(tmp_path / n), "--listen-client-urls", clients[n],
                "--advertise-client-urls", clients[n], "--listen-peer-urls", peers[n],
                "--initial-advertise-peer-urls", peers[n], "--initial-cluster", initial,
                # a long election timeout: the held-back follower must not start elections
                "--heartbeat-interval", "100", "--election-timeout", "10000", "--bcrypt-cost", "4",
                *(["--cert-file", str(pki / f"{n}.crt"), "--key-file", str(pki / f"{n}.key"),
                   "--trusted-ca-file", str(pki / "ca.crt"), "--client-cert-auth"] if tls else []),
            ])  # fmt: skip
            nodes[n] = Node(config)
            apps[n] = make_app(nodes[n])
            runner = web.AppRunner(apps[n], access_log=None, handle_signals=False)
            await runner.setup()
            runners.append(runner)
            await web.TCPSite(runner, "127.0.0.1", int(clients[n].rsplit(":", 1)[1]), reuse_address=True,
                              ssl_context=client_ssl_context(config)).start()
        async with aiohttp.ClientSession() as session:
            cluster = Cluster(session, clients, nodes, apps, admin_ssl=admin_ssl, ca_ssl=ca_ssl)

            async def leader() -> str | None:
                for n in names:
                    code, doc = await cluster.call(n, "/maintenance/status", {})
                    if code == 200 and doc.get("leader") and int(doc["leader"]) == int(doc["header"]["member_id"]):
                        return n
                return None

            cluster.leader = await _wait(leader, "a leader")
            cluster.follower = next(n for n in names if n != cluster.leader)
            for path, doc in (("/auth/user/add", {"name": "root", "password": "pw"}),
                              ("/auth/user/grant", {"user": "root", "role": "root"}),
                              ("/auth/role/add", {"name": "ro"}),
                              ("/auth/role/grant", {"name": "ro", "perm": {"permType": "READ", "key": _b64("app/"),
                                                                           "range_end": _b64("app0")}}),
                              ("/auth/user/add", {"name": "ro", "password": "ro"}),
                              ("/auth/user/grant", {"user": "ro", "role": "ro"}),
                              ("/auth/enable", {})):
                code, body = await cluster.call(cluster.leader, path, doc)
                assert code == 200, (path, body)

            async def follower_has_auth_on() -> bool:
                return bool(apps[cluster.follower][FEATURES].auth.enabled)

            await _wait(follower_has_auth_on, "the follower to apply auth enable")
            yield cluster
    finally:
        for runner in reversed(runners):
            await runner.cleanup()


async def test_a_token_issued_through_the_leader_works_at_once_on_a_lagging_follower(tmp_path) -> None:
    async with secured_cluster(tmp_path) as c:
        c.hold_follower()
        code, body = await c.call(c.leader, "/auth/authenticate", {"name": "root", "password": "pw"})
        assert code == 200, body
        token = body["token"]
        assert not c.follower_knows(token)  # the follower really lags

        code, body = await c.call(c.follower, "/kv/put", {"key": _b64("k"), "value": _b64("v")}, token)
        assert code == 200, body
        assert c.barriers == 1
        read = {"key": _b64("k"), "serializable": True}  # a read that takes no barrier itself
        code, body = await c.call(c.follower, "/kv/range", read, token)
        assert code == 200 and body["kvs"][0]["value"] == _b64("v"), body
        assert c.barriers == 1  # a known token needs no barrier

        code, body = await c.call(c.follower, "/kv/range", read, "never-issued.1")
        assert code == 401 and body["code"] == 16, body
        assert c.barriers == 2


@pytest.mark.parametrize("route", ["range", "read-only txn"])
async def test_a_token_revoked_through_the_leader_is_refused_by_a_lagging_follower(tmp_path, route: str) -> None:
    async with secured_cluster(tmp_path) as c:
        code, body = await c.call(c.leader, "/auth/authenticate", {"name": "ro", "password": "ro"})
        assert code == 200, body
        token = body["token"]

        async def follower_knows() -> bool:
            return c.follower_knows(token)

        await _wait(follower_knows, "the follower to learn the token")
        read = {"key": _b64("app/x")}
        request = ("/kv/range", read) if route == "range" else ("/kv/txn", {"success": [{"request_range": read}]})
        code, body = await c.call(c.follower, *request, token)
        assert code == 200, body

        c.hold_follower()
        code, body = await c.call(c.leader, "/auth/user/changepw", {"name": "ro", "password": "new"},
                                  (await c.call(c.leader, "/auth/authenticate",
                                                {"name": "root", "password": "pw"}))[1]["token"])
        assert code == 200, body
        assert c.follower_knows(token)  # the follower's state still has it
        code, body = await c.call(c.follower, *request, token)
        assert (code, body.get("code")) == (401, 16), body  # resolved after the barrier: revoked
        assert c.barriers == 1


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https-client-cert-auth"])
async def test_a_scoped_token_granted_through_the_leader_works_at_once_on_a_lagging_follower(tmp_path,
                                                                                             tls: bool) -> None:
    """The agent grants, the rank starts at once and may reach a member that has not applied
    the grant yet: that member catches up and looks again, as for a simple token. Over https
    with --client-cert-auth, the rank has no certificate (only the CA): the check that lets
    its request through must catch up too."""
    async with secured_cluster(tmp_path, tls) as c:
        code, body = await c.call(c.leader, "/auth/authenticate", {"name": "root", "password": "pw"})
        root = body["token"]
        code, body = await c.call(c.leader, "/lease/grant", {"TTL": "60"}, root)
        assert code == 200, body
        c.hold_follower()
        grant = {"name": "n1/job#1", "permType": "READWRITE", "key": _b64("jobs/j/"), "range_end": _b64("jobs/j0"),
                 "lease": body["ID"]}
        code, body = await c.call(c.leader, "/kvraft/auth/token/grant", grant, root)
        assert code == 200, body
        token = body["token"]
        assert not c.follower_knows(token)  # the follower really lags

        rank = {"certificate": False}
        code, body = await c.call(c.follower, "/kv/put", {"key": _b64("jobs/j/progress"), "value": _b64("1")}, token,
                                  **rank)
        assert code == 200, body
        assert c.barriers == 1
        code, body = await c.call(c.follower, "/kv/put", {"key": _b64("app/x"), "value": _b64("1")}, token, **rank)
        assert (code, body["code"]) == (403, 7), body
        forged = token.rsplit(".", 1)[0] + ".not-the-secret"
        code, body = await c.call(c.follower, "/kv/range", {"key": _b64("jobs/j/progress")}, forged, **rank)
        assert (code, body["code"]) == (401, 16), body

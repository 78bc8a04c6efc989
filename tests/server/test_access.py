"""etcd's access controller (``--cors``, ``--host-whitelist``) and client connections'
keepalive (``--grpc-keepalive-interval``, ``--grpc-keepalive-timeout``).

The access answers are compared with a real etcd 3.4 member started with the same flags:
status, the CORS headers, and the 421 refusal's body and type. The keepalive is read where the
kernel keeps it: ``/proc/net/tcp`` lists the server side of a client connection with its
keepalive timer."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from kvraft.server.config import ConfigError, parse_config
from tests.server.conftest import FAST_FLAGS, etcd_and_kvraft, needs_etcd, start_cluster

ALLOWED = "http://localhost:3000"
FLAGS = [f"--cors={ALLOWED}", "--host-whitelist=example.com,127.0.0.1"]
ACCESS_HEADERS = ("Access-Control-Allow-Origin", "Access-Control-Allow-Methods", "Access-Control-Allow-Headers")


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    with etcd_and_kvraft(tmp_path_factory, extra=FLAGS) as urls:
        yield urls


async def _ask(url: str, method: str, path: str, headers: dict[str, str], body: bytes = b"{}") -> dict[str, Any]:
    """Status, the access headers and (for a refusal) the body and its type; a stream's
    answer is read up to its headers."""
    async with aiohttp.ClientSession() as session, session.request(method, url + path, data=body,
                                                                   headers=headers) as response:
        got: dict[str, Any] = {"status": response.status,
                               **{name: response.headers.get(name) for name in ACCESS_HEADERS}}
        if response.status == 421:
            got["body"] = await response.text()
            got["type"] = response.headers.get("Content-Type")
        return got


CASES = [
    ("POST", "/v3/kv/range", {"Origin": ALLOWED}),
    ("POST", "/v3/kv/range", {"Origin": "http://elsewhere:1"}),
    ("POST", "/v3/kv/range", {}),
    ("OPTIONS", "/v3/kv/put", {"Origin": ALLOWED}),
    ("OPTIONS", "/no/such/path", {"Origin": "http://elsewhere:1"}),
    ("POST", "/v3/kv/range", {"Host": "evil.example:2379", "Origin": ALLOWED}),
    ("GET", "/version", {"Host": "evil.example"}),
    ("GET", "/version", {"Host": "example.com:2379", "Origin": ALLOWED}),
    ("POST", "/v3/kv/put", {"Host": "[::1]:2379"}),
]


@needs_etcd
@pytest.mark.parametrize(("method", "path", "headers"), CASES)
async def test_cors_and_host_whitelist_answer_as_etcd(pair: tuple[str, str], method: str, path: str,
                                                     headers: dict[str, str]) -> None:
    etcd, kvraft = pair
    body = b'{"key": "YQ==", "value": "Yg=="}' if path == "/v3/kv/put" else b'{"key": "YQ=="}'
    want = await _ask(etcd, method, path, headers, body)
    got = await _ask(kvraft, method, path, headers, body)
    assert got == want


@needs_etcd
async def test_a_watch_stream_gets_the_origins_headers(pair: tuple[str, str]) -> None:
    _, kvraft = pair
    async with aiohttp.ClientSession() as session:
        for origin, expect in ((ALLOWED, ALLOWED), ("http://elsewhere:1", None)):
            async with session.post(kvraft + "/v3/watch", data=b'{"create_request": {"key": "YQ=="}}',
                                    headers={"Origin": origin}) as response:
                assert response.status == 200
                assert response.headers.get("Access-Control-Allow-Origin") == expect


@pytest.mark.parametrize(("argv", "message"), [
    (["--cors=foo"], 'invalid value "foo" for flag -cors: URL scheme must be http, https, unix, or unixs: foo'),
    (["--cors=http://a.example"], 'URL address does not have the form "host:port": http://a.example'),
    (["--cors=*,http://a.example:80"], "URL scheme must be http, https, unix, or unixs: *"),
    (["--grpc-keepalive-interval=soon"], "--grpc-keepalive-interval: invalid duration"),
    (["--grpc-keepalive-min-time=-1s"], "--grpc-keepalive-min-time: invalid duration"),
])  # fmt: skip
def test_bad_values_are_refused_at_start(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("*", r"\*").replace("(", r"\(")):
        parse_config(argv, environ={}).validate()


def _keepalive_timer_s(server_port: int, client_port: int) -> float | None:
    """The server side's keepalive timer (seconds left) for the connection between the two
    ports, from ``/proc/net/tcp``; None when no keepalive timer is armed."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1], fields[2]
        if int(local.split(":")[1], 16) == server_port and int(remote.split(":")[1], 16) == client_port:
            timer, when = fields[5].split(":")
            return int(when, 16) / 100 if timer == "02" else None  # (USER_HZ ticks)
    raise AssertionError(f"no connection {server_port} <- {client_port} in /proc/net/tcp")


@pytest.fixture(scope="module")
def keepalive_members(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, int]]:
    """One member with a 37 s keepalive interval, one with keepalive off; their client ports."""
    base = tmp_path_factory.mktemp("keepalive")
    on = start_cluster(base / "on", size=1, extra=[*FAST_FLAGS, "--grpc-keepalive-interval=37s",
                                                   "--grpc-keepalive-timeout=9s"])
    try:
        off = start_cluster(base / "off", size=1, extra=[*FAST_FLAGS, "--grpc-keepalive-interval=0s"])
        try:
            yield {name: int(c.url("m0").rsplit(":", 1)[1]) for name, c in (("on", on), ("off", off))}
        finally:
            off.stop()
    finally:
        on.stop()


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux's /proc/net/tcp")
@pytest.mark.parametrize("served_by", ["fast path", "aiohttp"])
def test_client_connections_carry_the_keepalive_flags(keepalive_members: dict[str, int], served_by: str) -> None:
    """Idle client connections, one that stayed on the fast path and one handed to aiohttp (a
    ``GET /version``): armed with the 37 s interval; none armed with keepalive off."""
    for name, port in keepalive_members.items():
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            if served_by == "aiohttp":
                sock.sendall(b"GET /version HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                assert sock.recv(65536).startswith(b"HTTP/1.1 200")
            client_port = sock.getsockname()[1]
            deadline = time.monotonic() + 10
            while (timer := _keepalive_timer_s(port, client_port)) is None and name == "on" \
                    and time.monotonic() < deadline:
                time.sleep(0.05)  # (the accept may not have run yet)
            if name == "on":
                assert timer is not None and 25 < timer <= 37, timer
            else:
                time.sleep(0.3)
                assert _keepalive_timer_s(port, client_port) is None


def test_a_live_client_connection_survives_the_probes(tmp_path: Path) -> None:
    """With a 1 s interval and 3 s timeout an idle but live connection is probed, answered by
    the client's kernel, and still serves a request after several intervals."""
    cluster = start_cluster(tmp_path, size=1, extra=[*FAST_FLAGS, "--grpc-keepalive-interval=1s",
                                                     "--grpc-keepalive-timeout=3s"])
    try:
        port = int(cluster.url("m0").rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            asyncio.run(asyncio.sleep(4.5))
            sock.sendall(b"GET /version HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    finally:
        cluster.stop()

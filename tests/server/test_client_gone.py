"""A client that goes away in the middle of its request body is not a server fault: nothing
is logged as an internal error (it was, with a traceback, for every such request), and the
call is counted as gRPC Canceled, as etcd counts a client that left. One real member."""

from __future__ import annotations

import socket
import time
import urllib.request
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from kvraft.server.local import LocalCluster
from tests.server.conftest import FAST_FLAGS, start_cluster


@pytest.fixture(scope="module")
def member(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, LocalCluster]]:
    cluster = start_cluster(tmp_path_factory.mktemp("gone"), size=1, extra=FAST_FLAGS)
    try:
        cluster.wait_leader(60)
        yield cluster.url("m0"), cluster
    finally:
        cluster.stop()


def _handled(url: str, method: str) -> dict[str, float]:
    """grpc_server_handled_total of ``method``, by code."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("grpc_server_handled_total{") and f'grpc_method="{method}"' in line:
            code = line.split('grpc_code="', 1)[1].split('"', 1)[0]
            out[code] = float(line.rsplit(" ", 1)[1])
    return out


@pytest.mark.parametrize(("path", "method", "framing"), [
    ("/v3/kv/put", "Put", "Transfer-Encoding: chunked\r\n\r\n5\r\n{\"key"),
    ("/v3/lease/grant", "LeaseGrant", "Transfer-Encoding: chunked\r\n\r\n4\r\n{\"TT"),
    ("/v3/lease/keepalive", "LeaseKeepAlive", "Transfer-Encoding: chunked\r\n\r\n3\r\n{\"I"),
    ("/v3/watch", "Watch", "Transfer-Encoding: chunked\r\n\r\n5\r\n{\"cre"),
])  # fmt: skip
def test_a_client_that_leaves_mid_body_is_canceled_not_an_internal_error(
        member: tuple[str, LocalCluster], path: str, method: str, framing: str) -> None:
    """(A chunked body: the fast path leaves those to aiohttp's routes, and a cut body with a
    length never reaches a handler there.)"""
    url, cluster = member
    before = sum(_handled(url, method).values())
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\n{framing}".encode())
        time.sleep(0.3)  # (the request is being read when the client leaves)
    deadline = time.monotonic() + 30
    while sum(_handled(url, method).values()) == before and time.monotonic() < deadline:
        time.sleep(0.1)
    handled = _handled(url, method)
    assert handled.get("Canceled", 0) >= 1 and "Unknown" not in handled, handled
    log = cluster.members["m0"].log_path.read_text()
    assert "internal error" not in log


@pytest.mark.parametrize("request_bytes", [
    b"POST /v3/lease/leases HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    b"POST /v3/kv/range HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{}",
    b"POST /v3/kv/range HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n{}",
])  # fmt: skip
def test_a_malformed_http_request_is_refused_without_an_error_in_the_log(
        member: tuple[str, LocalCluster], request_bytes: bytes) -> None:
    """aiohttp logged every request its parser refused (400) as an error with a traceback;
    Go's server, under etcd, refuses them silently. Now one info line names it."""
    url, cluster = member
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(request_bytes)
        sock.settimeout(10)
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.") and b" 400 " in answer.split(b"\r\n", 1)[0], answer
    log_path = cluster.members["m0"].log_path
    deadline = time.monotonic() + 30
    while "malformed HTTP request" not in log_path.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    lines = log_path.read_text().splitlines()
    assert not [line for line in lines if "Error handling request" in line]
    assert [line for line in lines if "malformed HTTP request" in line and '"level":"info"' in line]

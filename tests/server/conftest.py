"""Fixtures: real member processes on 127.0.0.1 (kvraft, and etcd 3.4 when installed),
every one stopped by PID in the finalizer."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator

import pytest

from kvraft.server.local import LocalCluster

FAST_FLAGS = ["--heartbeat-interval", "50", "--election-timeout", "500"]


def follower_with(cluster: LocalCluster, key: str, value: str) -> tuple[str, str, str]:
    """(the leader, a follower, its client URL), once ``key`` = ``value`` was put through
    that follower."""
    from kvraft.server.local import b64, post

    leader = cluster.wait_leader()
    follower = next(name for name in cluster.members if name != leader)
    url = cluster.url(follower)
    code, body = post(url, "/v3/kv/put", {"key": b64(key), "value": b64(value)})
    assert code == 200, body
    return leader, follower, url


def serializable_get(cluster: LocalCluster, name: str, key: str) -> dict:  # type: ignore[type-arg]
    """``key`` from member ``name``'s own store (a serializable range)."""
    from kvraft.server.local import b64, post

    code, body = post(cluster.url(name), "/v3/kv/range", {"key": b64(key), "serializable": True}, timeout_s=10)
    assert code == 200, body
    return body  # type: ignore[no-any-return]


def converged(cluster: LocalCluster, key: str) -> list[dict]:  # type: ignore[type-arg]
    """Every running member's own copy of ``key`` once each has applied a write made after
    it (a woken or restarted member has had its say)."""
    import time

    from kvraft.server.local import b64, post

    leader = cluster.wait_leader(60)
    code, body = post(cluster.url(leader), "/v3/kv/put", {"key": b64("fence"), "value": b64("f")}, timeout_s=30)
    assert code == 200, body
    fence = int(body["header"]["revision"])
    deadline = time.monotonic() + 30
    while True:
        copies = [serializable_get(cluster, m.name, key) for m in cluster.running()]
        if all(int(c["header"]["revision"]) >= fence for c in copies):
            return copies
        assert time.monotonic() < deadline, copies
        time.sleep(0.1)


def start_cluster(tmp_path, size: int = 3, binary: str = "kvraft", extra: list[str] | None = None) -> LocalCluster:
    cluster = LocalCluster(size, tmp_path / binary, binary=binary, extra_args=(extra or []))
    try:
        cluster.start(timeout_s=90)
    except BaseException:
        cluster.stop()
        raise
    return cluster


@pytest.fixture
def kv_cluster(tmp_path) -> Iterator[LocalCluster]:
    cluster = start_cluster(tmp_path, extra=FAST_FLAGS)
    yield cluster
    cluster.stop()


def etcd_available() -> bool:
    return shutil.which("etcd") is not None


needs_etcd = pytest.mark.skipif(
    not etcd_available(), reason="etcd binary not installed (apt-get install etcd-server; .ci/run does)"
)


@contextlib.contextmanager
def etcd_and_kvraft(
    tmp_path_factory: pytest.TempPathFactory, extra: list[str] | None = None
) -> Iterator[tuple[str, str]]:
    """One etcd member and one kvraft member side by side: (etcd's url, kvraft's url);
    ``extra`` flags go to both."""
    etcd = LocalCluster(1, tmp_path_factory.mktemp("etcd"), binary="etcd", extra_args=extra)
    kvraft = LocalCluster(1, tmp_path_factory.mktemp("kvraft"), extra_args=extra)
    try:
        etcd.start(90)
        kvraft.start(90)
        yield etcd.url("m0"), kvraft.url("m0")
    finally:
        etcd.stop()
        kvraft.stop()

"""Rendezvous stores and the TCP backend set up through them (threads as ranks)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

import agent.collective as gx
from agent.collective.launch import free_port
from agent.collective.rendezvous import FileRendezvous, TCPStoreRendezvous, from_url


def test_tcp_store_set_get_waits_and_times_out() -> None:
    port = free_port()
    server = TCPStoreRendezvous("127.0.0.1", port, rank=0, run_id="r1")
    client = TCPStoreRendezvous("127.0.0.1", port, rank=1, run_id="r1")
    try:
        threading.Timer(0.2, lambda: server.set("k", b"value")).start()
        assert client.get("k", timeout_s=10) == b"value"  # blocks until set
        with pytest.raises(gx.CollectiveTimeout, match="not published"):
            client.get("missing", timeout_s=0.2)
    finally:
        client.close()
        server.close()


def test_file_store_namespaces_runs(tmp_path: Path) -> None:
    a = FileRendezvous(tmp_path, run_id="a")
    b = from_url(f"file://{tmp_path}", rank=0, run_id="b")
    a.set("addr/0", b"x")
    assert a.get("addr/0", 1) == b"x"
    with pytest.raises(gx.CollectiveTimeout):
        b.get("addr/0", 0.1)


def test_bad_urls_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown rendezvous"):
        from_url("http://x", 0)


@pytest.mark.parametrize("scheme", ["tcp", "file"])
def test_tcp_ring_over_each_rendezvous(tmp_path: Path, scheme: str) -> None:
    n = 3
    url = f"tcp://127.0.0.1:{free_port()}" if scheme == "tcp" else f"file://{tmp_path}"
    results: list[np.ndarray | None] = [None] * n
    errors: list[BaseException] = []

    def rank(r: int) -> None:
        try:
            comm = gx.init(backend="tcp", rank=r, size=n, rendezvous=url, env={"KVRAFT_RUN_ID": "t"})
            a = np.full(100_000, r + 1.0)
            comm.allreduce(a)
            results[r] = a
            comm.close()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert all(r is not None and np.all(r == 6.0) for r in results)

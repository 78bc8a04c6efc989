"""Rendezvous stores and the TCP backend set up through them (threads as ranks)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import agent.collective as gx
from agent.collective.launch import free_port
from agent.collective.rendezvous import FileRendezvous, TCPStoreRendezvous, from_url
from agent.collective.tcp import TCPBackend


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
    # file:// was the working directory and file://tmp/rdzv the directory /rdzv
    for url in ("file://", "file://tmp/rdzv", "file:relative"):
        with pytest.raises(ValueError, match=r"needs an absolute directory: file:///path/to/dir"):
            from_url(url, 0)


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


def _dead_address() -> bytes:
    with socket.create_server(("127.0.0.1", 0)) as s:  # closed again: nothing listens there
        return f"127.0.0.1:{s.getsockname()[1]}".encode()


def _ring(store: FileRendezvous, ranks: list[int], size: int, timeout_s: float, start_after_s: float = 0.0) -> list[np.ndarray | BaseException]:
    results: list[np.ndarray | BaseException] = [RuntimeError("did not finish")] * size

    def rank(r: int) -> None:
        try:
            time.sleep(start_after_s * r)
            backend = TCPBackend(r, size, store, timeout_s=timeout_s)
            a = np.full(1000, r + 1.0)
            backend.allreduce(a)
            backend.close()
            results[r] = a
        except BaseException as exc:  # noqa: BLE001
            results[r] = exc

    threads = [threading.Thread(target=rank, args=(r,)) for r in ranks]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_tcp_ring_reads_the_address_again_over_keys_an_earlier_run_left(tmp_path: Path) -> None:
    # the same run id twice (a file store outlives runs): rank 0 read rank 1's old address and
    # dialled that dead port until its timeout, while rank 1 had published the new one
    store = FileRendezvous(tmp_path, run_id="same")
    store.set("tcp/addr/0", _dead_address())
    store.set("tcp/addr/1", _dead_address())
    results = _ring(store, [0, 1], 2, timeout_s=15, start_after_s=1.0)
    assert all(isinstance(a, np.ndarray) and np.all(a == 3.0) for a in results), results


def test_tcp_ring_names_a_malformed_address_and_the_rank(tmp_path: Path) -> None:
    store = FileRendezvous(tmp_path, run_id="r")
    store.set("tcp/addr/1", b"not-an-address")  # written by hand
    (error, _) = _ring(store, [0], 2, timeout_s=1)
    assert isinstance(error, gx.CollectiveTimeout), error
    assert "cannot connect to rank 1 at not-an-address within 1 s: b'not-an-address' is not host:port" in str(error)


def test_tcp_ring_skips_a_stray_connection_to_its_listener(tmp_path: Path) -> None:
    # a client that is not the left neighbour (a port scan, an earlier run's rank) sends a
    # short hello and goes away: it was a struct.error out of init
    store = FileRendezvous(tmp_path, run_id="r")

    def stray() -> None:
        host, _, port = store.get("tcp/addr/0", 30).decode().rpartition(":")
        with socket.create_connection((host, int(port))) as s:
            s.sendall(b"GET")
        time.sleep(0.5)
        store.set("go", b"")

    threading.Thread(target=stray, daemon=True).start()
    results: list[np.ndarray | BaseException] = [RuntimeError("did not finish")] * 2

    def rank(r: int) -> None:
        try:
            if r == 1:
                store.get("go", 30)
            backend = TCPBackend(r, 2, store, timeout_s=30)
            a = np.full(10, r + 1.0)
            backend.allreduce(a)
            backend.close()
            results[r] = a
        except BaseException as exc:  # noqa: BLE001
            results[r] = exc

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(isinstance(a, np.ndarray) and np.all(a == 3.0) for a in results), results


def test_kvraft_store_that_never_answers_is_a_collective_timeout() -> None:
    # it was the client's EndpointError at once (not a CollectiveError; no wait for a kvraft
    # that is starting or electing, as the tcp:// store waits for rank 0's server)
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(gx.CollectiveTimeout, match=rf"rendezvous kvraft {endpoint.split('://')[1]}: unreachable for 1.0 s: .*no endpoint answered"):
        from_url(f"kvraft://{endpoint.split('://')[1]}/jobs/t/rendezvous", 0, "r", timeout_s=1.0)
    assert not [t.name for t in threading.enumerate() if t.name in ("rdzv-kvraft", "rdzv-lease") and t.is_alive()]


def test_tcp_store_gone_with_rank_0_is_a_peer_failure_naming_it() -> None:
    # a rank waiting in the store when rank 0 died got a bare ConnectionError
    # ("rendezvous connection closed"), not a CollectiveError naming the rank
    port = free_port()
    server = TCPStoreRendezvous("127.0.0.1", port, rank=0, run_id="r")
    client = TCPStoreRendezvous("127.0.0.1", port, rank=2, run_id="r")
    try:
        threading.Timer(0.3, server.close).start()
        with pytest.raises(gx.PeerFailure) as info:
            client.get("tcp/addr/1", timeout_s=30)
        assert info.value.ranks == [0] and info.value.seen_by == 2
        assert f"the rendezvous tcp://127.0.0.1:{port} that rank 0 hosts is gone" in str(info.value)
    finally:
        client.close()
        server.close()


def test_two_processes_given_the_same_rank_are_told_so(tmp_path: Path) -> None:
    """Two processes started as rank 1 of 2 (a launcher or KVRAFT_RANK mistake): the one whose
    published address the other overwrote waited for its left neighbour until its timeout,
    'rank 0 did not connect'; it now reads its address back while it waits and names the
    duplicate."""
    store = FileRendezvous(tmp_path, run_id="dup")
    outcomes: dict[str, BaseException | None] = {}

    def rank(name: str, r: int, after_s: float) -> None:
        time.sleep(after_s)
        try:
            backend = TCPBackend(r, 2, store, timeout_s=8)
            backend.close()
            outcomes[name] = None
        except BaseException as exc:  # noqa: BLE001
            outcomes[name] = exc

    threads = [threading.Thread(target=rank, args=args) for args in (("first 1", 1, 0.0), ("second 1", 1, 0.3),
                                                                     ("0", 0, 1.5))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    # (the one overwritten is the first, unless a loaded machine delays the second past rank 0's read)
    [error] = [e for name, e in outcomes.items() if name.endswith(" 1") and isinstance(e, gx.DuplicateRank)] or [outcomes]
    assert isinstance(error, gx.DuplicateRank), outcomes
    assert "another process published this rank's address" in str(error)
    assert "two processes run as rank 1 of 2" in str(error)


class _SlowKeepAliveClient:
    """A ``kvraft.client.Client`` stand-in whose keepalive takes ``keep_alive_s``."""

    keep_alive_s = 0.8
    in_keep_alive = threading.Event()

    def __init__(self, endpoints: list[str], **_options: object) -> None:
        self.endpoints = endpoints

    async def open(self) -> None:
        return None

    async def lease_grant(self, ttl: int) -> object:
        return type("Lease", (), {"id": 7})()

    async def lease_keep_alive_once(self, lease_id: int) -> None:
        import asyncio

        self.in_keep_alive.set()
        await asyncio.sleep(self.keep_alive_s)

    async def lease_revoke(self, lease_id: int) -> None:
        return None

    async def close(self) -> None:
        return None


def test_kvraft_close_waits_for_the_lease_keeper(monkeypatch: pytest.MonkeyPatch) -> None:
    """close() returned while the keeper thread was still in a keepalive; with the loop then
    stopped, the keeper waited out its timeout (twice the period) and outlived the close.
    The full run saw an 'rdzv-lease' thread alive after a failed init had closed its store."""
    import kvraft.client
    from agent.collective.rendezvous import KvraftRendezvous

    monkeypatch.setattr(kvraft.client, "Client", _SlowKeepAliveClient)
    _SlowKeepAliveClient.in_keep_alive.clear()
    store = KvraftRendezvous(["http://127.0.0.1:1"], "/jobs/t/rendezvous", "r", lease_ttl_s=1)
    assert _SlowKeepAliveClient.in_keep_alive.wait(10)
    store.close()
    assert not store._keeper.is_alive()

"""The same-host link (``agent/collective/cma.py``): link choice, the byte stream (eager and
pulled ranges), flush semantics, failures; then the TCP ring over it in one process (threads:
a process may read its own memory with ``process_vm_readv``, so the pull path is the real one).
The multi-process sums and failure drills over this link are in ``test_processes.py``."""

from __future__ import annotations

import ctypes
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from agent.collective import cma
from agent.collective.errors import CollectiveError, PeerFailure
from agent.collective.launch import free_port
from agent.collective.rendezvous import TCPStoreRendezvous
from agent.collective.tcp import TCPBackend

pytestmark = pytest.mark.skipif(not cma.available(), reason="process_vm_readv is Linux-only")


def _can_read_self() -> bool:
    a, b = socket.socketpair()
    try:
        answer = cma.handshake_send(a, True)
        return cma.handshake_recv(b, True) is not None and answer()
    finally:
        a.close()
        b.close()


needs_cma = pytest.mark.skipif(not _can_read_self(), reason="process_vm_readv denied here (ptrace policy)")


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    for s in (a, b):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    yield a, b
    a.close()
    b.close()


def _in_thread(fn: Callable[[], object]) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def body() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - checked by the caller
            errors.append(exc)

    t = threading.Thread(target=body, daemon=True)
    t.start()
    return t, errors


# -- link choice ----------------------------------------------------------------------------------
@needs_cma
def test_handshake_accepts_a_readable_peer(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    answer = cma.handshake_send(a, True)
    assert cma.handshake_recv(b, True) == os.getpid()
    assert answer() is True


@pytest.mark.parametrize(("send_wants", "recv_wants"), [(False, True), (True, False), (False, False)])
def test_handshake_declines_when_either_side_forces_sockets(pair: tuple[socket.socket, socket.socket], send_wants: bool, recv_wants: bool) -> None:
    a, b = pair
    answer = cma.handshake_send(a, send_wants)
    assert cma.handshake_recv(b, recv_wants) is None
    assert answer() is False


def test_handshake_declines_another_kernel_or_pid_namespace(pair: tuple[socket.socket, socket.socket], monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = pair
    answer = cma.handshake_send(a, True)
    real = cma._identity()
    assert real is not None
    monkeypatch.setattr(cma, "_identity", lambda: (real[0], real[1] + 1))  # the receiver's view
    assert cma.handshake_recv(b, True) is None
    assert answer() is False


def test_handshake_declines_when_the_nonce_reads_back_wrong(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    ident = cma._identity()
    assert ident is not None
    decoy = ctypes.create_string_buffer(b"x" * 16, 16)  # readable, but not the nonce offered
    a.sendall(cma._OFFER.pack(cma._MAGIC, os.getpid(), ident[0], ident[1], ctypes.addressof(decoy), b"y" * 16))
    assert cma.handshake_recv(b, True) is None
    assert a.recv(1) == cma._DECLINE


def test_handshake_refuses_garbage(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    a.sendall(b"\0" * cma._OFFER.size)
    with pytest.raises(ConnectionError, match="bad link offer"):
        cma.handshake_recv(b, True)


# -- the byte stream ------------------------------------------------------------------------------
SIZES = [1, 7, 4096, 65535, 65536, 65537, 300_001, 1 << 20]


@needs_cma
@pytest.mark.parametrize("dtype", [np.uint8, np.float16, np.float32, np.float64, np.int64])
@pytest.mark.parametrize("recv_split", ["same", "whole", "odd"])
def test_stream_of_eager_and_pulled_ranges(pair: tuple[socket.socket, socket.socket], dtype: type, recv_split: str) -> None:
    a, b = pair
    rng = np.random.default_rng(7)
    sent = [rng.integers(0, 250, max(1, n // np.dtype(dtype).itemsize)).astype(dtype) for n in SIZES]
    total = sum(x.nbytes for x in sent)
    sender = cma.CMASendLink(a, eager_max=65536)
    receiver = cma.CMARecvLink(b, os.getpid())
    got = np.zeros(total, np.uint8)
    view = memoryview(got)
    if recv_split == "same":
        cuts = np.cumsum([0] + [x.nbytes for x in sent]).tolist()
    elif recv_split == "whole":
        cuts = [0, total]
    else:  # boundaries that never line up with the sender's
        cuts = sorted({0, total, *range(0, total, 99_991)})
    t, errors = _in_thread(lambda: [receiver.recv_into(view[lo:hi]) for lo, hi in zip(cuts, cuts[1:], strict=False)])
    for x in sent:
        sender.post_send(memoryview(x).cast("B"))
    sender.flush()  # returns only once every pulled range was read
    t.join(60)
    assert not t.is_alive() and not errors, errors
    assert bytes(got) == b"".join(x.tobytes() for x in sent)


@needs_cma
def test_flush_waits_until_the_receiver_pulled(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    data = np.arange(1 << 18, dtype=np.float32)
    sender = cma.CMASendLink(a)
    sender.post_send(memoryview(data).cast("B"))
    flushed = threading.Event()
    t, errors = _in_thread(lambda: (sender.flush(), flushed.set()))
    assert not flushed.wait(0.3)  # nothing pulled yet: the sender must not reuse the memory
    out = np.zeros_like(data)
    cma.CMARecvLink(b, os.getpid()).recv_into(memoryview(out).cast("B"))
    assert flushed.wait(60) and not errors, errors
    assert np.array_equal(out, data)


@needs_cma
def test_contiguous_announcements_are_held_back_until_the_rank_would_block(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    data = np.arange(1 << 20, dtype=np.float32)
    other = np.arange(1 << 17, dtype=np.float64)
    sender = cma.CMASendLink(a, coalesce=True)
    for lo in range(0, data.size, 1 << 16):  # 16 contiguous posts of 256 KiB
        sender.post_send(memoryview(data[lo : lo + (1 << 16)]).cast("B"))
    sender.post_send(memoryview(other).cast("B"))  # not contiguous: the first range goes out
    assert sender._unacked == 1 and sender._pending_len == other.nbytes
    receiver = cma.CMARecvLink(b, os.getpid(), before_block=sender.push)
    got = np.zeros(data.size, np.float32)
    receiver.recv_into(memoryview(got).cast("B"))  # header there already: no push needed
    assert np.array_equal(got, data) and sender._pending_len == other.nbytes
    got2 = np.zeros_like(other)
    receiver.recv_into(memoryview(got2).cast("B"))  # would block: pushes the held-back range
    assert np.array_equal(got2, other) and sender._unacked == 2
    sender.flush()
    assert sender._unacked == 0


def test_eof_and_shutdown_fail_the_blocked_side(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    receiver = cma.CMARecvLink(b, os.getpid())
    out = np.zeros(1 << 16, np.uint8)
    t, errors = _in_thread(lambda: receiver.recv_into(memoryview(out)))
    b.shutdown(socket.SHUT_RDWR)  # what abort() does: a blocked recv returns at once
    t.join(30)
    assert not t.is_alive() and errors and isinstance(errors[0], ConnectionResetError)
    sender = cma.CMASendLink(a)
    data = np.ones(1 << 17, np.uint8)
    with pytest.raises(OSError):  # peer gone: the announcement or the wait for its ack fails
        sender.post_send(memoryview(data))
        sender.flush()


def test_pull_from_a_dead_process_raises() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(60)
    a, b = socket.socketpair()
    try:
        a.sendall(cma._HDR.pack(cma._PULL, 4096, 64))
        with pytest.raises(OSError):
            cma.CMARecvLink(b, proc.pid).recv_into(memoryview(bytearray(64)))
    finally:
        a.close()
        b.close()


# -- the ring over it -----------------------------------------------------------------------------
def _ring(n: int, links: str | list[str], body: Callable[[TCPBackend], object], cma_min_bytes: int | None | list[int | None] = 0) -> list[object]:
    """``n`` ranks on threads; ``cma_min_bytes=0`` (default here) puts every call on the attach
    links, so the small sizes exercise them too."""
    port = free_port()
    results: list[object] = [None] * n
    errors: list[BaseException] = []

    def rank(r: int) -> None:
        try:
            rdv = TCPStoreRendezvous("127.0.0.1", port, r, "cma")
            fixed = cma_min_bytes[r] if isinstance(cma_min_bytes, list) else cma_min_bytes
            be = TCPBackend(r, n, rdv, links=links if isinstance(links, str) else links[r], timeout_s=60, cma_min_bytes=fixed)
            try:
                results[r] = body(be)
            finally:
                be.close()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=rank, args=(r,), daemon=True) for r in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads) and not errors, errors
    return results


@needs_cma
@pytest.mark.parametrize("n", [2, 3, 4])
def test_ring_over_cma_matches_numpy_sums(n: int) -> None:
    shapes = [1, 5, 1000, 16_385, 70_001, 600_007]
    dtypes = [np.float32, np.float64, np.int32, np.int64]

    def data(r: int, i: int, size: int, dt: type) -> np.ndarray:
        return np.random.default_rng([i, r]).integers(-50, 50, size).astype(dt)

    def body(be: TCPBackend) -> object:
        assert be.link_kinds == {"right": "cma", "left": "cma"} and be.links == "cma"
        be.barrier()  # the first collective: the ranks agree on the fixed threshold
        assert be.cma_min_bytes == 0 and be.links_for(4) == "cma"
        for i, (size, dt) in enumerate((s, d) for s in shapes for d in dtypes):
            a = data(be.rank, i, size, dt)
            be.allreduce(a)
            want = sum(data(r, i, size, dt) for r in range(n))
            assert np.array_equal(a, want), (size, dt)
        h = np.random.default_rng(be.rank).standard_normal(200_000).astype(np.float32)
        be.allreduce(h, np.dtype(np.float16))  # compressed ring: every rank bitwise equal
        b = np.arange(300_000, dtype=np.float64) * be.rank
        be.broadcast(b, n - 1)
        assert np.array_equal(b, np.arange(300_000, dtype=np.float64) * (n - 1))
        g = np.zeros(n * 100_000, np.int64)
        be.allgather(np.full(100_000, be.rank, np.int64), g)
        assert np.array_equal(g, np.repeat(np.arange(n), 100_000))
        return h

    got = _ring(n, "auto", body)
    assert all(np.array_equal(g, got[0]) for g in got)  # type: ignore[arg-type]


@needs_cma
def test_mixed_links_when_one_rank_forces_sockets() -> None:
    # rank 1 forces sockets: 0 -> 1 and 1 -> 2 are sockets, 2 -> 0 stays CMA, so rank 0
    # receives over CMA but sends over a socket, and rank 2 the other way round
    def body(be: TCPBackend) -> object:
        for size in (3, 70_001, 1_000_003):
            a = np.full(size, be.rank + 1.0)
            be.allreduce(a)
            assert np.all(a == 6.0), size
        be.barrier()
        return be.link_kinds

    kinds = _ring(3, ["auto", "socket", "auto"], body)
    assert kinds == [
        {"right": "socket", "left": "cma"},
        {"right": "socket", "left": "socket"},
        {"right": "cma", "left": "socket"},
    ]


def test_forced_sockets_and_bad_mode() -> None:
    got = _ring(2, "socket", lambda be: be.links)
    assert got == ["socket", "socket"]
    with pytest.raises(ValueError, match="links must be one of"):
        TCPBackend(0, 1, None, links="shm")  # type: ignore[arg-type]


@needs_cma
def test_abort_unblocks_a_rank_waiting_on_the_cma_link() -> None:
    done = threading.Event()

    def body(be: TCPBackend) -> object:
        if be.rank == 1:  # alive, links open, but never joins: rank 0 blocks on its left link
            done.wait(60)
            return "idle"
        t, errors = _in_thread(lambda: be.allreduce(np.ones(1 << 20, np.float32)))
        t.join(0.3)
        be.abort()  # what the monitor does on a failure
        t.join(30)
        done.set()
        assert not t.is_alive()
        return errors[0] if errors else None

    got = _ring(2, "auto", body)
    assert isinstance(got[0], PeerFailure), got


@pytest.mark.parametrize("links", ["socket", pytest.param("auto", marks=needs_cma)])
def test_a_collective_interrupted_after_data_moved_shuts_its_ring_down(links: str) -> None:
    # an exception on one rank in the middle of the ring (KeyboardInterrupt, MemoryError)
    # left the streams out of step: that rank's next call fed its neighbour's pending one
    class Injected(Exception):
        pass

    def body(be: TCPBackend) -> object:
        be.barrier()  # the links are agreed: from here a call moves its own data only
        a = np.full(300_000, be.rank + 1.0)
        if be.rank == 0:
            try:
                be.allreduce(a)
            except PeerFailure as exc:
                return exc
            return a
        calls = 0
        receive = be._recv

        def failing(out: np.ndarray) -> None:
            nonlocal calls
            calls += 1
            if calls == 2:
                raise Injected("after the first segment")
            receive(out)

        be._recv = failing  # type: ignore[method-assign]
        got: list[BaseException] = []
        for _ in range(2):
            try:
                be.allreduce(a)
            except BaseException as exc:  # noqa: BLE001
                got.append(exc)
        return got

    first, second = _ring(2, links, body)
    assert isinstance(first, PeerFailure) and first.ranks == [1], first
    injected, later = second  # type: ignore[misc]
    assert isinstance(injected, Injected)
    assert isinstance(later, CollectiveError) and "rank 1: Injected (after the first segment) interrupted a collective" in str(later)


# -- the data path per call size ------------------------------------------------------------------
def _used_links(be: TCPBackend) -> str:
    if be._attach_pair is not None and (be.right, be.left) == be._attach_pair:
        return "attach"
    assert (be.right, be.left) == be._socket_pair
    return "socket"


@needs_cma
@pytest.mark.parametrize("n", [2, 3])
def test_calls_below_the_threshold_use_the_socket_links_and_above_it_attach(n: int, monkeypatch: pytest.MonkeyPatch) -> None:
    received: dict[int, int] = {}  # attach receive link -> receives on it
    real_recv = cma.CMARecvLink.recv_into

    def counting_recv(self: cma.CMARecvLink, out: memoryview) -> None:
        received[id(self)] = received.get(id(self), 0) + 1
        real_recv(self, out)

    monkeypatch.setattr(cma.CMARecvLink, "recv_into", counting_recv)
    threshold = 400_000
    # sizes alternate around the threshold on the same connections: each switch happens
    # between collectives, and the byte streams stay in step
    sizes = [10, 150_000, 20, 700_001, 3, 99_999, 1_000_000, 100_000, 100_001, 5]

    def body(be: TCPBackend) -> object:
        assert be._attach_pair is not None
        mine = id(be._attach_pair[1])
        used = []
        for i, count in enumerate(sizes):  # float32: 4 bytes per element
            before = received.get(mine, 0)
            a = np.random.default_rng([i, be.rank]).integers(-9, 9, count).astype(np.float32)
            be.allreduce(a)
            want = sum(np.random.default_rng([i, r]).integers(-9, 9, count).astype(np.float32) for r in range(n))
            assert np.array_equal(a, want), count
            b = np.arange(count, dtype=np.float32) * be.rank
            be.broadcast(b, n - 1)
            assert np.array_equal(b, np.arange(count, dtype=np.float32) * (n - 1))
            kind = _used_links(be)
            assert (received.get(mine, 0) > before) == (kind == "attach"), (count, kind)
            used.append(kind)
        return used

    got = _ring(n, "auto", body, cma_min_bytes=threshold)
    assert got == [["attach" if 4 * c >= threshold else "socket" for c in sizes]] * n


@needs_cma
def test_fixed_thresholds_are_agreed_and_the_probe_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    import agent.collective.tcp as tcp_mod

    def no_probe(*a: object, **k: object) -> object:
        raise AssertionError("probed although a threshold was fixed")

    monkeypatch.setattr(tcp_mod, "probe_links", no_probe)
    # set on one rank only: every rank uses it (the largest of those set)
    got = _ring(3, "auto", lambda be: (be.allreduce(np.ones(1 << 20, np.float32)), be.cma_min_bytes)[1], cma_min_bytes=[None, 1 << 20, 300_000])
    assert got == [1 << 20] * 3
    # no link can attach anywhere: no probe, sockets for every size
    got = _ring(2, "socket", lambda be: (be.allreduce(np.ones(1 << 20, np.float32)), be.cma_min_bytes, be._links_state, _used_links(be))[1:], cma_min_bytes=None)
    assert got == [(None, "done", "socket")] * 2


@needs_cma
def test_an_injected_probe_decides_the_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    import agent.collective.tcp as tcp_mod
    from agent.collective.probe import LinkProbe, link_threshold

    seen: list[tuple[int, ...]] = []

    def fake_probe(run: Callable[[str, np.ndarray], None], agree: Callable[[np.ndarray], None], sizes: tuple[int, ...], reps: int = 3) -> LinkProbe:
        seen.append(tuple(sizes))
        for kind in ("socket", "attach"):  # the real probe's calls, once each (collective)
            run(kind, np.ones(sizes[0] // 4, np.float32))
        t = np.zeros(2, np.float64)
        agree(t)
        sock, att = [1.0, 2.0, 5.0, 9.0, 30.0], [2.0, 3.0, 4.0, 5.0, 6.0]
        return LinkProbe(tuple(sizes), tuple(sock), tuple(att), link_threshold(sizes, sock, att))

    monkeypatch.setattr(tcp_mod, "probe_links", fake_probe)

    def body(be: TCPBackend) -> object:
        small = np.full(1000, be.rank + 1.0, np.float32)  # below the ladder: no probe yet
        be.allreduce(small)
        assert be._links_state == "probe" and be.cma_min_bytes is None and _used_links(be) == "socket"
        used = []
        for nbytes in (tcp_mod.LINK_LADDER[0], tcp_mod.LINK_LADDER[2], tcp_mod.LINK_LADDER[2] - 4, 4):
            a = np.full(nbytes // 4, be.rank + 1.0, np.float32)
            be.allreduce(a)
            assert np.all(a == 3.0)
            used.append(_used_links(be))
        return be.cma_min_bytes, used

    got = _ring(2, "auto", body, cma_min_bytes=None)
    assert got == [(tcp_mod.LINK_LADDER[2], ["socket", "attach", "socket", "socket"])] * 2
    assert seen == [tcp_mod.LINK_LADDER] * 2  # once per rank


@needs_cma
def test_the_real_probe_gives_every_rank_the_same_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    import agent.collective.tcp as tcp_mod
    from agent.collective.probe import link_threshold

    monkeypatch.setattr(tcp_mod, "LINK_LADDER", (64 << 10, 256 << 10, 1 << 20))  # quick

    def body(be: TCPBackend) -> object:
        a = np.full(1 << 18, be.rank + 1.0, np.float32)
        be.allreduce(a)
        assert np.all(a == 3.0)
        p = be.link_probe
        assert p is not None and p.sizes == tcp_mod.LINK_LADDER
        assert be.cma_min_bytes == p.threshold == link_threshold(p.sizes, p.socket_s, p.attach_s)
        return p

    got = _ring(2, "auto", body, cma_min_bytes=None)
    assert got[0] == got[1]  # bitwise the same times on both ranks

"""In-process loopback backend: ranks are threads of one process, links are queues.

It runs the same ring code as the TCP backend (``ring.RingBackend``), so tests of the
communicator (fusion, compression, mismatch checks, async handles, hierarchical mode) run
fast and without processes. ``LoopbackWorld.fail(rank)`` simulates a peer failure: every
blocked or later operation of the other ranks raises ``PeerFailure``.

    world = LoopbackWorld(4)
    results = run_ranks(world, lambda comm: comm.allreduce([np.ones(3)]) or comm.rank)
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

from agent.collective.errors import PeerFailure
from agent.collective.fusion import FusionPolicy
from agent.collective.ring import RingBackend

__all__ = ["LOOPBACK_FUSION", "LoopbackBackend", "LoopbackWorld", "run_ranks"]

LOOPBACK_FUSION = FusionPolicy(inplace_min_bytes=64 << 10, bucket_bytes=1 << 20)


class LoopbackWorld:
    def __init__(self, size: int) -> None:
        self.size = size
        self._queues: dict[tuple[str, int, int], queue.SimpleQueue[bytes]] = {}
        self._lock = threading.Lock()
        self.failure: PeerFailure | None = None
        self._aborted: set[int] = set()

    def channel(self, tag: str, src: int, dst: int) -> queue.SimpleQueue[bytes]:
        with self._lock:
            return self._queues.setdefault((tag, src, dst), queue.SimpleQueue())

    def fail(self, rank: int, reason: str = "simulated failure") -> None:
        self.failure = PeerFailure([rank], reason)

    def backend(self, rank: int, segment_bytes: int = 64 << 10) -> LoopbackBackend:
        return LoopbackBackend(self, rank, self.size, list(range(self.size)), "w", segment_bytes)


class _QueueLink:
    def __init__(self, backend: LoopbackBackend, send_q: queue.SimpleQueue[bytes], recv_q: queue.SimpleQueue[bytes]) -> None:
        self.backend = backend
        self.send_q = send_q
        self.recv_q = recv_q
        self._rest = memoryview(b"")  # the part of the last message not received yet

    def post_send(self, data: memoryview) -> None:
        self.backend._check()
        self.send_q.put(bytes(data))

    def flush(self) -> None:
        self.backend._check()

    def recv_into(self, out: memoryview) -> None:
        """A byte stream like the socket links: one post may be received in several parts."""
        got = 0
        while got < len(out):
            if not self._rest:
                self.backend._check()
                try:
                    self._rest = memoryview(self.recv_q.get(timeout=0.05))
                except queue.Empty:
                    continue
            k = min(len(self._rest), len(out) - got)
            out[got : got + k] = self._rest[:k]
            self._rest = self._rest[k:]
            got += k


class LoopbackBackend(RingBackend):
    name = "loopback"
    interruptible = True

    def __init__(self, world: LoopbackWorld, rank: int, size: int, global_ranks: list[int], tag: str, segment_bytes: int) -> None:
        super().__init__(rank, size, global_ranks, LOOPBACK_FUSION, segment_bytes)
        self.world = world
        self.tag = tag
        self._aborted = False
        me = global_ranks[rank]
        right = global_ranks[(rank + 1) % size]
        left = global_ranks[(rank - 1) % size]
        link = _QueueLink(self, world.channel(tag, me, right), world.channel(tag, left, me))
        self.left = link
        self.right = link

    def _check(self) -> None:
        failure = self.world.failure
        if failure is not None:
            raise PeerFailure(failure.ranks, failure.reason, self.global_ranks[self.rank])
        if self._aborted:
            raise PeerFailure([], "aborted", self.global_ranks[self.rank])

    def _make_group(self, members: list[int], index: int, tag: str) -> LoopbackBackend:
        return LoopbackBackend(
            self.world, index, len(members), [self.global_ranks[m] for m in members], f"{self.tag}/{tag}", self.segment_bytes
        )

    def abort(self) -> None:
        self._aborted = True

    def close(self) -> None:
        pass


def run_ranks(world: LoopbackWorld, fn: Callable[[Any], Any], timeout_s: float = 60.0, **comm_kwargs: Any) -> list[Any]:
    """Run ``fn(comm)`` on every rank of ``world`` (one thread each); return the results in
    rank order, or raise the first exception (by rank)."""
    from agent.collective.communicator import Communicator

    results: list[Any] = [None] * world.size
    errors: list[BaseException | None] = [None] * world.size

    def body(rank: int) -> None:
        comm = Communicator(world.backend(rank), **comm_kwargs)
        try:
            results[rank] = fn(comm)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            errors[rank] = exc
        finally:
            comm.close(barrier=False)

    threads = [threading.Thread(target=body, args=(r,), name=f"loopback-rank-{r}", daemon=True) for r in range(world.size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout_s)
        if t.is_alive():
            world.fail(-1, "run_ranks timed out")
            raise TimeoutError(f"loopback ranks did not finish in {timeout_s} s")
    for exc in errors:
        if exc is not None:
            raise exc
    return results

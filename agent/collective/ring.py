"""Ring collectives over point-to-point links, pipelined segment by segment.

``RingBackend`` implements the Backend Protocol for any transport that can give each rank a
link to its right neighbour (send) and from its left neighbour (receive): the TCP ring, the
in-process loopback and the compressed MPI path all run this code. The plans come from the
PURE ``schedule`` module; this module only walks them.

Pipelining: ``post_send`` is asynchronous, so while segment ``j`` of a chunk is on its way
right, segment ``j + 1`` is being received from the left and added. The chunk received in
reduce-scatter step ``s`` is the one sent in step ``s + 1``, so a segment is forwarded as soon
as it is reduced, and the last reduce-scatter step flows straight into the allgather.

Compression: data travels in ``wire_dtype`` and is accumulated in ``buf.dtype`` (fp32). The
owner of each reduced chunk rounds it to the wire format once and keeps the rounded value
itself, so every rank ends with bitwise-identical results.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Concatenate, ParamSpec, TypeVar

import numpy as np

from agent.collective.compression import decode_into, encode_into
from agent.collective.errors import CollectiveError, PeerFailure
from agent.collective.fusion import FusionPolicy
from agent.collective.interface import Link
from agent.collective.schedule import chain_role, chunk_bounds, segment_bounds

__all__ = ["RingBackend"]


def _bytes(a: np.ndarray) -> memoryview:
    return memoryview(a).cast("B")  # type: ignore[arg-type]


_P = ParamSpec("_P")
_R = TypeVar("_R")
_B = TypeVar("_B", bound="RingBackend")


def _in_step(method: Callable[Concatenate[_B, _P], _R]) -> Callable[Concatenate[_B, _P], _R]:
    """A collective that raises after it sent or received something (KeyboardInterrupt, a
    MemoryError, ...) leaves the byte streams of its links out of step: the neighbours would
    take this rank's next collective for the rest of this one (wrong sums, or a hang). The
    ring is then shut down (the neighbours get a ``PeerFailure`` naming this rank) and every
    later collective on it raises a ``CollectiveError`` saying why."""

    @functools.wraps(method)
    def run(self: _B, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        if self._broken is not None:
            raise self._broken
        self._moved = False
        try:
            return method(self, *args, **kwargs)
        except PeerFailure:
            raise
        except BaseException as exc:
            if self._moved and self._broken is None:
                self._broken = CollectiveError(
                    f"rank {self.global_ranks[self.rank]}: {type(exc).__name__} ({exc}) interrupted a collective after "
                    "data had moved: its ring is out of step and was shut down")
                self.abort()
            raise

    return run


class RingBackend:
    """Base class: subclasses set ``left``/``right`` links and implement ``_make_group``,
    ``abort`` and ``close``."""

    name = "ring"
    interruptible = True

    def __init__(self, rank: int, size: int, global_ranks: list[int], fusion: FusionPolicy, segment_bytes: int) -> None:
        self.rank = rank
        self.size = size
        self.global_ranks = global_ranks
        self.fusion = fusion
        self.segment_bytes = segment_bytes
        self.left: Link | None = None
        self.right: Link | None = None
        self._scratch: dict[tuple[str, int], np.ndarray] = {}
        self._splits = 0
        self._moved = False  # the current collective sent or received something
        self._broken: CollectiveError | None = None  # see _in_step
        #: when a dict, seconds spent per activity are added to it (``bench --profile``):
        #: recv_s (blocked receiving), send_s (inline sends + queueing), flush_s (waiting for
        #: the sender thread), total_s (whole allreduce calls); the rest is reduction + Python
        self.profile: dict[str, float] | None = None

    # -- helpers ---------------------------------------------------------------------------
    def _buffer(self, dtype: np.dtype, count: int, slot: int) -> np.ndarray:
        key = (dtype.str, slot)
        buf = self._scratch.get(key)
        if buf is None or buf.size < count:
            buf = np.empty(max(count, 1), dtype)
            self._scratch[key] = buf
        return buf[:count]

    def _peer_error(self, exc: BaseException, side: str) -> PeerFailure:
        peer = (self.rank - 1) % self.size if side == "left" else (self.rank + 1) % self.size
        return PeerFailure([self.global_ranks[peer]], f"ring link to the {side} neighbour failed: {exc}", self.global_ranks[self.rank])

    def _recv(self, out: np.ndarray) -> None:
        assert self.left is not None
        if out.size == 0:
            return
        self._moved = True
        if self.profile is not None:
            t0 = time.perf_counter()
            self._recv_raw(out)
            self.profile["recv_s"] = self.profile.get("recv_s", 0.0) + time.perf_counter() - t0
            return
        self._recv_raw(out)

    def _recv_raw(self, out: np.ndarray) -> None:
        assert self.left is not None
        try:
            self.left.recv_into(_bytes(out))
        except PeerFailure:
            raise
        except OSError as exc:
            raise self._peer_error(exc, "left") from exc

    def _send(self, data: np.ndarray) -> None:
        assert self.right is not None
        if data.size == 0:
            return
        self._moved = True
        if self.profile is not None:
            t0 = time.perf_counter()
            self._send_raw(data)
            self.profile["send_s"] = self.profile.get("send_s", 0.0) + time.perf_counter() - t0
            return
        self._send_raw(data)

    def _send_raw(self, data: np.ndarray) -> None:
        assert self.right is not None
        try:
            self.right.post_send(_bytes(data))
        except PeerFailure:
            raise
        except OSError as exc:
            raise self._peer_error(exc, "right") from exc

    def _flush(self) -> None:
        assert self.right is not None
        t0 = time.perf_counter() if self.profile is not None else 0.0
        try:
            self.right.flush()
        except PeerFailure:
            raise
        except OSError as exc:
            raise self._peer_error(exc, "right") from exc
        if self.profile is not None:
            self.profile["flush_s"] = self.profile.get("flush_s", 0.0) + time.perf_counter() - t0

    def _seg_elems(self, itemsize: int) -> int:
        return max(1, self.segment_bytes // itemsize)

    def _select_links(self, nbytes: int) -> None:
        """Called at the start of every collective with its size in bytes (the same on every
        rank): a transport with several data paths sets ``left``/``right`` for it here."""

    # -- collectives -----------------------------------------------------------------------
    @_in_step
    def allreduce(self, buf: np.ndarray, wire_dtype: np.dtype | None = None) -> None:
        # NaN and inf pass through as in MPI's sum: no numpy warning, and no FloatingPointError
        # under np.seterr(all="raise") in the middle of the ring, which would leave the
        # neighbours' streams out of step (garbage or a hang on the other ranks)
        if self.profile is None:
            with np.errstate(all="ignore"):
                self._allreduce(buf, wire_dtype)
            return
        t0 = time.perf_counter()
        with np.errstate(all="ignore"):
            self._allreduce(buf, wire_dtype)
        self.profile["total_s"] = self.profile.get("total_s", 0.0) + time.perf_counter() - t0
        self.profile["calls"] = self.profile.get("calls", 0.0) + 1

    def _allreduce(self, buf: np.ndarray, wire_dtype: np.dtype | None = None) -> None:
        n, r = self.size, self.rank
        wire_dt = np.dtype(wire_dtype) if wire_dtype is not None else buf.dtype
        compressed = wire_dt != buf.dtype
        if n > 1:
            self._select_links(buf.size * wire_dt.itemsize)
        if n == 1:
            if compressed:  # same rounding as with peers, so results do not depend on n
                wire1 = self._buffer(wire_dt, buf.size, 0)
                encode_into(buf, wire1)
                decode_into(wire1, buf, add=False)
            return
        chunks = chunk_bounds(buf.size, n)
        # segments: at least segment_bytes, but no more than ~16 per chunk (fewer Python
        # round trips for big buffers), and at most 1 MiB so the receive scratch stays in L2
        chunk_bytes = max(hi - lo for lo, hi in chunks) * wire_dt.itemsize
        seg_bytes = min(max(self.segment_bytes, chunk_bytes // 16), max(self.segment_bytes, 1 << 20))
        seg = max(1, seg_bytes // wire_dt.itemsize)
        nseg = max(1, -(-max(hi - lo for lo, hi in chunks) // seg))
        segs = [segment_bounds(lo, hi, seg, nseg) for lo, hi in chunks]
        wire = self._buffer(wire_dt, buf.size, 0) if compressed else buf
        tmp = self._buffer(wire_dt, max(hi - lo for s in segs for lo, hi in s), 1)

        if compressed:  # reduce-scatter step 0: our own contribution, encoded segment-wise
            for lo, hi in segs[r]:
                encode_into(buf[lo:hi], wire[lo:hi])
                self._send(wire[lo:hi])
        else:  # ready as a whole: one post (one announcement on a CMA link, one hand-off on TCP)
            self._send(wire[chunks[r][0] : chunks[r][1]])
        for s in range(n - 1):
            last = s == n - 2
            for lo, hi in segs[(r - s - 1) % n]:
                if hi == lo:
                    continue
                t = tmp[: hi - lo]
                self._recv(t)
                if compressed:
                    decode_into(t, buf[lo:hi], add=True)
                    encode_into(buf[lo:hi], wire[lo:hi])
                    if last:  # we own this chunk: keep exactly what the others will get
                        decode_into(wire[lo:hi], buf[lo:hi], add=False)
                else:
                    np.add(buf[lo:hi], t, out=buf[lo:hi])
                self._send(wire[lo:hi])  # next step's send (allgather step 0 after the last)
        for s in range(n - 1):
            for lo, hi in segs[(r - s) % n]:
                if hi == lo:
                    continue
                self._recv(wire[lo:hi])
                if compressed:
                    decode_into(wire[lo:hi], buf[lo:hi], add=False)
                if s < n - 2:
                    self._send(wire[lo:hi])
        self._flush()

    @_in_step
    def reduce(self, buf: np.ndarray, root: int) -> None:
        with np.errstate(all="ignore"):  # as allreduce
            self._reduce(buf, root)

    def _reduce(self, buf: np.ndarray, root: int) -> None:
        receives, sends = chain_role(self.rank, self.size, root, "reduce")
        self._select_links(buf.nbytes)
        tmp = self._buffer(buf.dtype, min(buf.size, self._seg_elems(buf.itemsize)), 1)
        for lo, hi in segment_bounds(0, buf.size, self._seg_elems(buf.itemsize)):
            if hi == lo:
                continue
            if receives:
                t = tmp[: hi - lo]
                self._recv(t)
                np.add(buf[lo:hi], t, out=buf[lo:hi])
            if sends:
                self._send(buf[lo:hi])
        if sends:
            self._flush()

    @_in_step
    def broadcast(self, buf: np.ndarray, root: int) -> None:
        receives, sends = chain_role(self.rank, self.size, root, "broadcast")
        self._select_links(buf.nbytes)
        for lo, hi in segment_bounds(0, buf.size, self._seg_elems(buf.itemsize)):
            if hi == lo:
                continue
            if receives:
                self._recv(buf[lo:hi])
            if sends:
                self._send(buf[lo:hi])
        if sends:
            self._flush()

    @_in_step
    def allgather(self, send: np.ndarray, recv: np.ndarray) -> None:
        n, r, width = self.size, self.rank, send.size
        if recv.size != n * width:
            raise ValueError("allgather: recv must hold size * len(send) elements")
        recv[r * width : (r + 1) * width] = send
        if n > 1:
            self._select_links(recv.nbytes)
        for s in range(n - 1):
            out_block = (r - s) % n
            in_block = (r - s - 1) % n
            self._send(recv[out_block * width : (out_block + 1) * width])
            self._recv(recv[in_block * width : (in_block + 1) * width])
        if n > 1:
            self._flush()

    def barrier(self) -> None:
        self.allreduce(np.zeros(1, np.int64))

    def split(self, color: int, key: int) -> RingBackend:
        pairs = np.zeros(self.size * 2, np.int64)
        self.allgather(np.array([color, key], np.int64), pairs)
        members = sorted(
            (int(pairs[2 * i + 1]), i) for i in range(self.size) if int(pairs[2 * i]) == color
        )
        order = [i for _, i in members]
        self._splits += 1
        return self._make_group(order, order.index(self.rank), f"s{self._splits}c{color}")

    def _make_group(self, members: list[int], index: int, tag: str) -> RingBackend:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

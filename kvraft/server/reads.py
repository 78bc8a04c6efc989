"""Linearizable-read bookkeeping for the driver: batched ReadIndex and applied-index waits.

Every linearizable read needs "the leader was still leader after my request arrived, and
this member has applied at least the leader's commit index at that moment". One ReadIndex
round answers that for every read that arrived before it started, so reads are batched:
while a round is in flight new reads queue; when it completes, the queued reads start the
next round together.

Contexts are 16 bytes: the origin member id and a sequence number, so a leader answering
a forwarded round knows where to send the result.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import struct
import time
from collections.abc import Callable
from typing import Any

from kvraft.apply.errors import Unavailable

__all__ = ["AppliedWaiters", "BarrierWait", "ReadBatcher"]

_CTX = struct.Struct(">QQ")


class AppliedWaiters:
    """Futures resolved once the applied index reaches a target."""

    def __init__(self) -> None:
        self.applied = 0
        self._heap: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def wait(self, index: int) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if index <= self.applied:
            future.set_result(None)
        else:
            heapq.heappush(self._heap, (index, next(self._seq), future))
        return future

    def advance(self, applied: int) -> None:
        self.applied = max(self.applied, applied)
        while self._heap and self._heap[0][0] <= self.applied:
            _, _, future = heapq.heappop(self._heap)
            if not future.done():
                future.set_result(None)

    def fail_all(self, exc: BaseException) -> None:
        while self._heap:
            _, _, future = heapq.heappop(self._heap)
            if not future.done():
                future.set_exception(exc)


class ReadBatcher:
    """Groups read requests into ReadIndex rounds. ``start_round`` is called with a fresh
    context when a round should begin; ``complete(ctx, index)`` resolves that round."""

    def __init__(self, member_id: int) -> None:
        self.member_id = member_id
        self._seq = itertools.count(1)
        self._queued: list[asyncio.Future[int]] = []
        self._inflight: dict[bytes, list[asyncio.Future[int]]] = {}

    @staticmethod
    def origin(ctx: bytes) -> int:
        return _CTX.unpack(ctx)[0] if len(ctx) == _CTX.size else 0

    def enqueue(self) -> asyncio.Future[int]:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queued.append(future)
        return future

    def idle(self) -> bool:
        return not self._inflight

    def next_round(self) -> bytes | None:
        """If reads are queued and no round is in flight, open a round and return its ctx."""
        if not self._queued or self._inflight:
            return None
        ctx = _CTX.pack(self.member_id, next(self._seq))
        self._inflight[ctx] = [f for f in self._queued if not f.done()]
        self._queued = []
        return ctx

    def complete(self, ctx: bytes, index: int) -> bool:
        """Resolve the round ``ctx``; False if it is not in flight (an answer to a round
        already abandoned)."""
        futures = self._inflight.pop(ctx, None)
        for future in futures or ():
            if not future.done():
                future.set_result(index)
        return futures is not None

    def fail_inflight(self, exc: BaseException) -> int:
        """Abandon the rounds in flight (leader lost, timed out); their reads fail. Returns
        how many rounds were abandoned."""
        for futures in self._inflight.values():
            for future in futures:
                if not future.done():
                    future.set_exception(exc)
        abandoned = len(self._inflight)
        self._inflight.clear()
        return abandoned


RETRY_S = 0.02
"""After a failed round (leader changed, no leader), the next try waits this long."""


class _TimedOut(Exception):
    """A barrier's deadline passed while it waited (answered as etcd's timeout error)."""


def _expire(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(_TimedOut())


class BarrierWait:
    """``NodeDriver.read_barrier`` as callbacks instead of a coroutine, for callers that
    answer from a callback (the fast path's ranges: no task, no coroutine frames per read).
    ``future`` resolves to ``then()`` once this member has applied everything committed
    before the wait began, or fails as ``read_barrier`` does: ``Unavailable("etcdserver:
    request timed out")`` at ``deadline`` (``time.monotonic``), a failed round retried
    after ``RETRY_S`` until then, an error ``then`` raises passed on.

    The same steps as ``read_barrier``: queue on the next ReadIndex round (``enqueue``,
    ``kick``), one timer per wait for the deadline, no applied-index wait when the round's
    index is already applied."""

    __slots__ = ("_applied", "_deadline", "_enqueue", "_kick", "_loop", "_then", "_timer", "future")

    def __init__(self, enqueue: Callable[[], asyncio.Future[int]], kick: Callable[[], None],
                 applied: AppliedWaiters, deadline: float, then: Callable[[], Any]) -> None:
        self._loop = asyncio.get_running_loop()
        self._enqueue, self._kick, self._applied = enqueue, kick, applied
        self._deadline, self._then = deadline, then
        self.future: asyncio.Future[Any] = self._loop.create_future()
        self._round()

    def _arm(self, future: asyncio.Future[Any]) -> None:
        delay = max(0.001, self._deadline - time.monotonic())
        self._timer = self._loop.call_later(delay, _expire, future)

    def _settled(self, future: asyncio.Future[Any]) -> BaseException | None:
        """The awaited step is done: stop its deadline timer; its error, if any."""
        self._timer.cancel()
        return future.exception() if not future.cancelled() else Unavailable("etcdserver: request cancelled")

    def _round(self) -> None:
        waiter = self._enqueue()
        self._kick()
        self._arm(waiter)
        waiter.add_done_callback(self._rounded)

    def _rounded(self, waiter: asyncio.Future[int]) -> None:
        error = self._settled(waiter)
        if error is not None:
            if isinstance(error, Unavailable) and time.monotonic() < self._deadline:
                self._loop.call_later(RETRY_S, self._round)
                return
            self._fail(error)
            return
        index = waiter.result()
        if index <= self._applied.applied:
            self._finish()
            return
        applied = self._applied.wait(index)
        self._arm(applied)
        applied.add_done_callback(self._caught_up)

    def _caught_up(self, applied: asyncio.Future[None]) -> None:
        error = self._settled(applied)
        if error is not None:
            self._fail(error)
            return
        self._finish()

    def _finish(self) -> None:
        try:
            result = self._then()
        except Exception as exc:
            self._fail(exc)
            return
        if not self.future.done():
            self.future.set_result(result)

    def _fail(self, error: BaseException) -> None:
        if isinstance(error, _TimedOut):
            error = Unavailable("etcdserver: request timed out")
        if not self.future.done():
            self.future.set_exception(error)

"""``reads.BarrierWait``: ``read_barrier``'s steps as callbacks (the fast path's ranges),
driven by hand through a real ``ReadBatcher`` and ``AppliedWaiters``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from kvraft.apply.errors import InvalidArgument, Unavailable
from kvraft.server.reads import AppliedWaiters, BarrierWait, ReadBatcher


class _Member:
    def __init__(self, applied: int = 5) -> None:
        self.reads = ReadBatcher(1)
        self.applied = AppliedWaiters()
        self.applied.advance(applied)
        self.kicks = 0
        self.calls = 0

    def kick(self) -> None:
        self.kicks += 1

    def wait(self, timeout_s: float = 7.0, then: Callable[[], Any] | None = None) -> BarrierWait:
        def read() -> str:
            self.calls += 1
            return "result"

        return BarrierWait(self.reads.enqueue, self.kick, self.applied, time.monotonic() + timeout_s, then or read)

    def finish_round(self, index: int) -> None:
        ctx = self.reads.next_round()
        assert ctx is not None
        self.reads.complete(ctx, index)


async def _turns(n: int = 3) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def test_an_applied_index_answers_when_the_round_completes() -> None:
    async def body() -> None:
        member = _Member(applied=5)
        wait = member.wait()
        assert member.kicks == 1
        await _turns()
        assert not wait.future.done() and member.calls == 0  # nothing before the round
        member.finish_round(5)
        assert await wait.future == "result" and member.calls == 1

    asyncio.run(body())


def test_a_round_ahead_of_the_applied_index_waits_for_the_apply() -> None:
    async def body() -> None:
        member = _Member(applied=5)
        wait = member.wait()
        member.finish_round(9)
        await _turns()
        assert not wait.future.done() and member.calls == 0
        member.applied.advance(8)
        await _turns()
        assert not wait.future.done()
        member.applied.advance(9)
        assert await wait.future == "result"

    asyncio.run(body())


def test_a_failed_round_is_retried_on_the_next_one() -> None:
    async def body() -> None:
        member = _Member()
        wait = member.wait()
        assert member.reads.next_round() is not None
        member.reads.fail_inflight(Unavailable("etcdserver: leader changed"))
        while member.kicks < 2:  # queued again after the retry pause
            await asyncio.sleep(0.005)
        assert not wait.future.done()
        member.finish_round(5)
        assert await wait.future == "result"

    asyncio.run(body())


def test_the_deadline_answers_etcds_timeout_and_leaves_the_round() -> None:
    async def body() -> None:
        member = _Member()
        wait = member.wait(timeout_s=0.01)
        with pytest.raises(Unavailable, match="request timed out"):
            await wait.future
        member.finish_round(5)  # the round later completes: nothing more happens
        await _turns()
        assert member.calls == 0

    asyncio.run(body())


def test_the_deadline_also_bounds_the_apply_wait() -> None:
    async def body() -> None:
        member = _Member(applied=5)
        wait = member.wait(timeout_s=0.05)
        member.finish_round(50)
        with pytest.raises(Unavailable, match="request timed out"):
            await wait.future
        assert member.calls == 0

    asyncio.run(body())


def test_errors_of_the_read_and_of_the_apply_wait_are_passed_on() -> None:
    async def body() -> None:
        member = _Member(applied=5)

        def bad() -> None:
            raise InvalidArgument("etcdserver: mvcc: required revision is a future revision")

        failing = member.wait(then=bad)
        member.finish_round(5)
        with pytest.raises(InvalidArgument, match="future revision"):
            await failing.future
        stuck = member.wait()
        member.finish_round(7)
        await _turns()
        member.applied.fail_all(Unavailable("etcdserver: server stopped"))
        with pytest.raises(Unavailable, match="server stopped"):
            await stuck.future

    asyncio.run(body())


def test_reads_of_one_round_share_it() -> None:
    async def body() -> None:
        member = _Member()
        waits = [member.wait() for _ in range(5)]
        member.finish_round(5)
        assert await asyncio.gather(*(w.future for w in waits)) == ["result"] * 5
        assert member.reads.next_round() is None  # one round answered all five

    asyncio.run(body())

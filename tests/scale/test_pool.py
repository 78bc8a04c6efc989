"""The load generator's connection pool serves waiters first come, first served: a
request made just as a connection comes free does not jump the queue (with an
``asyncio.Queue`` it did, so under load an agent's first request of a pair, keepalive or
grant, waited while its second, status put or register, did not)."""

from __future__ import annotations

import asyncio

from kvraft.bench.cluster_load import POOL_PER_MEMBER, _Pool


async def test_a_released_connection_goes_to_the_longest_waiter() -> None:
    url = "http://127.0.0.1:1"
    pool = _Pool([url])
    held = [await pool.acquire(url) for _ in range(POOL_PER_MEMBER)]
    order: list[str] = []

    async def waiter(name: str) -> None:
        conn = await pool.acquire(url)
        order.append(name)
        pool.release(url, conn)

    first = asyncio.create_task(waiter("first"))
    second = asyncio.create_task(waiter("second"))
    await asyncio.sleep(0)
    pool.release(url, held.pop())
    # a request that arrives right after the release, before the waiters ran
    late = asyncio.create_task(waiter("late"))
    await asyncio.gather(first, second, late)
    assert order == ["first", "second", "late"]


async def test_a_cancelled_waiter_does_not_lose_the_connection_it_was_handed() -> None:
    url = "http://127.0.0.1:1"
    pool = _Pool([url])
    held = [await pool.acquire(url) for _ in range(POOL_PER_MEMBER)]
    doomed = asyncio.create_task(pool.acquire(url))
    await asyncio.sleep(0)
    pool.release(url, held.pop())  # handed to the doomed waiter ...
    doomed.cancel()  # ... which is cancelled before it runs
    await asyncio.gather(doomed, return_exceptions=True)
    assert len(pool.free[url]) == 1
    assert await asyncio.wait_for(pool.acquire(url), 5) is not None

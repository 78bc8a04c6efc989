"""kvraft.aio: waits that never lose the caller's cancel (docs/architecture.md, house rules)."""

from __future__ import annotations

import asyncio

import pytest

from kvraft.aio import cancel_and_wait, wait_event


async def test_wait_event_says_whether_the_event_was_set() -> None:
    event = asyncio.Event()
    assert await wait_event(event, 0.01) is False
    event.set()
    assert await wait_event(event, 10.0) is True


async def test_a_cancel_as_the_event_is_set_is_not_lost() -> None:
    event = asyncio.Event()
    rounds = 0

    async def loop() -> None:
        nonlocal rounds
        while True:
            await wait_event(event, 30.0)
            event.clear()
            rounds += 1

    task = asyncio.create_task(loop())
    await asyncio.sleep(0.01)
    event.set()
    task.cancel()  # the same tick: 3.11's wait_for returned True here and the loop went on
    done, _ = await asyncio.wait({task}, timeout=5)
    assert task in done and task.cancelled() and rounds == 0


async def test_cancel_and_wait_ends_tasks_and_drops_what_they_raised() -> None:
    async def fails() -> None:
        try:
            await asyncio.sleep(30)
        finally:
            raise RuntimeError("while stopping")

    failing, sleeping = asyncio.create_task(fails()), asyncio.create_task(asyncio.sleep(30))
    finished = asyncio.create_task(asyncio.sleep(0))
    await asyncio.sleep(0.01)
    errors = await cancel_and_wait(failing, sleeping, finished)
    assert sleeping.cancelled() and not finished.cancelled()
    assert len(errors) == 1 and errors[0] is failing.exception() and isinstance(errors[0], RuntimeError)
    assert await cancel_and_wait() == []  # nothing to stop


async def test_the_callers_cancel_is_not_swallowed() -> None:
    """``with suppress(CancelledError): await task`` would swallow this cancel of the caller."""
    released = asyncio.Event()

    async def slow_to_stop() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            await released.wait()  # its clean-up takes a while
            raise

    slow = asyncio.create_task(slow_to_stop())
    await asyncio.sleep(0.01)  # it sleeps

    async def stopper() -> str:
        await cancel_and_wait(slow)
        return "went on"

    stopping = asyncio.create_task(stopper())
    await asyncio.sleep(0.01)  # slow is cleaning up; the stopper waits for it
    assert not slow.done()
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopping
    released.set()
    await asyncio.wait({slow})
    assert slow.cancelled()

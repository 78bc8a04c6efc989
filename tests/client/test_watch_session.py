"""``client.watch_session()``: several watches, progress requests and cancels on one stream
(a WebSocket to /v3/watch), on etcd 3.4 and on kvraft."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from kvclusters import Runtime

from kvraft.client import Client, WatchResponse


async def _next(responses: AsyncIterator[WatchResponse]) -> WatchResponse:
    return await asyncio.wait_for(responses.__anext__(), 30)


async def test_two_watches_progress_and_cancel_on_one_stream(runtime: Runtime, client: Client, prefix: str) -> None:
    async with client.watch_session() as session:
        responses = session.__aiter__()
        await session.create(prefix + "a")
        first = await _next(responses)
        await session.create(prefix, prefix=True, prev_kv=True)
        second = await _next(responses)
        assert first.created and second.created and first.watch_id != second.watch_id

        put = await client.put(prefix + "a", b"1")
        seen: dict[int, WatchResponse] = {}
        while len(seen) < 2:
            response = await _next(responses)
            seen[response.watch_id] = response
        assert {r.events[0].kv.value for r in seen.values()} == {b"1"}
        assert all(r.events[0].kv.mod_revision == put.header.revision for r in seen.values())

        await session.request_progress()
        progress = await _next(responses)
        assert progress.is_progress_notify and progress.watch_id == -1
        assert progress.header.revision == put.header.revision

        await session.cancel(first.watch_id)
        canceled = await _next(responses)
        assert canceled.canceled and canceled.watch_id == first.watch_id
        await client.put(prefix + "a", b"2")
        only = await _next(responses)
        assert only.watch_id == second.watch_id and only.events[0].prev_kv is not None
        assert only.events[0].prev_kv.value == b"1"

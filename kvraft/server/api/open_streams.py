"""The requests that last as long as their client wants: ended at once when the member stops.

A watch stream, a lease's keep-alive stream and an election's observe stream stay open until
the client closes them; a lock or a campaign waits until it is granted. When the member stops
(SIGTERM), aiohttp closes the listeners and then waits for every request being served to end,
for up to its shutdown timeout (60 s), before it cancels them: a member with one watcher
connected took a minute to exit, where etcd's exits at once (its server stops, and the streams
with it). Now ``LongLived`` keeps the tasks serving these routes (``PATHS``, under ``/v3/``
and ``/v3beta/``, HTTP and WebSocket alike) and ends them all on the app's ``on_shutdown``,
before that wait. A stream ends as if its connection closed: its response is ended (a
WebSocket is closed with 1001, going away), and kvraft's client resumes it on another member
from the revision it needs. A request still waiting for a lock or a campaign is answered etcd's
"etcdserver: server stopped" (Unavailable). Other requests (a put waiting for its commit, a
snapshot being downloaded) are waited for up to etcd's request timeout (7 s, the runner's
``shutdown_timeout``, ``kvraft.server.main.serve``), as etcd's graceful stop of its gRPC
server waits, then cut.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import WSCloseCode, web

from kvraft.apply.errors import Unavailable
from kvraft.server.api.codec import JSON_OUT
from kvraft.server.api.errors import error_response
from kvraft.server.api.grpc_stats import gateway_route
from kvraft.server.api.request import OUT

__all__ = ["LONG_LIVED", "PATHS", "STREAM_RESPONSE", "LongLived", "install"]

PATHS = frozenset({"/watch", "/lease/keepalive", "/election/observe", "/lock/lock", "/election/campaign"})
"""The routes whose requests last until the client ends them (after ``/v3`` or ``/v3beta``)."""


class LongLived:
    """The tasks serving long-lived requests now; ``end_all`` cancels them (the member stops)."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[object]] = set()
        self.stopping = False

    def end_all(self) -> None:
        """Cancel every long-lived request's task."""
        self.stopping = True
        for task in self.tasks:
            task.cancel()


LONG_LIVED = web.AppKey("long_lived", LongLived)
STREAM_RESPONSE = web.RequestKey("kvraft.stream_response", web.StreamResponse)
"""A streamed answer once its headers went out (``stream.open_stream``; a WebSocket once
upgraded): a stopped request ends it rather than answer anew."""


@web.middleware
async def _keep(request: web.Request,
                handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    if gateway_route(request.path) not in PATHS:
        return await handler(request)
    tracked = request.app[LONG_LIVED]
    task = asyncio.current_task()
    assert task is not None
    tracked.tasks.add(task)
    try:
        return await handler(request)
    except asyncio.CancelledError:
        if not tracked.stopping:
            raise
        prepared: web.StreamResponse | None = request.get(STREAM_RESPONSE)
        if isinstance(prepared, web.WebSocketResponse):
            await prepared.close(code=WSCloseCode.GOING_AWAY, message=b"etcdserver: server stopped")
            return prepared
        if prepared is not None:
            return prepared  # (aiohttp ends it: its last chunk)
        return error_response(Unavailable("etcdserver: server stopped"), request.get(OUT, JSON_OUT))
    finally:
        tracked.tasks.discard(task)


async def _end_all(app: web.Application) -> None:
    app[LONG_LIVED].end_all()
    await asyncio.sleep(0)  # (the cancelled handlers take it in before aiohttp's wait)


def install(app: web.Application) -> None:
    """Track the app's long-lived requests and end them on its ``on_shutdown``; the middleware
    goes inside those that answer errors (a stopped request's answer is already one)."""
    app[LONG_LIVED] = LongLived()
    app.middlewares.append(_keep)
    app.on_shutdown.append(_end_all)

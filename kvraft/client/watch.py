"""Watch as an async iterator that survives disconnects and member changes.

``client.watch(key, ...)`` returns a ``Watcher``. Iterating it yields ``WatchResponse``s
that carry events (and progress notifications when ``progress_notify`` is set); the
``created`` acknowledgement is consumed internally. The watcher remembers the next
revision it needs (last event's ``mod_revision`` + 1, or the creation header's revision
+ 1). When the stream breaks (member killed, removed, network lost) it reconnects to the
next endpoint after a jittered delay and asks for that revision again, so no event is lost
or repeated. A response the server splits into fragments is yielded whole, so one
revision is never split across two yields. If the revision it needs has been compacted
meanwhile, iteration raises ``WatchCompactedError`` with the compaction point; any other
server-side cancel raises
``ServerError`` with the server's ``cancel_reason``, except transient ones (``no leader``,
``leader changed``, ``server stopped``), after which it resumes on another member.

Example::

    async with client.watch("jobs/", prefix=True, prev_kv=True) as watcher:
        async for response in watcher:
            for event in response.events:
                print(event.type, event.kv.key, event.kv.value)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kvraft.client._transport import Transport

import asyncio
import dataclasses
import json
import random
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from kvraft.client._codec import JSON_CODEC
from kvraft.client.errors import EndpointError, ServerError, WatchCompactedError
from kvraft.client.kv import Key, range_fields
from kvraft.client.types import Event, WatchResponse

__all__ = ["WatchMixin", "WatchSession", "Watcher"]

FILTERS = ("NOPUT", "NODELETE")
_TRANSIENT = ("no leader", "leader changed", "server stopped")


class Watcher:
    def __init__(
        self,
        transport: Any,
        key: Key,
        *,
        range_end: Key | None = None,
        prefix: bool = False,
        from_key: bool = False,
        start_revision: int = 0,
        prev_kv: bool = False,
        progress_notify: bool = False,
        filters: tuple[str, ...] = (),
        reconnect_timeout_s: float | None = 60.0,
    ) -> None:
        for name in filters:
            if name not in FILTERS:
                raise ValueError(f"watch filter must be one of {FILTERS}, not {name!r}")
        self._transport = transport
        self._range = range_fields(key, range_end, prefix, from_key)
        self._options: dict[str, Any] = {}
        if prev_kv:
            self._options["prev_kv"] = True
        if progress_notify:
            self._options["progress_notify"] = True
        if filters:
            self._options["filters"] = list(filters)
        self.next_revision = start_revision
        """The revision the watcher asks for on (re)connect; 0 means "from now"."""
        self.reconnects = 0
        self._reconnect_timeout_s = reconnect_timeout_s
        self._rng = random.Random()
        self._closed = False
        self._stream: AsyncGenerator[dict[str, Any], None] | None = None

    def _request(self) -> dict[str, Any]:
        create: dict[str, Any] = dict(self._range)
        create.update(self._options)
        if self.next_revision:
            create["start_revision"] = self.next_revision
        return {"create_request": create}

    async def __aenter__(self) -> Watcher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop watching and close the stream."""
        self._closed = True
        if self._stream is not None:
            await self._stream.aclose()
            self._stream = None

    def __aiter__(self) -> AsyncIterator[WatchResponse]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[WatchResponse]:
        loop = asyncio.get_running_loop()
        failing_since: float | None = None
        attempt = 0
        while not self._closed:
            self._stream = self._transport.stream("/watch", self._request())
            fragments: list[Event] = []  # a reconnect drops a partial response: asked again
            try:
                async for doc in self._stream:
                    failing_since, attempt = None, 0
                    response = WatchResponse.from_wire(doc)
                    if response.canceled:
                        await self._on_cancel(response)
                        break
                    if response.created:
                        if not self.next_revision:
                            self.next_revision = response.header.revision + 1
                        continue
                    if response.fragment:  # part of one large response: yield it whole
                        fragments.extend(response.events)
                        continue
                    if fragments:
                        response = dataclasses.replace(response, events=tuple(fragments) + response.events)
                        fragments = []
                    if response.events:
                        self.next_revision = response.events[-1].kv.mod_revision + 1
                    elif response.header.revision >= self.next_revision:
                        self.next_revision = response.header.revision + 1
                    yield response
                else:
                    if self._closed:
                        return
                    raise EndpointError("watch stream closed by the server")
            except EndpointError:
                if self._closed:
                    return
                now = loop.time()
                failing_since = now if failing_since is None else failing_since
                limit = self._reconnect_timeout_s
                if limit is not None and now - failing_since > limit:
                    raise
                await asyncio.sleep(self._transport.retry.delay_s(min(attempt, 6), self._rng))
                attempt += 1
                self.reconnects += 1
            finally:
                if self._stream is not None:
                    await self._stream.aclose()
                    self._stream = None

    async def _on_cancel(self, response: WatchResponse) -> None:
        if response.compact_revision:
            raise WatchCompactedError(response.compact_revision, self.next_revision, response)
        reason = response.cancel_reason or "watch canceled by the server"
        if any(text in reason for text in _TRANSIENT):
            self._transport.skip_current()  # that member lost its leader: resume elsewhere
            return
        if "auth token" in reason and self._transport.user is not None:
            await self._transport.authenticate()  # token expired: log in again and resume
            return
        raise ServerError(reason)


class WatchSession:
    """Several watches on ONE stream, plus progress requests: what ``etcdctl watch -i``
    drives. It is a WebSocket to ``/v3/watch`` (etcd 3.4's gateway and kvraft both serve
    it), so requests can follow one another on the open stream. ``create`` sends a
    create request (options as ``client.watch``), ``request_progress`` asks the server
    for a progress notification (``watch_id`` -1, no events, the revision up to which
    every event has been sent), ``cancel`` ends one watch. Iterating yields every
    response as the server sends it (created and canceled ones included). Unlike
    ``Watcher`` it does not resume after a disconnect: iteration raises
    ``EndpointError`` (an interactive session reports it and ends)."""

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self._ws: Any = None

    async def __aenter__(self) -> WatchSession:
        self._ws = await self._transport.websocket("/watch")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
            self._ws = None

    async def _send(self, request: dict[str, Any]) -> None:
        if self._ws is None:
            raise RuntimeError("watch session is not open; use 'async with client.watch_session()'")
        await self._ws.send_str(JSON_CODEC.dumps(request).decode())

    async def create(self, key: Key, **options: Any) -> None:
        await self._send(Watcher(self._transport, key, **options)._request())

    async def request_progress(self) -> None:
        await self._send({"progress_request": {}})

    async def cancel(self, watch_id: int) -> None:
        await self._send({"cancel_request": {"watch_id": watch_id}})

    def __aiter__(self) -> AsyncIterator[WatchResponse]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[WatchResponse]:
        import aiohttp

        while self._ws is not None:
            msg = await self._ws.receive()
            if msg.type == aiohttp.WSMsgType.TEXT:
                doc = json.loads(msg.data)
                if "error" in doc:
                    error = doc["error"]
                    detail = error.get("message", error) if isinstance(error, dict) else error
                    raise ServerError(str(detail))
                yield WatchResponse.from_wire(doc.get("result", doc))
            elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                if self._ws is None:
                    return
                raise EndpointError("watch stream closed by the server")
            elif msg.type == aiohttp.WSMsgType.ERROR:
                raise EndpointError(f"watch stream lost: {self._ws.exception()}")


class WatchMixin:
    _transport: Transport

    def watch(self, key: Key, **options: Any) -> Watcher:
        """Watch a key or range. Options: ``range_end``, ``prefix``, ``from_key``,
        ``start_revision``, ``prev_kv``, ``progress_notify``, ``filters`` (``"NOPUT"``,
        ``"NODELETE"``), ``reconnect_timeout_s`` (``None``: retry forever)."""
        return Watcher(self._transport, key, **options)

    def watch_session(self) -> WatchSession:
        """Several watches and progress requests on one stream (``async with``)."""
        return WatchSession(self._transport)

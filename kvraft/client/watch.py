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
import contextlib
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
    response as the server sends it (created and canceled ones included).

    Like ``Watcher`` it survives a lost stream (member killed, network gone): it
    reconnects to the next endpoint after a jittered delay and re-creates every open
    watch from the revision it needs next (the last event's ``mod_revision`` + 1, or past
    the last progress notification), so no event is lost or repeated. Watch ids stay
    those the caller first saw (the new stream's ids are mapped back); the re-creations'
    acknowledgements are not yielded. ``reconnect_timeout_s`` bounds the time without a
    stream (``None``: retry forever); past it iteration raises ``EndpointError``."""

    def __init__(self, transport: Any, *, reconnect_timeout_s: float | None = 60.0) -> None:
        self._transport = transport
        self._ws: Any = None
        self._closed = False
        self._reconnect_timeout_s = reconnect_timeout_s
        self._rng = random.Random()
        self._watches: dict[int, dict[str, Any]] = {}  # caller's id -> create_request (kept current)
        self._to_local: dict[int, int] = {}  # this stream's watch id -> caller's id
        self._pending: list[tuple[dict[str, Any], int | None]] = []  # creates awaiting their ack
        self.reconnects = 0

    async def __aenter__(self) -> WatchSession:
        self._ws = await self._transport.websocket("/watch")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        self._closed = True
        if self._ws is not None:
            await self._ws.close()
            self._ws = None

    async def _send(self, request: dict[str, Any]) -> None:
        if self._ws is None:
            raise RuntimeError("watch session is not open; use 'async with client.watch_session()'")
        with contextlib.suppress(ConnectionError):  # a lost stream: the reconnect re-sends creates
            await self._ws.send_str(JSON_CODEC.dumps(request).decode())

    async def create(self, key: Key, **options: Any) -> None:
        request = Watcher(self._transport, key, **options)._request()
        self._pending.append((request["create_request"], None))
        await self._send(request)

    async def request_progress(self) -> None:
        await self._send({"progress_request": {}})

    async def cancel(self, watch_id: int) -> None:
        server_id = next((s for s, local in self._to_local.items() if local == watch_id), watch_id)
        await self._send({"cancel_request": {"watch_id": server_id}})

    def __aiter__(self) -> AsyncIterator[WatchResponse]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[WatchResponse]:
        while not self._closed:
            try:
                async for response in self._receive():
                    yield response
                return
            except EndpointError:
                if self._closed:
                    return
                await self._reconnect()

    async def _receive(self) -> AsyncIterator[WatchResponse]:
        import aiohttp

        while self._ws is not None:
            try:
                msg = await self._ws.receive()
            except (aiohttp.ClientError, ConnectionError) as exc:
                raise EndpointError(f"watch stream lost: {exc}") from None
            if msg.type == aiohttp.WSMsgType.TEXT:
                doc = json.loads(msg.data)
                if "error" in doc:
                    error = doc["error"]
                    detail = error.get("message", error) if isinstance(error, dict) else error
                    raise ServerError(str(detail))
                response = self._track(WatchResponse.from_wire(doc.get("result", doc)))
                if response is not None:
                    yield response
            elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                if self._closed:
                    return
                raise EndpointError("watch stream closed by the server")
            elif msg.type == aiohttp.WSMsgType.ERROR:
                raise EndpointError(f"watch stream lost: {self._ws.exception()}")

    def _track(self, response: WatchResponse) -> WatchResponse | None:
        """Keep each watch's resume point; map ids back; hide re-creation acks."""
        if response.created:
            create, local = self._pending.pop(0) if self._pending else ({}, None)
            if response.canceled:  # refused (a re-creation too: the caller learns its watch ended)
                if local is not None:
                    self._watches.pop(local, None)
                    return dataclasses.replace(response, watch_id=local)
                return response
            if local is None:  # a new watch: the caller's id is the server's, unless taken
                local = response.watch_id
                if local in self._watches:
                    local = max(self._watches) + 1
            self._watches[local] = create
            self._to_local[response.watch_id] = local
            create.setdefault("start_revision", response.header.revision + 1)
            return dataclasses.replace(response, watch_id=local) if local != response.watch_id else response
        if response.watch_id == -1 and not response.events:  # progress: every watch is caught up
            for create in self._watches.values():
                create["start_revision"] = max(create.get("start_revision", 0), response.header.revision + 1)
            return response
        local = self._to_local.get(response.watch_id, response.watch_id)
        current = self._watches.get(local)
        if current is not None and response.events:
            current["start_revision"] = response.events[-1].kv.mod_revision + 1
        if response.canceled:
            self._watches.pop(local, None)
            self._to_local.pop(response.watch_id, None)
        return dataclasses.replace(response, watch_id=local) if local != response.watch_id else response

    async def _reconnect(self) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        attempt = 0
        self._transport.skip_current()
        while True:
            if self._ws is not None:
                with contextlib.suppress(Exception):
                    await self._ws.close()
                self._ws = None
            await asyncio.sleep(self._transport.retry.delay_s(min(attempt, 6), self._rng))
            attempt += 1
            try:
                self._ws = await self._transport.websocket("/watch")
                break
            except EndpointError:
                limit = self._reconnect_timeout_s
                if limit is not None and loop.time() - started > limit:
                    raise
        self.reconnects += 1
        fresh = [create for create, local in self._pending if local is None]
        self._pending, self._to_local = [], {}
        for local, create in sorted(self._watches.items()):
            self._pending.append((create, local))
            await self._send({"create_request": create})
        for create in fresh:
            self._pending.append((create, None))
            await self._send({"create_request": create})


class WatchMixin:
    _transport: Transport

    def watch(self, key: Key, **options: Any) -> Watcher:
        """Watch a key or range. Options: ``range_end``, ``prefix``, ``from_key``,
        ``start_revision``, ``prev_kv``, ``progress_notify``, ``filters`` (``"NOPUT"``,
        ``"NODELETE"``), ``reconnect_timeout_s`` (``None``: retry forever)."""
        return Watcher(self._transport, key, **options)

    def watch_session(self, *, reconnect_timeout_s: float | None = 60.0) -> WatchSession:
        """Several watches and progress requests on one stream (``async with``)."""
        return WatchSession(self._transport, reconnect_timeout_s=reconnect_timeout_s)

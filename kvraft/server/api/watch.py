"""``POST /v3/watch`` (and WebSocket ``GET /v3/watch``): etcd's watch stream.

The body holds any number of ``WatchRequest`` objects (create / cancel / progress); they
are handled as they arrive, and the response stays open after the body ends, one
``{"result": WatchResponse}`` per chunk, until the client goes away. Each stream is one
``WatchStream`` of the member's hub; its bounded queue means a slow client only slows
itself. With auth on, a create needs READ on its range; a refused create is answered the
way etcd answers it (created and canceled, watch_id -1, with the gRPC error text).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import msgpack
from aiohttp import WSMsgType, web

from kvraft.apply.errors import EtcdError, InvalidArgument
from kvraft.server.api.codec import (
    BOOL,
    BYTES,
    INT64,
    JSON_OUT,
    MSGPACK,
    MSGPACK_OUT,
    Enum,
    Message,
    Out,
    Repeated,
    decode_body,
    decode_message,
)
from kvraft.server.api.defaults import filler
from kvraft.server.api.encode import encode_kv
from kvraft.server.api.feature_state import FEATURES
from kvraft.server.api.open_streams import STREAM_RESPONSE
from kvraft.server.api.request import OUT, header
from kvraft.server.api.stream import JsonRequests, Sink, bare_error, open_stream, send_bare_error
from kvraft.server.features import CALLER
from kvraft.watch import PROGRESS_WATCH_ID, WatchCreate, WatchResponse, WatchStream

__all__ = ["AUTH_ERROR", "ROUTES", "WS_ROUTES", "encode_watch_response", "next_response"]

FILTER = Enum("etcdserverpb.WatchCreateRequest_FilterType", {"NOPUT": 0, "NODELETE": 1})
CREATE = Message(
    "etcdserverpb.WatchCreateRequest",
    {"key": BYTES, "range_end": BYTES, "start_revision": INT64, "progress_notify": BOOL,
     "filters": Repeated(FILTER), "prev_kv": BOOL, "watch_id": INT64, "fragment": BOOL},
)
CANCEL = Message("etcdserverpb.WatchCancelRequest", {"watch_id": INT64})
PROGRESS = Message("etcdserverpb.WatchProgressRequest", {})
WATCH_REQUEST = Message(
    "etcdserverpb.WatchRequest", {"create_request": CREATE, "cancel_request": CANCEL, "progress_request": PROGRESS}
)
AUTH_ERROR = web.RequestKey("kvraft.auth_error", EtcdError)
"""A bad token on a watch request: the gate lets the stream open, and each create is refused
with it in-stream (as etcd does)."""

log = logging.getLogger("kvraft.api")

_GRPC_NAMES = {3: "InvalidArgument", 7: "PermissionDenied", 16: "Unauthenticated", 11: "OutOfRange"}
IDLE_CHECK_S = 1.0


def encode_watch_response(request: web.Request, out: Out, r: WatchResponse) -> dict[str, Any]:
    doc: dict[str, Any] = {"header": header(request, out, r.revision)}
    if r.watch_id:
        doc["watch_id"] = out.i(r.watch_id)
    if r.created:
        doc["created"] = True
    if r.canceled:
        doc["canceled"] = True
    if r.compact_revision:
        doc["compact_revision"] = out.i(r.compact_revision)
    if r.cancel_reason:
        doc["cancel_reason"] = r.cancel_reason
    if r.fragment:
        doc["fragment"] = True
    if r.events:
        events = []
        for ev in r.events:
            item: dict[str, Any] = {}
            if ev.type:
                item["type"] = "DELETE"
            item["kv"] = encode_kv(out, ev.kv)
            if ev.prev_kv is not None:
                item["prev_kv"] = encode_kv(out, ev.prev_kv)
            events.append(item)
        doc["events"] = events
    return doc


_EVENT_JSON: dict[int, tuple[Any, str]] = {}
_HEADER_JSON: list[Any] = [None, ""]


def _event_json(ev: Any) -> str:
    """One event's JSON, encoded once however many watchers receive the same event object
    (the cache holds the object, so its id cannot be reused while cached)."""
    hit = _EVENT_JSON.get(id(ev))
    if hit is not None and hit[0] is ev:
        return hit[1]
    item: dict[str, Any] = {}
    if ev.type:
        item["type"] = "DELETE"
    item["kv"] = encode_kv(JSON_OUT, ev.kv)
    if ev.prev_kv is not None:
        item["prev_kv"] = encode_kv(JSON_OUT, ev.prev_kv)
    text = json.dumps(item, separators=(",", ":"))
    if len(_EVENT_JSON) >= 8192:
        _EVENT_JSON.clear()
    _EVENT_JSON[id(ev)] = (ev, text)
    return text


def _events_json(request: web.Request, r: WatchResponse) -> bytes:
    """``{"result": ...}`` for an event response, assembled from cached pieces; the same
    bytes ``encode_watch_response`` + ``json.dumps`` would give."""
    key = (r.revision, request.app[FEATURES].node.raft_term)
    if _HEADER_JSON[0] != key:
        _HEADER_JSON[0] = key
        _HEADER_JSON[1] = json.dumps(header(request, JSON_OUT, r.revision), separators=(",", ":"))
    parts = ['{"result":{"header":', _HEADER_JSON[1]]
    if r.watch_id:
        parts.append(f',"watch_id":"{r.watch_id}"')
    if r.fragment:
        parts.append(',"fragment":true')
    parts.append(',"events":[')
    parts.append(",".join(_event_json(ev) for ev in r.events))
    parts.append("]}}\n")
    return "".join(parts).encode()


async def next_response(request: web.Request, stream: WatchStream, sink: Sink) -> WatchResponse | None:
    """The stream's next response; heartbeats (``Sink.beat``) while none is queued; None once
    the stream closed or the client went away (aiohttp does not cancel its handler)."""
    loop = asyncio.get_running_loop()
    while True:
        r = stream.recv_nowait()
        if r is not None:
            return r
        if stream.closed:
            return None
        # (never wait_for(recv()): on 3.11 a timeout racing a result loses it)
        if not await stream.wait_ready_for(sink.beat_in(loop.time(), IDLE_CHECK_S)):
            transport = request.transport
            if transport is None or transport.is_closing():
                return None
            await sink.beat(loop.time())


class _Session:
    """One client stream: requests in, responses out through ``sink``."""

    def __init__(self, request: web.Request, sink: Sink) -> None:
        self.request = request
        self.sink = sink
        self.features = request.app[FEATURES]
        self.stream: WatchStream = self.features.hub.open()

    def handle(self, req: dict[str, Any]) -> None:
        if req["create_request"] is not None:
            self._create(req["create_request"])
        elif req["cancel_request"] is not None:
            self.stream.cancel(req["cancel_request"]["watch_id"])
        elif req["progress_request"] is not None:
            self.stream.request_progress()

    def _create(self, c: dict[str, Any]) -> None:
        refused = self._refusal(c)
        if refused is not None:
            self.stream.put_control(WatchResponse(
                PROGRESS_WATCH_ID, self.features.hub.core.current_revision, created=True, canceled=True,
                cancel_reason=refused,
            ))
            return
        self.stream.create(WatchCreate(
            c["key"], c["range_end"], c["start_revision"], c["progress_notify"], tuple(c["filters"]),
            c["prev_kv"], c["watch_id"], c["fragment"],
        ))

    def _refusal(self, c: dict[str, Any]) -> str | None:
        features = self.features
        if not features.auth.enabled:
            return None
        caller = CALLER.get()
        user, revision = (caller.user, caller.revision) if caller is not None else ("", 0)
        try:
            if AUTH_ERROR in self.request:
                raise self.request[AUTH_ERROR]
            features.checked(features.auth.check_range, user, revision, c["key"], c["range_end"], False)
        except EtcdError as exc:
            return f"rpc error: code = {_GRPC_NAMES.get(exc.code, 'Unknown')} desc = {exc.message}"
        return None

    async def send_loop(self) -> None:
        request = self.request
        out = self.sink.out
        while True:
            r = await next_response(request, self.stream, self.sink)
            if r is None:
                return
            if out is JSON_OUT and r.events and not (r.created or r.canceled or r.compact_revision):
                await self.sink.send_raw(_events_json(request, r))  # the fan-out fast path
            else:
                await self.sink.send(encode_watch_response(request, out, r))

    def close(self) -> None:
        self.stream.close()


async def _body_requests(request: web.Request) -> AsyncIterator[dict[str, Any]]:
    """The request objects of a watch body, each as soon as its bytes are in (the body may
    stay open); one that does not decode raises its error."""
    if request.content_type == MSGPACK:
        unpacker = msgpack.Unpacker(raw=False)
        async for chunk in request.content.iter_any():
            unpacker.feed(chunk)
            while True:
                try:
                    obj = unpacker.unpack()
                except msgpack.OutOfData:
                    break  # incomplete: wait for more bytes
                except Exception as exc:  # msgpack raises several unrelated types (as decode_body)
                    raise InvalidArgument(f"msgpack: {exc!r}") from None
                yield decode_message(obj, WATCH_REQUEST, packed=True)
        return
    requests = JsonRequests(WATCH_REQUEST)
    async for chunk in request.content.iter_any():
        for req in requests.feed(chunk):
            yield req
    for req in requests.feed(b"", final=True):
        yield req


async def _handle_rest(requests: AsyncIterator[dict[str, Any]], session: _Session) -> None:
    """Hand the body's remaining requests to ``session``. One that does not decode ends the
    reading there, as etcd's gateway stops at it; the stream and its watchers go on."""
    try:
        async for req in requests:
            session.handle(req)
    except EtcdError as exc:
        log.info("a watch request that does not decode ends the reading of its stream: %s", exc.message)


async def _watch(request: web.Request) -> web.StreamResponse:
    out = MSGPACK_OUT if request.content_type == MSGPACK else JSON_OUT
    request[OUT] = out
    requests = _body_requests(request)
    try:
        first = await anext(requests, None)  # (etcd's gateway too reads it before it answers)
    except EtcdError as bad:
        raise bare_error(bad, out) from None
    sink = await open_stream(request, out, heartbeats=True)
    session = _Session(request, sink)
    if first is not None:
        session.handle(first)
    reader = asyncio.get_running_loop().create_task(_handle_rest(requests, session))
    sender = asyncio.get_running_loop().create_task(session.send_loop())
    try:
        done, _ = await asyncio.wait({reader, sender}, return_when=asyncio.FIRST_COMPLETED)
        if reader in done and reader.exception() is not None:
            exc = reader.exception()
            await sink.send_error(getattr(exc, "code", 2), getattr(exc, "message", str(exc)))
        elif reader in done:
            await sender
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        session.close()
        for task in (reader, sender):
            task.cancel()
    assert sink.response is not None
    return sink.response


async def _watch_ws(request: web.Request) -> web.WebSocketResponse:
    """grpc-websocket-proxy's way: the text messages are written one after the other into
    the gateway's request body, so they are one stream of requests (two in one message are
    two; one may end in a later message). A first request that does not decode is answered
    with the bare error as a message, and the socket closes; a later one ends the reading,
    the watchers go on. Binary messages are kvraft's: one msgpack request each."""
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    request[STREAM_RESPONSE] = ws  # (closed, going away, when the member stops)
    session = _Session(request, Sink(JSON_OUT, ws=ws, fill=filler(request)))
    sender = asyncio.get_running_loop().create_task(session.send_loop())
    requests = JsonRequests(WATCH_REQUEST)
    decoded = stopped = False
    try:
        async for msg in ws:
            if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                break
            if stopped:
                continue
            try:
                if msg.type == WSMsgType.TEXT:
                    session.sink.out = JSON_OUT
                    batch: Iterator[dict[str, Any]] = requests.feed(msg.data.encode() + b"\n")
                else:
                    session.sink.out = MSGPACK_OUT
                    batch = iter([decode_body(msg.data, MSGPACK, WATCH_REQUEST)])
                for req in batch:
                    decoded = True
                    session.handle(req)
            except EtcdError as exc:
                if decoded:
                    log.info("a watch request that does not decode ends the reading of its stream: %s", exc.message)
                    stopped = True
                    continue
                await send_bare_error(ws, exc, session.sink.out)
                break
    finally:
        session.close()
        sender.cancel()
    return ws


ROUTES = {"/watch": _watch}
WS_ROUTES = {"/watch": _watch_ws}

"""Streaming replies the way etcd's gateway sends them: one ``{"result": ...}`` JSON
object plus ``\\n`` per HTTP chunk (one msgpack object per chunk for msgpack clients),
and the same messages over WebSocket (grpc-websocket-proxy style); plus reading several
concatenated request objects from one body."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
from aiohttp import web

from kvraft.apply.errors import EtcdError, InvalidArgument, Unknown
from kvraft.durations import parse_go_duration_s
from kvraft.server.api import gojson
from kvraft.server.api.access import answer_headers
from kvraft.server.api.codec import MSGPACK, MSGPACK_OUT, Message, Out, decode_message
from kvraft.server.api.defaults import filler
from kvraft.server.api.open_streams import STREAM_RESPONSE
from kvraft.server.api.state import SERVER

__all__ = [
    "KEEPALIVE", "JsonRequests", "Sink", "bare_error", "decode_stream", "iter_requests", "open_stream",
    "send_bare_error",
]

KEEPALIVE = "Kvraft-Keepalive"
"""A stream's request header asking for heartbeats every N seconds without a message (kvraft's
client, ``kvraft.client._liveness``); the answer carries the interval granted. etcd's clients
never send it and get no heartbeats."""
HEARTBEAT_RANGE_S = (0.2, 60.0)
_HEARTBEAT = {False: b"\n", True: msgpack.packb(None)}  # JSON whitespace, a msgpack nil


def iter_requests(body: bytes, packed: bool, schema: Message) -> Iterator[Any]:
    """Decode every request object in ``body`` (JSON objects back to back, optionally
    separated by whitespace; or a msgpack stream). A JSON object that does not decode
    raises in its turn, after the ones before it (see ``decode_stream``)."""
    if packed:
        unpacker = msgpack.Unpacker(raw=False)
        unpacker.feed(body)
        done = 0  # where the last whole object ended
        while True:
            try:
                obj = unpacker.unpack()
            except msgpack.OutOfData:
                if done != len(body):
                    raise InvalidArgument("msgpack: unexpected end of data") from None
                return
            except Exception as exc:  # msgpack raises several unrelated types (as decode_body)
                raise InvalidArgument(f"msgpack: {exc!r}") from None
            done = unpacker.tell()
            yield decode_message(obj, schema, packed=True)
    for obj in gojson.iter_values(body):
        yield decode_message({} if obj is None else obj, schema)  # jsonpb: null is empty


def decode_stream(body: bytes, packed: bool, schema: Message) -> list[Any]:
    """The request objects of a streaming body as etcd 3.4's gateway serves them: it
    decodes and sends them one at a time, and the first one that does not decode ends the
    stream there. When that is the first object, the request fails with the decoder's
    error as a bare error (gRPC Unknown, HTTP 500); after it, the objects before it are
    answered and the stream ends normally. (msgpack, kvraft's own: refused whole.)"""
    if packed:
        return list(iter_requests(body, packed, schema))
    requests: list[Any] = []
    try:
        for request in iter_requests(body, packed, schema):
            requests.append(request)
    except EtcdError as exc:
        if not requests:
            raise Unknown(exc.message) from None
    return requests


class JsonRequests:
    """A stream's request objects out of its bytes as they arrive, as the gateway's
    ``json.Decoder`` reads them: back to back, whitespace between them optional, an object
    free to end in a later chunk (or WebSocket message, which grpc-websocket-proxy writes
    into the gateway's body one after the other); ``null`` is an empty request."""

    def __init__(self, schema: Message) -> None:
        self.schema = schema
        self.buffer = b""

    def feed(self, data: bytes, final: bool = False) -> Iterator[Any]:
        """The requests completed by ``data``, one by one (each raising its decoding error
        in its turn); ``final``: the body ends after it."""
        self.buffer += data
        return self._drain(final)

    def _drain(self, final: bool) -> Iterator[Any]:
        while (found := gojson.next_value(self.buffer, final)) is not None:
            value, end = found
            self.buffer = self.buffer[end:]
            yield decode_message({} if value is None else value, self.schema)


def bare_error(exc: EtcdError, out: Out) -> EtcdError:
    """A stream's first request that does not decode, as etcd 3.4's gateway answers it: the
    decoder's error as a bare error, gRPC Unknown (HTTP 500), before any answer. (msgpack,
    kvraft's own: the error's own code.)"""
    return Unknown(exc.message) if out is not MSGPACK_OUT else exc


async def send_bare_error(ws: web.WebSocketResponse, exc: EtcdError, out: Out) -> None:
    """``bare_error`` as a WebSocket message (grpc-websocket-proxy forwards the gateway's
    error answer as one); the caller closes the socket after it."""
    error = bare_error(exc, out)
    doc = {"error": error.message, "message": error.message, "code": error.code}
    if out is MSGPACK_OUT:
        await ws.send_bytes(out.dumps(doc))
    else:
        await ws.send_str(json.dumps(doc, separators=(",", ":")))


class Sink:
    """Where a stream's messages go: a chunked HTTP response or a WebSocket."""

    def __init__(self, out: Out, response: web.StreamResponse | None = None, ws: web.WebSocketResponse | None = None,
                 fill: Callable[[Any], Any] | None = None) -> None:
        self.out = out
        self.response = response
        self.ws = ws
        self.fill = fill if out is not MSGPACK_OUT else None
        """Emit-defaults (``defaults.filler``): each JSON message with its zero-valued fields."""
        self.heartbeat_s: float | None = None
        """Granted heartbeat interval (``KEEPALIVE``); None: none asked or none given."""
        self.last_write = 0.0

    def beat_in(self, now: float, idle_s: float) -> float:
        """Seconds until the next heartbeat is due, at most ``idle_s`` (the caller's own
        check interval)."""
        if self.heartbeat_s is None:
            return idle_s
        return max(0.0, min(idle_s, self.last_write + self.heartbeat_s - now))

    async def beat(self, now: float) -> None:
        """Send a heartbeat if nothing was sent for the granted interval. Call it only
        between messages (it is written as one chunk of its own)."""
        if self.heartbeat_s is not None and now - self.last_write >= self.heartbeat_s and self.response is not None:
            self.last_write = now
            await self.response.write(_HEARTBEAT[self.out is MSGPACK_OUT])

    async def send(self, result: dict[str, Any]) -> None:
        self.last_write = asyncio.get_running_loop().time()
        if self.fill is not None:
            result = self.fill(result)
        doc = {"result": result}
        if self.ws is not None:
            if self.out is MSGPACK_OUT:
                await self.ws.send_bytes(self.out.dumps(doc))
            else:
                await self.ws.send_str(json.dumps(doc, separators=(",", ":")))
            return
        assert self.response is not None
        if self.out is MSGPACK_OUT:
            await self.response.write(self.out.dumps(doc))
        else:
            await self.response.write(json.dumps(doc, separators=(",", ":")).encode() + b"\n")

    async def send_raw(self, data: bytes) -> None:
        """An already encoded JSON message (``{"result": ...}`` plus newline)."""
        self.last_write = asyncio.get_running_loop().time()
        if self.fill is not None:
            return await self.send(json.loads(data)["result"])
        if self.ws is not None:
            await self.ws.send_str(data.decode().rstrip("\n"))
        else:
            assert self.response is not None
            await self.response.write(data)

    async def send_error(self, code: int, message: str) -> None:
        """A stream-level error chunk (grpc-gateway v1 shape)."""
        http = {3: 400, 5: 404, 7: 403, 9: 412, 11: 400, 14: 503, 16: 401}.get(code, 500)
        doc = {"error": {"grpc_code": code, "http_code": http, "message": message, "http_status": ""}}
        if self.ws is not None:
            if self.out is MSGPACK_OUT:
                await self.ws.send_bytes(self.out.dumps(doc))
            else:
                await self.ws.send_str(json.dumps(doc))
        elif self.response is not None:  # (a msgpack stream's error is msgpack too: it was JSON)
            await self.response.write(self.out.dumps(doc) if self.out is MSGPACK_OUT else json.dumps(doc).encode() + b"\n")


async def open_stream(request: web.Request, out: Out, heartbeats: bool = False) -> Sink:
    """Answer headers for a streamed reply. ``heartbeats``: the handler calls ``Sink.beat``
    while idle, so a client's ``KEEPALIVE`` is granted (clamped to ``HEARTBEAT_RANGE_S``)."""
    headers = {**answer_headers(request), "Content-Type": out.content_type}
    heartbeat_s = _asked_heartbeat(request) if heartbeats else None
    if heartbeat_s is not None:
        headers[KEEPALIVE] = f"{heartbeat_s:g}"
    response = web.StreamResponse(headers=headers)
    response.enable_chunked_encoding()
    await response.prepare(request)
    request[STREAM_RESPONSE] = response  # (ended, not answered anew, when the member stops)
    sink = Sink(out, response=response, fill=filler(request))
    sink.heartbeat_s = heartbeat_s
    sink.last_write = asyncio.get_running_loop().time()
    return sink


def _asked_heartbeat(request: web.Request) -> float | None:
    """The interval a stream asked for, clamped to ``HEARTBEAT_RANGE_S`` and to the member's
    ``--grpc-keepalive-min-time`` (etcd's: the shortest ping interval a client may use); None
    when not asked (or not a number)."""
    try:
        asked = float(request.headers.get(KEEPALIVE, ""))
    except ValueError:
        return None
    if not asked > 0:  # (NaN too)
        return None
    low, high = HEARTBEAT_RANGE_S
    server = request.app.get(SERVER)
    floor = parse_go_duration_s(getattr(getattr(server, "config", None), "grpc_keepalive_min_time", "0s"))
    return min(max(asked, low, floor), high)


def is_packed(request: web.Request) -> bool:
    return request.content_type == MSGPACK

"""Reading a request: size limits, encoding negotiation, schema decoding; and replying."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from kvraft.apply.errors import ResourceExhausted
from kvraft.server.api.codec import JSON_OUT, MSGPACK, MSGPACK_OUT, Message, Out, decode_body
from kvraft.server.api.encode import encode_header
from kvraft.server.api.state import SERVER

OUT: web.RequestKey[Out] = web.RequestKey("out", Out)
"""The request's encoding, kept for the error handler (``app.py``)."""

__all__ = ["GRPC_OVERHEAD_BYTES", "OUT", "body_limit", "header", "read_body", "read_request", "respond"]

GRPC_OVERHEAD_BYTES = 512 * 1024
"""etcd's gRPC receive limit is --max-request-bytes plus this much."""


def body_limit(max_request_bytes: int) -> int:
    """The HTTP body limit: etcd's gRPC limit applies to the decoded message; a JSON body
    carries bytes as base64 (4/3 larger) plus field names."""
    return (max_request_bytes + GRPC_OVERHEAD_BYTES) * 4 // 3 + 64 * 1024


async def read_body(request: web.Request) -> bytes:
    """The whole body, at most ``body_limit`` bytes; beyond, etcd's ResourceExhausted error
    with the body's size. A chunked body (no Content-Length) is read to its end to count it,
    keeping nothing past the limit, so the error names its size as etcd's does."""
    limit = body_limit(request.app[SERVER].config.max_request_bytes)
    size = request.content_length
    if size is not None:
        if size > limit:
            raise ResourceExhausted(f"grpc: received message larger than max ({size} vs. {limit})")
        return await request.read()
    parts: list[bytes] = []
    size = 0
    while chunk := await request.content.readany():
        size += len(chunk)
        if size <= limit:
            parts.append(chunk)
    if size > limit:
        raise ResourceExhausted(f"grpc: received message larger than max ({size} vs. {limit})")
    return b"".join(parts)


async def read_request(request: web.Request, schema: Message) -> tuple[Out, Any]:
    """Read and decode the body; the ``Out`` matches the request's encoding."""
    packed = request.content_type == MSGPACK
    out = MSGPACK_OUT if packed else JSON_OUT
    request[OUT] = out
    body = await read_body(request)
    return out, decode_body(body, MSGPACK if packed else "application/json", schema)


def respond(out: Out, doc: dict[str, Any]) -> web.Response:
    return web.Response(body=out.dumps(doc), content_type=out.content_type)


def header(request: web.Request, out: Out, revision: int) -> dict[str, Any]:
    server = request.app[SERVER]
    return encode_header(out, server.cluster_id, server.member_id, revision, server.raft_term)

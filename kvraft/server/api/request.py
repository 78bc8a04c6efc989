"""Reading a request: size limits, encoding negotiation, schema decoding; and replying."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from kvraft.apply.errors import ResourceExhausted
from kvraft.server.api.codec import JSON_OUT, MSGPACK, MSGPACK_OUT, Message, Out, decode_body
from kvraft.server.api.encode import encode_header
from kvraft.server.api.state import SERVER

__all__ = ["GRPC_OVERHEAD_BYTES", "body_limit", "header", "read_request", "respond"]

GRPC_OVERHEAD_BYTES = 512 * 1024
"""etcd's gRPC receive limit is --max-request-bytes plus this much."""


def body_limit(max_request_bytes: int) -> int:
    """The HTTP body limit: etcd's gRPC limit applies to the decoded message; a JSON body
    carries bytes as base64 (4/3 larger) plus field names."""
    return (max_request_bytes + GRPC_OVERHEAD_BYTES) * 4 // 3 + 64 * 1024


async def read_request(request: web.Request, schema: Message) -> tuple[Out, Any]:
    """Read and decode the body; the ``Out`` matches the request's encoding."""
    packed = request.content_type == MSGPACK
    out = MSGPACK_OUT if packed else JSON_OUT
    request["out"] = out
    limit = body_limit(request.app[SERVER].config.max_request_bytes)
    if request.content_length is not None and request.content_length > limit:
        raise ResourceExhausted(
            f"grpc: received message larger than max ({request.content_length} vs. {limit})"
        )
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise ResourceExhausted(
            f"grpc: received message larger than max ({exc.actual_size} vs. {limit})"
        ) from None
    return out, decode_body(body, MSGPACK if packed else "application/json", schema)


def respond(out: Out, doc: dict[str, Any]) -> web.Response:
    return web.Response(body=out.dumps(doc), content_type=out.content_type)


def header(request: web.Request, out: Out, revision: int) -> dict[str, Any]:
    server = request.app[SERVER]
    return encode_header(out, server.cluster_id, server.member_id, revision, server.raft_term)

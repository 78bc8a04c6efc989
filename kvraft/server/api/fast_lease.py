"""The fast path (``fast.FastProtocol``) for the hot lease routes: ``POST
/v3[beta]/lease/grant``, ``/lease/keepalive`` and ``/lease/timetolive`` (and its
``/kv/lease/`` alias), answered straight from the socket like the KV routes.

At 5,000 agents a keepalive arrives every 2 ms; through aiohttp each one built a
``Request``, ran the middlewares and streamed a chunked response. Here the answers are
the same bytes as the aiohttp routes' (``lease.py`` builds both): a grant or TimeToLive is
one JSON (or msgpack) document with ``Content-Length``; a keepalive answers every request
object in the body with one ``{"result": ...}`` line in a chunked body and ends, as etcd's
gateway does. A malformed body, or a failure on the first keepalive, is etcd's error JSON
with the error's HTTP status; a failure on a later one ends the stream with
grpc-gateway's error chunk. (The fast path is not taken while auth is enabled; aiohttp's
routes, with the auth middleware, serve then.)
"""

from __future__ import annotations

from typing import Any

from kvraft.apply.sessions import request_id
from kvraft.server.api.codec import MSGPACK_OUT, Out, decode_body
from kvraft.server.api.errors import GRPC_CODE, error_response
from kvraft.server.api.lease import (
    GRANT,
    LEASE_ID,
    TIME_TO_LIVE,
    grant_doc,
    keepalive_chunks,
    time_to_live_doc,
)
from kvraft.server.api.stream import decode_stream

__all__ = ["PATHS", "ROUTES", "serve"]

PATHS: dict[bytes, str] = {}
for _prefix in (b"/v3", b"/v3beta"):
    PATHS[_prefix + b"/lease/grant"] = "lease/grant"
    PATHS[_prefix + b"/lease/keepalive"] = "lease/keepalive"
    PATHS[_prefix + b"/lease/timetolive"] = "lease/timetolive"
    PATHS[_prefix + b"/kv/lease/timetolive"] = "lease/timetolive"
ROUTES = frozenset(PATHS.values())


async def serve(proto: Any, route: str, out: Out, body: bytes, close: bool, once: str | None = None) -> None:
    """Answer one lease request on ``proto`` (a ``fast.FastProtocol``); ``once``: a grant's
    ``Kvraft-Request-Id``."""
    routes = proto.routes
    features, server = routes.features, routes.server
    try:
        if route == "lease/keepalive":
            requests = decode_stream(body, out is MSGPACK_OUT, LEASE_ID)
            payload = b""
            async for chunk in keepalive_chunks(features, server, out, requests):
                payload += b"%x\r\n%s\r\n" % (len(chunk), chunk)
            proto._respond(200, out.content_type, payload + b"0\r\n\r\n", close, chunked=True)
            return
        if route == "lease/grant":
            doc = await grant_doc(features, server, out, decode_body(body, out.content_type, GRANT), request_id(once))
        else:
            doc = await time_to_live_doc(features, server, out, decode_body(body, out.content_type, TIME_TO_LIVE))
        status, payload, code = 200, out.dumps(doc), 0
    except Exception as exc:  # every failure answers etcd's error JSON, never a bare 500
        answer = error_response(exc, out)
        status, payload, code = answer.status, bytes(answer.body or b""), answer[GRPC_CODE]  # type: ignore[arg-type]
    proto._respond(status, out.content_type, payload, close, code=code)

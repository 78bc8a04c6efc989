"""``make_app``: the aiohttp application serving etcd's v3 gateway routes.

Typed state lives under ``AppKey``s; the member (``SERVER``) is built by the caller and
its lifetime is bound to the app with ``cleanup_ctx``. Route families are one module each
(``kv``, ``cluster``, ``maintenance``, ``misc``); handlers are thin: decode, call one
method of the member, encode. Every gateway route answers under ``/v3/`` and ``/v3beta/``,
POST only (other methods: 405 as etcd's mux; OPTIONS: 200 for CORS preflight).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

from kvraft.apply.errors import InvalidArgument
from kvraft.server.api import cluster, debug, gate, kv, maintenance, misc
from kvraft.server.api.codec import JSON_OUT
from kvraft.server.api.errors import error_response
from kvraft.server.api.request import OUT, body_limit
from kvraft.server.api.state import SERVER

__all__ = ["make_app"]

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, GET, OPTIONS, PUT, DELETE",
    "Access-Control-Allow-Headers": "accept, content-type, authorization",
    "Grpc-Metadata-Content-Type": "application/grpc",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status == 405:
            response = web.Response(status=405, text="Method Not Allowed")
        elif exc.status == 404:
            response = web.Response(status=404, text="Not Found")
        else:
            response = error_response(InvalidArgument(exc.reason), request.get(OUT, JSON_OUT))
    except Exception as exc:  # every failure answers etcd's error JSON, never a bare 500
        response = error_response(exc, request.get(OUT, JSON_OUT))
    response.headers.update(CORS_HEADERS)
    return response


async def _options(_request: web.Request) -> web.Response:
    return web.Response(status=200)


def make_app(server: Any) -> web.Application:
    """The client API of one member. ``server`` is a started-or-startable member object
    (``kvraft.server.member.Member``): the app starts it and stops it with itself."""
    max_bytes = body_limit(server.config.max_request_bytes)
    app = web.Application(middlewares=[_errors], client_max_size=max_bytes)
    app[SERVER] = server

    async def member_lifetime(_app: web.Application) -> AsyncIterator[None]:
        await server.start()
        yield
        await server.stop()

    app.cleanup_ctx.append(member_lifetime)
    for family in (kv, cluster, maintenance):
        for path, handler in family.ROUTES.items():
            for prefix in ("/v3", "/v3beta"):
                app.router.add_post(prefix + path, handler)
                app.router.add_route("OPTIONS", prefix + path, _options)
    for path, handler in misc.ROUTES.items():
        app.router.add_get(path, handler)
    gate.install(app, server)  # watch, lease, auth, lock, election routes; auth middleware
    debug.install(app)  # /debug/failpoints, only with KVRAFT_FAILPOINTS set
    return app

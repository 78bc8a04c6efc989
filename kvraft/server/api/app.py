"""``make_app``: the aiohttp application serving etcd's v3 gateway routes.

Typed state lives under ``AppKey``s; the member (``SERVER``) is built by the caller and
its lifetime is bound to the app with ``cleanup_ctx``. Route families are one module each
(``kv``, ``cluster``, ``maintenance``, ``misc``); handlers are thin: decode, call one
method of the member, encode. Every gateway route answers under ``/v3/`` and ``/v3beta/``,
POST only (other methods: 405 as etcd's mux; OPTIONS: 200 on any path, as etcd's CORS
wrapper answers preflights).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import unquote, urlsplit

from aiohttp import web

from kvraft.apply.errors import InvalidArgument
from kvraft.server.api import (
    cluster,
    debug,
    defaults,
    gate,
    kv,
    maintenance,
    misc,
    open_streams,
    pprof,
)
from kvraft.server.api.access import ACCESS, Access, answer_headers, refusal
from kvraft.server.api.codec import JSON_OUT
from kvraft.server.api.errors import GRPC_CODE, error_response
from kvraft.server.api.grpc_stats import method_for
from kvraft.server.api.request import OUT, body_limit
from kvraft.server.api.request_stats import REQUEST_STATS, RequestStats
from kvraft.server.api.state import SERVER

__all__ = ["make_app"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = logging.getLogger("kvraft.api")


def _go_clean(path: str) -> str:
    """Go's ``path.Clean`` as ``http.ServeMux`` applies it (a trailing slash kept)."""
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    clean = "/" + "/".join(parts)
    if path.endswith("/") and clean != "/":
        clean += "/"
    return clean


def _redirect(request: web.Request, location: str) -> web.Response:
    """Go's ``http.Redirect`` with 301: a small HTML body for GET only."""
    if request.query_string:
        location += "?" + request.query_string
    if request.method == "GET":
        return web.Response(status=301, headers={"Location": location}, content_type="text/html",
                            text=f'<a href="{location}">Moved Permanently</a>.\n\n')
    return web.Response(status=301, headers={"Location": location})


@web.middleware
async def _paths(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Paths as etcd's HTTP mux sees them: ``/v3beta/`` is rewritten to ``/v3/`` first; a
    path that is not clean (``//``, ``.``, ``..``), or ``/v3`` without its slash, is
    redirected (301) to the clean one; a path outside ``/v3/`` that no route serves is Go's
    ``404 page not found`` (inside ``/v3/`` the gateway's ``Not Found``). aiohttp's URL
    parsing removes dot segments, so the raw path is what is looked at."""
    access = request.app[ACCESS]
    refused = access.host_refused(request)  # (first, as etcd's access controller)
    if refused is not None:
        log.warning("rejecting HTTP request to prevent DNS rebinding attacks (host %r)", refused)
        return refusal(refused)
    if request.method == "OPTIONS":  # etcd's CORS wrapper answers every preflight, any path
        return web.Response(status=200, headers=access.cors(request.headers.get("Origin")))
    raw = request.raw_path.split("?", 1)[0]
    if not raw.startswith("/"):  # absolute form (a forward proxy's target): Go's server takes its path
        raw = urlsplit(raw).path or "/"
    path = unquote(raw)
    if path.startswith("/v3beta/"):
        path = "/v3/" + path[len("/v3beta/"):]
    clean = _go_clean(path)
    if clean != path:
        return _redirect(request, clean)
    if path == "/v3":
        return _redirect(request, "/v3/")
    request[_IN_GATEWAY] = path.startswith("/v3/")
    return await handler(request)


_IN_GATEWAY = web.RequestKey("kvraft.in_gateway", bool)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    # the gRPC method etcd's gateway would call (POST; the WebSocket watch is a GET)
    method = method_for(request.path) if request.method in ("POST", "GET") else None
    stats = getattr(request.app[SERVER], "grpc_stats", None) if method is not None else None
    started = stats.start(method) if stats is not None and method is not None else 0.0
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status in (404, 405):  # answered by the gateway's mux: no gRPC call
            method = None
        if exc.status == 405:
            response = web.Response(status=405, text="Method Not Allowed")
        elif exc.status == 404:  # the gateway's text inside /v3/, Go's mux's outside
            text = "Not Found" if request.get(_IN_GATEWAY, True) else "404 page not found\n"
            response = web.Response(status=404, text=text)
        else:
            response = error_response(InvalidArgument(exc.reason), request.get(OUT, JSON_OUT))
    except Exception as exc:  # every failure answers etcd's error JSON, never a bare 500
        response = error_response(exc, request.get(OUT, JSON_OUT))
    if stats is not None and method is not None:
        code = response.get(GRPC_CODE, 0)
        took = stats.finish(method, code, started)
        slow = request.app[REQUEST_STATS]  # etcd's "request stats" line (request_stats.py)
        if took > slow.threshold:
            await slow.log_aiohttp(request, method, took, response, code)
    response.headers.update(answer_headers(request))
    return response


@web.middleware
async def _emit_defaults(request: web.Request, handler: Handler) -> web.StreamResponse:
    """JSON answers with their zero-valued fields (``defaults``), when the member's
    ``--gateway-emit-defaults`` or the request's header asks: a whole answer is filled here,
    a stream's messages by its ``Sink`` (``defaults.MESSAGE`` tells it which message)."""
    flag = request.app[SERVER].config.gateway_emit_defaults
    if not flag and defaults.HEADER not in request.headers:  # the usual request: nothing to look up
        return await handler(request)
    message = defaults.message_for(request.path) if request.get(_IN_GATEWAY) else None
    if message is None or not defaults.wants_defaults(request.headers, flag):
        return await handler(request)
    request[defaults.MESSAGE] = message
    response = await handler(request)
    if isinstance(response, web.Response) and response.status == 200 and response.content_type == "application/json" \
            and isinstance(response.body, bytes) and response.body:
        response.body = JSON_OUT.dumps(defaults.fill(message, json.loads(response.body)))
    return response


async def _options(_request: web.Request) -> web.Response:
    return web.Response(status=200)


def make_app(server: Any) -> web.Application:
    """The client API of one member. ``server`` is a started-or-startable member object
    (``kvraft.server.member.Member``): the app starts it and stops it with itself."""
    max_bytes = body_limit(server.config.max_request_bytes)
    app = web.Application(middlewares=[_paths, _errors, _emit_defaults], client_max_size=max_bytes)
    app[SERVER] = server
    app[ACCESS] = Access.of(server.config)
    app[REQUEST_STATS] = RequestStats.of(server.config)

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
    misc.add_routes(app.router)  # /version, /health, /metrics
    gate.install(app, server)  # watch, lease, auth, lock, election routes; auth middleware
    open_streams.install(app)  # watch streams, lock waits, ...: ended at once when the member stops
    debug.install(app)  # /debug/failpoints, only with KVRAFT_FAILPOINTS set
    if server.config.enable_pprof:
        pprof.install(app)  # /debug/pprof/ (etcd's --enable-pprof)
    return app

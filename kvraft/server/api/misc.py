"""``GET /version``, ``/health``, ``/metrics`` (Prometheus text, through prometheus_client);
``/livez`` and ``/readyz`` are ``api.health``'s."""

from __future__ import annotations

import json

from aiohttp import web

from kvraft import __version__
from kvraft.client.observe import metrics_response
from kvraft.server.api.health import add_probe_routes, health_options
from kvraft.server.api.metrics_auth import METRICS_AUTH
from kvraft.server.api.state import SERVER

__all__ = ["API_FEATURES", "API_VERSION", "ROUTES", "add_routes"]

API_VERSION = "3.4.0"
"""The etcd API level kvraft speaks; clients choose the ``/v3/`` prefix from it."""
API_FEATURES = ("request-ids",)
"""What this member's client API takes beyond etcd's, for clients to ask before relying on it:
``request-ids``: the write routes take ``Kvraft-Request-Id`` and either apply the write at
most once or refuse it (code 9); an older member ignores the header, so a client retries a
numbered write only to members that list this (``kvraft.apply.sessions``)."""


async def _version(_request: web.Request) -> web.Response:
    doc = {"etcdserver": API_VERSION, "etcdcluster": API_VERSION, "kvraft": __version__,
           "kvraft_features": list(API_FEATURES)}
    return web.Response(text=json.dumps(doc, separators=(",", ":")), content_type="application/json")


async def _health(request: web.Request) -> web.Response:
    server = request.app[SERVER]
    excluded, serializable = health_options(request)  # (etcd 3.5's ?exclude=ALARM, ?serializable=true)
    healthy = await server.healthy(excluded, serializable)
    if healthy:  # etcd_server_health_success / _failures
        server.counters.health_success += 1
    else:
        server.counters.health_failures += 1
    body = json.dumps({"health": "true" if healthy else "false"}, separators=(",", ":"))
    return web.Response(text=body, status=200 if healthy else 503, content_type="text/plain")


async def _metrics(request: web.Request) -> web.Response:
    """Prometheus text (OpenMetrics when asked); see ``kvraft.server.metrics``."""
    from kvraft.server.metrics import registry_for  # it imports API_VERSION from here

    gate = request.app.get(METRICS_AUTH)  # --metrics-auth
    if gate is not None and (refusal := await gate.refusal(request)) is not None:
        return refusal
    return metrics_response(registry_for(request.app[SERVER]), request)


ROUTES = {"/version": _version, "/health": _health, "/metrics": _metrics}


def add_routes(router: web.UrlDispatcher, paths: tuple[str, ...] = tuple(ROUTES)) -> None:
    """``paths`` of ``ROUTES`` with etcd's methods: its Prometheus handler takes any method,
    the others GET alone (HEAD is 405); and ``/livez``, ``/readyz`` (``api.health``). The
    metrics listener (``--listen-metrics-urls``) serves ``/metrics``, ``/health`` and those
    only, as etcd's."""
    add_probe_routes(router)
    for path in paths:
        if path == "/metrics":
            router.add_route("*", path, ROUTES[path])
        else:
            router.add_get(path, ROUTES[path], allow_head=False)

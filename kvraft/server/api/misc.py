"""``GET /version``, ``/health``, ``/metrics`` (Prometheus text)."""

from __future__ import annotations

import json
import os

from aiohttp import web

from kvraft import __version__
from kvraft.server.api.state import SERVER

__all__ = ["API_VERSION", "ROUTES"]

API_VERSION = "3.4.0"
"""The etcd API level kvraft speaks; clients choose the ``/v3/`` prefix from it."""


async def _version(_request: web.Request) -> web.Response:
    doc = {"etcdserver": API_VERSION, "etcdcluster": API_VERSION, "kvraft": __version__}
    return web.Response(text=json.dumps(doc, separators=(",", ":")), content_type="application/json")


async def _health(request: web.Request) -> web.Response:
    healthy = await request.app[SERVER].healthy()
    body = json.dumps({"health": "true" if healthy else "false"}, separators=(",", ":"))
    return web.Response(text=body, status=200 if healthy else 503, content_type="text/plain")


def _process_metrics() -> list[tuple[str, str, str, int]]:
    """The standard Prometheus process gauges that ``etcdctl check datascale`` reads."""
    try:
        with open("/proc/self/statm") as handle:
            virtual_pages, resident_pages = (int(x) for x in handle.read().split()[:2])
    except (OSError, ValueError):
        return []
    page = os.sysconf("SC_PAGE_SIZE")
    return [
        ("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", resident_pages * page),
        ("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", virtual_pages * page),
    ]


async def _metrics(request: web.Request) -> web.Response:
    lines: list[str] = []
    for name, kind, help_text, value in [*request.app[SERVER].metrics(), *_process_metrics()]:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        lines.append(f"{name} {value}")
    return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")


ROUTES = {"/version": _version, "/health": _health, "/metrics": _metrics}

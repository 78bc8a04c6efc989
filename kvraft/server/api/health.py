"""``GET /livez`` and ``/readyz`` (etcd 3.5.11+/3.6's probes), and ``/health``'s query options.

etcd runs named checks and answers ``ok`` (200) or the failed checks (503):

- ``/livez``: ``serializable_read`` (this member reads its own store): the process works, a
  restart would not help otherwise;
- ``/readyz``: ``data_corruption`` (no CORRUPT alarm), ``serializable_read``,
  ``linearizable_read`` (a ReadIndex round: a leader and a quorum answer);
- ``/livez/<check>``, ``/readyz/<check>``: that check alone; ``/readyz/non_learner`` fails on a
  learner. It is not part of ``/readyz`` itself, where etcd has it: a kvraft learner serves
  reads and forwards writes (docs/design/server.md), so it is ready for clients;
- ``?exclude=<check>`` (repeatable) leaves a check out of ``/livez`` or ``/readyz`` (a name
  that is no check is ignored, as etcd does for version skew); ``?verbose`` lists every check,
  ``[+]name ok`` or ``[-]name failed: reason``, before the ``ok``. A failure always lists them.

Checks run in a fixed order (etcd's map order is random). Each result is counted in
``etcd_server_healthcheck{type,name}`` (1 or 0, the last) and
``etcd_server_healthchecks_total{type,name,status}`` (``success`` / ``error``), etcd's names.

``/health`` (etcd 3.4's body, which the comparison tests hold it to) takes 3.5's options:
``?exclude=NOSPACE`` / ``CORRUPT`` ignores that alarm, ``?serializable=true`` checks this
member alone (no leader needed, a local read), as a liveness probe wants.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from kvraft.apply.chain import CORRUPT
from kvraft.apply.ops import RangeOp
from kvraft.server.api.state import SERVER

__all__ = ["CHECKS", "add_probe_routes", "health_options"]

READ_TIMEOUT_S = 5.0

Check = Callable[[Any], Awaitable[str]]
"""A check of the member: "" when it passes, else why it failed."""


async def _data_corruption(node: Any) -> str:
    return "alarm activated: CORRUPT" if node.state.alarms(CORRUPT) else ""


async def _read(node: Any, serializable: bool) -> str:
    try:
        if not serializable:
            await node.driver.read_barrier(timeout_s=READ_TIMEOUT_S)
        node.state.range(RangeOp(key=b"\0", keys_only=True, limit=1, serializable=True))
    except Exception as exc:  # noqa: BLE001 - any failure is the check's answer
        return str(exc) or type(exc).__name__
    if node.driver.fatal is not None:
        return f"the member stopped on a fatal error: {node.driver.fatal!r}"
    return ""


async def _serializable_read(node: Any) -> str:
    return await _read(node, True)


async def _linearizable_read(node: Any) -> str:
    return await _read(node, False)


async def _non_learner(node: Any) -> str:
    member = node.membership.get(node.member_id)
    return "not supported for learner" if member is not None and member.is_learner else ""


CHECKS: dict[str, dict[str, Check]] = {
    "livez": {"serializable_read": _serializable_read},
    "readyz": {"data_corruption": _data_corruption, "serializable_read": _serializable_read,
               "linearizable_read": _linearizable_read, "non_learner": _non_learner},
}
ROOT_CHECKS = {"livez": ("serializable_read",),
               "readyz": ("data_corruption", "serializable_read", "linearizable_read")}


def health_options(request: web.Request) -> tuple[frozenset[str], bool]:
    """``/health``'s ``?exclude=ALARM`` (repeatable) and ``?serializable=true``."""
    excluded = frozenset(name for name in request.query.getall("exclude", ()) if name)
    return excluded, request.query.get("serializable") == "true"


async def _run(request: web.Request, kind: str, names: tuple[str, ...]) -> web.Response:
    node = request.app[SERVER]
    lines, failed = [], False
    for name in names:
        why = await CHECKS[kind][name](node)
        node.counters.record_check(kind, name, not why)
        lines.append(f"[-]{name} failed: {why}\n" if why else f"[+]{name} ok\n")
        failed = failed or bool(why)
    headers = {"X-Content-Type-Options": "nosniff"}
    if failed:  # (Go's http.Error: the text and a newline)
        return web.Response(text="".join(lines) + "\n", status=503, headers=headers, content_type="text/plain")
    text = ("".join(lines) if "verbose" in request.query else "") + "ok\n"
    return web.Response(text=text, headers=headers, content_type="text/plain")


def _root(kind: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        excluded = set(request.query.getall("exclude", ()))
        return await _run(request, kind, tuple(n for n in ROOT_CHECKS[kind] if n not in excluded))

    return handler


def _one(kind: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        name = request.match_info["check"]
        if name not in CHECKS[kind]:
            raise web.HTTPNotFound(text="404 page not found\n")  # (Go's mux)
        return await _run(request, kind, (name,))

    return handler


def add_probe_routes(router: web.UrlDispatcher) -> None:
    """``/livez``, ``/readyz`` and their ``/<check>`` sub-paths, GET alone (any other method:
    405, as etcd's)."""
    for kind in CHECKS:
        router.add_get(f"/{kind}", _root(kind), allow_head=False)
        router.add_get(f"/{kind}/{{check}}", _one(kind), allow_head=False)

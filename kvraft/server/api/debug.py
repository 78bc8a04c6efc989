"""``/debug/failpoints`` (only when ``KVRAFT_FAILPOINTS`` is set; see ``kvraft.failpoints``).

``GET /debug/failpoints``: the armed failpoints as ``name=action`` lines (gofail's format);
``PUT /debug/failpoints/NAME`` with the action as the body arms one; ``DELETE`` disarms it.
A bad action is refused with 400 and the reason.
"""

from __future__ import annotations

from aiohttp import web

from kvraft import failpoints

__all__ = ["install"]


async def _list(_request: web.Request) -> web.Response:
    text = "".join(f"{name}={spec}\n" for name, spec in failpoints.armed().items())
    return web.Response(text=text, content_type="text/plain")


async def _put(request: web.Request) -> web.Response:
    spec = (await request.text()).strip()
    try:
        failpoints.arm(request.match_info["name"], spec)
    except failpoints.FailpointError as exc:
        return web.Response(status=400, text=f"{exc}\n", content_type="text/plain")
    return web.Response(status=204)


async def _delete(request: web.Request) -> web.Response:
    failpoints.disarm(request.match_info["name"])
    return web.Response(status=204)


def install(app: web.Application) -> None:
    if not failpoints.enabled():
        return
    app.router.add_get("/debug/failpoints", _list)
    app.router.add_put("/debug/failpoints/{name}", _put)
    app.router.add_delete("/debug/failpoints/{name}", _delete)

"""``/v3/cluster/member/*``: list, add, remove, update, promote.

Membership responses carry a header without ``revision``, as etcd's do.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from kvraft.server.api import schemas
from kvraft.server.api.codec import Out
from kvraft.server.api.request import header, read_request, respond
from kvraft.server.api.state import SERVER

__all__ = ["ROUTES"]


def _members(out: Out, members: list[Any]) -> list[dict[str, Any]]:
    return [m.encode(out) for m in members]


async def _list(request: web.Request) -> web.Response:
    out, fields = await read_request(request, schemas.MEMBER_LIST)
    members = await request.app[SERVER].member_list(fields["linearizable"])
    return respond(out, {"header": header(request, out, 0), "members": _members(out, members)})


async def _add(request: web.Request) -> web.Response:
    out, fields = await read_request(request, schemas.MEMBER_ADD)
    member, members = await request.app[SERVER].member_add(fields["peerURLs"], fields["isLearner"])
    doc = {"header": header(request, out, 0), "member": member.encode(out), "members": _members(out, members)}
    return respond(out, doc)


async def _remove(request: web.Request) -> web.Response:
    out, fields = await read_request(request, schemas.MEMBER_ID)
    members = await request.app[SERVER].member_remove(fields["ID"])
    return respond(out, {"header": header(request, out, 0), "members": _members(out, members)})


async def _update(request: web.Request) -> web.Response:
    out, fields = await read_request(request, schemas.MEMBER_UPDATE)
    members = await request.app[SERVER].member_update(fields["ID"], fields["peerURLs"])
    return respond(out, {"header": header(request, out, 0), "members": _members(out, members)})


async def _promote(request: web.Request) -> web.Response:
    out, fields = await read_request(request, schemas.MEMBER_ID)
    members = await request.app[SERVER].member_promote(fields["ID"])
    return respond(out, {"header": header(request, out, 0), "members": _members(out, members)})


ROUTES = {
    "/cluster/member/list": _list,
    "/cluster/member/add": _add,
    "/cluster/member/remove": _remove,
    "/cluster/member/update": _update,
    "/cluster/member/promote": _promote,
}

"""``/v3/auth/*``: enable, disable, status, authenticate, user and role administration.

Mutations are proposed through Raft as ``AuthOp``s (passwords hashed here, with bcrypt,
before proposing); the Auth applier checks the caller is root at apply time. Reads
(get/list/status) answer from this member's auth state after a ReadIndex barrier.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from kvraft.apply.sessions import HEADER, request_id
from kvraft.auth import READ, Permission
from kvraft.server.api.codec import BOOL, BYTES, INT64, STRING, Enum, Message
from kvraft.server.api.feature_state import FEATURES
from kvraft.server.api.request import header, read_request, respond
from kvraft.server.api.state import SERVER

__all__ = ["ROUTES"]

PERM_TYPE = Enum("authpb.Permission_Type", {"READ": 0, "WRITE": 1, "READWRITE": 2})
_NAMES = {0: "READ", 1: "WRITE", 2: "READWRITE"}
PERMISSION = Message("authpb.Permission", {"permType": PERM_TYPE, "key": BYTES, "range_end": BYTES})
AUTHENTICATE = Message("etcdserverpb.AuthenticateRequest", {"name": STRING, "password": STRING})
USER_ADD = Message(
    "etcdserverpb.AuthUserAddRequest",
    {"name": STRING, "password": STRING, "hashedPassword": STRING,
     "options": Message("authpb.UserAddOptions", {"no_password": BOOL})},
)
NAME = Message("etcdserverpb.AuthUserGetRequest", {"name": STRING})
ROLE = Message("etcdserverpb.AuthRoleGetRequest", {"role": STRING})
CHANGE_PW = Message(
    "etcdserverpb.AuthUserChangePasswordRequest", {"name": STRING, "password": STRING, "hashedPassword": STRING}
)
GRANT_ROLE = Message("etcdserverpb.AuthUserGrantRoleRequest", {"user": STRING, "role": STRING})
REVOKE_ROLE = Message("etcdserverpb.AuthUserRevokeRoleRequest", {"name": STRING, "role": STRING})
GRANT_PERM = Message("etcdserverpb.AuthRoleGrantPermissionRequest", {"name": STRING, "perm": PERMISSION})
REVOKE_PERM = Message(
    "etcdserverpb.AuthRoleRevokePermissionRequest", {"role": STRING, "key": BYTES, "range_end": BYTES}
)
EMPTY = Message("etcdserverpb.AuthEnableRequest", {})
SCOPED_GRANT = Message(
    "kvraft.ScopedTokenGrantRequest",
    {"name": STRING, "permType": PERM_TYPE, "key": BYTES, "range_end": BYTES, "lease": INT64},
)
SCOPED_REVOKE = Message("kvraft.ScopedTokenRevokeRequest", {"name": STRING})


def _mutation(schema: Message, action: str, args_of: Any) -> Any:
    async def handler(request: web.Request) -> web.Response:
        out, fields = await read_request(request, schema)
        features = request.app[FEATURES]
        once = request_id(request.headers.get(HEADER))  # (malformed: refused before any hashing)
        args = await args_of(features, fields)
        revision = await features.propose_auth(action, args, once)
        return respond(out, {"header": header(request, out, revision)})

    return handler


async def _no_args(_features: Any, _fields: dict[str, Any]) -> list[Any]:
    return []


async def _user_add_args(features: Any, fields: dict[str, Any]) -> list[Any]:
    options = fields["options"] or {}
    no_password = bool(options.get("no_password"))
    if fields["hashedPassword"]:
        digest = fields["hashedPassword"].encode()
    elif no_password:
        digest = b""
    else:
        digest = await features.hash(fields["password"])
    return [fields["name"], digest, no_password]


async def _change_pw_args(features: Any, fields: dict[str, Any]) -> list[Any]:
    digest = fields["hashedPassword"].encode() if fields["hashedPassword"] else await features.hash(fields["password"])
    return [fields["name"], digest]


async def _authenticate(request: web.Request) -> web.Response:
    out, fields = await read_request(request, AUTHENTICATE)
    features = request.app[FEATURES]
    token = await features.authenticate(fields["name"], fields["password"])
    return respond(out, {"header": header(request, out, features.store.rev), "token": token})


async def _scoped_grant(request: web.Request) -> web.Response:
    """kvraft's: the caller narrows its own permissions to ``[key, range_end)`` (etcd's range
    conventions) and ``permType``, bound to lease ``lease``; answers the token."""
    out, fields = await read_request(request, SCOPED_GRANT)
    features = request.app[FEATURES]
    scope = Permission(fields["permType"], fields["key"], fields["range_end"])
    token = await features.scoped_grant(fields["name"], scope, fields["lease"])
    return respond(out, {"header": header(request, out, features.store.rev), "token": token})


async def _scoped_revoke(request: web.Request) -> web.Response:
    out, fields = await read_request(request, SCOPED_REVOKE)
    features = request.app[FEATURES]
    revision = await features.scoped_revoke(fields["name"])
    return respond(out, {"header": header(request, out, revision)})


async def _scoped_list(request: web.Request) -> web.Response:
    """kvraft's: the scoped tokens' grants (never their secrets): root sees all, a user its own."""
    out, _, features = await _read_state(request, EMPTY)
    grants = features.checked(features.auth.scoped_visible, *features.caller_or_empty())
    doc: dict[str, Any] = {"header": header(request, out, features.store.rev)}
    if grants:
        doc["tokens"] = [{"id": g.id, "user": g.user, "name": g.name,
                          "permType": _NAMES.get(g.scope.perm_type, g.scope.perm_type),
                          "key": out.b(g.scope.key), "range_end": out.b(g.scope.range_end), "lease": out.i(g.lease)}
                         for g in grants]
    return respond(out, doc)


async def _read_state(request: web.Request, schema: Message) -> tuple[Any, dict[str, Any], Any]:
    out, fields = await read_request(request, schema)
    await request.app[SERVER].driver.read_barrier()
    return out, fields, request.app[FEATURES]


async def _status(request: web.Request) -> web.Response:
    out, _, features = await _read_state(request, EMPTY)
    doc: dict[str, Any] = {"header": header(request, out, features.store.rev)}
    if features.auth.enabled:
        doc["enabled"] = True
    doc["authRevision"] = out.i(features.auth.revision)
    return respond(out, doc)


async def _user_get(request: web.Request) -> web.Response:
    out, fields, features = await _read_state(request, NAME)
    features.checked(features.auth.check_user_get, *features.caller_or_empty(), fields["name"])
    user = features.checked(features.auth.user_get, fields["name"])
    doc: dict[str, Any] = {"header": header(request, out, features.store.rev)}
    if user.roles:
        doc["roles"] = list(user.roles)
    return respond(out, doc)


async def _user_list(request: web.Request) -> web.Response:
    out, _, features = await _read_state(request, EMPTY)
    doc: dict[str, Any] = {"header": header(request, out, features.store.rev)}
    if features.auth.users:
        doc["users"] = sorted(features.auth.users)
    return respond(out, doc)


async def _role_get(request: web.Request) -> web.Response:
    out, fields, features = await _read_state(request, ROLE)
    features.checked(features.auth.check_role_get, *features.caller_or_empty(), fields["role"])
    role = features.checked(features.auth.role_get, fields["role"])
    doc: dict[str, Any] = {"header": header(request, out, features.store.rev)}
    perms = []
    for p in role.perms:
        item: dict[str, Any] = {}
        if p.perm_type != READ:  # a number jsonpb accepted but no name has stays a number
            item["permType"] = _NAMES.get(p.perm_type, p.perm_type)
        if p.key:
            item["key"] = out.b(p.key)
        if p.range_end:
            item["range_end"] = out.b(p.range_end)
        perms.append(item)
    if perms:
        doc["perm"] = perms
    return respond(out, doc)


async def _role_list(request: web.Request) -> web.Response:
    out, _, features = await _read_state(request, EMPTY)
    doc: dict[str, Any] = {"header": header(request, out, features.store.rev)}
    if features.auth.roles:
        doc["roles"] = sorted(features.auth.roles)
    return respond(out, doc)


async def _grant_perm_args(_features: Any, fields: dict[str, Any]) -> list[Any]:
    perm = fields["perm"] or {"permType": 0, "key": b"", "range_end": b""}
    return [fields["name"], perm["permType"], perm["key"], perm["range_end"]]


ROUTES = {
    "/auth/enable": _mutation(EMPTY, "enable", _no_args),
    "/auth/disable": _mutation(EMPTY, "disable", _no_args),
    "/auth/status": _status,
    "/auth/authenticate": _authenticate,
    "/auth/user/add": _mutation(USER_ADD, "user_add", _user_add_args),
    "/auth/user/get": _user_get,
    "/auth/user/list": _user_list,
    "/auth/user/delete": _mutation(NAME, "user_delete", lambda _f, d: _const([d["name"]])),
    "/auth/user/changepw": _mutation(CHANGE_PW, "user_change_password", _change_pw_args),
    "/auth/user/grant": _mutation(GRANT_ROLE, "user_grant_role", lambda _f, d: _const([d["user"], d["role"]])),
    "/auth/user/revoke": _mutation(REVOKE_ROLE, "user_revoke_role", lambda _f, d: _const([d["name"], d["role"]])),
    "/auth/role/add": _mutation(NAME, "role_add", lambda _f, d: _const([d["name"]])),
    "/auth/role/get": _role_get,
    "/auth/role/list": _role_list,
    "/auth/role/delete": _mutation(ROLE, "role_delete", lambda _f, d: _const([d["role"]])),
    "/auth/role/grant": _mutation(GRANT_PERM, "role_grant_permission", _grant_perm_args),
    "/kvraft/auth/token/grant": _scoped_grant,
    "/kvraft/auth/token/revoke": _scoped_revoke,
    "/kvraft/auth/token/list": _scoped_list,
    "/auth/role/revoke": _mutation(
        REVOKE_PERM, "role_revoke_permission", lambda _f, d: _const([d["role"], d["key"], d["range_end"]])
    ),
}


async def _const(value: list[Any]) -> list[Any]:
    return value

"""Installs watch, leases, auth, locks and elections into the client API
(``install(app, node)``, called by ``make_app``), and enforces auth on every request.

The auth middleware resolves the caller from ``Authorization`` (raw token or ``Bearer``), or
without a token under ``--client-cert-auth`` from the client certificate's CN (etcd's
AuthInfoFromTLS), into ``CALLER`` and applies the path policy below; KV requests are checked op by op by
``AuthGate`` (the ``SERVER`` the KV routes call), and writes again at apply time. A
linearizable read (a range, a read-only txn) resolves its caller again after its read
barrier, as etcd does, so a lagging member does not honour a token or permission revoked
just before through another member.

==========================  ==============================================
paths (under /v3)           with auth on
==========================  ==============================================
auth/authenticate, status,  anyone (maintenance/status and member/list as etcd 3.4:
maintenance/status,         cluster tooling polls them)
cluster/member/list
watch                       checked per create (refusal sent in-stream)
kv/range|put|deleterange|   the op's READ/WRITE ranges (``check_request``; a streamed
txn, kvraft/kv/rangestream  range: each page's)
lease/revoke, timetolive    root, or WRITE on every attached key
auth/user/get, role/get     root, or the caller's own user / a role it holds (etcd)
maintenance/alarm           GET: any authenticated user (etcd); ACTIVATE, DEACTIVATE:
                            root (etcd 3.4 lets any user raise or clear an alarm)
kv/compaction, lease/grant, any authenticated user
keepalive, leases, lock/*,  (kvraft/auth/token/*: only for itself, only what
election/*,                 it holds, never with a scoped token; checked at
kvraft/auth/token/*         apply)
everything else             root (auth admin, maintenance, membership)
==========================  ==============================================

GET /version, /health, /metrics stay open, as in etcd; ``--metrics-auth`` closes /metrics
(``api.metrics_auth``).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from typing import Any

from aiohttp import web

from kvraft.apply.errors import EtcdError, error_from_code
from kvraft.apply.validate import validate_op
from kvraft.auth import check_request
from kvraft.auth import errors as auth_errors
from kvraft.server.api import auth, election, lease, lock, watch
from kvraft.server.api.codec import JSON_OUT
from kvraft.server.api.errors import error_response
from kvraft.server.api.feature_state import FEATURES
from kvraft.server.api.metrics_auth import METRICS_AUTH, MetricsAuth
from kvraft.server.api.state import SERVER
from kvraft.server.cert_names import CertRule, common_name
from kvraft.server.features import CALLER, Features

__all__ = ["AuthGate", "install"]

PREFIXES = ("/v3", "/v3beta")
_OPEN = {"/auth/authenticate", "/auth/status", "/watch", "/maintenance/status", "/cluster/member/list"}
_SELF_CHECKED = {"/kv/range", "/kvraft/kv/rangestream", "/kv/put", "/kv/deleterange", "/kv/txn", "/lease/revoke", "/kv/lease/revoke",
                 "/lease/timetolive", "/kv/lease/timetolive", "/auth/user/get", "/auth/role/get",
                 "/maintenance/alarm"}
_ANY_USER = {"/kv/compaction", "/lease/grant", "/lease/keepalive", "/lease/leases", "/kv/lease/leases",
             "/kvraft/auth/token/grant", "/kvraft/auth/token/revoke", "/kvraft/auth/token/list"}
_ANY_USER_PREFIXES = ("/lock/", "/election/")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HEADER: ContextVar[str | None] = ContextVar("kvraft_auth_header", default=None)
"""The request's token, for resolving the caller again after a read barrier."""
_CERT_USER: ContextVar[str | None] = ContextVar("kvraft_cert_user", default=None)
"""The user the request's client certificate names (``_certificate_user``), likewise."""


def _certificate_user(request: web.Request) -> str | None:
    """etcd's AuthInfoFromTLS: under ``--client-cert-auth``, the common name of the client's
    verified certificate is the user of a request that carries no token."""
    if not request.secure or not request.app[SERVER].config.client_cert_auth:
        return None
    transport = request.transport
    cert = transport.get_extra_info("peercert") if transport is not None else None
    return common_name(cert) or None if cert else None


def _route(path: str) -> str | None:
    for prefix in PREFIXES:
        if path.startswith(prefix + "/"):
            return path[len(prefix):]
    return None


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    features: Features = request.app[FEATURES]
    route = _route(request.path)
    if route is None or request.method == "OPTIONS" or not features.auth.enabled:
        return await handler(request)
    header = request.headers.get("Authorization")
    if header is None:  # (one sent empty is a token that names nobody, as etcd reads it)
        header = request.headers.get("token")
    cert_user = _certificate_user(request)
    if route in _OPEN:  # a bad token does not shut anyone out of these (watch refuses in-stream)
        try:
            caller = features.resolve(header, cert_user)
        except EtcdError as exc:
            caller, request[watch.AUTH_ERROR] = None, exc
    else:
        caller = await _resolve_caught_up(request, features, header, cert_user)
    token = CALLER.set(caller)
    header_token = _HEADER.set(header)
    cert_token = _CERT_USER.set(cert_user)
    try:
        if route not in _OPEN and route not in _SELF_CHECKED:
            user, revision = (caller.user, caller.revision) if caller is not None else ("", 0)
            if route in _ANY_USER or route.startswith(_ANY_USER_PREFIXES):
                features.checked(features.auth.check_user, user, revision)
            else:
                features.checked(features.auth.check_admin, user, revision)
        return await handler(request)
    finally:
        _CERT_USER.reset(cert_token)
        _HEADER.reset(header_token)
        CALLER.reset(token)


@web.middleware
async def client_cert_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """``--client-cert-auth`` on an https listener: the TLS layer asks for a certificate but
    lets a client without one finish the handshake (``CERT_OPTIONAL``; one that is offered
    must verify). Such a request is answered only when it carries a scoped token: the ranks
    of a job, running as a user who cannot read the agent's key, reach kvraft with the token
    their agent granted them (docs/design/auth.md, "Scoped tokens"). Anything else without a
    certificate is refused, /health and /version included, as the handshake refused it."""
    if request.secure and request.method != "OPTIONS" and not _peer_certificate(request):
        header = request.headers.get("Authorization") or request.headers.get("token")
        features: Features = request.app[FEATURES]
        if not features.has_scoped_prefix(header):
            return error_response(error_from_code(16, _NO_CERTIFICATE_OR_TOKEN), JSON_OUT)
        try:  # (a grant made through another member moments ago is caught up with)
            await _resolve_caught_up(request, features, header)
        except EtcdError:
            return error_response(error_from_code(16, _NO_CERTIFICATE_OR_TOKEN), JSON_OUT)
    return await handler(request)


_NO_CERTIFICATE = "kvraft: a client certificate is required (--client-cert-auth)"
_NO_CERTIFICATE_OR_TOKEN = _NO_CERTIFICATE + ", or a scoped token"


@web.middleware
async def certificate_required_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """An https metrics URL under ``--client-cert-auth``: no certificate, no answer (no token
    is taken there; it is for monitoring, which gets a certificate of its own)."""
    if request.secure and not _peer_certificate(request):
        return error_response(error_from_code(16, _NO_CERTIFICATE), JSON_OUT)
    return await handler(request)


def certificate_name_middleware(rule: CertRule) -> Any:
    """An https metrics URL with ``--client-cert-allowed-hostname``: a certificate that is not
    valid for the name gets 401 (the client URLs close such a connection in
    ``api.fast.FastProtocol``, before reading it)."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        transport = request.transport
        why = rule.refusal(transport.get_extra_info("peercert") if transport is not None else None)
        if why:
            return error_response(error_from_code(16, f"kvraft: {why}"), JSON_OUT)
        return await handler(request)

    return check


def _peer_certificate(request: web.Request) -> bool:
    transport = request.transport
    return bool(transport is not None and transport.get_extra_info("peercert"))


async def _resolve_caught_up(request: web.Request, features: Features, header: str | None,
                             cert_user: str | None = None) -> Any:
    """Resolve the caller; a token this member does not know yet may have been issued through
    another member moments ago (simple tokens are assigned through Raft). Before refusing it,
    catch up with a linearizable barrier and look again, so a token works on every member as
    soon as authenticate has answered."""
    try:
        return features.resolve(header, cert_user)
    except EtcdError as exc:
        if header is None or exc.code != 16:
            raise
        await request.app[SERVER].driver.read_barrier()
        return features.resolve(header, cert_user)


class AuthGate:
    """The member as the KV routes see it: checks the caller's permissions for each op
    before calling the member (which proposes writes tagged with the caller)."""

    def __init__(self, node: Any, features: Features) -> None:
        self._node = node
        self._features = features

    def __getattr__(self, name: str) -> Any:
        return getattr(self._node, name)

    def _check(self, op: Any) -> None:
        features = self._features
        if not features.auth.enabled:
            return
        caller = CALLER.get()
        if caller is None:
            features.checked(_raise_empty)
        user, revision = features.caller_or_empty()
        features.checked(check_request, features.auth, user, revision, op)

    async def _caller_after_barrier(self) -> None:
        """As etcd, a linearizable read checks its caller after the read barrier: a member
        that lags must not honour a token or a permission revoked through another member
        before the read began (the caller resolved on arrival may be stale)."""
        await self._node.driver.read_barrier()
        CALLER.set(self._features.resolve(_HEADER.get(), _CERT_USER.get()))

    async def range(self, op: Any) -> Any:
        if self._features.auth.enabled and not op.serializable:
            await self._caller_after_barrier()
            self._check(op)
            return await self._node.range(dataclasses.replace(op, serializable=True))  # barrier done
        self._check(op)
        return await self._node.range(op)

    def range_future(self, op: Any) -> asyncio.Future[Any]:
        """``range`` as a future (the fast path answers from its callback): the member's
        task-free range while auth is off; with auth on, ``range`` in a task."""
        if self._features.auth.enabled:
            return asyncio.ensure_future(self.range(op))
        return self._node.range_future(op)  # type: ignore[no-any-return]

    async def put(self, op: Any, once: Any = None) -> Any:
        self._check(op)
        return await self._node.put(op, once)

    async def delete_range(self, op: Any, once: Any = None) -> Any:
        self._check(op)
        return await self._node.delete_range(op, once)

    async def txn(self, op: Any, once: Any = None) -> Any:
        node = self._node
        if self._features.auth.enabled and node.state.is_read_only(op):
            await self._caller_after_barrier()
            self._check(op)
            validate_op(op, node.config.max_txn_ops)
            return node.state.txn_read_only(op)  # what Node.txn does after its own barrier
        self._check(op)
        return await node.txn(op, once)


def _raise_empty() -> None:
    raise auth_errors.user_empty()


async def _options(_request: web.Request) -> web.Response:
    return web.Response(status=200)


def install(app: web.Application, node: Any) -> Features:
    features = Features(node)
    app[FEATURES] = features
    app[SERVER] = AuthGate(node, features)
    app.middlewares.append(auth_middleware)
    if node.config.metrics_auth:
        app[METRICS_AUTH] = MetricsAuth(features, _certificate_user)
    if node.config.client_cert_auth:
        app.middlewares.insert(0, client_cert_middleware)

    async def lifetime(_app: web.Application) -> AsyncIterator[None]:
        features.start()
        yield
        await features.stop()

    app.cleanup_ctx.append(lifetime)
    for family in (lease, auth, lock, election, watch):
        for path, handler in family.ROUTES.items():
            for prefix in PREFIXES:
                app.router.add_post(prefix + path, handler)
                app.router.add_route("OPTIONS", prefix + path, _options)
        for path, handler in getattr(family, "WS_ROUTES", {}).items():
            for prefix in PREFIXES:
                app.router.add_get(prefix + path, _upgrade_only(handler))
    return features


def _upgrade_only(handler: Any) -> Any:
    """A WebSocket route: etcd's gateway takes a GET there only as grpc-websocket-proxy's
    upgrade; a plain GET reaches its mux, which allows POST only (405)."""

    async def serve(request: web.Request) -> web.StreamResponse:
        upgrade = "upgrade" in request.headers.get("Connection", "").lower()
        if not upgrade or request.headers.get("Upgrade", "").lower() != "websocket":
            raise web.HTTPMethodNotAllowed(request.method, ["POST"])
        response: web.StreamResponse = await handler(request)
        return response

    return serve

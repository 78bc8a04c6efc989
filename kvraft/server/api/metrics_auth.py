"""``--metrics-auth``: ``/metrics`` answers only root and the ``kvraft-monitoring`` role.

etcd serves ``/metrics`` to anyone who reaches the port, auth on or not (its RBAC does not
cover it); the metrics name every key prefix's request counts, the members, the leader and
the database size. With ``--metrics-auth`` and kvraft's auth enabled, ``/metrics`` on the
client URLs and on ``--listen-metrics-urls`` needs credentials of a user who holds the root
role or the role ``kvraft-monitoring`` (which needs no permissions: holding it is the grant,
as Kubernetes' ``system:monitoring`` ClusterRole), given as what Prometheus' scrape config
sends:

- ``Authorization: Basic`` with a kvraft user and password (``basic_auth``). The password is
  checked with bcrypt on a worker thread, rate-limited per user as ``authenticate`` is, and a
  success is remembered for a minute (a scrape every 15 s costs no bcrypt; a password change
  or a revoked role takes effect at once: the user's hash and roles are read each time);
- ``Authorization: Bearer <token>`` or a raw token (``authorization`` / etcd's header), a
  token from ``authenticate``;
- under ``--client-cert-auth``, a verified client certificate whose CN names the user
  (etcd's AuthInfoFromTLS).

No credentials: 401 with ``WWW-Authenticate: Basic realm="kvraft"``; a user without either
role (a scoped token never has one): 403. ``/health``, ``/livez``, ``/readyz`` and
``/version`` stay open (probes). With auth disabled there is nobody to check: ``/metrics`` is
open, as in etcd.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import time
from typing import Any

from aiohttp import web

from kvraft.apply.errors import EtcdError, error_from_code
from kvraft.auth import errors as auth_errors
from kvraft.auth.passwords import check_password
from kvraft.auth.store import ROOT
from kvraft.server.api.codec import JSON_OUT
from kvraft.server.api.errors import error_response

__all__ = ["METRICS_AUTH", "MONITORING_ROLE", "MetricsAuth"]

MONITORING_ROLE = "kvraft-monitoring"
REMEMBER_S = 60.0


class MetricsAuth:
    """The check in front of ``/metrics`` (one per member, shared by its listeners)."""

    def __init__(self, features: Any, certificate_user: Any) -> None:
        self.features = features
        self.certificate_user = certificate_user  # request -> the CN under --client-cert-auth, or None
        self.remembered: dict[tuple[str, bytes], tuple[float, bytes]] = {}
        """(user, sha256(password)) -> (until, the password hash it matched)."""

    async def refusal(self, request: web.Request) -> web.Response | None:
        """None when the request may read ``/metrics``; else the answer that refuses it."""
        state = self.features.auth
        if not state.enabled:
            return None
        try:
            user, revision = await self._user(request)
            self.features.checked(state.check_user, user, revision)
        except EtcdError as exc:
            return _refused(exc)
        record = state.users.get(user)
        if record is None or not (ROOT in record.roles or MONITORING_ROLE in record.roles):
            return _refused(error_from_code(7, f"kvraft: /metrics needs the {ROOT} or the {MONITORING_ROLE} "
                                               f"role (--metrics-auth); {user!r} has neither"))
        return None

    async def _user(self, request: web.Request) -> tuple[str, int]:
        header = request.headers.get("Authorization")
        if header is None:
            header = request.headers.get("token")
        if header is not None and header[:6].lower() == "basic ":
            return await self._basic(header[6:].strip()), 0
        cert_user = self.certificate_user(request)
        try:
            caller = self.features.resolve(header, cert_user)
        except EtcdError as exc:  # a simple token issued through another member moments ago: catch up, look again
            if header is None or exc.code != 16:
                raise
            await self.features.node.driver.read_barrier()
            caller = self.features.resolve(header, cert_user)
        if caller is None:
            raise error_from_code(16, "kvraft: /metrics needs credentials (--metrics-auth): a user and password "
                                      "(basic auth), a token, or a client certificate")
        return caller.user, caller.revision

    async def _basic(self, encoded: str) -> str:
        try:
            name, colon, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            name, colon, password = "", "", ""
        if not colon or not name:
            raise error_from_code(16, "kvraft: malformed basic credentials")
        user = self.features.auth.users.get(name)
        digest = user.password_hash if user is not None and not user.no_password else None
        key = (name, hashlib.sha256(password.encode()).digest())
        now = time.monotonic()
        until, matched = self.remembered.get(key, (0.0, b""))
        if digest is not None and now < until and matched == digest:
            return name
        if not self.features.limiter.allow(name, now):
            raise error_from_code(8, auth_errors.too_many_requests().message)
        ok = await asyncio.get_running_loop().run_in_executor(None, check_password, password, digest)
        if not ok or digest is None:
            raise error_from_code(16, auth_errors.auth_failed().message)
        if len(self.remembered) > 1000:
            self.remembered = {k: v for k, v in self.remembered.items() if v[0] > now}
        self.remembered[key] = (now + REMEMBER_S, digest)
        return name


def _refused(exc: EtcdError) -> web.Response:
    response = error_response(exc, JSON_OUT)
    if response.status == 401:
        response.headers["WWW-Authenticate"] = 'Basic realm="kvraft"'
    return response


METRICS_AUTH = web.AppKey("metrics_auth", MetricsAuth)

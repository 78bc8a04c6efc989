"""Who may list the node's tasks, read a task's logs and stats, or run a command in it.

With kvraft's auth on, the agent's endpoint is as guarded as kvraft itself: anyone who could
reach it would otherwise read every job's output and run commands in its tasks (as root,
for a task without a ``user``), past every role. kubelet asks the API server (webhook
authentication and authorization); the agent asks kvraft, *with the caller's token*:

- ``Authorization: Bearer <token>``: a kvraft token that every member takes, in practice a
  scoped token (``kvctl``/``jobctl`` grant one narrowed to the job's record for a minute:
  ``caller_token``; a simple token is known only to the member that issued it);
- ``/logs`` and ``/stats`` of job J: the token may read ``/registry/jobs/J``;
- ``/exec`` on J: the token may write it too (a txn whose compare never holds and whose
  success branch puts the key: kvraft checks both branches and writes nothing);
- ``/tasks``: the token may read the node's assignments (``/registry/assignments/<node>/``).

No token: 401; a token kvraft does not take: 401; one without the right: 403; kvraft not
reachable: 503. Answers are cached ``CACHE_S`` per token and question. With auth off
nothing is asked (kvraft itself is open to anyone then: an assignment runs any command).
An agent that has no identity of its own (no ``--user``, no client certificate) works only
with auth off, so its endpoint asks nothing; one that has asks whether auth is on with its
own client, at most every ``STATUS_S``, and while that cannot be known (kvraft not reached
yet) takes it as on: it closes rather than opens. ``/health`` and ``/metrics`` stay open, as
kubelet's ``/healthz``.
"""

from __future__ import annotations

import time

from aiohttp import web

from kvraft.client import (
    Client,
    ClientError,
    Compare,
    InvalidArgumentError,
    Op,
    PermissionDeniedError,
    TLSConfig,
    UnauthenticatedError,
)

__all__ = ["CACHE_S", "EndpointAuth", "caller_token", "job_key"]

CACHE_S = 10.0
STATUS_S = 5.0
CACHE_MAX = 1024
TOKEN_TTL_S = 60


def job_key(job: str) -> str:
    return f"/registry/jobs/{job}"


async def caller_token(client: Client, job: str, *, write: bool, name: str) -> str:
    """A scoped token for the agent's endpoint (``Authorization: Bearer``): this client's own
    rights on job ``job``'s record (READ, or READWRITE for ``write``), for ``TOKEN_TTL_S``
    (its lease is not kept alive: the agent checks it when a request starts). "" when
    kvraft's auth is off."""
    status = await client.auth_status()
    if not status.enabled:
        return ""
    lease = await client.lease_grant(TOKEN_TTL_S)
    key = job_key(job).encode()
    token: str = await client.scoped_token_grant(name, key, lease=lease.id, perm_type="READWRITE" if write else "READ")
    return token


class EndpointAuth:
    def __init__(self, client: Client, endpoints: list[str], node: str, tls: TLSConfig | None = None,
                 request_timeout_s: float = 10.0, *, has_identity: bool = True) -> None:
        self.client = client
        """The agent's own client: asks whether auth is on."""
        self.has_identity = has_identity
        """Whether the agent logs in (a user or a client certificate): without, auth is off."""
        self.endpoints = endpoints
        self.node = node
        self.tls = tls
        self.request_timeout_s = request_timeout_s
        self._enabled: tuple[bool, float] = (True, 0.0)
        self._cache: dict[tuple[str, str, bool], tuple[int, str, float]] = {}
        self.refused = 0

    async def enabled(self) -> bool:
        if not self.has_identity:
            return False
        on, at = self._enabled
        if time.monotonic() - at < STATUS_S:
            return on
        try:
            on = bool((await self.client.auth_status()).enabled)
        except (ClientError, RuntimeError):  # (RuntimeError: the agent's client is not open yet)
            on = True  # not known: closed
        self._enabled = (on, time.monotonic())
        return on

    async def require(self, request: web.Request, job: str | None, write: bool) -> None:
        """Raise the HTTP error the request gets, if any (the module docstring's rules)."""
        if not await self.enabled():
            return
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            self.refused += 1
            raise _error(web.HTTPUnauthorized, "kvraft's auth is on: a kvraft token is required "
                                               "(Authorization: Bearer; jobctl sends one)")
        status, message = await self._decide(token, job, write)
        if status != 200:
            self.refused += 1
            kinds: dict[int, type[web.HTTPException]] = {401: web.HTTPUnauthorized, 403: web.HTTPForbidden}
            raise _error(kinds.get(status, web.HTTPServiceUnavailable), message)

    async def _decide(self, token: str, job: str | None, write: bool) -> tuple[int, str]:
        now = time.monotonic()
        question = (token, job or "", write)
        cached = self._cache.get(question)
        if cached is not None and cached[2] > now:
            return cached[0], cached[1]
        status, message = await self._ask(token, job, write)
        if status != 503:  # (kvraft unreachable: asked again next time)
            if len(self._cache) >= CACHE_MAX:
                self._cache = {q: a for q, a in self._cache.items() if a[2] > now}
                if len(self._cache) >= CACHE_MAX:
                    self._cache.clear()
            self._cache[question] = (status, message, now + CACHE_S)
        return status, message

    async def _ask(self, token: str, job: str | None, write: bool) -> tuple[int, str]:
        what = f"job {job}" if job else f"the tasks of node {self.node}"
        client = Client(self.endpoints, token=token, tls=self.tls, request_timeout_s=self.request_timeout_s)
        try:
            await client.open()
            if job is None:
                await client.get(f"/registry/assignments/{self.node}/", prefix=True, limit=1, keys_only=True)
            elif not write:
                await client.get(job_key(job), keys_only=True)
            else:  # never holds (no key has a negative version); kvraft checks the put all the same
                await client.txn().if_(Compare.version(job_key(job), "<", 0)).then(
                    Op.put(job_key(job), b"")).commit()
        except PermissionDeniedError:
            return 403, f"the token may not {'write' if write else 'read'} {what} in kvraft"
        except (UnauthenticatedError, InvalidArgumentError) as exc:  # an unknown or expired token
            return 401, f"kvraft does not take the token: {exc}"
        except ClientError as exc:
            return 503, f"cannot ask kvraft whether the token may see {what}: {exc}"
        finally:
            await client.close()
        return 200, ""


def _error(kind: type[web.HTTPException], message: str) -> web.HTTPException:
    challenge = {"WWW-Authenticate": 'Bearer realm="kvraft-agent"'} if kind is web.HTTPUnauthorized else None
    return kind(text=message + "\n", headers=challenge)

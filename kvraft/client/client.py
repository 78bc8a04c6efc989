"""``Client``: the asyncio client for kvraft and etcd's v3 gateway.

Example::

    from kvraft.client import Client

    async with Client(["127.0.0.1:2379", "127.0.0.1:22379"]) as client:
        await client.put("greeting", b"hello")
        response = await client.get("greeting")
        print(response.kvs[0].value)

Threading: a ``Client`` belongs to the event loop that opened it. For scripts without an
event loop, use ``kvraft.client.SyncClient``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from kvraft.aio import cancel_and_wait, wait_event
from kvraft.client._transport import ClientStatistics, RetryPolicy, TLSConfig, Transport
from kvraft.client.admin import AdminMixin
from kvraft.client.concurrency import ConcurrencyMixin
from kvraft.client.errors import ClientError, EndpointError, UnavailableError
from kvraft.client.kv import KVMixin
from kvraft.client.lease import LeaseMixin
from kvraft.client.watch import WatchMixin

__all__ = ["Client"]

log = logging.getLogger("kvraft.client")

AUTO_SYNC_TIMEOUT_S = 5.0
"""One auto-sync round's bound (clientv3's 5 s)."""


class Client(KVMixin, WatchMixin, LeaseMixin, AdminMixin, ConcurrencyMixin):
    """A connection to a cluster through a list of endpoints.

    ``endpoints``: ``host:port`` or ``http://host:port``; requests go to one at a time and
    move to the next on failure. ``encoding``: ``"auto"`` (msgpack when the server is
    kvraft, JSON otherwise), ``"json"`` or ``"msgpack"``. ``user``/``password``: log in on
    open and again whenever the token is rejected. ``token``: use this token as it is (a
    scoped token from ``scoped_token_grant``, as the agent hands the ranks of a job in
    ``KVRAFT_TOKEN``); it is never renewed. ``request_timeout_s`` bounds each
    request including its retries; ``dial_timeout_s`` each connection attempt.
    ``request_ids``: number put, delete and txn writes for members that apply them at most
    once (``Kvraft-Request-Id``, docs/client.md), so a write whose answer was lost is sent
    again; False sends every write plain, as etcd's clients do.
    """

    def __init__(
        self,
        endpoints: list[str] | str,
        *,
        encoding: str = "auto",
        user: str | None = None,
        password: str | None = None,
        dial_timeout_s: float = 2.0,
        request_timeout_s: float = 5.0,
        retry: RetryPolicy | None = None,
        rng: random.Random | None = None,
        tls: TLSConfig | None = None,
        token: str | None = None,
        request_ids: bool = True,
        keepalive_time_s: float | None = 1.0,
        keepalive_timeout_s: float = 2.0,
        auto_sync_interval_s: float = 0.0,
        max_send_bytes: int = 0,
        max_recv_bytes: int = 0,
    ) -> None:
        if auto_sync_interval_s < 0:
            raise ValueError("auto_sync_interval_s must not be negative (0: off)")
        self.auto_sync_interval_s = auto_sync_interval_s
        """clientv3's ``AutoSyncInterval``: while open, take the members' client URLs as the
        endpoints this often (``auto_sync``); 0: never."""
        self._auto_sync_task: asyncio.Task[None] | None = None
        self._unreachable_sync: list[str] = []
        if isinstance(endpoints, str):
            endpoints = [e for e in endpoints.split(",") if e.strip()]
        self._transport = Transport(
            list(endpoints),
            encoding=encoding,
            dial_timeout_s=dial_timeout_s,
            request_timeout_s=request_timeout_s,
            retry=retry,
            user=user,
            password=password,
            rng=rng,
            tls=tls,
            token=token,
            request_ids=request_ids,
            keepalive_time_s=keepalive_time_s,
            keepalive_timeout_s=keepalive_timeout_s,
            max_send_bytes=max_send_bytes,
            max_recv_bytes=max_recv_bytes,
        )

    async def open(self) -> Client:
        """Reach an endpoint, pick the encoding, log in. ``async with`` calls this."""
        try:
            await self._transport.open()
        except BaseException:
            await self._transport.close()
            raise
        if self.auto_sync_interval_s > 0 and self._auto_sync_task is None:
            self._auto_sync_task = asyncio.get_running_loop().create_task(self._auto_sync_loop())
        return self

    async def open_when_reachable(
        self,
        stop: asyncio.Event | None = None,
        *,
        on_retry: Callable[[ClientError, float], object] | None = None,
        retry_on: tuple[type[ClientError], ...] = (EndpointError, UnavailableError),
        retry_tls: bool = False,
        probe: Callable[[], Awaitable[object]] | None = None,
        rng: random.Random | None = None,
    ) -> bool:
        """``open()``, again while no endpoint answers, as a daemon waits for its cluster
        (kube-scheduler and kubelet for their API server): a backoff from 200 ms doubling to
        7 s, jittered, ``on_retry(error, delay_s)`` before each wait. True once open; False
        when ``stop`` is set first. An error not in ``retry_on`` (a refused login, TLS files
        that do not load) is raised: waiting cannot mend it; so is a TLS handshake every
        endpoint failed (``EndpointError.tls``: a server certificate not verified), unless
        ``retry_tls``. ``probe``: a request that must succeed too, retried alike (a member
        answers ``/version`` before it has a leader, and a request then times out)."""
        rng = rng or random.Random()
        delay = 0.2
        while True:
            try:
                await self.open()
                if probe is not None:
                    await probe()
                return True
            except retry_on as exc:
                if isinstance(exc, EndpointError) and exc.tls and not retry_tls:
                    raise
                if on_retry is not None:
                    on_retry(exc, delay)
            if stop is None:
                await asyncio.sleep(delay * (0.5 + rng.random()))
            elif await wait_event(stop, delay * (0.5 + rng.random())):
                return False
            delay = min(delay * 2, 7.0)

    async def close(self) -> None:
        task, self._auto_sync_task = self._auto_sync_task, None
        if task is not None:
            await cancel_and_wait(task)
        await self._transport.close()

    async def __aenter__(self) -> Client:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def is_open(self) -> bool:
        """Whether ``open()`` succeeded and ``close()`` was not called since (a daemon that
        waited with ``open_when_reachable`` starts without reaching and logging in again)."""
        return self._transport.is_open

    @property
    def endpoints(self) -> list[str]:
        return list(self._transport.endpoints)

    @property
    def endpoint(self) -> str:
        """The endpoint requests currently go to first."""
        return self._transport.endpoint

    @property
    def encoding(self) -> str:
        """``"msgpack"`` or ``"json"``: the wire format in use."""
        return "msgpack" if self._transport.codec.content_type.endswith("msgpack") else "json"

    @property
    def server_version(self) -> dict[str, Any]:
        """The ``GET /version`` answer of the first endpoint reached."""
        return dict(self._transport.server_version)

    @property
    def token(self) -> str | None:
        return self._transport.token

    def statistics(self) -> ClientStatistics:
        """Requests, retries (backoff rounds), failovers, logins and streams so far."""
        return self._transport.statistics()

    async def sync_endpoints(self) -> list[str]:
        """Replace the endpoint list with every member's client URLs (members added or
        removed since the client was created); the current endpoint stays first if it is
        still a member. Returns the new list."""
        members = await self.member_list()
        urls = [url for member in members.members for url in member.client_urls]
        if urls:
            self._transport.set_endpoints(urls)
        return self.endpoints

    async def auto_sync(self) -> bool:
        """One round of ``auto_sync_interval_s``: as clientv3's ``autoSync``, the client URLs
        of the started voting members (not learners, not members that never started) become
        the endpoints. Safer than clientv3: a list that does not contain the endpoint in use
        replaces it only once one of its endpoints answers ``/version`` from here (members
        that advertise ``localhost``, or addresses only their own network reaches, would
        otherwise cut a daemon off its cluster). True when the list changed."""
        members = await self.member_list()
        urls = [url for m in members.members if m.name and not m.is_learner for url in m.client_urls]
        new = self._transport.normalized(urls)
        if not new or sorted(new) == sorted(self._transport.endpoints):
            return False
        if self._transport.endpoint not in new:
            reachable = False
            for endpoint in new:
                try:
                    await self._transport.get_json(endpoint, "/version")
                except (ClientError, OSError, TimeoutError, aiohttp.ClientError, ValueError) as exc:
                    log.debug("auto sync: %s does not answer from here: %r", endpoint, exc)
                    continue
                reachable = True
                break
            if not reachable:
                if new != self._unreachable_sync:  # (said once per list, not every round)
                    log.warning("auto sync: the members' client URLs %s do not answer from here; keeping %s",
                                ",".join(new), ",".join(self._transport.endpoints))
                self._unreachable_sync = new
                return False
        log.info("auto sync: endpoints %s (were %s)", ",".join(new), ",".join(self._transport.endpoints))
        self._transport.set_endpoints(new)
        return True

    async def _auto_sync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.auto_sync_interval_s)
            try:
                async with asyncio.timeout(AUTO_SYNC_TIMEOUT_S):
                    await self.auto_sync()
            except (ClientError, TimeoutError, OSError, aiohttp.ClientError, ValueError) as exc:
                # (clientv3 logs "Auto sync endpoints failed." and goes on)
                log.info("auto sync endpoints failed: %s", exc)

    async def authenticate(self) -> None:
        """Log in again now (normally automatic)."""
        await self._transport.authenticate()

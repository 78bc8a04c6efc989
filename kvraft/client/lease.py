"""Leases: grant, revoke, time-to-live, list, and a kept-alive ``Lease`` handle.

``client.lease(ttl)`` gives a ``Lease``: entering it grants the lease and starts a
background task that renews it every ``ttl / 3`` seconds (failing over between endpoints
like any safe request). ``lease.lost`` is an ``asyncio.Event`` set when the lease can no
longer be kept: the server says it is gone (revoked, expired), or no keepalive succeeded
for a whole TTL. ``lease.error`` then holds a ``LeaseLostError``; ``await lease.wait_lost()``
raises it. Leaving the ``async with`` revokes the lease (unless ``revoke_on_exit=False``).

Example::

    async with client.lease(10) as lease:
        await client.put("nodes/gpu-7", b"alive", lease=lease.id)
        await lease.wait_lost()   # raises LeaseLostError if the lease dies
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kvraft.aio import cancel_and_wait

if TYPE_CHECKING:
    from kvraft.client._transport import Transport

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from kvraft.client.errors import ClientError, LeaseLostError, LeaseNotFoundError
from kvraft.client.types import (
    HeaderResponse,
    LeaseGrantResponse,
    LeaseKeepAliveResponse,
    LeaseLeasesResponse,
    LeaseTimeToLiveResponse,
)

__all__ = ["KEEPALIVE_RETRY_S", "Lease", "LeaseMixin"]

KEEPALIVE_RETRY_S = 0.5


class Lease:
    def __init__(
        self,
        client: LeaseMixin,
        ttl: int,
        *,
        lease_id: int = 0,
        revoke_on_exit: bool = True,
        on_lost: Callable[[LeaseLostError], None] | None = None,
    ) -> None:
        self._client = client
        self.ttl = ttl
        self.id = lease_id
        self.revoke_on_exit = revoke_on_exit
        self.lost = asyncio.Event()
        self.error: LeaseLostError | None = None
        self.keepalives = 0
        self._on_lost = on_lost
        self._task: asyncio.Task[None] | None = None

    async def grant(self) -> Lease:
        """Grant the lease (if not yet granted) and start keeping it alive."""
        if not self.id or self._task is None:
            response = await self._client.lease_grant(self.ttl, lease_id=self.id)
            self.id, self.ttl = response.id, response.ttl
            self._task = asyncio.get_running_loop().create_task(self._keep_alive())
        return self

    async def __aenter__(self) -> Lease:
        return await self.grant()

    async def __aexit__(self, *exc: object) -> None:
        await self.close(revoke=self.revoke_on_exit)

    async def close(self, *, revoke: bool = True) -> None:
        """Stop the keepalive task; revoke the lease (attached keys are deleted) if asked."""
        if self._task is not None:
            errors = await cancel_and_wait(self._task)
            self._task = None
            if errors:  # a bug in the keepalive loop: not hidden by closing
                raise errors[0]
        if revoke and not self.lost.is_set():
            with contextlib.suppress(LeaseNotFoundError):
                await self._client.lease_revoke(self.id)

    async def wait_lost(self) -> None:
        """Wait until the lease is lost, then raise its ``LeaseLostError``."""
        await self.lost.wait()
        assert self.error is not None
        raise self.error

    def _lose(self, reason: str) -> None:
        self.error = LeaseLostError(self.id, reason)
        self.lost.set()
        if self._on_lost is not None:
            self._on_lost(self.error)

    async def _keep_alive(self) -> None:
        """Renew every ``ttl / 3`` until the TTL since the last answer runs out. A
        keepalive that has not answered after ``hedge_s`` is not given up: another one is
        sent to the next member while it goes on (etcd's client likewise resends every
        500 ms until an answer comes), and whichever answers first renews the lease. So a
        keepalive stuck on a member that forwards it to a dead leader does not use up the
        TTL while a new leader is there, and a slow one on a loaded machine still counts."""
        loop = asyncio.get_running_loop()
        last_ok = loop.time()
        interval_s = max(self.ttl / 3.0, 0.2)
        await asyncio.sleep(interval_s)
        while True:
            response = await self._renew(last_ok + self.ttl, max(KEEPALIVE_RETRY_S, interval_s / 2))
            if response is None:
                self._lose(f"no keepalive succeeded for its TTL ({self.ttl}s)")
                return
            if response.ttl <= 0:
                self._lose("the server reports it expired or was revoked")
                return
            last_ok = loop.time()
            self.keepalives += 1
            await asyncio.sleep(interval_s)

    async def _renew(self, deadline: float, hedge_s: float) -> LeaseKeepAliveResponse | None:
        """The first answer of keepalives sent now and every ``hedge_s`` while none has
        answered (each further one to the next member; after one failed, the next goes
        ``KEEPALIVE_RETRY_S`` later at most); None once ``deadline`` passes without one."""
        loop = asyncio.get_running_loop()
        pending: set[asyncio.Task[LeaseKeepAliveResponse]] = set()
        next_send = loop.time()
        try:
            while (now := loop.time()) < deadline:
                if now >= next_send:
                    if pending:
                        self._client.next_keepalive_endpoint()
                    pending.add(loop.create_task(self._client.lease_keep_alive_once(self.id, timeout_s=deadline - now)))
                    next_send = now + hedge_s
                wait_s = max(min(next_send, deadline) - loop.time(), 0.0)
                if not pending:
                    await asyncio.sleep(wait_s)
                    continue
                done, pending = await asyncio.wait(pending, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    error = task.exception()
                    if error is None:
                        return task.result()
                    if not isinstance(error, ClientError):
                        raise error
                    next_send = min(next_send, loop.time() + KEEPALIVE_RETRY_S)
            return None
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)


class LeaseMixin:
    _transport: Transport

    async def lease_grant(self, ttl: int, *, lease_id: int = 0) -> LeaseGrantResponse:
        """Grant a lease of ``ttl`` seconds (the server may raise it to its minimum)."""
        body: dict[str, Any] = {"TTL": ttl}
        if lease_id:
            body["ID"] = lease_id
        return LeaseGrantResponse.from_wire(await self._transport.unary("/lease/grant", body, safe=False, numbered=True))

    async def lease_revoke(self, lease_id: int) -> HeaderResponse:
        """Revoke a lease; its keys are deleted in one revision."""
        doc = await self._transport.unary("/kv/lease/revoke", {"ID": lease_id}, safe=False, numbered=True)
        return HeaderResponse.from_wire(doc)

    async def lease_time_to_live(self, lease_id: int, *, keys: bool = False) -> LeaseTimeToLiveResponse:
        body: dict[str, Any] = {"ID": lease_id}
        if keys:
            body["keys"] = True
        doc = await self._transport.unary("/kv/lease/timetolive", body, safe=True)
        return LeaseTimeToLiveResponse.from_wire(doc)

    async def lease_leases(self) -> LeaseLeasesResponse:
        return LeaseLeasesResponse.from_wire(await self._transport.unary("/lease/leases", {}, safe=True))

    def next_keepalive_endpoint(self) -> None:
        """Send the next keepalive to another member (this one has not answered yet)."""
        self._transport.skip_current()

    async def lease_keep_alive_once(self, lease_id: int, *, timeout_s: float | None = None) -> LeaseKeepAliveResponse:
        """Renew once; ``ttl`` 0 in the answer means the lease is gone."""
        results: list[dict[str, Any]] = []
        stream = self._transport.stream("/lease/keepalive", {"ID": lease_id})
        try:
            async with asyncio.timeout(timeout_s or self._transport.request_timeout_s):
                async for doc in stream:
                    results.append(doc)
                    break
        except TimeoutError:
            raise ClientError("lease keepalive timed out") from None
        finally:
            await stream.aclose()
        if not results:
            raise ClientError("lease keepalive stream closed without an answer")
        return LeaseKeepAliveResponse.from_wire(results[0])

    def lease(self, ttl: int, **options: Any) -> Lease:
        """A ``Lease`` handle (grant + background keepalive); see the module docstring."""
        return Lease(self, ttl, **options)

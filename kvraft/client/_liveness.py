"""Whether a member still answers: etcd's client keepalive, over HTTP/1.1.

etcd's clients send gRPC pings after ``--keepalive-time`` without traffic and close the
connection when a ping is not answered within ``--keepalive-timeout``, so a request or a
watch on a frozen member (SIGSTOP, a hung disk, a host gone without a TCP reset) fails over
instead of waiting for its deadline, or, for a watch, for ever. HTTP/1.1 has no pings, so
kvraft's client checks in two ways:

* **Probes.** Something waiting on a member that has heard nothing from it for
  ``time_s`` asks the member's ``/version``; every request and stream waiting on that
  member shares the one probe in flight. Any answer (any HTTP status) proves the member is
  alive and the wait goes on, however long the request takes (a large range, a hash of the
  whole store); no answer within ``timeout_s`` makes the member *silent*: the wait is
  abandoned with ``MemberSilent`` and the caller fails over as for a lost answer.
* **Heartbeats.** A stream whose member answered the request header ``Kvraft-Keepalive``
  (kvraft's watch and election observe streams) gets a heartbeat (JSON whitespace, a
  msgpack nil) after every ``time_s`` without a message, on the same connection; it is
  silent when no byte came for the interval plus ``timeout_s``. No probe is needed, and a
  connection that broke without a reset is caught too.

``time_s = None`` turns both off (requests then wait for their deadline, as before).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

__all__ = ["HEADER", "Liveness", "MemberSilent"]

HEADER = "Kvraft-Keepalive"
"""Request: the heartbeat interval a stream asks for, in seconds. Answer: the one granted
(absent: the server sends none, as etcd)."""

T = TypeVar("T")


class MemberSilent(Exception):
    """The member did not answer a keepalive probe (or stopped its heartbeats) in time."""


class Liveness:
    """Probes shared per endpoint; ``ask(endpoint)`` is the probe itself (a ``/version``
    GET that returns on any answer and raises when none comes)."""

    def __init__(self, ask: Callable[[str], Awaitable[object]], *, time_s: float | None, timeout_s: float) -> None:
        if time_s is not None and time_s <= 0:
            raise ValueError("keepalive time must be positive (None turns keepalive off)")
        if timeout_s <= 0:
            raise ValueError("keepalive timeout must be positive")
        self.time_s = time_s
        self.timeout_s = timeout_s
        self._ask = ask
        self._heard: dict[str, float] = {}
        self._probes: dict[str, asyncio.Task[bool]] = {}
        self.silent = 0
        """Members found silent so far (``ClientStatistics.silent``)."""

    def heard(self, endpoint: str) -> None:
        """An answer (or stream bytes) came from ``endpoint`` just now."""
        self._heard[endpoint] = asyncio.get_running_loop().time()

    def _since(self, endpoint: str, started: float) -> float:
        """When the member was last heard from, but not before the wait ``started``."""
        return max(self._heard.get(endpoint, -math.inf), started)

    def probe(self, endpoint: str) -> asyncio.Task[bool]:
        """The probe of ``endpoint`` in flight, or a new one: True when it answered."""
        probe = self._probes.get(endpoint)
        if probe is None or probe.done():
            probe = self._probes[endpoint] = asyncio.get_running_loop().create_task(self._run(endpoint))
        return probe

    async def _run(self, endpoint: str) -> bool:
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._ask(endpoint)
        except Exception:  # timed out, refused, reset: no answer (whatever the client library raised)
            return False
        self.heard(endpoint)
        return True

    def _silent(self, endpoint: str, quiet_s: float) -> MemberSilent:
        self.silent += 1
        return MemberSilent(f"{endpoint} did not answer a keepalive probe within {self.timeout_s:g}s "
                            f"(nothing heard for {quiet_s:.1f}s)")

    async def wait(self, endpoint: str, awaitable: Awaitable[T]) -> T:
        """Await ``awaitable`` (a request to ``endpoint``) for as long as the member answers
        probes; ``MemberSilent`` (the request cancelled) when it stops."""
        if self.time_s is None:
            return await awaitable
        loop = asyncio.get_running_loop()
        started = loop.time()
        task = asyncio.ensure_future(awaitable)
        try:
            while True:
                wait_s = self._since(endpoint, started) + self.time_s - loop.time()
                if wait_s > 0:
                    done, _ = await asyncio.wait((task,), timeout=wait_s)
                    if done:
                        break
                    continue
                probe = self.probe(endpoint)
                either: set[asyncio.Task[Any]] = {task, probe}
                done, _ = await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                if task in done:
                    break
                if not probe.result():
                    raise self._silent(endpoint, loop.time() - self._since(endpoint, started))
        finally:
            if not task.done():
                task.cancel()
                task.add_done_callback(_retrieve)
        result = task.result()  # (the request's own error raises here)
        self.heard(endpoint)
        return result

    async def read(self, endpoint: str, read: Callable[[], Awaitable[bytes]], started: float,
                   heartbeat_s: float | None) -> bytes:
        """The next bytes of a stream from ``endpoint`` (``read`` must be safe to cancel and
        call again: aiohttp's ``readany``), with the member's heartbeats when it granted
        ``heartbeat_s``, else with probes; ``started``: when the stream opened."""
        if self.time_s is None:
            return await read()
        loop = asyncio.get_running_loop()
        while True:
            since = self._since(endpoint, started)
            limit = self.time_s if heartbeat_s is None else heartbeat_s + self.timeout_s
            try:
                async with asyncio.timeout_at(since + limit):
                    data = await read()
            except TimeoutError:
                if heartbeat_s is not None:  # the member promised bytes by now
                    raise self._silent(endpoint, loop.time() - since) from None
                if self._since(endpoint, started) > since:
                    continue  # heard meanwhile (another request's answer)
                if not await self.probe(endpoint):
                    raise self._silent(endpoint, loop.time() - since) from None
                continue
            self.heard(endpoint)
            return data


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Collect an abandoned request's outcome (no "exception was never retrieved")."""
    if not task.cancelled():
        task.exception()

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
        self._cuts: dict[str, set[Callable[[], None]]] = {}
        """Per endpoint, what is waiting on it now: each cuts its wait short (cancels its
        task) when a probe of that member goes unanswered, whoever sent the probe."""
        self.silent = 0
        """Times a member was found silent: a probe unanswered (however many waits it ended),
        or a stream's heartbeats missed (``ClientStatistics.silent``)."""

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
            self.silent += 1
            for cut in list(self._cuts.get(endpoint, ())):  # every wait on the member, streams too
                cut()
            return False
        self.heard(endpoint)
        return True

    def _silent(self, endpoint: str, quiet_s: float) -> MemberSilent:
        return MemberSilent(f"{endpoint} did not answer a keepalive probe within {self.timeout_s:g}s "
                            f"(nothing heard for {quiet_s:.1f}s)")

    async def wait(self, endpoint: str, awaitable: Awaitable[T]) -> T:
        """Await ``awaitable`` (a request to ``endpoint``) for as long as the member answers
        probes; ``MemberSilent`` (the request cancelled) when it stops. No task per request:
        a timer (``_Watch``) probes when due and cancels this task if the member is silent,
        the way ``asyncio.timeout`` cancels its task."""
        if self.time_s is None:
            return await awaitable
        task = asyncio.current_task()
        assert task is not None
        watch = _Watch(self, endpoint, task, self.time_s)
        cuts = self._cuts.setdefault(endpoint, set())
        cuts.add(watch.cut)
        try:
            result = await awaitable
        except asyncio.CancelledError:
            if watch.silenced and task.uncancel() == 0:  # our cancel alone, not the caller's
                raise self._silent(endpoint, watch.quiet_s()) from None
            raise
        finally:
            watch.stop()
            cuts.discard(watch.cut)
        if watch.silenced:  # (the request swallowed our cancel and finished: count it undone)
            task.uncancel()
        self.heard(endpoint)
        return result

    async def read(self, endpoint: str, read: Callable[[], Awaitable[bytes]], last: float,
                   heartbeat_s: float | None) -> bytes:
        """The next bytes of a stream from ``endpoint`` (``read`` must be safe to cancel and
        call again: aiohttp's ``readany``); ``last``: when the stream last had bytes (or
        opened). With heartbeats granted (``heartbeat_s``) the stream is silent when its own
        connection brought nothing for the interval plus ``timeout_s`` (an answer on another
        connection does not count: this one may be the broken one); without, the member is
        probed after ``time_s`` of quiet. Either way a probe of the member that goes
        unanswered, whoever sent it, ends the wait at once."""
        if self.time_s is None:
            return await read()
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        cut_off = False

        def cut() -> None:
            nonlocal cut_off
            cut_off = True
            task.cancel()

        cuts = self._cuts.setdefault(endpoint, set())
        while True:
            since = last if heartbeat_s is not None else self._since(endpoint, last)
            limit = self.time_s if heartbeat_s is None else heartbeat_s + self.timeout_s
            cuts.add(cut)
            try:
                async with asyncio.timeout_at(since + limit):
                    data = await read()
                self.heard(endpoint)
                return data
            except asyncio.CancelledError:
                if cut_off and task.uncancel() == 0:  # a probe of the member went unanswered
                    raise self._silent(endpoint, loop.time() - since) from None
                raise
            except TimeoutError:
                pass
            finally:
                cuts.discard(cut)
            if heartbeat_s is not None:  # the member promised bytes by now
                self.silent += 1
                raise MemberSilent(f"{endpoint} sent no heartbeat within {heartbeat_s + self.timeout_s:g}s "
                                   f"(granted every {heartbeat_s:g}s)")
            if self._since(endpoint, last) > since:
                continue  # heard meanwhile (another request's answer)
            if not await self.probe(endpoint):
                raise self._silent(endpoint, loop.time() - since)


class _Watch:
    """The keepalive of one request in flight: when nothing was heard from the member for
    ``time_s`` it probes (sharing the probe in flight); an answer re-arms it; none makes the
    probe call ``cut``, which cancels ``task`` (``silenced`` tells ``Liveness.wait`` the cancel
    was this one's)."""

    def __init__(self, liveness: Liveness, endpoint: str, task: asyncio.Task[Any], time_s: float) -> None:
        self.liveness = liveness
        self.endpoint = endpoint
        self.task = task
        self.time_s = time_s
        self.loop = asyncio.get_running_loop()
        self.started = self.loop.time()
        self.silenced = False
        self.stopped = False
        self.timer: asyncio.TimerHandle | None = self.loop.call_at(self.started + time_s, self._due)

    def quiet_s(self) -> float:
        return self.loop.time() - self.liveness._since(self.endpoint, self.started)

    def _due(self) -> None:
        self.timer = None
        if self.stopped:
            return
        due = self.liveness._since(self.endpoint, self.started) + self.time_s
        if due > self.loop.time():  # heard meanwhile (another request's answer)
            self.timer = self.loop.call_at(due, self._due)
            return
        self.liveness.probe(self.endpoint).add_done_callback(self._probed)

    def _probed(self, probe: asyncio.Task[bool]) -> None:
        if not self.stopped and probe.result():
            self._due()  # re-armed from the answer (an unanswered probe has cut this wait already)

    def cut(self) -> None:
        """The member is silent: cancel the waiting task (once)."""
        if self.stopped:
            return
        self.silenced = True
        self.stop()
        self.task.cancel()

    def stop(self) -> None:
        self.stopped = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

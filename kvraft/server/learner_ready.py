"""Whether a learner is in sync with the leader, asked before a promote (etcd's
``isLearnerReady``).

Only the leader tracks its followers' progress. etcd's ``PromoteMember`` on a follower
forwards the request to the leader, which checks; here the follower asks the leader over
the peer connection (``wire.LEARNER_READY`` ``[request_id, member_id]``, answered by
``LEARNER_READY_RESP`` ``[request_id, ready]``, ready None when the one asked does not
lead) and then proposes the promote itself. Without the question a follower promoted a
learner that had never started: a voter that never votes, one more member in the quorum.
"""

from __future__ import annotations

import asyncio
from typing import Any

from kvraft.apply.errors import FailedPrecondition, Unavailable
from kvraft.raft.types import NONE, StateRole
from kvraft.server import wire

__all__ = ["NOT_READY", "LearnerReadyCheck", "caught_up"]

NOT_READY = "etcdserver: can only promote a learner member which is in sync with leader"
ASK_TIMEOUT_S = 5.0


def caught_up(learner_match: int, leader_match: int) -> bool:
    """etcd's ``isLearnerReady``: within 10% of the leader's log."""
    return learner_match >= leader_match * 0.9


class LearnerReadyCheck:
    def __init__(self, node: Any, timeout_s: float = ASK_TIMEOUT_S) -> None:
        self.node = node
        self.timeout_s = timeout_s
        self._next_id = 0
        self._waiting: dict[int, tuple[int, asyncio.Future[bool | None]]] = {}
        driver = node.driver
        inner = driver.on_frame

        def on_frame(source: int, kind: int, body: Any) -> None:
            if kind == wire.LEARNER_READY:
                self._serve(source, body)
            elif kind == wire.LEARNER_READY_RESP:
                self._answered(source, body)
            else:
                inner(source, kind, body)

        driver.on_frame = on_frame

    def here(self, member_id: int) -> bool | None:
        """Whether ``member_id`` is in sync with this member's log; None if this member does
        not lead. (A member the leader has no progress for is not in sync.)"""
        if self.node.driver.role != StateRole.LEADER:
            return None
        status = self.node.raw.status()
        progress, own = status.progress.get(member_id), status.progress.get(self.node.member_id)
        return progress is not None and own is not None and caught_up(progress.match, own.match)

    def _serve(self, source: int, body: Any) -> None:
        request_id, member_id = int(body[0]), int(body[1])  # (malformed: raises, the transport closes)
        self.node.transport.send_frame(source, wire.LEARNER_READY_RESP, [request_id, self.here(member_id)])

    def _answered(self, source: int, body: Any) -> None:
        waiting = self._waiting.get(int(body[0]))
        if waiting is None or waiting[0] != source or waiting[1].done():
            return  # answered after we gave up, or not by whom we asked
        ready = body[1]
        waiting[1].set_result(None if ready is None else bool(ready))

    async def require(self, member_id: int) -> None:
        """Raise etcd's refusal unless the leader finds ``member_id`` in sync."""
        ready = self.here(member_id)
        if ready is None:
            ready = await self._ask_leader(member_id)
        if not ready:
            raise FailedPrecondition(NOT_READY)

    async def _ask_leader(self, member_id: int) -> bool:
        leader = self.node.driver.leader
        if leader == NONE:
            raise Unavailable("etcdserver: no leader")
        self._next_id += 1
        request_id = self._next_id
        future: asyncio.Future[bool | None] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = (leader, future)
        try:
            if not self.node.transport.send_frame(leader, wire.LEARNER_READY, [request_id, member_id]):
                raise Unavailable("etcdserver: request timed out")
            async with asyncio.timeout(self.timeout_s):
                ready = await future
        except TimeoutError:
            raise Unavailable("etcdserver: request timed out") from None
        finally:
            self._waiting.pop(request_id, None)
        if ready is None:
            raise Unavailable("etcdserver: leader changed")
        return ready

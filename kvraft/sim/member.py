"""A simulated member's bookkeeping (``Member``) and a client request in flight (``Request``).

``SimCluster`` (cluster.py) owns and drives them; nothing here acts on its own.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kvraft.raft.rawnode import RawNode
from kvraft.raft.storage import StorageError
from kvraft.raft.types import NONE, ConfState, Ready, StateRole
from kvraft.sim.model import KvStateMachine
from kvraft.testing.simdisk import SimDisk

__all__ = ["Member", "Reply", "Request", "durable_term_at"]


@dataclass(slots=True)
class Request:
    """A client operation in flight. ``kind`` is ``get``, ``put`` or ``cas``."""

    id: int
    client: int
    kind: str
    key: str
    value: str | None = None
    expect: str | None = None
    call_us: int = 0
    done: bool = False


Reply = Callable[[Request, str, Any], None]
"""``reply(request, outcome, payload)``: outcome ``ok`` (payload: the result) or
``redirect`` (payload: the leader id, 0 when unknown)."""


class Member:
    """One member: its RawNode, disk, state machine and the driver's bookkeeping."""

    def __init__(self, mid: int, disk: SimDisk, tick_us: int) -> None:
        self.id = mid
        self.disk = disk
        self.tick_us = tick_us
        self.node: RawNode | None = None
        self.sm = KvStateMachine()
        self.alive = False
        self.paused = False
        self.retired = False
        self.busy = False
        self.incarnation = 0
        self.term = 0
        self.role = StateRole.FOLLOWER
        self.leader = NONE
        self.commit = 0
        self.applied = 0
        self.conf = ConfState()
        self.inbox: deque[tuple[Any, ...]] = deque()
        self.held_ready: Ready | None = None  # synced while paused, finished on resume
        self.proposals: dict[int, Request] = {}
        self.reads: dict[bytes, Request] = {}
        self.ready_reads: list[tuple[int, bytes]] = []

    def term_at(self, index: int) -> int | None:
        try:
            return self.disk.term(index)
        except StorageError:
            return None


def durable_term_at(storage: Any) -> Callable[[int], int | None]:
    def term_at(index: int) -> int | None:
        try:
            return int(storage.term(index))
        except StorageError:
            return None

    return term_at

"""Configuration of one Raft member (``RaftConfig``) and its read-only option."""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from dataclasses import dataclass

from kvraft.raft.events import RaftEvent

__all__ = ["RaftConfig", "ReadOnlyOption"]


class ReadOnlyOption(enum.IntEnum):
    SAFE = 0
    """ReadIndex: the leader confirms it is still leader with a heartbeat round acked by a
    quorum before answering. Linearizable without assumptions about clocks."""
    LEASE_BASED = 1
    """The leader answers from its commit index without a round trip, trusting that with
    check-quorum no other leader can exist within an election timeout. Relies on bounded
    clock drift between members; opt-in, and requires ``check_quorum``."""


@dataclass(frozen=True, kw_only=True)
class RaftConfig:
    """All knobs of one member (keyword arguments only). Times are in ticks
    (``RawNode.tick()`` calls).

    The election timeout is drawn from ``[election_ticks, 2 * election_ticks)`` with
    ``rng`` every time the member changes role; ``rng`` is the only randomness the core
    uses.
    """

    id: int
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    rng: random.Random
    """Required: the injected source of randomness (election timeouts)."""
    max_size_per_msg: int = 1 << 20
    """Bytes (``Entry.size()``) of entries per MsgApp; at least one entry is always sent."""
    max_inflight_msgs: int = 256
    """MsgApps per follower in flight (sent, not acknowledged) in the replicate state."""
    max_uncommitted_entries_size: int = 0
    """Payload bytes the leader's uncommitted tail may hold before proposals are dropped;
    0 = unlimited."""
    pre_vote: bool = True
    check_quorum: bool = True
    read_only_option: ReadOnlyOption = ReadOnlyOption.SAFE
    applied: int = 0
    """The index the application had applied when this member (re)started."""
    step_down_on_removal: bool = True
    """A leader removed from (or demoted out of) the voters steps down when the change is
    applied. When false it keeps leading (without counting itself) until check-quorum or
    a new leader ends its term."""
    trace: Callable[[RaftEvent], None] | None = None
    """Called synchronously with notable decisions (role changes, ignored votes, ...);
    for transcripts and simulator traces. None costs nothing."""

    def validate(self) -> None:
        """Raise ValueError naming the first bad setting."""
        if self.id <= 0:
            raise ValueError(f"id must be a positive integer, got {self.id}")
        if self.heartbeat_ticks <= 0:
            raise ValueError(f"heartbeat_ticks must be > 0, got {self.heartbeat_ticks}")
        if self.election_ticks <= self.heartbeat_ticks:
            raise ValueError(
                f"election_ticks ({self.election_ticks}) must be greater than "
                f"heartbeat_ticks ({self.heartbeat_ticks})"
            )
        if self.max_size_per_msg <= 0:
            raise ValueError(f"max_size_per_msg must be > 0, got {self.max_size_per_msg}")
        if self.max_inflight_msgs <= 0:
            raise ValueError(f"max_inflight_msgs must be > 0, got {self.max_inflight_msgs}")
        if self.max_uncommitted_entries_size < 0:
            raise ValueError(
                "max_uncommitted_entries_size must be >= 0 (0 = unlimited), "
                f"got {self.max_uncommitted_entries_size}"
            )
        if self.applied < 0:
            raise ValueError(f"applied must be >= 0, got {self.applied}")
        if self.read_only_option == ReadOnlyOption.LEASE_BASED and not self.check_quorum:
            raise ValueError("read_only_option LEASE_BASED requires check_quorum=True")
        if not isinstance(self.rng, random.Random):
            raise ValueError("rng must be a random.Random instance")

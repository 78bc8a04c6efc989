"""What the leader knows about one follower's log, and how it sends to it.

A follower's ``Progress`` is in one of three states:

- PROBE: the leader does not know where the logs match. It sends one MsgApp and waits
  (``probe_sent``) for the answer or for a heartbeat response; each rejection moves
  ``next`` back (fast, using the follower's hint).
- REPLICATE: the logs match up to ``match``. The leader streams MsgApps optimistically,
  advancing ``next`` as it sends, up to ``max_inflight_msgs`` unacknowledged ones
  (``Inflights``). A rejection or an unreachable report sends it back to PROBE.
- SNAPSHOT: the follower needs entries the leader has compacted. One MsgSnap is in
  flight (``pending_snapshot``); nothing else is sent until ``report_snapshot`` or an
  MsgAppResp shows the follower can continue from the log (or, if neither comes, the
  leader probes again after one to two election timeouts).

Example, ``max_inflight_msgs`` = 2, leader log 1..20, follower has 1..10::

    PROBE  match=0  next=21  send App(prev 20)   -> reject, hint 10
    PROBE  match=0  next=11  send App(prev 10, 11..15)  probe_sent
    ack 15 -> REPLICATE match=15 next=16
    send App(16..18) -> next=19, inflights [18]; send App(19..20) -> next=21, inflights
    [18, 20] (full: paused); ack 18 -> inflights [20]
"""

from __future__ import annotations

import enum
from collections import deque

__all__ = ["Inflights", "Progress", "ProgressState"]


class ProgressState(enum.IntEnum):
    PROBE = 0
    REPLICATE = 1
    SNAPSHOT = 2


class Inflights:
    """A bounded FIFO of the last indexes of MsgApps sent but not yet acknowledged.
    Indexes are added in increasing order; acknowledging ``i`` frees every entry ``<= i``."""

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError(f"inflights capacity must be > 0, got {capacity}")
        self.capacity = capacity
        self._ring: deque[int] = deque()

    def add(self, index: int) -> None:
        assert not self.full(), "add to a full Inflights"
        assert not self._ring or index > self._ring[-1], f"inflight {index} not increasing"
        self._ring.append(index)

    def free_le(self, index: int) -> None:
        ring = self._ring
        while ring and ring[0] <= index:
            ring.popleft()

    def free_first_one(self) -> None:
        if self._ring:
            self._ring.popleft()

    def full(self) -> bool:
        return len(self._ring) >= self.capacity

    def count(self) -> int:
        return len(self._ring)

    def reset(self) -> None:
        self._ring.clear()

    def items(self) -> list[int]:
        return list(self._ring)


class Progress:
    def __init__(
        self, match: int, next_index: int, max_inflight: int, is_learner: bool = False
    ) -> None:
        self.match = match
        self.next = next_index
        self.state = ProgressState.PROBE
        self.pending_snapshot = 0
        self.recent_active = False
        """Heard from within the current election timeout (check-quorum)."""
        self.probe_sent = False
        """PROBE: an MsgApp is outstanding; SNAPSHOT/after report: wait for a response."""
        self.inflights = Inflights(max_inflight)
        self.is_learner = is_learner
        self.snapshot_waited = False
        """SNAPSHOT: one election-timeout check has passed since the snapshot was sent."""

    def __repr__(self) -> str:
        return f"Progress({self.state.name} match={self.match} next={self.next})"

    def _reset_state(self, state: ProgressState) -> None:
        self.probe_sent = False
        self.pending_snapshot = 0
        self.snapshot_waited = False
        self.state = state
        self.inflights.reset()

    def become_probe(self) -> None:
        if self.state == ProgressState.SNAPSHOT:
            pending = self.pending_snapshot
            self._reset_state(ProgressState.PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset_state(ProgressState.PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self._reset_state(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot_index: int) -> None:
        self._reset_state(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def sent_entries(self, count: int, last_index: int) -> None:
        """Record an MsgApp carrying ``count`` entries ending at ``last_index``."""
        if self.state == ProgressState.REPLICATE:
            if count > 0:
                self.next = last_index + 1
                self.inflights.add(last_index)
        elif self.state == ProgressState.PROBE:
            self.probe_sent = True
        else:
            raise AssertionError(f"sending entries in state {self.state.name}")

    def maybe_update(self, index: int) -> bool:
        """An acknowledgement up to ``index``. Returns whether ``match`` grew."""
        updated = False
        if self.match < index:
            self.match = index
            updated = True
            self.probe_sent = False
        self.next = max(self.next, index + 1)
        return updated

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        """The follower rejected an MsgApp whose previous index was ``rejected``; its hint
        says it may match at ``match_hint``. Returns False for a stale rejection."""
        if self.state == ProgressState.REPLICATE:
            if rejected <= self.match:
                return False  # stale: we already know it matches there
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False  # stale: not the probe we are waiting for
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.probe_sent = False
        return True

    def is_paused(self) -> bool:
        if self.state == ProgressState.PROBE:
            return self.probe_sent
        if self.state == ProgressState.REPLICATE:
            return self.inflights.full()
        return True

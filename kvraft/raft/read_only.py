"""ReadIndex bookkeeping on the leader (``ReadOnlyOption.SAFE``).

A read may be answered at index ``i`` once the leader has proven it was still the leader
*after* the read arrived: it sends a heartbeat round and a quorum answers. Reads are
batched: while one round is in flight, new reads wait, and all of them ride the next
round together, so one quorum ack confirms many reads.

Example (3 voters, commit 7)::

    read a  -> no round in flight: round r1 starts {a} at index 7, heartbeats carry r1
    read b  -> r1 in flight: b waits
    read c  -> c waits
    ack r1 from 2 (with the leader: a quorum) -> a answered at 7; round r2 starts
               {b, c} at the leader's commit index now, heartbeats carry r2
    ack r2 from 3 -> b and c answered

Every periodic heartbeat repeats the context of the round in flight, so a lost ack is
retried. Rounds die with the leader's term (``reset``); the requesters time out and retry.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ReadOnly", "ReadRequest"]


@dataclass(frozen=True, slots=True)
class ReadRequest:
    from_: int
    """The node that asked (the leader itself for local reads)."""
    context: bytes


@dataclass(slots=True)
class _Round:
    context: bytes
    index: int
    requests: list[ReadRequest]
    acks: set[int] = field(default_factory=set)


class ReadOnly:
    def __init__(self) -> None:
        self._in_flight: _Round | None = None
        self._waiting: list[ReadRequest] = []
        self._rounds_started = 0  # never reset: round contexts stay unique on this node

    def add(self, requests: list[ReadRequest], index: int) -> bytes | None:
        """Queue ``requests``. Returns the context of a round to broadcast now (when none
        was in flight), else None (they wait for the next round)."""
        self._waiting.extend(requests)
        if self._in_flight is not None:
            return None
        return self._start(index)

    def _start(self, index: int) -> bytes | None:
        if not self._waiting:
            return None
        self._rounds_started += 1
        context = f"read:{self._rounds_started}".encode()
        self._in_flight = _Round(context, index, self._waiting)
        self._waiting = []
        return context

    def ack(self, node: int, context: bytes) -> frozenset[int] | None:
        """Record a heartbeat ack; returns who has acked the round in flight, or None if
        ``context`` is not that round (stale or foreign)."""
        current = self._in_flight
        if current is None or current.context != context:
            return None
        current.acks.add(node)
        return frozenset(current.acks)

    def release(self, next_index: int) -> tuple[list[ReadRequest], int, bytes | None]:
        """The round in flight is confirmed: its requests, their read index, and the
        context of the next round to broadcast (reads that waited), if any."""
        current = self._in_flight
        assert current is not None
        self._in_flight = None
        return current.requests, current.index, self._start(next_index)

    def pending_context(self) -> bytes:
        """Context of the round in flight, for periodic heartbeats (b"" when none)."""
        return self._in_flight.context if self._in_flight is not None else b""

    def pending_count(self) -> int:
        waiting = len(self._waiting)
        return waiting + (len(self._in_flight.requests) if self._in_flight is not None else 0)

    def reset(self) -> None:
        self._in_flight = None
        self._waiting = []

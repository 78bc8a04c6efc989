"""The simulator's trace: one fixed-format line per event.

    <time_us> <who> <event> <detail>

``time_us`` is simulated microseconds, right-aligned in 10 columns; ``who`` is ``n<id>`` (a
member), ``c<id>`` (a client), ``nem`` (the nemesis) or ``sim`` (the runner), left-aligned
in 4; ``event`` is a keyword left-aligned in 9; ``detail`` is ``key=value`` words (messages
in the compact form of ``describe_message``). docs/testing.md lists every event.

Tracing costs nothing when off: call sites test ``trace.on`` before formatting.
"""

from __future__ import annotations

from collections.abc import Iterable

from kvraft.raft.types import Entry, EntryType, HardState, Message, MessageType, StateRole

__all__ = ["Trace", "describe_entries", "describe_hard_state", "describe_message", "ROLE"]

ROLE = {
    StateRole.FOLLOWER: "follower",
    StateRole.CANDIDATE: "candidate",
    StateRole.LEADER: "leader",
    StateRole.PRE_CANDIDATE: "precandidate",
}

_MSG = {
    MessageType.APP: "App",
    MessageType.APP_RESP: "AppResp",
    MessageType.VOTE: "Vote",
    MessageType.VOTE_RESP: "VoteResp",
    MessageType.PRE_VOTE: "PreVote",
    MessageType.PRE_VOTE_RESP: "PreVoteResp",
    MessageType.SNAP: "Snap",
    MessageType.HEARTBEAT: "Heartbeat",
    MessageType.HEARTBEAT_RESP: "HeartbeatResp",
    MessageType.TIMEOUT_NOW: "TimeoutNow",
    MessageType.READ_INDEX: "ReadIndex",
    MessageType.READ_INDEX_RESP: "ReadIndexResp",
    MessageType.TRANSFER_LEADER: "TransferLeader",
}


def describe_entries(entries: Iterable[Entry]) -> str:
    """``[6/3,7/3c]``: index/term, ``c`` for a conf change, ``n`` for an empty (no-op)."""
    parts = []
    for e in entries:
        tag = "c" if e.type == EntryType.CONF_CHANGE else ("n" if not e.data else "")
        parts.append(f"{e.index}/{e.term}{tag}")
    if len(parts) > 8:
        parts = [*parts[:3], f"..{len(parts) - 6}..", *parts[-3:]]
    return "[" + ",".join(parts) + "]"


def describe_message(m: Message) -> str:
    """``App 1>2 t=3 lt=2 i=5 c=4 e=[6/3]``; fields shown only where they mean something."""
    name = _MSG.get(m.type, m.type.name)
    out = [f"{name} {m.from_}>{m.to} t={m.term}"]
    if m.type in (MessageType.APP, MessageType.VOTE, MessageType.PRE_VOTE):
        out.append(f"lt={m.log_term} i={m.index}")
    elif m.type in (MessageType.APP_RESP, MessageType.READ_INDEX_RESP):
        out.append(f"i={m.index}")
    if m.type in (MessageType.APP, MessageType.HEARTBEAT):
        out.append(f"c={m.commit}")
    if m.entries:
        out.append(f"e={describe_entries(m.entries)}")
    if m.snapshot is not None and not m.snapshot.is_empty():
        md = m.snapshot.metadata
        out.append(f"snap={md.index}/{md.term}")
    if m.reject:
        out.append(f"reject hint={m.reject_hint}")
    if m.context:
        out.append(f"ctx={m.context.decode(errors='replace')}")
    return " ".join(out)


def describe_hard_state(hs: HardState) -> str:
    return f"term={hs.term} vote={hs.vote} commit={hs.commit}"


class Trace:
    """Collects trace lines when ``on``; ``lines`` is the trace so far."""

    __slots__ = ("on", "lines")

    def __init__(self, on: bool = False) -> None:
        self.on = on
        self.lines: list[str] = []

    def emit(self, t_us: int, who: str, event: str, detail: str = "") -> None:
        if self.on:
            self.lines.append(f"{t_us:>10} {who:<4} {event:<9} {detail}".rstrip())

    def text(self) -> str:
        return "".join(line + "\n" for line in self.lines)

"""Canonical text for the core's values, used by traces and golden transcripts.

One line per value (a Ready is several lines, one per item). Formats follow
etcd-io/raft's ``Describe*`` helpers so transcripts read alike::

    1/11 EntryNormal "x"                       (term/index type payload)
    1/4 EntryConfChange v4 r2                  (v = voter, l = learner, r = remove)
    1->2 MsgApp Term:1 Log:1/10 Commit:10 Entries:[1/11 EntryNormal "x"]
    2->1 MsgAppResp Term:1 Log:1/10 Rejected (Hint: 7)
    Term:2 Vote:1 Commit:11                    (HardState)
    Voters:[1 2 3] VotersOutgoing:[] Learners:[] LearnersNext:[] AutoLeave:false
"""

from __future__ import annotations

from collections.abc import Iterable

from kvraft.raft.events import RaftEvent
from kvraft.raft.progress import ProgressState
from kvraft.raft.types import (
    ConfChange,
    ConfChangeTransition,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    ReadState,
    Ready,
    Snapshot,
    SoftState,
    StateRole,
)

__all__ = [
    "describe_bytes",
    "describe_conf_change",
    "describe_conf_state",
    "describe_entry",
    "describe_event",
    "describe_hard_state",
    "describe_message",
    "describe_read_state",
    "describe_ready",
    "describe_snapshot",
    "describe_soft_state",
    "message_type_name",
    "progress_state_name",
    "role_name",
]

_MESSAGE_NAMES = {
    MessageType.HUP: "MsgHup",
    MessageType.BEAT: "MsgBeat",
    MessageType.PROPOSE: "MsgProp",
    MessageType.APP: "MsgApp",
    MessageType.APP_RESP: "MsgAppResp",
    MessageType.VOTE: "MsgVote",
    MessageType.VOTE_RESP: "MsgVoteResp",
    MessageType.PRE_VOTE: "MsgPreVote",
    MessageType.PRE_VOTE_RESP: "MsgPreVoteResp",
    MessageType.SNAP: "MsgSnap",
    MessageType.HEARTBEAT: "MsgHeartbeat",
    MessageType.HEARTBEAT_RESP: "MsgHeartbeatResp",
    MessageType.UNREACHABLE: "MsgUnreachable",
    MessageType.SNAP_STATUS: "MsgSnapStatus",
    MessageType.CHECK_QUORUM: "MsgCheckQuorum",
    MessageType.TRANSFER_LEADER: "MsgTransferLeader",
    MessageType.TIMEOUT_NOW: "MsgTimeoutNow",
    MessageType.READ_INDEX: "MsgReadIndex",
    MessageType.READ_INDEX_RESP: "MsgReadIndexResp",
}
_ROLE_NAMES = {
    StateRole.FOLLOWER: "StateFollower",
    StateRole.CANDIDATE: "StateCandidate",
    StateRole.PRE_CANDIDATE: "StatePreCandidate",
    StateRole.LEADER: "StateLeader",
}
_PROGRESS_NAMES = {
    ProgressState.PROBE: "StateProbe",
    ProgressState.REPLICATE: "StateReplicate",
    ProgressState.SNAPSHOT: "StateSnapshot",
}
_CHANGE_LETTERS = {
    ConfChangeType.ADD_VOTER: "v",
    ConfChangeType.ADD_LEARNER: "l",
    ConfChangeType.REMOVE_NODE: "r",
}


def message_type_name(t: MessageType) -> str:
    return _MESSAGE_NAMES[t]


def role_name(role: StateRole) -> str:
    return _ROLE_NAMES[role]


def progress_state_name(state: ProgressState) -> str:
    return _PROGRESS_NAMES[state]


def describe_bytes(data: bytes) -> str:
    """Quoted, with non-printable bytes escaped: ``"foo"``, ``"a\\x00"``."""
    out = []
    for b in data:
        ch = chr(b)
        if ch in '"\\':
            out.append("\\" + ch)
        elif 0x20 <= b < 0x7F:
            out.append(ch)
        else:
            out.append(f"\\x{b:02x}")
    return '"' + "".join(out) + '"'


def _ids(ids: Iterable[int]) -> str:
    return "[" + " ".join(str(i) for i in sorted(ids)) + "]"


def describe_conf_change(cc: ConfChange) -> str:
    if cc.leave_joint:
        parts = ["leave-joint"]
    else:
        parts = [f"{_CHANGE_LETTERS[kind]}{node}" for kind, node in cc.changes]
    if cc.transition == ConfChangeTransition.JOINT_IMPLICIT:
        parts.append("(joint-implicit)")
    elif cc.transition == ConfChangeTransition.JOINT_EXPLICIT:
        parts.append("(joint-explicit)")
    if cc.context:
        parts.append(f"Context:{describe_bytes(cc.context)}")
    return " ".join(parts)


def describe_entry(e: Entry) -> str:
    if e.type == EntryType.CONF_CHANGE:
        try:
            payload = describe_conf_change(ConfChange.decode(e.data))
        except ValueError:
            payload = f"<undecodable {e.data.hex()}>"
        return f"{e.term}/{e.index} EntryConfChange {payload}"
    return f"{e.term}/{e.index} EntryNormal {describe_bytes(e.data)}"


def describe_conf_state(cs: ConfState) -> str:
    return (
        f"Voters:{_ids(cs.voters)} VotersOutgoing:{_ids(cs.voters_outgoing)} "
        f"Learners:{_ids(cs.learners)} LearnersNext:{_ids(cs.learners_next)} "
        f"AutoLeave:{str(cs.auto_leave).lower()}"
    )


def describe_snapshot(s: Snapshot) -> str:
    m = s.metadata
    return f"Index:{m.index} Term:{m.term} ConfState:{describe_conf_state(m.conf_state)}"


def describe_hard_state(hs: HardState) -> str:
    return f"Term:{hs.term} Vote:{hs.vote} Commit:{hs.commit}"


def describe_soft_state(ss: SoftState) -> str:
    return f"Lead:{ss.leader} State:{role_name(ss.role)}"


def describe_message(m: Message) -> str:
    text = f"{m.from_}->{m.to} {message_type_name(m.type)} Term:{m.term} Log:{m.log_term}/{m.index}"
    if m.commit:
        text += f" Commit:{m.commit}"
    if m.entries:
        text += " Entries:[" + ", ".join(describe_entry(e) for e in m.entries) + "]"
    if m.reject:
        text += f" Rejected (Hint: {m.reject_hint})"
    if m.context:
        text += f" Context:{describe_bytes(m.context)}"
    if m.snapshot is not None and not m.snapshot.is_empty():
        text += f" Snapshot: {describe_snapshot(m.snapshot)}"
    return text


def describe_read_state(rs: ReadState) -> str:
    return f"Index:{rs.index} Context:{describe_bytes(rs.request_ctx)}"


def describe_ready(rd: Ready) -> str:
    lines = [f"Ready MustSync={str(rd.must_sync).lower()}:"]
    if rd.soft_state is not None:
        lines.append(describe_soft_state(rd.soft_state))
    if rd.hard_state is not None:
        lines.append("HardState " + describe_hard_state(rd.hard_state))
    if rd.entries:
        lines.append("Entries:")
        lines.extend(describe_entry(e) for e in rd.entries)
    if not rd.snapshot.is_empty():
        lines.append("Snapshot " + describe_snapshot(rd.snapshot))
    if rd.committed_entries:
        lines.append("CommittedEntries:")
        lines.extend(describe_entry(e) for e in rd.committed_entries)
    if rd.messages:
        lines.append("Messages:")
        lines.extend(describe_message(m) for m in rd.messages)
    if rd.read_states:
        lines.append("ReadStates:")
        lines.extend(describe_read_state(r) for r in rd.read_states)
    return "\n".join(lines)


def describe_event(ev: RaftEvent) -> str:
    return f"INFO {ev.node} {ev.text}"

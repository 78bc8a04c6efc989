"""Value types of the Raft core: entries, messages, state, snapshots and the Ready.

Every type here is an immutable value (frozen dataclass or enum). The core never mutates a
value it has handed out, and callers must not mutate values they hand in.

Terms and indexes are plain ``int``; index 0 and term 0 mean "none". Node ids are positive
``int``; 0 means "no node" (``NONE``).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

__all__ = [
    "NONE",
    "ENTRY_OVERHEAD_BYTES",
    "ConfChange",
    "ConfChangeTransition",
    "ConfChangeType",
    "ConfState",
    "Entry",
    "EntryType",
    "HardState",
    "Message",
    "MessageType",
    "ReadState",
    "Ready",
    "Snapshot",
    "SnapshotMetadata",
    "SoftState",
    "StateRole",
]

NONE = 0
"""The id that names no node (no leader known, no vote cast)."""

ENTRY_OVERHEAD_BYTES = 16
"""What an entry costs beyond its payload when sizing messages (``Entry.size()``)."""


class EntryType(enum.IntEnum):
    NORMAL = 0
    """An application command; ``data`` is opaque to the core (empty data is a leader no-op)."""
    CONF_CHANGE = 1
    """A membership change; ``data`` is ``ConfChange.encode()``."""


@dataclass(frozen=True, slots=True)
class Entry:
    term: int
    index: int
    type: EntryType = EntryType.NORMAL
    data: bytes = b""

    def size(self) -> int:
        """Bytes this entry counts for in ``max_size_per_msg`` and ``LogStorage.entries``
        (``max_bytes``): the payload plus a fixed ``ENTRY_OVERHEAD_BYTES``."""
        return len(self.data) + ENTRY_OVERHEAD_BYTES


class ConfChangeType(enum.IntEnum):
    ADD_VOTER = 0
    ADD_LEARNER = 1
    REMOVE_NODE = 2


class ConfChangeTransition(enum.IntEnum):
    """How a ConfChange with ``changes`` is carried out (etcd-io/raft's ConfChangeV2)."""

    AUTO = 0
    """One change: a simple (single-step) change. Several: joint consensus, left
    automatically once the joint configuration is applied."""
    JOINT_IMPLICIT = 1
    """Always joint consensus, left automatically."""
    JOINT_EXPLICIT = 2
    """Always joint consensus; the application proposes ``ConfChange(leave_joint=True)``."""


_CC_MAGIC = b"CC1"
_CC_HEAD = struct.Struct(">3sBBH")  # magic, leave_joint, transition, number of changes
_CC_ITEM = struct.Struct(">BQ")  # change type, node id


@dataclass(frozen=True, slots=True)
class ConfChange:
    """A single-step change (one node), or a joint change (several) when ``changes`` has
    more than one item. ``leave_joint`` set and ``changes`` empty means: leave the joint
    configuration entered earlier."""

    changes: tuple[tuple[ConfChangeType, int], ...] = ()
    leave_joint: bool = False
    context: bytes = b""
    transition: ConfChangeTransition = ConfChangeTransition.AUTO

    def encode(self) -> bytes:
        """Deterministic bytes for an entry's ``data``: a header (magic ``CC1``,
        leave_joint, transition, count), then per change (type: u8, id: u64), then the
        context. All integers big-endian."""
        head = _CC_HEAD.pack(
            _CC_MAGIC, int(self.leave_joint), int(self.transition), len(self.changes)
        )
        items = b"".join(_CC_ITEM.pack(int(kind), node) for kind, node in self.changes)
        return head + items + self.context

    @classmethod
    def decode(cls, data: bytes) -> ConfChange:
        """Inverse of ``encode``. Raises ValueError on bytes it did not produce."""
        if len(data) < _CC_HEAD.size:
            raise ValueError(f"conf change too short: {len(data)} bytes")
        magic, leave, transition, count = _CC_HEAD.unpack_from(data, 0)
        if magic != _CC_MAGIC or leave not in (0, 1):
            raise ValueError("not an encoded ConfChange")
        end = _CC_HEAD.size + count * _CC_ITEM.size
        if len(data) < end:
            raise ValueError(f"conf change truncated: {count} changes need {end} bytes")
        changes: list[tuple[ConfChangeType, int]] = []
        for i in range(count):
            kind, node = _CC_ITEM.unpack_from(data, _CC_HEAD.size + i * _CC_ITEM.size)
            changes.append((ConfChangeType(kind), node))
        return cls(
            changes=tuple(changes),
            leave_joint=bool(leave),
            context=bytes(data[end:]),
            transition=ConfChangeTransition(transition),
        )


@dataclass(frozen=True, slots=True)
class ConfState:
    """The membership in force. ``voters_outgoing`` is non-empty only inside a joint
    configuration (C_old,new), when both majorities are needed."""

    voters: frozenset[int] = frozenset()
    learners: frozenset[int] = frozenset()
    voters_outgoing: frozenset[int] = frozenset()
    learners_next: frozenset[int] = frozenset()
    auto_leave: bool = False


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be durable before any message that depends on it is sent."""

    term: int = 0
    vote: int = NONE
    commit: int = 0

    def is_empty(self) -> bool:
        return self.term == 0 and self.vote == NONE and self.commit == 0


class StateRole(enum.IntEnum):
    FOLLOWER = 0
    CANDIDATE = 1
    LEADER = 2
    PRE_CANDIDATE = 3


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state, useful for logging and metrics; need not be persisted."""

    leader: int = NONE
    role: StateRole = StateRole.FOLLOWER


@dataclass(frozen=True, slots=True)
class SnapshotMetadata:
    index: int = 0
    term: int = 0
    conf_state: ConfState = field(default_factory=ConfState)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A point-in-time image of the application state up to ``metadata.index``.
    ``data`` is opaque to the core."""

    metadata: SnapshotMetadata = field(default_factory=SnapshotMetadata)
    data: bytes = b""

    def is_empty(self) -> bool:
        return self.metadata.index == 0


class MessageType(enum.IntEnum):
    # local inputs (never sent on the wire)
    HUP = 0  # start an election now
    BEAT = 1  # leader: send heartbeats now
    PROPOSE = 2  # append entries (from the application)
    # wire messages
    APP = 3  # AppendEntries
    APP_RESP = 4
    VOTE = 5
    VOTE_RESP = 6
    PRE_VOTE = 7
    PRE_VOTE_RESP = 8
    SNAP = 9  # InstallSnapshot
    HEARTBEAT = 10
    HEARTBEAT_RESP = 11
    UNREACHABLE = 12  # local: transport reports ``from_`` unreachable
    SNAP_STATUS = 13  # local: transport reports a snapshot send finished (``reject`` = failed)
    CHECK_QUORUM = 14  # local
    TRANSFER_LEADER = 15  # ask the leader to hand leadership to ``from_``
    TIMEOUT_NOW = 16  # leader -> transferee: campaign at once
    READ_INDEX = 17
    READ_INDEX_RESP = 18


@dataclass(frozen=True, slots=True)
class Message:
    """One Raft message. Field meaning follows etcd-io/raft's ``raftpb.Message``:

    - ``index``/``log_term``: for APP, the index and term of the entry before ``entries``;
      for VOTE/PRE_VOTE, the candidate's last index and term; for APP_RESP, the index the
      follower has matched (or, when ``reject``, the index that was rejected).
    - ``reject_hint``/``log_term`` on a rejecting APP_RESP: where the leader should probe
      next (the follower's best guess at a matching index and its term).
    - ``context``: for READ_INDEX and HEARTBEAT, the read request context being confirmed;
      for VOTE, b"transfer" when campaigning because of a leadership transfer.
    """

    type: MessageType
    to: int = NONE
    from_: int = NONE
    term: int = 0
    log_term: int = 0
    index: int = 0
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    snapshot: Snapshot | None = None
    reject: bool = False
    reject_hint: int = 0
    context: bytes = b""


@dataclass(frozen=True, slots=True)
class ReadState:
    """A linearizable read may be served once the application has applied ``index``.
    ``request_ctx`` is the context the application passed to ``read_index``."""

    index: int
    request_ctx: bytes


@dataclass(frozen=True, slots=True)
class Ready:
    """Everything the core wants done, as one value. The driver MUST, in this order:

    1. Persist: if ``snapshot`` is not empty, install it in storage; append ``entries`` to the
       log (truncating any conflicting suffix); save ``hard_state`` if not None. When
       ``must_sync`` is true, fsync before going on.
    2. Send ``messages`` (after step 1 is durable: they may promise what was persisted).
    3. Apply ``committed_entries`` to the state machine, in order; serve ``read_states``
       once their index is applied.
    4. Call ``RawNode.advance(ready)``.

    ``soft_state`` is None when unchanged since the previous Ready.
    """

    soft_state: SoftState | None = None
    hard_state: HardState | None = None
    entries: tuple[Entry, ...] = ()
    snapshot: Snapshot = field(default_factory=Snapshot)
    committed_entries: tuple[Entry, ...] = ()
    messages: tuple[Message, ...] = ()
    read_states: tuple[ReadState, ...] = ()
    must_sync: bool = False

    def is_empty(self) -> bool:
        return (
            self.soft_state is None
            and self.hard_state is None
            and not self.entries
            and self.snapshot.is_empty()
            and not self.committed_entries
            and not self.messages
            and not self.read_states
        )

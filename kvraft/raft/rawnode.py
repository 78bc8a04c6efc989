"""``RawNode``: the driver-facing API of the core, and ``Status``.

Usage (one thread; see ``types.Ready`` for the numbered contract)::

    node = RawNode(RaftConfig(id=1, rng=random.Random(seed)), storage)
    while running:
        feed node.tick() / node.step(msg) / node.propose(data) ...
        if node.has_ready():
            rd = node.ready()
            persist rd.snapshot, rd.entries, rd.hard_state (fsync if rd.must_sync)
            send rd.messages
            apply rd.committed_entries (call node.apply_conf_change for CONF_CHANGE),
            serve rd.read_states
            node.advance(rd)

At most one Ready is outstanding: ``ready()`` again before ``advance()`` raises
RuntimeError. Inputs may still be fed between the two; what they produce goes into the
next Ready.

``committed_entries`` only ever holds entries that were persisted in an earlier Ready
(acknowledged by ``advance``): an entry is never applied before it is durable locally,
even in a single-member cluster (etcd #14370).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from kvraft.raft.config import RaftConfig
from kvraft.raft.core import Raft
from kvraft.raft.progress import ProgressState
from kvraft.raft.storage import LogStorage
from kvraft.raft.types import (
    NONE,
    ConfChange,
    ConfState,
    Entry,
    HardState,
    Message,
    MessageType,
    Ready,
    Snapshot,
    SnapshotMetadata,
    SoftState,
    StateRole,
)

__all__ = ["LOCAL_MESSAGE_TYPES", "ProgressStatus", "RawNode", "Status"]

_NO_SNAPSHOT = Snapshot()
"""The ``snapshot`` of every Ready without one (a frozen value: shared)."""

LOCAL_MESSAGE_TYPES = frozenset(
    {
        MessageType.HUP,
        MessageType.BEAT,
        MessageType.PROPOSE,
        MessageType.UNREACHABLE,
        MessageType.SNAP_STATUS,
        MessageType.CHECK_QUORUM,
        MessageType.TRANSFER_LEADER,
    }
)
"""Types ``step`` refuses: they are requests of the local application, which has methods
for them (``campaign``, ``propose``, ``report_unreachable``, ...)."""

_RESPONSE_TYPES = frozenset(
    {
        MessageType.APP_RESP,
        MessageType.VOTE_RESP,
        MessageType.PRE_VOTE_RESP,
        MessageType.HEARTBEAT_RESP,
    }
)


class ProgressStatus(NamedTuple):
    match: int
    next: int
    state: ProgressState


@dataclass(frozen=True)
class Status:
    id: int
    term: int
    vote: int
    commit: int
    applied: int
    leader: int
    role: StateRole
    conf_state: ConfState
    progress: Mapping[int, ProgressStatus]
    """Per member (the leader included); empty unless this node is the leader."""
    lead_transferee: int


class RawNode:
    def __init__(self, config: RaftConfig, storage: LogStorage) -> None:
        """Restores term, vote, commit and membership from ``storage.initial_state()`` and
        its snapshot, replaying conf entries up to ``config.applied``."""
        self._raft = Raft(config, storage)
        self._prev_soft = self._raft.soft_state()
        self._prev_hard = self._raft.hard_state()
        self._outstanding = False

    # -- inputs -----------------------------------------------------------------------

    def tick(self) -> None:
        self._raft.tick()

    def campaign(self) -> None:
        """Start an election now (pre-vote first if enabled). Ignored on the leader and on
        a node that is not a voter."""
        self._raft.hup(transfer=False)

    def propose(self, data: bytes) -> None:
        """Raises NotLeaderError (with the leader's id when known) or ProposalDroppedError."""
        self._raft.propose([data])

    def propose_batch(self, datas: Sequence[bytes]) -> int:
        """Append many entries as one proposal (one log append, one MsgApp per follower);
        returns the index of the last one (0 when ``datas`` is empty)."""
        if datas:
            return self._raft.propose(list(datas))
        return 0

    def propose_conf_change(self, cc: ConfChange) -> None:
        """Raises NotLeaderError, ProposalDroppedError (a change is pending) or
        ConfChangeError (unsafe change)."""
        self._raft.propose_conf_change(cc)

    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        """Call when applying a CONF_CHANGE entry (``ConfChange.decode(entry.data)``)."""
        return self._raft.apply_conf_change(cc)

    def step(self, msg: Message) -> None:
        """Feed a message received from a peer."""
        if msg.type in LOCAL_MESSAGE_TYPES:
            raise ValueError(
                f"step: {msg.type.name} is a local message type; use the RawNode method"
            )
        if msg.to != self._raft.id:
            raise ValueError(f"step: message to {msg.to} given to node {self._raft.id}")
        if msg.from_ == NONE or msg.from_ == self._raft.id:
            raise ValueError(f"step: bad sender {msg.from_}")
        if msg.type in _RESPONSE_TYPES and msg.from_ not in self._raft.tracker.progress:
            return  # a response from a node no longer (or not yet) in the configuration
        self._raft.step(msg)

    def read_index(self, request_ctx: bytes) -> None:
        """Ask for a linearizable read; a ``ReadState`` with ``request_ctx`` appears in a
        later Ready. Forwarded to the leader on a follower; raises NotLeaderError only
        when no leader is known. On a new leader the read waits for its first commit."""
        self._raft.read_index(request_ctx)

    def transfer_leader(self, transferee: int) -> None:
        self._raft.transfer_leader(transferee)

    def report_unreachable(self, node_id: int) -> None:
        self._raft.report_unreachable(node_id)

    def report_snapshot(self, node_id: int, ok: bool) -> None:
        self._raft.report_snapshot(node_id, ok)

    # -- Ready ------------------------------------------------------------------------

    def has_ready(self) -> bool:
        # (compares fields instead of building SoftState/HardState values: this runs on
        # every pass of the driver's loop)
        r = self._raft
        soft = self._prev_soft
        if r.lead != soft.leader or r.role != soft.role:
            return True
        hard, committed = self._prev_hard, r.log.committed
        if (r.term != hard.term or r.vote != hard.vote or committed != hard.commit) and (
            r.term != 0 or r.vote != NONE or committed != 0
        ):
            return True
        return bool(
            r.log.unstable.snapshot is not None
            or r.log.unstable.entries
            or r.msgs
            or r.read_states
            or r.log.has_next_committed_entries()
        )

    def ready(self) -> Ready:
        if self._outstanding:
            raise RuntimeError("ready() called again before advance() of the previous Ready")
        r = self._raft
        # (fields compared before building SoftState/HardState values, and one shared empty
        # Snapshot: a Ready is taken ~3 times per replicated write on a leader)
        prev_soft, prev_hard = self._prev_soft, self._prev_hard
        soft = None
        if r.lead != prev_soft.leader or r.role != prev_soft.role:
            soft = self._prev_soft = SoftState(leader=r.lead, role=r.role)
        term, vote, commit = r.term, r.vote, r.log.committed
        hard = None
        if (term != prev_hard.term or vote != prev_hard.vote or commit != prev_hard.commit) and (
            term != 0 or vote != NONE or commit != 0
        ):
            hard = self._prev_hard = HardState(term=term, vote=vote, commit=commit)
        unstable = r.log.unstable
        entries = tuple(unstable.entries)
        snapshot = unstable.snapshot or _NO_SNAPSHOT
        rd = Ready(
            soft_state=soft,
            hard_state=hard,
            entries=entries,
            snapshot=snapshot,
            committed_entries=tuple(r.log.next_committed_entries()),
            messages=tuple(r.msgs),
            read_states=tuple(r.read_states),
            # (no new hard state: its term and vote are the previous ones)
            must_sync=_must_sync(hard or prev_hard, prev_hard, entries, snapshot),
        )
        r.msgs = []
        r.read_states = []
        self._outstanding = True
        return rd

    def advance(self, ready: Ready) -> None:
        if not self._outstanding:
            raise RuntimeError("advance() without an outstanding Ready")
        self._outstanding = False
        self._raft.advance(ready)

    # -- inspection -------------------------------------------------------------------

    def status(self) -> Status:
        r = self._raft
        progress: dict[int, ProgressStatus] = {}
        if r.role == StateRole.LEADER:
            progress = {
                n: ProgressStatus(p.match, p.next, p.state) for n, p in r.tracker.progress.items()
            }
        return Status(
            id=r.id,
            term=r.term,
            vote=r.vote,
            commit=r.log.committed,
            applied=r.log.applied,
            leader=r.lead,
            role=r.role,
            conf_state=r.tracker.conf,
            progress=progress,
            lead_transferee=r.lead_transferee,
        )

    @property
    def term(self) -> int:
        """The current term (what a proposal made now is appended at, when leading)."""
        return self._raft.term

    def pending_snapshot(self) -> SnapshotMetadata | None:
        """The received snapshot the next Ready will hand out (None: none): after stepping a
        MsgSnap, whether it was taken (one at or below the commit index is not)."""
        snap = self._raft.log.unstable.snapshot
        return None if snap is None else snap.metadata

    @property
    def raft(self) -> Raft:
        """The state machine itself, for tests and debugging; not a stable API."""
        return self._raft


def _must_sync(
    hard: HardState, prev: HardState, entries: tuple[Entry, ...], snapshot: Snapshot
) -> bool:
    return (
        bool(entries) or not snapshot.is_empty() or hard.term != prev.term or hard.vote != prev.vote
    )

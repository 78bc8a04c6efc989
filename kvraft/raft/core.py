"""``Raft``: the consensus state machine of one member (roles, elections, the follower's
side of replication, reads, proposals, membership and leadership transfer; the leader's
side of replication is ``replication.LeaderReplication``, which ``Raft`` inherits).

Pure and single-threaded: inputs are ``tick()``, wire messages (``step``) and local
requests (``propose``, ``read_index``, ...); outputs accumulate in ``msgs`` and
``read_states`` and in the log's unstable part, and ``RawNode`` hands them out as a Ready.
Nothing here does I/O, reads a clock or uses randomness other than ``RaftConfig.rng``.

Decisions worth knowing (see docs/design/raft.md for the whole contract):

- Commit counts only entries of the current term (Figure 8); the leader's own entries
  count only once the driver has reported them durable (``advance``).
- Term changes follow etcd-io/raft: a higher-term vote request is ignored while this
  node has heard from a leader within an election timeout (check-quorum "leader
  stickiness"), unless it is a transfer campaign; pre-votes never change terms.
- A new leader appends an empty entry and takes no conf change, and answers no
  ReadIndex, until an entry of its own term has committed.
"""

from __future__ import annotations

from collections.abc import Sequence

from kvraft.raft.confchange import apply_change, is_joint
from kvraft.raft.config import RaftConfig, ReadOnlyOption
from kvraft.raft.describe import describe_conf_state, message_type_name
from kvraft.raft.errors import ConfChangeError, NotLeaderError, ProposalDroppedError
from kvraft.raft.events import RaftEvent
from kvraft.raft.log import RaftLog
from kvraft.raft.quorum import VoteResult
from kvraft.raft.read_only import ReadOnly, ReadRequest
from kvraft.raft.replication import LeaderReplication
from kvraft.raft.storage import LogStorage, UnavailableError
from kvraft.raft.tracker import ProgressTracker
from kvraft.raft.types import (
    NONE,
    ConfChange,
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

__all__ = ["TRANSFER_CONTEXT", "Raft"]

TRANSFER_CONTEXT = b"transfer"
"""``Message.context`` of a vote request sent because of a leadership transfer."""

_MT = MessageType
_msg_name = message_type_name


class Raft(LeaderReplication):
    def __init__(self, config: RaftConfig, storage: LogStorage) -> None:
        config.validate()
        self.id = config.id
        self.config = config
        self.log = RaftLog(storage)
        self.tracker = ProgressTracker(config.max_inflight_msgs)
        self.read_only = ReadOnly()
        self.msgs: list[Message] = []
        self.read_states: list[ReadState] = []
        self.term = 0
        self.vote = NONE
        self.lead = NONE
        self.role = StateRole.FOLLOWER
        self.lead_transferee = NONE
        self.pending_conf_index = 0
        self.uncommitted_size = 0
        self.pending_reads: list[ReadRequest] = []
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = config.election_ticks

        self._restore(storage, config.applied)
        self.become_follower(self.term, NONE)

    def _restore(self, storage: LogStorage, applied: int) -> None:
        """Term, vote and commit from ``initial_state()``; the membership as of the
        applied index: the snapshot's ConfState (``initial_state()``'s when there is no
        snapshot yet) plus the conf entries after the snapshot up to ``applied``, which
        the application will not apply again."""
        hard_state, conf = storage.initial_state()
        base = self.log.first_index() - 1
        try:
            snap = storage.snapshot()
        except UnavailableError:
            snap = Snapshot()
        if not snap.is_empty():
            conf, base = snap.metadata.conf_state, snap.metadata.index
        if not hard_state.is_empty():
            self.term, self.vote = hard_state.term, hard_state.vote
            if not self.log.first_index() - 1 <= hard_state.commit <= self.log.last_index():
                raise ValueError(
                    f"stored commit {hard_state.commit} outside the stored log "
                    f"[{self.log.first_index() - 1}, {self.log.last_index()}]"
                )
            self.log.commit_to(hard_state.commit)
        self.log.commit_to(base)  # the snapshot is committed, whatever the hard state says
        applied = max(applied, base)
        if applied > self.log.committed:
            raise ValueError(f"applied {applied} is beyond the stored commit {self.log.committed}")
        for entry in self.log.slice(base + 1, applied + 1):
            if entry.type == EntryType.CONF_CHANGE:
                conf = apply_change(conf, ConfChange.decode(entry.data))
        self.log.applied_to(applied)
        self.tracker.set_conf(conf, self.log.last_index() + 1)

    # -- small helpers ----------------------------------------------------------------

    def _trace(self, text: str) -> None:
        if self.config.trace is not None:
            self.config.trace(RaftEvent(node=self.id, term=self.term, text=text))

    def _send(self, msg: Message) -> None:
        """Queue ``msg``, stamped with this node's id and (unless set) its term. ``msg``
        must be built by the caller for this call (every call site constructs it inline):
        it is stamped in place before anyone else can see it, instead of being copied
        (``dataclasses.replace`` per message was the core's largest single cost per
        Ready)."""
        assert msg.to != self.id, f"message to self: {msg.type.name}"
        object.__setattr__(msg, "from_", self.id)
        if msg.term == 0 and msg.type != _MT.READ_INDEX:
            object.__setattr__(msg, "term", self.term)
        self.msgs.append(msg)

    def promotable(self) -> bool:
        """May this node campaign? Only a voter of the configuration in force may."""
        return self.tracker.is_voter(self.id)

    def hard_state(self) -> HardState:
        return HardState(term=self.term, vote=self.vote, commit=self.log.committed)

    def soft_state(self) -> SoftState:
        return SoftState(leader=self.lead, role=self.role)

    def _committed_in_current_term(self) -> bool:
        return self.log.term_or_zero(self.log.committed) == self.term

    # -- role changes -----------------------------------------------------------------

    def _reset(self, term: int) -> None:
        if self.term != term:
            self.term = term
            self.vote = NONE
        self.lead = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = self.config.election_ticks + self.config.rng.randrange(
            self.config.election_ticks
        )
        self.lead_transferee = NONE
        self.tracker.reset_votes()
        self.tracker.reset_progress(self.log.last_index(), self.id, self.log.persisted_last_index())
        self.pending_conf_index = 0
        self.uncommitted_size = 0
        self.read_only.reset()
        self.pending_reads = []

    def become_follower(self, term: int, lead: int) -> None:
        changed = self.role != StateRole.FOLLOWER or term != self.term
        self._reset(term)
        self.lead = lead
        self.role = StateRole.FOLLOWER
        if changed:
            self._trace(f"became follower at term {self.term}")

    def become_pre_candidate(self) -> None:
        assert self.role != StateRole.LEADER, "leader -> pre-candidate"
        # Neither term nor vote changes: a pre-vote must not disturb anything.
        self.tracker.reset_votes()
        self.lead = NONE
        self.role = StateRole.PRE_CANDIDATE
        self._trace(f"became pre-candidate at term {self.term}")

    def become_candidate(self) -> None:
        assert self.role != StateRole.LEADER, "leader -> candidate"
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = StateRole.CANDIDATE
        self._trace(f"became candidate at term {self.term}")

    def become_leader(self) -> None:
        assert self.role in (StateRole.CANDIDATE, StateRole.LEADER), "only a candidate can lead"
        self._reset(self.term)
        self.lead = self.id
        self.role = StateRole.LEADER
        own = self.tracker.progress.get(self.id)
        if own is not None:
            own.become_replicate()  # the leader always "replicates" to itself
        noop = Entry(term=self.term, index=self.log.last_index() + 1)
        self.log.append([noop])
        # Ongaro 2015: no conf change until an entry of this term has committed (applied).
        self.pending_conf_index = noop.index
        self._trace(f"became leader at term {self.term}")

    # -- ticks ------------------------------------------------------------------------

    def tick(self) -> None:
        if self.role == StateRole.LEADER:
            self._tick_heartbeat()
        else:
            self._tick_election()

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.promotable() and self.election_elapsed >= self.randomized_election_timeout:
            self.election_elapsed = 0
            self.hup(transfer=False)

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.config.election_ticks:
            self.election_elapsed = 0
            if self.config.check_quorum:
                if not self.tracker.quorum_active(self.id):
                    self._trace("stepped down: quorum not active")
                    self.become_follower(self.term, NONE)
                    return
                self.tracker.reset_recent_active(self.id)
            if self.lead_transferee != NONE:
                self._trace(f"aborted transfer to {self.lead_transferee}: election timeout")
                self.lead_transferee = NONE
            self._retry_lost_snapshots()
        if self.heartbeat_elapsed >= self.config.heartbeat_ticks:
            self.heartbeat_elapsed = 0
            self._bcast_heartbeat(self.read_only.pending_context())

    # -- elections --------------------------------------------------------------------

    def _has_unapplied_conf_changes(self) -> bool:
        if self.log.applied >= self.log.committed:
            return False
        pending = self.log.slice(self.log.applied + 1, self.log.committed + 1)
        return any(e.type == EntryType.CONF_CHANGE for e in pending)

    def hup(self, transfer: bool) -> None:
        """Start an election (after an election timeout, ``campaign()``, or TimeoutNow)."""
        if self.role == StateRole.LEADER:
            return
        if not self.promotable():
            self._trace("cannot campaign: not a voter")
            return
        if self._has_unapplied_conf_changes():
            self._trace("cannot campaign: committed conf changes not yet applied")
            return
        if transfer or not self.config.pre_vote:
            self._campaign(pre=False, transfer=transfer)
        else:
            self._campaign(pre=True, transfer=False)

    def _campaign(self, pre: bool, transfer: bool) -> None:
        if pre:
            self.become_pre_candidate()
            vote_type, term = _MT.PRE_VOTE, self.term + 1
        else:
            self.become_candidate()
            vote_type, term = _MT.VOTE, self.term
        if self._poll(self.id, True) == VoteResult.WON:
            self._won(pre)  # a single voter wins on its own vote
            return
        context = TRANSFER_CONTEXT if transfer else b""
        last_index, last_term = self.log.last_index(), self.log.last_term()
        for node in sorted(self.tracker.voter_ids()):
            if node != self.id:
                self._send(
                    Message(
                        type=vote_type,
                        to=node,
                        term=term,
                        index=last_index,
                        log_term=last_term,
                        context=context,
                    )
                )

    def _poll(self, node: int, granted: bool) -> VoteResult:
        self.tracker.record_vote(node, granted)
        return self.tracker.tally_votes()[2]

    def _won(self, pre: bool) -> None:
        if pre:
            self._campaign(pre=False, transfer=False)
        else:
            self.become_leader()
            self._bcast_append()

    # -- step: term checks, then per role ---------------------------------------------

    def step(self, m: Message) -> None:
        if m.term > self.term and not self._step_higher_term(m):
            return
        if 0 < m.term < self.term:
            self._step_lower_term(m)
            return
        if m.type in (_MT.VOTE, _MT.PRE_VOTE):
            self._handle_vote_request(m)
        elif self.role == StateRole.LEADER:
            self._step_leader(m)
        elif self.role == StateRole.FOLLOWER:
            self._step_follower(m)
        else:
            self._step_candidate(m)

    def _step_higher_term(self, m: Message) -> bool:
        """Returns False when ``m`` is to be ignored."""
        if m.type in (_MT.VOTE, _MT.PRE_VOTE):
            forced = m.context == TRANSFER_CONTEXT
            in_lease = (
                self.config.check_quorum
                and self.lead != NONE
                and self.election_elapsed < self.config.election_ticks
            )
            if in_lease and not forced:
                self._trace(
                    f"ignored {_msg_name(m.type)} from {m.from_} at term {m.term}: "
                    f"leader {self.lead} is active"
                )
                return False
        if m.type == _MT.PRE_VOTE or (m.type == _MT.PRE_VOTE_RESP and not m.reject):
            return True  # a pre-vote (or a granted one) is for a term nobody has yet
        lead = m.from_ if m.type in (_MT.APP, _MT.HEARTBEAT, _MT.SNAP) else NONE
        self._trace(f"received {_msg_name(m.type)} with higher term {m.term} from {m.from_}")
        self.become_follower(m.term, lead)
        return True

    def _step_lower_term(self, m: Message) -> None:
        if (self.config.check_quorum or self.config.pre_vote) and m.type in (
            _MT.APP,
            _MT.HEARTBEAT,
        ):
            # A leader cut off for a while (its term is stale) would otherwise never learn
            # of the newer term when pre-vote keeps us from disrupting it: tell it.
            self._send(Message(type=_MT.APP_RESP, to=m.from_))
        elif m.type == _MT.PRE_VOTE:
            self._send(Message(type=_MT.PRE_VOTE_RESP, to=m.from_, reject=True))

    def _handle_vote_request(self, m: Message) -> None:
        resp = _MT.VOTE_RESP if m.type == _MT.VOTE else _MT.PRE_VOTE_RESP
        can_vote = (
            self.vote == m.from_
            or (self.vote == NONE and self.lead == NONE)
            or (m.type == _MT.PRE_VOTE and m.term > self.term)
        )
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            self._send(Message(type=resp, to=m.from_, term=m.term))
            if m.type == _MT.VOTE:
                self.election_elapsed = 0
                self.vote = m.from_
        else:
            self._send(Message(type=resp, to=m.from_, reject=True))

    def _step_candidate(self, m: Message) -> None:
        expected = _MT.PRE_VOTE_RESP if self.role == StateRole.PRE_CANDIDATE else _MT.VOTE_RESP
        if m.type in (_MT.APP, _MT.HEARTBEAT, _MT.SNAP):
            self.become_follower(m.term, m.from_)  # a leader of this term exists
            self._step_follower(m)
        elif m.type == expected:
            result = self._poll(m.from_, not m.reject)
            if result == VoteResult.WON:
                self._won(pre=self.role == StateRole.PRE_CANDIDATE)
            elif result == VoteResult.LOST:
                self._trace(f"lost the {'pre-' if expected == _MT.PRE_VOTE_RESP else ''}election")
                self.become_follower(self.term, NONE)

    def _step_follower(self, m: Message) -> None:
        if m.type in (_MT.APP, _MT.HEARTBEAT, _MT.SNAP):
            self.election_elapsed = 0
            self.lead = m.from_
            if m.type == _MT.APP:
                self._handle_append(m)
            elif m.type == _MT.HEARTBEAT:
                self._handle_heartbeat(m)
            else:
                self._handle_snapshot(m)
        elif m.type == _MT.TIMEOUT_NOW:
            self._trace(f"received TimeoutNow from {m.from_}: campaigning")
            self.hup(transfer=True)
        elif m.type == _MT.READ_INDEX_RESP:
            self.read_states.append(ReadState(index=m.index, request_ctx=m.context))
        # A forwarded READ_INDEX reaching a non-leader is dropped; its sender retries.

    def _step_leader(self, m: Message) -> None:
        if m.type == _MT.APP_RESP:
            self._handle_append_response(m)
        elif m.type == _MT.HEARTBEAT_RESP:
            self._handle_heartbeat_response(m)
        elif m.type == _MT.READ_INDEX:
            self._leader_read([ReadRequest(from_=m.from_, context=m.context)])

    # -- follower: receiving the log --------------------------------------------------

    def _handle_append(self, m: Message) -> None:
        if m.index < self.log.committed:
            # Stale (duplicate or reordered): everything up to commit is settled; say so.
            self._send(Message(type=_MT.APP_RESP, to=m.from_, index=self.log.committed))
            return
        last_new = self.log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last_new is not None:
            self._send(Message(type=_MT.APP_RESP, to=m.from_, index=last_new))
            return
        hint_index, hint_term = self.log.find_conflict_by_term(
            min(m.index, self.log.last_index()), m.log_term
        )
        self._send(
            Message(
                type=_MT.APP_RESP,
                to=m.from_,
                index=m.index,
                reject=True,
                reject_hint=hint_index,
                log_term=hint_term,
            )
        )

    def _handle_heartbeat(self, m: Message) -> None:
        self.log.commit_to(m.commit)
        self._send(Message(type=_MT.HEARTBEAT_RESP, to=m.from_, context=m.context))

    def _handle_snapshot(self, m: Message) -> None:
        assert m.snapshot is not None, "MsgSnap without a snapshot"
        if self._restore_snapshot(m.snapshot):
            self._trace(f"restored snapshot at index {m.snapshot.metadata.index}")
            self._send(Message(type=_MT.APP_RESP, to=m.from_, index=self.log.last_index()))
        else:
            self._send(Message(type=_MT.APP_RESP, to=m.from_, index=self.log.committed))

    def _restore_snapshot(self, snap: Snapshot) -> bool:
        meta = snap.metadata
        if meta.index <= self.log.committed:
            return False
        # A member added after the snapshot was taken is not in its ConfState; it restores
        # anyway and learns of its membership from the conf entries that follow.
        if self.log.match_term(meta.index, meta.term):
            self.log.commit_to(meta.index)  # we have the entries: just fast-forward the commit
            return False
        self.log.restore(snap)
        self.tracker = ProgressTracker(self.config.max_inflight_msgs)
        self.tracker.set_conf(meta.conf_state, self.log.last_index() + 1)
        return True

    # -- leader: reads ----------------------------------------------------------------

    def _leader_read(self, requests: list[ReadRequest]) -> None:
        if not self._committed_in_current_term():
            self.pending_reads.extend(requests)  # answered once our no-op commits
            return
        if (
            self.tracker.is_singleton()
            or self.config.read_only_option == ReadOnlyOption.LEASE_BASED
        ):
            for request in requests:
                self._answer_read(request, self.log.committed)
            return
        context = self.read_only.add(requests, self.log.committed)
        if context is not None:
            self._bcast_heartbeat(context)

    def _answer_read(self, request: ReadRequest, index: int) -> None:
        if request.from_ == self.id:
            self.read_states.append(ReadState(index=index, request_ctx=request.context))
        else:
            self._send(
                Message(
                    type=_MT.READ_INDEX_RESP, to=request.from_, index=index, context=request.context
                )
            )

    def read_index(self, context: bytes) -> None:
        if self.role == StateRole.LEADER:
            self._leader_read([ReadRequest(from_=self.id, context=context)])
        elif self.lead == NONE:
            raise NotLeaderError(NONE)
        else:
            self._send(Message(type=_MT.READ_INDEX, to=self.lead, context=context))

    # -- leader: proposals and membership ---------------------------------------------

    def propose(self, datas: Sequence[bytes], entry_type: EntryType = EntryType.NORMAL) -> int:
        """Append entries (leader only); returns the index of the last one."""
        if self.role != StateRole.LEADER:
            raise NotLeaderError(self.lead)
        if self.id not in self.tracker.progress:
            raise ProposalDroppedError("leader was removed from the configuration", self.id)
        if self.lead_transferee != NONE:
            raise ProposalDroppedError(
                f"leadership transfer to {self.lead_transferee} in progress", self.id
            )
        size = sum(len(d) for d in datas)
        limit = self.config.max_uncommitted_entries_size
        if limit and size and self.uncommitted_size and self.uncommitted_size + size > limit:
            raise ProposalDroppedError(
                f"too many uncommitted bytes: {self.uncommitted_size} + {size} > {limit}", self.id
            )
        first = self.log.last_index() + 1
        entries = [
            Entry(term=self.term, index=first + i, type=entry_type, data=d)
            for i, d in enumerate(datas)
        ]
        self.uncommitted_size += size
        last = self.log.append(entries)
        self._bcast_append()
        return last

    def propose_conf_change(self, cc: ConfChange) -> None:
        if self.role != StateRole.LEADER:
            raise NotLeaderError(self.lead)
        if self.pending_conf_index > self.log.applied:
            raise ProposalDroppedError(
                f"a conf change is pending (index {self.pending_conf_index}, applied "
                f"{self.log.applied})",
                self.id,
            )
        apply_change(self.tracker.conf, cc)  # refuse now what would be refused when applied
        self.pending_conf_index = self.propose([cc.encode()], EntryType.CONF_CHANGE)

    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        """Switch to the configuration after ``cc`` (called as its entry is applied)."""
        conf = apply_change(self.tracker.conf, cc)
        # A member new to the tracker is first probed with the last entry (not an empty
        # MsgApp), so that it answers and the leader learns where its log stands.
        self.tracker.set_conf(conf, max(self.log.last_index(), 1))
        self._trace(f"switched to configuration {describe_conf_state(conf)}")
        if self.role != StateRole.LEADER:
            return conf
        if not self.tracker.is_voter(self.id) and self.config.step_down_on_removal:
            self._trace("stepped down: no longer a voter")
            self.become_follower(self.term, NONE)
            return conf
        if self.lead_transferee != NONE and not self.tracker.is_voter(self.lead_transferee):
            self._trace(f"aborted transfer to {self.lead_transferee}: no longer a voter")
            self.lead_transferee = NONE
        if self._maybe_commit():
            self._bcast_append()
        else:
            for node in self.tracker.ids():
                if node != self.id:
                    self._maybe_send_append(node, send_if_empty=False)
        return conf

    def _maybe_auto_leave(self) -> None:
        conf = self.tracker.conf
        if not (is_joint(conf) and conf.auto_leave and self.pending_conf_index <= self.log.applied):
            return
        try:
            self.propose_conf_change(ConfChange(leave_joint=True))
            self._trace("proposed leaving the joint configuration")
        except (ProposalDroppedError, ConfChangeError):
            pass  # e.g. during a transfer; tried again on the next advance

    # -- leader: transfer -------------------------------------------------------------

    def transfer_leader(self, transferee: int) -> None:
        if self.role != StateRole.LEADER:
            raise NotLeaderError(self.lead)
        if transferee == self.id:
            return
        if not self.tracker.is_voter(transferee) or transferee not in self.tracker.progress:
            raise ProposalDroppedError(f"cannot transfer to {transferee}: not a voter", self.id)
        if self.lead_transferee == transferee:
            return
        if self.lead_transferee != NONE:
            self._trace(f"aborted transfer to {self.lead_transferee}: new transfer")
        self.election_elapsed = 0  # the transfer must finish within one election timeout
        self.lead_transferee = transferee
        self._trace(f"transferring leadership to {transferee}")
        if self.tracker.progress[transferee].match == self.log.last_index():
            self._send(Message(type=_MT.TIMEOUT_NOW, to=transferee))
        else:
            self._maybe_send_append(transferee, send_if_empty=True)

    # -- Ready support ----------------------------------------------------------------

    def advance(self, rd: Ready) -> None:
        """The driver has done everything ``rd`` asked (see ``types.Ready``)."""
        if not rd.snapshot.is_empty():
            self.log.stable_snap_to(rd.snapshot.metadata.index)
            if rd.snapshot.metadata.index > self.log.applied:
                self.log.applied_to(rd.snapshot.metadata.index)
        if rd.entries:
            self.log.stable_to(rd.entries[-1].index, rd.entries[-1].term)
        if rd.committed_entries:
            self.log.applied_to(rd.committed_entries[-1].index)
        if self.role != StateRole.LEADER:
            return
        if rd.committed_entries:
            done = sum(len(e.data) for e in rd.committed_entries)
            self.uncommitted_size = max(0, self.uncommitted_size - done)
        own = self.tracker.progress.get(self.id)
        if (
            own is not None
            and own.maybe_update(self.log.persisted_last_index())
            and self._maybe_commit()
        ):
            self._bcast_append()
        self._maybe_auto_leave()

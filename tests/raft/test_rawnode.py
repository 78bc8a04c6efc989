"""RawNode behaviour, one property per test: the Ready contract, elections, proposals,
flow control, reads, transport reports and restarts."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import pytest

from kvraft.raft import (
    ConfChange,
    ConfChangeType,
    EntryType,
    MemoryLogStorage,
    Message,
    MessageType,
    NotLeaderError,
    ProgressState,
    ProposalDroppedError,
    RaftConfig,
    RawNode,
    ReadOnlyOption,
    Snapshot,
    SnapshotMetadata,
    StateRole,
)


@dataclass
class Net:
    """Nodes over MemoryLogStorage with a FIFO network; `drop` filters messages."""

    configs: dict[int, RaftConfig]
    storages: dict[int, MemoryLogStorage] = field(default_factory=dict)
    nodes: dict[int, RawNode] = field(default_factory=dict)
    queue: list[Message] = field(default_factory=list)
    sent: list[Message] = field(default_factory=list)
    down: set[int] = field(default_factory=set)
    rewrite: Callable[[Message], Message] | None = None  # (what a driver does to a message sent)

    @classmethod
    def build(cls, voters: list[int], **opts: object) -> Net:
        configs = {
            i: RaftConfig(id=i, rng=random.Random(i), **opts)  # type: ignore[arg-type]
            for i in voters
        }
        net = cls(configs)
        for i in voters:
            net.storages[i] = MemoryLogStorage.bootstrap(voters)
            net.nodes[i] = RawNode(replace(configs[i], applied=len(voters)), net.storages[i])
        return net

    def ready(self, i: int) -> None:
        node, storage = self.nodes[i], self.storages[i]
        if not node.has_ready():
            return
        rd = node.ready()
        if not rd.snapshot.is_empty():
            storage.apply_snapshot(rd.snapshot)
        storage.append(list(rd.entries))
        if rd.hard_state is not None:
            storage.set_hard_state(rd.hard_state)
        messages = [self.rewrite(m) for m in rd.messages] if self.rewrite else list(rd.messages)
        self.sent.extend(messages)
        self.queue.extend(m for m in messages if m.to not in self.down)
        for e in rd.committed_entries:
            if e.type == EntryType.CONF_CHANGE:
                node.apply_conf_change(ConfChange.decode(e.data))
        node.advance(rd)

    def drain(self, rounds: int = 100) -> None:
        for _ in range(rounds):
            for i in sorted(self.nodes):
                if i not in self.down:
                    self.ready(i)
            if not self.queue:
                if not any(self.nodes[i].has_ready() for i in self.nodes if i not in self.down):
                    return
                continue
            batch, self.queue = self.queue, []
            for m in batch:
                if m.to in self.nodes and m.to not in self.down:
                    self.nodes[m.to].step(m)

    def elect(self, i: int) -> None:
        self.nodes[i].campaign()
        self.drain()
        assert self.nodes[i].status().role == StateRole.LEADER


# -- the Ready contract --------------------------------------------------------------


def test_single_node_commits_only_after_the_entry_is_persisted() -> None:
    net = Net.build([1])
    node = net.nodes[1]
    node.campaign()
    net.drain()
    node.propose(b"x")
    rd = node.ready()
    assert [e.data for e in rd.entries] == [b"x"] and rd.committed_entries == ()
    assert rd.must_sync
    net.storages[1].append(list(rd.entries))
    node.advance(rd)
    rd = node.ready()
    assert [e.data for e in rd.committed_entries] == [b"x"] and rd.entries == ()
    assert rd.hard_state is not None and rd.hard_state.commit == rd.committed_entries[-1].index
    assert not rd.must_sync  # only the commit index changed
    node.advance(rd)


def test_ready_and_advance_must_alternate() -> None:
    net = Net.build([1])
    node = net.nodes[1]
    node.campaign()
    rd = node.ready()
    with pytest.raises(RuntimeError):
        node.ready()
    node.advance(rd)
    with pytest.raises(RuntimeError):
        node.advance(rd)


def test_step_refuses_local_types_and_misaddressed_messages() -> None:
    node = Net.build([1, 2, 3]).nodes[1]
    for t in (MessageType.HUP, MessageType.BEAT, MessageType.PROPOSE, MessageType.TRANSFER_LEADER):
        with pytest.raises(ValueError, match="local message type"):
            node.step(Message(type=t, to=1, from_=2))
    with pytest.raises(ValueError, match="given to node 1"):
        node.step(Message(type=MessageType.APP, to=2, from_=3, term=1))
    with pytest.raises(ValueError, match="bad sender"):
        node.step(Message(type=MessageType.APP, to=1, from_=1, term=1))


def test_term_and_vote_are_in_a_synced_ready_before_the_vote_is_sent() -> None:
    net = Net.build([1, 2, 3], pre_vote=False)
    net.nodes[1].campaign()
    net.ready(1)
    for m in net.queue:
        net.nodes[m.to].step(m)
    rd = net.nodes[2].ready()
    assert rd.hard_state is not None and (rd.hard_state.term, rd.hard_state.vote) == (2, 1)
    assert rd.must_sync
    assert [m.type for m in rd.messages] == [MessageType.VOTE_RESP]


# -- elections -----------------------------------------------------------------------


def test_election_timeout_is_randomized_in_range() -> None:
    node = Net.build([1, 2, 3], election_ticks=10).nodes[1]
    seen = set()
    for _ in range(200):
        node.raft.become_follower(node.raft.term, 0)
        seen.add(node.raft.randomized_election_timeout)
    assert seen <= set(range(10, 20)) and len(seen) > 5


def test_prevote_does_not_raise_the_term_of_an_isolated_node() -> None:
    net = Net.build([1, 2, 3])
    net.elect(1)
    net.down = {2, 3, 1}
    node = net.nodes[3]
    term = node.status().term
    for _ in range(100):
        node.tick()
    assert node.status().term == term
    assert node.status().role == StateRole.PRE_CANDIDATE


def test_followers_with_a_live_leader_ignore_vote_requests() -> None:
    net = Net.build([1, 2, 3])
    net.elect(1)
    net.nodes[2].raft.hup(transfer=False)  # pre-vote
    net.drain()
    assert net.nodes[1].status().role == StateRole.LEADER
    assert net.nodes[1].status().term == net.nodes[2].status().term


def test_a_node_outside_the_configuration_never_campaigns() -> None:
    node = RawNode(RaftConfig(id=9, rng=random.Random(1)), MemoryLogStorage())
    for _ in range(100):
        node.tick()
    node.campaign()
    assert node.status().role == StateRole.FOLLOWER and not node.has_ready()


# -- proposals and flow control ------------------------------------------------------


def test_proposals_on_a_non_leader_name_the_leader() -> None:
    net = Net.build([1, 2, 3])
    with pytest.raises(NotLeaderError) as no_leader:
        net.nodes[2].propose(b"x")
    assert no_leader.value.leader == 0
    net.elect(1)
    with pytest.raises(NotLeaderError) as err:
        net.nodes[2].propose(b"x")
    assert err.value.leader == 1 and "leader is 1" in str(err.value)
    with pytest.raises(NotLeaderError):
        net.nodes[3].transfer_leader(2)


def test_uncommitted_size_limit_drops_and_recovers() -> None:
    net = Net.build([1, 2, 3], max_uncommitted_entries_size=10)
    net.elect(1)
    net.down = {2, 3}
    leader = net.nodes[1]
    leader.propose(b"12345678")
    with pytest.raises(ProposalDroppedError, match="too many uncommitted bytes"):
        leader.propose(b"12345678")
    leader.propose(b"")  # empty entries never count
    net.down = set()
    leader.raft.tick()  # heartbeat brings the followers back
    for _ in range(3):
        leader.tick()
    net.drain()
    leader.propose(b"12345678")


def test_batched_proposal_is_one_message_and_respects_max_size() -> None:
    net = Net.build([1, 2, 3])
    net.elect(1)
    net.sent.clear()
    net.nodes[1].propose_batch([b"a", b"b", b"c"])
    net.ready(1)
    apps = [m for m in net.sent if m.type == MessageType.APP and m.to == 2]
    assert len(apps) == 1 and [e.data for e in apps[0].entries] == [b"a", b"b", b"c"]

    small = Net.build([1, 2, 3], max_size_per_msg=40)
    small.elect(1)
    small.down = {2}
    small.nodes[1].propose_batch([b"x" * 20] * 4)
    small.drain()  # 2 misses them all
    small.down = set()
    small.sent.clear()
    for _ in range(2):
        small.nodes[1].tick()
    small.drain()
    to2 = [m for m in small.sent if m.type == MessageType.APP and m.to == 2 and m.entries]
    assert all(sum(e.size() for e in m.entries) <= 40 or len(m.entries) == 1 for m in to2)
    assert sum(len(m.entries) for m in to2) >= 4


def test_pipelining_is_bounded_by_max_inflight() -> None:
    net = Net.build([1, 2, 3], max_inflight_msgs=2)
    net.elect(1)
    leader = net.nodes[1]
    assert leader.status().progress[2].state == ProgressState.REPLICATE
    net.sent.clear()
    for i in range(5):
        leader.propose(f"p{i}".encode())
        net.ready(1)  # send, but deliver nothing
    to2 = [m for m in net.sent if m.type == MessageType.APP and m.to == 2]
    assert len(to2) == 2
    assert leader.raft.tracker.progress[2].is_paused()


def test_fast_backtracking_skips_a_divergent_term_in_one_round_trip() -> None:
    net = Net.build([1, 2, 3], pre_vote=False, check_quorum=False)
    net.elect(2)
    net.down = {1, 3}
    for i in range(30):  # 2 appends 30 entries (term 2) that no one else gets
        net.nodes[2].propose(f"lost{i}".encode())
    net.drain()
    net.down = {2}
    net.elect(1)  # term 3, with 3
    for i in range(40):
        net.nodes[1].propose(f"ok{i}".encode())
    net.drain()
    net.elect(3)  # term 4: its first probe to 2 is far beyond 2's matching prefix
    net.down = set()
    net.sent.clear()
    for _ in range(3):
        net.nodes[3].tick()
    net.drain()
    rejects = [m for m in net.sent if m.type == MessageType.APP_RESP and m.from_ == 2 and m.reject]
    # One rejected probe (repeated once per heartbeat) instead of ~40 round trips.
    assert {m.index for m in rejects} == {net.storages[3].last_index() - 1}
    last = net.storages[3].last_index()
    assert net.storages[2].entries(1, last + 1) == net.storages[3].entries(1, last + 1)


# -- reads ---------------------------------------------------------------------------


def test_lease_based_reads_need_no_round_trip() -> None:
    net = Net.build([1, 2, 3], read_only_option=ReadOnlyOption.LEASE_BASED)
    net.elect(1)
    net.sent.clear()
    net.nodes[1].read_index(b"r")
    rd = net.nodes[1].ready()
    assert [(rs.request_ctx, rs.index) for rs in rd.read_states] == [
        (b"r", net.nodes[1].status().commit)
    ]
    assert rd.messages == ()
    net.nodes[1].advance(rd)


def test_follower_read_without_leader_fails() -> None:
    net = Net.build([1, 2, 3])
    with pytest.raises(NotLeaderError):
        net.nodes[2].read_index(b"r")


# -- transport reports ---------------------------------------------------------------


def test_report_unreachable_sends_a_replicating_follower_back_to_probe() -> None:
    net = Net.build([1, 2, 3])
    net.elect(1)
    assert net.nodes[1].status().progress[2].state == ProgressState.REPLICATE
    net.nodes[1].report_unreachable(2)
    assert net.nodes[1].status().progress[2].state == ProgressState.PROBE


def test_report_snapshot_failure_resets_the_pending_snapshot() -> None:
    net = Net.build([1, 2, 3])
    net.elect(1)
    pr = net.nodes[1].raft.tracker.progress[3]
    pr.become_snapshot(7)
    net.nodes[1].report_snapshot(3, ok=False)
    assert pr.state == ProgressState.PROBE and pr.pending_snapshot == 0 and pr.probe_sent


def test_a_snapshot_sent_at_a_later_index_than_the_logs_catches_the_follower_up() -> None:
    """kvraft's leader sends a snapshot of its state when it sends it (``snapshot_send``):
    the core's MsgSnap names the log's snapshot (index 10), the follower gets the applied
    state (index 25). The core takes the follower's answer (match 25) and replicates from
    there, without a second snapshot."""
    net = Net.build([1, 2, 3])
    net.elect(1)
    net.down = {3}
    for i in range(20):
        net.nodes[1].propose(b"p%d" % i)
        net.drain()
    leader_log = net.storages[1]
    conf = net.nodes[1].status().conf_state
    leader_log.create_snapshot(10, conf, b"")
    leader_log.compact(10)
    applied = net.nodes[1].status().applied
    assert applied > 10
    rewritten: list[Message] = []

    def send_state_now(m: Message) -> Message:
        if m.type != MessageType.SNAP or m.snapshot is None:
            return m
        assert m.snapshot.metadata.index == 10
        meta = replace(m.snapshot.metadata, index=applied, term=leader_log.term(applied))
        out = replace(m, snapshot=replace(m.snapshot, metadata=meta, data=b"state@%d" % applied))
        rewritten.append(out)
        return out

    net.rewrite = send_state_now
    net.down = set()
    for _ in range(3):
        net.nodes[1].tick()
        net.drain()
    assert len(rewritten) == 1
    net.nodes[1].report_snapshot(3, ok=True)
    net.nodes[1].propose(b"after")
    net.drain()
    last = net.storages[1].last_index()
    assert net.storages[3].snapshot().metadata.index == applied
    assert net.storages[3].last_index() == last and net.nodes[3].status().commit == last
    pr = net.nodes[1].status().progress[3]
    assert pr.state == ProgressState.REPLICATE and pr.match == last
    assert len(rewritten) == 1  # no second snapshot


def test_pending_snapshot_says_whether_a_msgsnap_was_taken() -> None:
    """A MsgSnap at or below the commit index changes nothing; one past it is the snapshot the
    next Ready hands out (the server deletes what it kept for one not taken)."""
    net = Net.build([1, 2])
    net.elect(1)
    for i in range(5):
        net.nodes[1].propose(b"p%d" % i)
        net.drain()
    follower = net.nodes[2]
    commit, term = follower.status().commit, follower.status().term
    conf = follower.status().conf_state

    def snap(index: int) -> Message:
        meta = SnapshotMetadata(index=index, term=term, conf_state=conf)
        return Message(type=MessageType.SNAP, to=2, from_=1, term=term, snapshot=Snapshot(meta, b"s"))

    follower.step(snap(commit - 1))
    assert follower.pending_snapshot() is None
    follower.step(snap(commit + 50))
    pending = follower.pending_snapshot()
    assert pending is not None and pending.index == commit + 50


# -- membership and restarts ---------------------------------------------------------


def test_restart_replays_conf_entries_up_to_applied() -> None:
    net = Net.build([1, 2, 3])
    net.elect(1)
    net.nodes[1].propose_conf_change(ConfChange(changes=((ConfChangeType.ADD_LEARNER, 4),)))
    net.drain()
    applied = net.nodes[2].status().applied
    # node 2 restarts having applied everything: the core must know of learner 4
    again = RawNode(replace(net.configs[2], applied=applied), net.storages[2])
    assert again.status().conf_state.learners == frozenset({4})
    # restarting with applied at the snapshot (0) leaves the conf entry to be re-applied
    fresh = RawNode(replace(net.configs[2], applied=0), net.storages[2])
    assert fresh.status().conf_state.learners == frozenset()
    rd = fresh.ready()
    assert any(e.type == EntryType.CONF_CHANGE for e in rd.committed_entries)


def test_removed_leader_keeps_leading_when_step_down_is_off() -> None:
    net = Net.build([1, 2, 3], step_down_on_removal=False)
    net.elect(1)
    net.nodes[1].propose_conf_change(ConfChange(changes=((ConfChangeType.REMOVE_NODE, 1),)))
    net.drain()
    st = net.nodes[1].status()
    assert st.role == StateRole.LEADER and 1 not in st.conf_state.voters
    with pytest.raises(ProposalDroppedError, match="removed"):
        net.nodes[1].propose(b"x")


def test_status_of_leader_and_follower() -> None:
    net = Net.build([1, 2, 3])
    net.elect(1)
    st = net.nodes[1].status()
    assert (st.id, st.leader, st.role, st.lead_transferee) == (1, 1, StateRole.LEADER, 0)
    assert set(st.progress) == {1, 2, 3} and st.progress[2].match == st.commit
    assert net.nodes[2].status().progress == {}

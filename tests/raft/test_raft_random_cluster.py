"""Randomized whole-cluster runs of the core with safety checks after every step.

A deliberately small driver (not the simulator of kvraft/sim): RawNodes over
MemoryLogStorage, a network that drops, duplicates and reorders, crashes that lose
nothing persisted, partitions, and membership churn. After every event:

- election safety: at most one leader per term;
- state machine safety: no index applied with two different entries;
- commit index (hard state) never decreases on a node, across restarts too;
- log matching on committed prefixes: committed entries agree between nodes;
- leader completeness: a new leader holds every entry applied anywhere.

Each seed runs in a fraction of a second; a failure names its seed.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass, field, replace

import pytest

from kvraft.raft import (
    ConfChange,
    ConfChangeType,
    EntryType,
    MemoryLogStorage,
    Message,
    ProposalDroppedError,
    RaftConfig,
    RaftError,
    RawNode,
    StateRole,
)
from kvraft.raft.confchange import members


@dataclass
class Member:
    id: int
    storage: MemoryLogStorage
    config: RaftConfig
    node: RawNode | None = None
    applied: int = 0
    conf_voters: frozenset[int] = frozenset()


@dataclass
class Cluster:
    rng: random.Random
    members: dict[int, Member] = field(default_factory=dict)
    net: list[Message] = field(default_factory=list)
    cut: set[tuple[int, int]] = field(default_factory=set)
    leaders: dict[int, int] = field(default_factory=dict)  # term -> leader
    applied: dict[int, tuple[int, bytes, EntryType]] = field(default_factory=dict)  # index -> entry
    max_commit: dict[int, int] = field(default_factory=dict)
    proposals: int = 0

    def add(self, node_id: int, storage: MemoryLogStorage, applied: int) -> None:
        cfg = RaftConfig(
            id=node_id,
            rng=random.Random(self.rng.random()),
            election_ticks=10,
            heartbeat_ticks=2,
            max_inflight_msgs=self.rng.choice([1, 4, 64]),
            max_size_per_msg=self.rng.choice([1, 64, 1 << 20]),
        )
        self.members[node_id] = Member(node_id, storage, cfg, applied=applied)
        self.start(node_id)

    def start(self, node_id: int) -> None:
        m = self.members[node_id]
        m.node = RawNode(replace(m.config, applied=m.applied), m.storage)

    def crash(self, node_id: int) -> None:
        self.members[node_id].node = None
        self.net = [msg for msg in self.net if msg.to != node_id]

    def handle_ready(self, m: Member) -> None:
        node = m.node
        assert node is not None
        if not node.has_ready():
            return
        rd = node.ready()
        overlap = {e.index for e in rd.committed_entries} & {e.index for e in rd.entries}
        assert not overlap, f"entries {overlap} handed out for applying before being persisted"
        if not rd.snapshot.is_empty():
            m.storage.apply_snapshot(rd.snapshot)
        m.storage.append(list(rd.entries))
        if rd.hard_state is not None:
            prev = self.max_commit.get(m.id, 0)
            assert rd.hard_state.commit >= prev, (
                f"commit of {m.id} went back {prev} -> {rd.hard_state.commit}"
            )
            self.max_commit[m.id] = rd.hard_state.commit
            m.storage.set_hard_state(rd.hard_state)
        for msg in rd.messages:
            assert msg.to != m.id
            if (msg.from_, msg.to) in self.cut or self.members.get(msg.to) is None:
                continue
            self.net.append(msg)
            if self.rng.random() < 0.05:
                self.net.append(msg)  # duplicate
        if self.rng.random() < 0.2:
            # Like an asynchronous driver: more input arrives while the Ready is handled.
            for _ in range(self.rng.randrange(4)):
                waiting = [i for i, msg in enumerate(self.net) if msg.to == m.id]
                if waiting:
                    node.step(self.net.pop(waiting[0]))
            if self.rng.random() < 0.5:
                node.tick()
        if not rd.snapshot.is_empty():
            m.applied = rd.snapshot.metadata.index
            m.conf_voters = rd.snapshot.metadata.conf_state.voters
        for e in rd.committed_entries:
            assert e.index == m.applied + 1, f"{m.id} applies {e.index} after {m.applied}"
            seen = self.applied.setdefault(e.index, (e.term, e.data, e.type))
            assert seen == (e.term, e.data, e.type), f"index {e.index} applied as {seen} and {e}"
            m.applied = e.index
            if e.type == EntryType.CONF_CHANGE:
                conf = node.apply_conf_change(ConfChange.decode(e.data))
                m.conf_voters = conf.voters
                for node_id in members(conf):
                    if node_id not in self.members:
                        self.add(node_id, MemoryLogStorage(), 0)
        if rd.soft_state is not None and rd.soft_state.role == StateRole.LEADER:
            st = node.status()
            other = self.leaders.setdefault(st.term, m.id)
            assert other == m.id, f"two leaders in term {st.term}: {other} and {m.id}"
            for index, (term, _, _) in self.applied.items():
                if index >= m.storage.first_index():
                    assert m.storage.term(index) == term, f"leader {m.id} lacks applied {index}"
        node.advance(rd)

    def deliver_one(self) -> None:
        if not self.net:
            return
        i = self.rng.randrange(len(self.net)) if self.rng.random() < 0.3 else 0
        msg = self.net.pop(i)
        target = self.members.get(msg.to)
        if target is None or target.node is None:
            return
        target.node.step(msg)

    def live(self) -> list[Member]:
        return [m for m in self.members.values() if m.node is not None]

    def leader(self) -> Member | None:
        best = None
        for m in self.live():
            assert m.node is not None
            st = m.node.status()
            if st.role == StateRole.LEADER and (best is None or st.term > best[0]):
                best = (st.term, m)
        return best[1] if best else None

    def step(self) -> None:
        r = self.rng.random()
        live = self.live()
        if r < 0.35:
            self.deliver_one()
        elif r < 0.55:
            for m in live:
                assert m.node is not None
                m.node.tick()
        elif r < 0.75:
            for m in live:
                self.handle_ready(m)
        elif r < 0.85:
            leader = self.leader()
            if leader is not None and leader.node is not None:
                self.proposals += 1
                try:
                    if self.rng.random() < 0.3:
                        leader.node.propose_batch(
                            [f"b{self.proposals}-{k}".encode() for k in range(3)]
                        )
                    else:
                        leader.node.propose(f"p{self.proposals}".encode())
                except ProposalDroppedError:
                    pass
        elif r < 0.88:
            victim = self.rng.choice(sorted(self.members))
            if self.members[victim].node is not None and len(live) > 1:
                self.crash(victim)
            elif self.members[victim].node is None:
                self.start(victim)
        elif r < 0.90:
            ids = sorted(self.members)
            a = self.rng.choice(ids)
            self.cut = {(a, b) for b in ids if b != a} | {(b, a) for b in ids if b != a}
        elif r < 0.93:
            self.cut = set()
        elif r < 0.95:
            self.compact(self.rng.choice(live))
        elif r < 0.96:
            self.membership_change()
        else:
            m = self.rng.choice(live)
            assert m.node is not None
            with contextlib.suppress(RaftError):
                m.node.read_index(b"r")

    def compact(self, m: Member) -> None:
        snap_index = m.storage.snapshot().metadata.index
        if m.applied > snap_index + 3 and m.node is not None:
            # The conf state as of `applied` is what the node runs with now, provided no
            # conf entry is committed beyond it yet; use the node's status when applied ==
            # commit, else skip (keeps the test driver simple and exact).
            st = m.node.status()
            if st.applied != st.commit:
                return
            m.storage.create_snapshot(m.applied, st.conf_state, b"")
            m.storage.compact(m.applied - 1)

    def membership_change(self) -> None:
        leader = self.leader()
        if leader is None or leader.node is None:
            return
        conf = leader.node.status().conf_state
        choices: list[ConfChange] = []
        spare = [n for n in range(1, 7) if n not in members(conf)]
        if spare:
            choices.append(ConfChange(changes=((ConfChangeType.ADD_LEARNER, spare[0]),)))
        for n in sorted(conf.learners):
            choices.append(ConfChange(changes=((ConfChangeType.ADD_VOTER, n),)))
        if len(conf.voters) > 3:
            victim = self.rng.choice(sorted(conf.voters))
            choices.append(ConfChange(changes=((ConfChangeType.REMOVE_NODE, victim),)))
        if spare and len(conf.voters) >= 3:
            out = self.rng.choice(sorted(conf.voters))
            choices.append(
                ConfChange(
                    changes=(
                        (ConfChangeType.ADD_VOTER, spare[0]),
                        (ConfChangeType.REMOVE_NODE, out),
                    )
                )
            )
        if not choices:
            return
        with contextlib.suppress(RaftError):
            leader.node.propose_conf_change(self.rng.choice(choices))

    def heal_and_settle(self, rounds: int) -> None:
        self.cut = set()
        for m in self.members.values():
            if m.node is None:
                self.start(m.id)
        for _ in range(rounds):
            for m in self.live():
                assert m.node is not None
                m.node.tick()
            for _ in range(3):
                for m in self.live():
                    self.handle_ready(m)
                while self.net:
                    self.deliver_one()


def run_seed(seed: int, steps: int) -> Cluster:
    rng = random.Random(seed)
    cluster = Cluster(rng)
    voters = [1, 2, 3] if rng.random() < 0.7 else [1, 2, 3, 4, 5]
    for node_id in voters:
        cluster.add(node_id, MemoryLogStorage.bootstrap(voters), 0)
    for _ in range(steps):
        cluster.step()
    cluster.heal_and_settle(60)
    return cluster


@pytest.mark.parametrize("seed", range(40))
def test_random_cluster_is_safe_and_heals(seed: int) -> None:
    cluster = run_seed(seed, 1500)
    # Liveness after healing: within a bounded time there is a leader (a leader that has
    # just removed itself leaves the others to wait out an election timeout).
    for _ in range(20):
        leader = cluster.leader()
        if leader is not None:
            break
        cluster.heal_and_settle(10)
    assert leader is not None and leader.node is not None, f"seed {seed}: no leader after healing"
    # Liveness after healing: a proposal commits and every voter applies it.
    # (With one entry per MsgApp and one in flight, catching up takes a round per entry.)
    leader.node.propose(b"final")
    for _ in range(40):
        cluster.heal_and_settle(5)
        conf = leader.node.status().conf_state
        done = [i for i, v in cluster.applied.items() if v[1] == b"final"]
        if done and all(cluster.members[n].applied >= done[0] for n in conf.voters):
            break
    else:
        lagging = {n: cluster.members[n].applied for n in conf.voters}
        raise AssertionError(f"seed {seed}: 'final' not applied by every voter: {lagging}")

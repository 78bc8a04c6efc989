"""``member remove``: the removed member learns of its removal and stops, and a leader asked to
remove itself hands its leadership over first (kvraft/server/handover.py ``OwnRemoval``,
``PeerTransport.retire_peer``).

Before: a removed member went on running without a leader (the leader's commit of its removal
was dropped with its connection, and its own connection to the others stayed up, so it was
never told), a ``member remove`` sent to the removed member waited out its 7 s deadline ("no
leader"), and removing the live leader stopped the writes for an election timeout (its
followers waited for their election timers: ``python -m kvraft.bench remove-leader``, slowest
put 0.95-1.81 s)."""

from __future__ import annotations

import asyncio
import json
import time
from types import SimpleNamespace
from typing import Any

import msgpack

from kvraft.client import SyncClient
from kvraft.raft.errors import NotLeaderError
from kvraft.raft.types import NONE, ConfChange, ConfChangeType, StateRole
from kvraft.server import wire
from kvraft.server.driver import DriverStats
from kvraft.server.handover import HOLD, PROPOSE, OwnRemoval
from kvraft.server.local import LocalCluster
from kvraft.server.proposals import ProposalQueue
from kvraft.server.transport import PeerTransport, cluster_key
from kvraft.testing.ports import free_port

from .test_transport import Inbox, app

ME = 1
FLAGS = ["--strict-reconfig-check=false"]  # (the check wants 5 s of connections first)


def test_own_removal_transfers_once_per_term_then_proposes() -> None:
    own = OwnRemoval(ME)
    assert own.removes_self(((ConfChangeType.REMOVE_NODE, ME),))
    assert not own.removes_self(((ConfChangeType.REMOVE_NODE, 2),))
    assert not own.removes_self(((ConfChangeType.ADD_VOTER, ME),))
    since = {2: 5.0, 3: 1.0}.get
    assert own.action(7, {ME, 2, 3}, NONE, since) == 3  # (the longest connected)
    assert own.action(7, {ME, 2, 3}, 3, since) == HOLD  # the transfer runs
    assert own.action(7, {ME, 2, 3}, NONE, since) == PROPOSE  # it ended, this member still leads
    assert own.action(7, {ME, 2, 3}, NONE, since) == PROPOSE
    assert own.action(9, {ME, 2, 3}, NONE, since) == 3  # leading again later: tried again


def test_own_removal_proposes_at_once_with_no_one_to_hand_over_to() -> None:
    own = OwnRemoval(ME)
    assert own.action(3, {ME}, NONE, {}.get) == PROPOSE
    assert own.action(3, {ME, 2, 3}, NONE, {}.get) == PROPOSE  # none connected
    assert own.action(3, {ME, 2}, 2, {2: 1.0}.get) == HOLD  # (a move-leader runs: waited for)


async def test_a_retired_peer_still_gets_what_is_sent_for_the_grace_then_is_told_it_was_removed() -> None:
    key = cluster_key("tok")
    removed: set[int] = set()
    told: list[int] = []
    inbox_b = Inbox()
    port_a, port_b = free_port(), free_port()
    a = PeerTransport(1, key, Inbox(), is_removed=removed.__contains__)
    b = PeerTransport(2, key, inbox_b, on_removed=told.append)
    try:
        await a.listen([f"http://127.0.0.1:{port_a}"])
        await b.listen([f"http://127.0.0.1:{port_b}"])
        a.set_peer(2, f"http://127.0.0.1:{port_b}")
        b.set_peer(1, f"http://127.0.0.1:{port_a}")
        b.send([app(1, 1)])  # (b dials a)
        a.send([app(2, 1)])
        await inbox_b.wait_for(1)
        removed.add(2)
        a.retire_peer(2, 0.3)
        a.retire_peer(2, 0.3)  # (twice: one retirement)
        a.send([app(2, 2)])  # the commit of its removal, in the Ready that applied it
        await inbox_b.wait_for(2)
        for _ in range(200):
            if told:
                break
            await asyncio.sleep(0.05)
        assert told == [1], "the removed member was never told"
        assert a.peers() == []
    finally:
        await a.close()
        await b.close()


def _ids(cluster: LocalCluster) -> dict[str, int]:
    return {name: int((cluster.status(name) or {})["header"]["member_id"]) for name in cluster.members}


def _exited(cluster: LocalCluster, name: str, timeout_s: float = 20.0) -> bool:
    process = cluster.members[name].process
    assert process is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return True
        time.sleep(0.05)
    return False


def test_a_follower_removed_through_itself_is_answered_and_stops(tmp_path) -> None:
    with LocalCluster(3, tmp_path, extra_args=FLAGS) as cluster:
        cluster.start(timeout_s=60)
        leader = cluster.wait_ready()
        ids = _ids(cluster)
        gone, kept = sorted(name for name in cluster.members if name != leader)
        with SyncClient([cluster.url(gone)], request_timeout_s=20.0) as admin:
            answer = admin.member_remove(ids[gone])  # (was: "no leader" after 7 s)
        assert ids[gone] not in {m.id for m in answer.members}
        assert _exited(cluster, gone), "the removed member went on running"
        with SyncClient([cluster.url(kept)], request_timeout_s=20.0) as client:
            client.put("after/removal", "v")
            assert ids[gone] not in {m.id for m in client.member_list().members}
        # etcd's lines for applied membership changes, on every member
        lines = [json.loads(text) for text in cluster.members[kept].log_path.read_text().splitlines()
                 if text.startswith("{")]
        added = {line["added-peer-id"] for line in lines if line["msg"] == "added member"}
        assert added == {f"{member_id:x}" for member_id in ids.values()}  # (the bootstrap's)
        (removed,) = [line for line in lines if line["msg"] == "removed member"]
        assert removed["removed-remote-peer-id"] == f"{ids[gone]:x}"
        assert removed["local-member-id"] == f"{ids[kept]:x}" and removed["removed-remote-peer-urls"] == [
            cluster.members[gone].peer_url]


def test_the_leader_removed_hands_over_first_and_its_followers_lead_at_once(tmp_path) -> None:
    """Through the leader, then (in a 4-member cluster) through a follower: as the answer
    comes, the remaining members already follow a leader of the next term, the transferee
    (before: they still named the removed leader and waited for their election timers)."""
    with LocalCluster(4, tmp_path, extra_args=FLAGS) as cluster:
        cluster.start(timeout_s=60)
        for via_leader in (True, False):
            leader = cluster.wait_ready()
            ids = _ids(cluster)
            names = {member_id: name for name, member_id in ids.items()}
            term = int((cluster.status(leader) or {})["header"]["raft_term"])
            rest = sorted(name for name in ids if name != leader)
            with SyncClient([cluster.url(leader if via_leader else rest[0])], request_timeout_s=20.0) as admin:
                admin.member_remove(ids[leader])
            for name in rest:
                status = cluster.status(name)
                assert status is not None
                assert names.get(int(status["leader"])) in rest, (name, status["leader"])
                assert int(status["header"]["raft_term"]) == term + 1
            assert _exited(cluster, leader), "the removed leader went on running"
            lines = [json.loads(text) for text in cluster.members[leader].log_path.read_text().splitlines()
                     if text.startswith("{")]
            assert any("handing its leadership over" in line["msg"] for line in lines)
            cluster.members.pop(leader)
        with SyncClient([cluster.url(name) for name in cluster.members], request_timeout_s=20.0) as client:
            client.put("after/removals", "v")
            assert len(client.member_list().members) == 2


class LeaderCore:
    """The core as ``ProposalQueue`` sees it, leading (member 1) in term 5 of voters 1-3, until
    the test says otherwise."""

    def __init__(self) -> None:
        self.term, self.leader, self.transferee = 5, ME, NONE
        self.confs: list[ConfChange] = []
        self.transfers: list[int] = []

    def status(self) -> SimpleNamespace:
        role = StateRole.LEADER if self.leader == ME else StateRole.FOLLOWER
        return SimpleNamespace(role=role, conf_state=SimpleNamespace(voters={ME, 2, 3}),
                               lead_transferee=self.transferee)

    def transfer_leader(self, target: int) -> None:
        self.transfers.append(target)
        self.transferee = target

    def propose_conf_change(self, cc: ConfChange) -> None:
        if self.leader != ME:
            raise NotLeaderError(self.leader)
        self.confs.append(cc)


class PeerLinks:
    def __init__(self) -> None:
        self.frames: list[tuple[int, int, Any]] = []

    def active_since(self, member_id: int) -> float | None:
        return {2: 5.0, 3: 1.0}.get(member_id)

    def supports(self, member_id: int, feature: str) -> bool:
        return True

    def send_frame(self, target: int, kind: int, body: Any) -> bool:
        self.frames.append((target, kind, body))
        return True


def _own_removal(queue: ProposalQueue) -> bytes:
    data = ConfChange(changes=((ConfChangeType.REMOVE_NODE, ME),), context=msgpack.packb([77, None])).encode()
    queue.add_own(77, data, True, time.monotonic() + 60, True)
    return data


def test_the_queue_holds_a_leaders_own_removal_for_the_transfer_then_forwards_it() -> None:
    queue, core, links = ProposalQueue(ME, DriverStats(), 7.0), LeaderCore(), PeerLinks()
    data = _own_removal(queue)
    queue.propose(core, links)
    assert core.transfers == [3] and core.confs == [] and len(queue.items) == 1  # (3: connected the longest)
    queue.propose(core, links)  # the transfer runs: held
    assert core.transfers == [3] and core.confs == [] and len(queue.items) == 1
    core.term, core.leader, core.transferee = 6, NONE, NONE  # it voted for 3: no leader known yet
    queue.propose(core, links)
    assert len(queue.items) == 1 and links.frames == []
    core.leader = 3
    queue.propose(core, links)
    assert links.frames == [(3, wire.FORWARD_CONF_TERM, [6, data])] and queue.items == []
    assert core.confs == []  # never proposed by the member it removes


def test_a_transfer_that_does_not_take_leaves_the_removal_to_the_leader_itself() -> None:
    queue, core, links = ProposalQueue(ME, DriverStats(), 7.0), LeaderCore(), PeerLinks()
    _own_removal(queue)
    queue.propose(core, links)
    core.transferee = NONE  # the core gave the transfer up after an election timeout
    queue.propose(core, links)
    assert core.transfers == [3] and len(core.confs) == 1 and queue.items == []
    # another member's removal is proposed at once, with no transfer
    other = ProposalQueue(ME, DriverStats(), 7.0)
    data = ConfChange(changes=((ConfChangeType.REMOVE_NODE, 2),), context=msgpack.packb([78, None])).encode()
    other.add_own(78, data, True, time.monotonic() + 60, True)
    core2 = LeaderCore()
    other.propose(core2, links)
    assert core2.transfers == [] and len(core2.confs) == 1

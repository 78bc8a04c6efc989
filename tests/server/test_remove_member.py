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

from kvraft.client import SyncClient
from kvraft.raft.types import NONE, ConfChangeType
from kvraft.server.handover import HOLD, PROPOSE, OwnRemoval
from kvraft.server.local import LocalCluster
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

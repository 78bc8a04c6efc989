"""A leader stopping gracefully hands its leadership over first (kvraft/server/handover.py).

Before it, a leader stopped by SIGTERM (a restart, an upgrade) left its followers to notice
through their election timers: a put sent through a follower right after the signal waited
1.1-1.5 s (``python -m kvraft.bench failover --fault term``, docs/benchmarks.md)."""

from __future__ import annotations

import json
import signal
from types import SimpleNamespace

from kvraft.client import SyncClient
from kvraft.raft.types import NONE, StateRole
from kvraft.server.handover import choose, hand_over
from kvraft.server.local import LocalCluster

ME = 1


def test_choose_takes_the_voter_connected_the_longest() -> None:
    since = {2: 30.0, 3: 10.0, 4: 5.0}.get
    assert choose(ME, {ME, 2, 3}, since) == 3
    assert choose(ME, {ME, 2, 3, 4}, since) == 4
    assert choose(ME, {ME, 2, 5}, since) == 2  # 5 is not connected
    assert choose(ME, {ME, 5}, since) == NONE
    assert choose(ME, {ME}, since) == NONE
    assert choose(ME, {ME, 2, 3}, {2: 1.0, 3: 1.0}.get) == 2  # (a tie: the lower id)


class FakeNode:
    """What ``hand_over`` reads and calls on a ``Node``; ``script`` says what the core does
    on each look after the transfer was asked for."""

    def __init__(self, voters: set[int], up: dict[int, float], role: StateRole = StateRole.LEADER) -> None:
        self.member_id = ME
        self.up = dict(up)
        self.transferee = NONE
        self.asked: list[int] = []
        self.driver = SimpleNamespace(role=role, leader=ME if role == StateRole.LEADER else 2,
                                      transfer_leader=self.asked.append)
        self.raw = SimpleNamespace(status=lambda: SimpleNamespace(conf_state=SimpleNamespace(voters=voters),
                                                                  lead_transferee=self.transferee))
        self.transport = SimpleNamespace(active_since=self.up.get)


async def test_a_member_that_does_not_lead_or_leads_alone_stops_at_once() -> None:
    follower = FakeNode({ME, 2, 3}, {2: 1.0, 3: 1.0}, role=StateRole.FOLLOWER)
    assert await hand_over(follower, max_wait_s=1.0) == NONE
    alone = FakeNode({ME}, {})
    assert await hand_over(alone, max_wait_s=1.0) == NONE
    unconnected = FakeNode({ME, 2, 3}, {})
    assert await hand_over(unconnected, max_wait_s=1.0) == NONE
    assert follower.asked == alone.asked == unconnected.asked == []


def _ticking(node: FakeNode, steps: list) -> callable:  # type: ignore[valid-type]
    """A clock that plays ``steps`` (callables changing ``node``) one per look, 0.1 s apart."""
    now = [0.0]

    def clock() -> float:
        if steps:
            steps.pop(0)()
        now[0] += 0.1
        return now[0]
    return clock


async def test_the_wait_ends_when_the_transferee_leads() -> None:
    node = FakeNode({ME, 2, 3}, {2: 5.0, 3: 1.0})

    def begin() -> None:
        node.transferee = 3

    def step_down() -> None:
        node.driver.role, node.driver.leader, node.transferee = StateRole.FOLLOWER, NONE, NONE

    def heard() -> None:
        node.driver.leader = 3
    clock = _ticking(node, [lambda: None, begin, begin, step_down, heard])
    assert await hand_over(node, poll_s=0.0, clock=clock) == 3
    assert node.asked == [3]


async def test_the_wait_ends_when_the_core_gives_the_transfer_up_or_the_transferee_goes() -> None:
    gave_up = FakeNode({ME, 2, 3}, {2: 5.0, 3: 1.0})

    def begin() -> None:
        gave_up.transferee = 3

    def give_up() -> None:
        gave_up.transferee = NONE
    steps = [lambda: None, lambda: None, begin, begin, give_up] + [lambda: None] * 100
    assert await hand_over(gave_up, poll_s=0.0, clock=_ticking(gave_up, steps)) == NONE
    assert len(steps) > 90, "waited on after the core gave the transfer up"

    gone = FakeNode({ME, 2, 3}, {2: 5.0, 3: 1.0})
    steps = [lambda: None, lambda: gone.up.pop(3)] + [lambda: None] * 100
    assert await hand_over(gone, poll_s=0.0, clock=_ticking(gone, steps)) == NONE
    assert len(steps) > 90, "waited on after the transferee's connection went down"

    stuck = FakeNode({ME, 2, 3}, {2: 5.0, 3: 1.0})  # (the core never takes the request)
    assert await hand_over(stuck, poll_s=0.0, max_wait_s=2.0, clock=_ticking(stuck, [])) == NONE


def _log(cluster: LocalCluster, name: str, msg: str) -> list[dict]:  # type: ignore[type-arg]
    return [line for text in cluster.members[name].log_path.read_text().splitlines() if text.startswith("{")
            and (line := json.loads(text))["msg"] == msg]


def test_a_leader_stopped_by_sigterm_hands_over_before_it_exits(tmp_path) -> None:
    """With a 10 s election timeout, the followers of a leader that just left would wait 10-20 s
    for an election; with the handover the transferee leads in the next term, and a put
    through the remaining members succeeds within the client's 5 s timeout."""
    flags = ["--heartbeat-interval", "100", "--election-timeout", "10000"]
    with LocalCluster(3, tmp_path, extra_args=flags) as cluster:
        cluster.start(timeout_s=60)
        leader = cluster.wait_leader(60)
        term = int(cluster.status(leader)["header"]["raft_term"])
        ids = {name: f"{int(cluster.status(name)['header']['member_id']):x}" for name in cluster.members}
        cluster.stop_member(leader, signal.SIGTERM)
        (finished,) = _log(cluster, leader, "leadership transfer finished")
        (starting,) = _log(cluster, leader, "leadership transfer starting")
        assert finished["new-leader-member-id"] == starting["transferee-member-id"]
        rest = [name for name in cluster.members if name != leader]
        with SyncClient([cluster.url(name) for name in rest], request_timeout_s=5.0) as client:
            client.put("after/handover", "v")
        status = cluster.status(rest[0])
        assert status is not None
        assert f"{int(status['leader']):x}" == finished["new-leader-member-id"]
        assert int(status["header"]["raft_term"]) == term + 1  # one election: the transferee's
        # the new leader stops too: its one connected voter takes over
        (new,) = [name for name in rest if ids[name] == finished["new-leader-member-id"]]
        cluster.stop_member(new, signal.SIGTERM)
        assert _log(cluster, new, "leadership transfer finished")
        (last,) = [name for name in rest if name != new]
        cluster.stop_member(last, signal.SIGTERM)  # (it leads, alone: nobody to hand over to)
        assert _log(cluster, last, "leadership transfer failed: no other voting member is connected")

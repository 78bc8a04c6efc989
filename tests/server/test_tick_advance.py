"""``--initial-election-tick-advance``: the first election comes early after a start
(kvraft/server/tick_advance.py).

Before it, a one-member cluster waited a whole randomized election timeout (1-2 s with the
defaults) for an election it could not lose, and every cluster start waited as long for its
first leader: `make demo`, each test's cluster, each restart of a member."""

from __future__ import annotations

import asyncio
import json
import time
from types import SimpleNamespace

import pytest

from kvraft.server.local import LocalCluster
from kvraft.server.tick_advance import (
    DONE,
    WAIT,
    Advance,
    Campaign,
    advance_initial_ticks,
    decide,
    led_last_term,
)

ME = 1


@pytest.mark.parametrize(
    ("voters", "connected", "leader", "enabled", "applied_all", "want"),
    [
        ({ME}, set(), 0, True, True, "campaign"),
        ({ME}, set(), 0, False, True, "campaign"),  # the only voter campaigns whatever the flag
        ({ME}, set(), 0, True, False, WAIT),  # a committed conf change not applied: Raft would refuse
        ({ME}, set(), ME, True, True, DONE),  # already leader
        ({ME, 2, 3}, set(), 0, True, True, WAIT),
        ({ME, 2, 3}, {2}, 0, True, True, "advance 8"),  # 2 of 3 connected with itself: a quorum
        ({ME, 2, 3}, {2, 3}, 0, True, True, "advance 8"),
        ({ME, 2, 3}, {2}, 3, True, True, DONE),  # a leader is known: its heartbeats keep the timer
        ({ME, 2, 3}, {2, 3}, 0, False, True, DONE),  # the flag off
        ({ME, 2, 3, 4, 5}, {2}, 0, True, True, WAIT),  # 2 of 5 is no quorum
        ({ME, 2, 3, 4, 5}, {2, 3}, 0, True, True, "advance 8"),
        ({ME, 2, 3}, {4, 5}, 0, True, True, WAIT),  # learners (not voters) do not count
        ({2, 3}, {2, 3}, 0, True, True, DONE),  # not a voter (a learner, a member joining)
        (set(), set(), 0, True, True, DONE),
    ],
)
def test_decide(voters, connected, leader, enabled, applied_all, want) -> None:
    action = decide(ME, voters, connected, leader, 10, enabled, applied_all)
    if isinstance(action, Campaign):
        assert want == "campaign"
    elif isinstance(action, Advance):
        assert want == f"advance {action.ticks}"
    else:
        assert action == want


@pytest.mark.parametrize(
    ("voters", "connected", "leader", "enabled", "want"),
    [
        ({ME, 2, 3}, {2}, 0, True, "campaign"),  # the last leader, with a quorum: at once
        ({ME, 2, 3}, set(), 0, True, WAIT),  # not before a quorum is connected
        ({ME, 2, 3, 4, 5}, {2}, 0, True, WAIT),
        ({ME, 2, 3}, {2}, 3, True, DONE),  # a leader is known: nothing to do
        ({ME, 2, 3}, {2, 3}, 0, False, DONE),  # the flag off
        ({2, 3}, {2, 3}, 0, True, DONE),  # no longer a voter
    ],
)
def test_the_last_leader_campaigns_once_a_quorum_is_connected(voters, connected, leader, enabled, want) -> None:
    action = decide(ME, voters, connected, leader, 10, enabled, True, led=True)
    assert ("campaign" if isinstance(action, Campaign) else action) == want


def test_led_last_term_reads_the_vote_and_the_log() -> None:
    assert led_last_term(ME, 7, ME, 7)  # voted for itself in 7, and wrote entries of 7: led 7
    assert not led_last_term(ME, 7, ME, 6)  # a candidate of 7 that lost
    assert not led_last_term(ME, 7, 2, 7)  # a follower of 7
    assert not led_last_term(ME, 0, 0, 0)  # a new member


def test_two_election_ticks_leave_nothing_to_advance() -> None:
    assert decide(ME, {ME, 2, 3}, {2, 3}, 0, 2, True) == DONE


class FakeNode:
    """What ``advance_initial_ticks`` reads and calls on a ``Node``."""

    def __init__(self, voters: set[int], peers: list[int]) -> None:
        self.member_id = ME
        self.voters = voters
        self.peers = peers
        self.up: set[int] = set()
        self.leader = 0
        self.applied, self.commit = 5, 5
        self.calls: list[tuple[str, int]] = []
        self.raw = SimpleNamespace(status=lambda: SimpleNamespace(
            conf_state=SimpleNamespace(voters=self.voters), leader=self.leader, applied=self.applied, commit=self.commit))
        self.transport = SimpleNamespace(peers=lambda: self.peers, connected=lambda peer: peer in self.up)
        self.driver = SimpleNamespace(heartbeat_interval_s=0.1, campaign_now=lambda: self.calls.append(("campaign", 0)),
                                      advance_ticks=lambda n: self.calls.append(("ticks", n)))


async def test_the_only_voter_campaigns_once_its_log_is_applied() -> None:
    node = FakeNode({ME}, [])
    node.applied = 3  # the bootstrap's conf entries, committed, not applied yet
    task = asyncio.create_task(advance_initial_ticks(node, True, 10, poll_s=0.01))
    await asyncio.sleep(0.05)
    assert node.calls == []
    node.applied = 5
    await asyncio.wait_for(task, 1)
    assert node.calls == [("campaign", 0)]


async def test_a_voter_advances_once_a_quorum_of_peers_is_connected() -> None:
    node = FakeNode({ME, 2, 3}, [2, 3])
    task = asyncio.create_task(advance_initial_ticks(node, True, 10, poll_s=0.01))
    await asyncio.sleep(0.05)
    assert node.calls == []
    node.up.add(3)
    await asyncio.wait_for(task, 1)
    assert node.calls == [("ticks", 8)]


async def test_the_last_leader_campaigns_once_a_quorum_of_peers_is_connected() -> None:
    node = FakeNode({ME, 2, 3}, [2, 3])
    task = asyncio.create_task(advance_initial_ticks(node, True, 10, led_term=4, poll_s=0.01))
    await asyncio.sleep(0.05)
    assert node.calls == []
    node.up.add(2)
    await asyncio.wait_for(task, 1)
    assert node.calls == [("campaign", 0)]


async def test_nothing_when_a_leader_is_heard_first_or_no_quorum_connects_in_time() -> None:
    node = FakeNode({ME, 2, 3}, [2, 3])
    task = asyncio.create_task(advance_initial_ticks(node, True, 10, poll_s=0.01))
    await asyncio.sleep(0.03)
    node.leader = 2
    node.up.update({2, 3})
    await asyncio.wait_for(task, 1)
    assert node.calls == []
    clock = iter([0.0, 0.0, 1.0, 6.0])
    alone = FakeNode({ME, 2, 3}, [2, 3])
    await asyncio.wait_for(advance_initial_ticks(alone, True, 10, poll_s=0.0, wait_s=5.0, clock=lambda: next(clock)), 1)
    assert alone.calls == []


def _leader_after(cluster: LocalCluster, started: float) -> float:
    cluster.wait_leader(120)
    return time.monotonic() - started


def test_a_one_member_cluster_leads_without_waiting_an_election_timeout(tmp_path) -> None:
    """With a 50 s election timeout (etcd's longest) the leader came 50-100 s after start; now
    at once (the bound leaves a loaded machine half a minute to start the process)."""
    started = time.monotonic()
    flags = ["--heartbeat-interval", "500", "--election-timeout", "50000"]
    with LocalCluster(1, tmp_path, extra_args=flags) as cluster:
        cluster.start(timeout_s=120)
        assert _leader_after(cluster, started) < 30.0
        log = cluster.members["m0"].log_path.read_text()
        assert "started as the only voter; campaigning at once" in log


def _forwarded(log: str) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in log.splitlines()
            if line.startswith("{") and "fast-forwarding election ticks" in line]


def test_three_members_fast_forward_their_election_timers_once_connected(tmp_path) -> None:
    with LocalCluster(3, tmp_path / "on", extra_args=["--heartbeat-interval", "100", "--election-timeout", "10000"]) as cluster:
        cluster.start(timeout_s=60)
        cluster.wait_leader(60)
        lines = [line for m in cluster.members.values() for line in _forwarded(m.log_path.read_text())]
        assert lines, "no member fast-forwarded its election timer"
        for line in lines:
            assert line["forward-ticks"] == 98 and line["election-ticks"] == 100, line
            assert line["active-remote-members"] >= 1, line


def test_the_flag_off_leaves_a_member_of_several_to_its_timeout(tmp_path) -> None:
    flags = ["--heartbeat-interval", "50", "--election-timeout", "500", "--initial-election-tick-advance=false"]
    with LocalCluster(3, tmp_path / "off", extra_args=flags) as cluster:
        cluster.start(timeout_s=60)
        cluster.wait_leader(60)
        assert not [m.name for m in cluster.members.values() if _forwarded(m.log_path.read_text())]


def _said(cluster: LocalCluster, name: str, text: str) -> bool:
    return text in cluster.members[name].log_path.read_text()


def test_a_whole_cluster_restarting_elects_its_last_leader_at_once(tmp_path) -> None:
    """With a 10 s election timeout, a restarted cluster's first election came 0.2-10 s after
    its members connected; its last leader now campaigns as soon as a quorum is connected. It
    is started first, so no other member's timer (2 ticks at the soonest) runs out before."""
    flags = ["--heartbeat-interval", "100", "--election-timeout", "10000"]
    with LocalCluster(3, tmp_path, extra_args=flags) as cluster:
        cluster.start(timeout_s=60)
        cluster.wait_ready(60)
        for name in sorted(cluster.members):  # (each leader hands over to one still running)
            cluster.stop_member(name)
        (last,) = [name for name in cluster.members
                   if _said(cluster, name, "leadership transfer failed: no other voting member is connected")]
        cluster.start_member(last)
        for name in sorted(cluster.members):
            if name != last:
                cluster.start_member(name)
        leader = cluster.wait_leader(60)
        assert leader == last
        assert _said(cluster, last, "before it stopped; campaigning at once now that a quorum is connected")
        for name in cluster.members:
            if name != last:
                assert not _said(cluster, name, "campaigning at once"), name

"""Proposals that never commit, and linearizable reads that get no ReadIndex answer, fail
with etcd's timeout errors after their deadline, and proposals leave no waiter behind
(the driver's expiry task; no timer per proposal)."""

from __future__ import annotations

import asyncio
import time

import pytest

from kvraft.apply.errors import Unavailable
from kvraft.apply.ops import PutOp
from kvraft.server.config import parse_config
from kvraft.server.local import free_port
from kvraft.server.node import Node


def test_proposals_without_a_leader_expire(tmp_path) -> None:
    me, a, b = (f"http://127.0.0.1:{free_port()}" for _ in range(3))
    config = parse_config([
        "--name", "n1", "--data-dir", str(tmp_path / "n1"),
        "--listen-client-urls", f"http://127.0.0.1:{free_port()}", "--advertise-client-urls", "http://127.0.0.1:1",
        "--listen-peer-urls", me, "--initial-advertise-peer-urls", me,
        "--initial-cluster", f"n1={me},n2={a},n3={b}",  # n2, n3 never start: no quorum, no leader
    ])

    async def scenario() -> None:
        node = Node(config)
        await node.start()
        try:
            started = time.monotonic()
            futures = [node.driver.submit(PutOp(b"k%d" % i, b"v"), timeout_s=0.5) for i in range(50)]
            results = await asyncio.gather(*futures, return_exceptions=True)
            assert time.monotonic() - started >= 0.5
            assert all(isinstance(r, Unavailable) for r in results), results[:3]
            assert {str(r) for r in results} <= {"etcdserver: no leader", "etcdserver: request timed out"}
            with pytest.raises(Unavailable):
                await node.driver.propose(PutOp(b"one", b"v"), timeout_s=0.3)
            # (the member's own publish proposal may be waiting too)
            assert not any(f is mine for f in node.driver._waiters.values() for mine in futures)
            assert len(node.driver._waiters) <= 1
            # a linearizable read without a leader fails after its deadline too
            started = time.monotonic()
            with pytest.raises(Unavailable):
                await node.driver.read_barrier(timeout_s=0.5)
            assert time.monotonic() - started >= 0.5
        finally:
            await node.stop()

    asyncio.run(scenario())


@pytest.mark.parametrize(("leader", "leader_since", "up_since", "says"), [
    (0, 0.0, {}, "no leader"),
    (2, 5.0, {2: 1.0}, "request timed out, possibly due to previous leader failure"),  # elected after it came
    (2, 1.0, {2: 1.0}, "request timed out"),
    (2, 1.0, {}, "request timed out, possibly due to connection lost"),  # the leader's connection down
    (2, 1.0, {2: 4.0}, "request timed out, possibly due to connection lost"),  # ... or up only since
    (1, 1.0, {2: 1.0}, "request timed out"),  # leading, with a quorum connected (1 and 2 of 3)
    (1, 1.0, {2: 4.0, 3: 4.5}, "request timed out, possibly due to connection lost"),  # leading alone
])
def test_a_timeout_says_why_in_etcds_words(leader: int, leader_since: float, up_since: dict[int, float],
                                           says: str) -> None:
    """etcd's parseProposeCtxErr: ErrTimeoutDueToLeaderFail, ErrTimeoutDueToConnectionLost,
    ErrTimeout (submitted at t=2; member 1 of voters 1, 2, 3)."""
    from types import SimpleNamespace

    from kvraft.raft.types import ConfState
    from kvraft.server.driver import NodeDriver

    driver = SimpleNamespace(leader=leader, _leader_since=leader_since, member_id=1,
                             conf_state=ConfState(voters=frozenset({1, 2, 3})),
                             transport=SimpleNamespace(active_since=up_since.get))
    assert NodeDriver._timeout_reason(driver, 2.0) == says  # type: ignore[arg-type]

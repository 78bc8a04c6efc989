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

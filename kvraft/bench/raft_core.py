"""``python -m kvraft.bench raft-core``: the Raft core's CPU per replicated write, alone.

Three ``RawNode``s on ``MemoryLogStorage`` in one process, no I/O: one write at a time (a
lone client's put), driven as ``kvraft.server.driver`` drives the core. The leader:
``propose_batch``, ``ready``, its entries to storage; the MsgApps to both followers; then
``advance`` and the two acks stepped, the commit ``ready`` and ``advance``. Each follower:
``step`` of the MsgApp, ``has_ready``, ``ready``, its entries and hard state to storage,
``advance`` (and a second Ready when it has one). The commit-index MsgApps the leader sends
after the commit are dropped (the driver holds them for the next append to carry). Prints
one JSON line: µs per write on the leader and on one follower (means over ``--writes``
after ``--warmup``), and the index every member committed, which must be the last one
proposed (checked: a core that stops replicating fails the run)::

    python -m kvraft.bench raft-core --writes 20000
"""

from __future__ import annotations

import argparse
import json
import random
import time
from typing import Any

from kvraft.raft.config import RaftConfig
from kvraft.raft.memory_storage import MemoryLogStorage
from kvraft.raft.rawnode import RawNode
from kvraft.raft.types import Message, StateRole

__all__ = ["main", "measure"]

IDS = (1, 2, 3)


def _elect(nodes: dict[int, RawNode], stores: dict[int, MemoryLogStorage]) -> None:
    """Tick node 1 until it leads, delivering every message (nothing is lost)."""
    for _ in range(1000):
        nodes[1].tick()
        moved = True
        while moved:
            moved = False
            for node_id, node in nodes.items():
                while node.has_ready():
                    rd = node.ready()
                    if rd.entries:
                        stores[node_id].append(list(rd.entries))
                    if rd.hard_state is not None:
                        stores[node_id].set_hard_state(rd.hard_state)
                    node.advance(rd)
                    for msg in rd.messages:
                        nodes[msg.to].step(msg)
                        moved = True
        if nodes[1].status().role == StateRole.LEADER:
            return
    raise RuntimeError("no leader after 1000 ticks")


def measure(writes: int, warmup: int = 500, data_bytes: int = 150) -> dict[str, Any]:
    stores = {i: MemoryLogStorage.bootstrap(IDS) for i in IDS}
    nodes = {i: RawNode(RaftConfig(id=i, rng=random.Random(i)), stores[i]) for i in IDS}
    _elect(nodes, stores)
    leader = nodes[1]
    data = b"x" * data_bytes
    clock = time.perf_counter
    spent = {"leader": 0.0, "follower": 0.0}

    def one() -> None:
        started = clock()
        leader.propose_batch([data])
        rd = leader.ready()
        stores[1].append(list(rd.entries))
        spent["leader"] += clock() - started
        acks: list[Message] = []
        for msg in rd.messages:
            started = clock()
            follower, store = nodes[msg.to], stores[msg.to]
            follower.step(msg)
            while follower.has_ready():
                frd = follower.ready()
                if frd.entries:
                    store.append(list(frd.entries))
                if frd.hard_state is not None:
                    store.set_hard_state(frd.hard_state)
                follower.advance(frd)
                acks.extend(frd.messages)
            spent["follower"] += clock() - started
        started = clock()
        leader.advance(rd)
        for ack in acks:
            leader.step(ack)
        if leader.has_ready():
            leader.advance(leader.ready())  # the commit (its commit-index MsgApps dropped)
        spent["leader"] += clock() - started

    for _ in range(warmup):
        one()
    spent["leader"] = spent["follower"] = 0.0
    for _ in range(writes):
        one()
    last = leader.status().commit
    # the followers learn the last commit index from the next append: send one empty batch
    leader.propose_batch([b""])
    rd = leader.ready()
    for msg in rd.messages:
        nodes[msg.to].step(msg)
    committed = {i: nodes[i].status().commit for i in IDS}
    if committed[1] != last or any(committed[i] < last for i in (2, 3)) or last < warmup + writes:
        raise RuntimeError(f"the cluster did not commit every write: {committed}, last {last}")
    return {
        "writes": writes,
        "leader_us_per_write": round(spent["leader"] / writes * 1e6, 2),
        "follower_us_per_write": round(spent["follower"] / 2 / writes * 1e6, 2),
        "committed": last,
    }


def main(name: str, argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m kvraft.bench {name}", description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=20000)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--data-bytes", type=int, default=150, help="entry size (a 100-byte put's entry: ~150)")
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.writes, args.warmup, args.data_bytes)))
    return 0

"""A deterministic MVCC write workload, shared by the crash test and its child process.

``step(seed, k, kv)`` applies step ``k`` (1, 2, ...) to an ``MVCCStore`` or a
``MemoryKV``: most steps are one batch of random puts, deletes and txns (one LMDB commit
on the store), every 9th is a compaction (its own commit).
"""

from __future__ import annotations

import random
import sys
from typing import Any

from kvraft.storage.mvcc import (
    Compare,
    CompareResult,
    CompareTarget,
    PutRequest,
    RangeRequest,
    TxnRequest,
)
from kvraft.storage.mvcc.errors import MVCCError


def _ops(rng: random.Random, kv: Any) -> list[Any]:
    out: list[Any] = []
    for _ in range(rng.choice([1, 3, 20, 60])):
        key = b"key/%03d" % rng.randrange(300)
        roll = rng.random()
        if roll < 0.7:
            size = rng.choice([10, 100, 3000])
            out.append(("put", key, rng.randbytes(size), rng.choice([0, 0, 7])))
        elif roll < 0.85:
            out.append(("delete", key, key + b"\xff" if rng.random() < 0.2 else b""))
        else:
            out.append(("txn", key, rng.randbytes(20)))
    return out


def _apply(kv: Any, op: tuple[Any, ...]) -> None:
    try:
        if op[0] == "put":
            kv.put(op[1], op[2], lease=op[3])
        elif op[0] == "delete":
            kv.delete_range(op[1], op[2])
        else:
            cmp = Compare(CompareResult.GREATER, CompareTarget.VERSION, op[1], version=1)
            kv.txn_request(TxnRequest((cmp,), (PutRequest(op[1], op[2]),), (RangeRequest(op[1]),)))
    except MVCCError:
        pass


def step(seed: int, k: int, kv: Any) -> None:
    rng = random.Random(seed * 7919 + k)
    if k % 9 == 0:
        target = kv.rev - rng.randrange(0, 30)
        if target > max(kv.compact_revision, 1):
            kv.compact(target)
        return
    ops = _ops(rng, kv)
    if hasattr(kv, "batch"):
        with kv.batch():
            for op in ops:
                _apply(kv, op)
            kv.set_consistent_index(k, 1)
    else:
        for op in ops:
            _apply(kv, op)


def observe(kv: Any) -> tuple[Any, ...]:
    everything = kv.range(b"\x00", b"\x00")
    return (kv.rev, kv.compact_revision, kv.hash_kv().hash, everything.kvs)


def child_main(path: str, seed: int) -> None:  # pragma: no cover - runs in a subprocess
    from kvraft.storage.mvcc import MVCCStore

    store = MVCCStore(path, map_size=1 << 30, compaction_batch=20)
    print("ready", flush=True)
    k = 0
    while True:
        k += 1
        step(seed, k, store)
        print(k, flush=True)


if __name__ == "__main__":  # pragma: no cover
    child_main(sys.argv[1], int(sys.argv[2]))

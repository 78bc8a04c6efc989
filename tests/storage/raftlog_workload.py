"""A deterministic Raft-log write workload, shared by the crash tests and their child.

``batch(seed, k, log)`` applies batch ``k`` (1, 2, ...) to any ``WritableLogStorage``;
the same seed always produces the same batches given the same starting state, so the
parent can replay them into the reference storage to know every synced state
(``synced_states``). ``kill_writer`` runs this file as the child that writes and syncs
batch after batch, and SIGKILLs it.
"""

from __future__ import annotations

import hashlib
import random
import sys
from pathlib import Path
from typing import Any

from sigkill import kill_after

from kvraft.raft.memory_storage import MemoryLogStorage
from kvraft.raft.types import ConfState, Entry, HardState


def batch(seed: int, k: int, log: Any) -> None:
    rng = random.Random(seed * 100_003 + k)
    first, last = log.first_index(), log.last_index()
    snap = log.snapshot().metadata.index
    term = max(log.initial_state()[0].term, 1)
    lo = last + 1
    if last > snap + 3 and rng.random() < 0.25:  # a new leader overwrites a suffix
        lo = rng.randint(snap + 1, last)
        term += 1
    n = rng.choice([1, 5, 40, 200])
    big = rng.random() < 0.2
    entries = [
        Entry(term=term, index=i, data=rng.randbytes(rng.randint(3000, 9000) if big else rng.randint(0, 120)))
        for i in range(lo, lo + n)
    ]
    log.append(entries)
    new_last = entries[-1].index
    commit = max(snap, rng.randint(max(first - 1, new_last - 50), new_last))
    log.set_hard_state(HardState(term=term, vote=rng.randint(1, 3), commit=commit))
    if k % 7 == 0 and commit > snap:
        log.create_snapshot(commit, ConfState(voters=frozenset({1, 2, 3})), b"snap@%d" % commit)
        log.compact(max(first, commit - 10))


def write_marked(log: Any, batches: int, hard_term: int = 1) -> None:
    """``batches`` synced batches of 10 entries whose data starts ``PAYLOAD-<index:06d>``
    (bytes the corruption tests find and damage), each with a hard state of ``hard_term``;
    then close the log."""
    for b in range(batches):
        log.append([
            Entry(term=1, index=b * 10 + i + 1, data=b"PAYLOAD-%06d" % (b * 10 + i + 1) + bytes(40))
            for i in range(10)
        ])
        log.set_hard_state(HardState(term=hard_term, vote=3, commit=b * 10))
        log.sync()
    log.close()


def observe(log: Any) -> tuple[Any, ...]:
    first, last = log.first_index(), log.last_index()
    digest = hashlib.sha256()
    for e in log.entries(first, last + 1):
        digest.update(b"%d/%d/%d/%d:" % (e.index, e.term, e.type, len(e.data)) + e.data)
    hard, conf = log.initial_state()
    snap = log.snapshot()
    # (the durable logs hold only the metadata in memory and read the data from disk)
    data = log.snapshot_data() if hasattr(log, "snapshot_data") else snap.data
    return (first, last, digest.hexdigest(), hard, conf, snap.metadata, data)


def open_log(path: str, kind: str) -> Any:
    """The durable log under test: ``lmdb`` or ``wal`` (small segments, so it rotates)."""
    if kind == "wal":
        from kvraft.storage.wal import WalLogStorage

        return WalLogStorage(path, segment_bytes=256 << 10)
    from kvraft.storage.raft_log import LmdbLogStorage

    return LmdbLogStorage(path, map_size=1 << 30)


def kill_writer(path: Path, seed: int, kind: str, after_s: float) -> int:
    """Run this file as the writer (``child_main``) on ``path`` and SIGKILL it ``after_s``
    seconds after it is ready; the last batch it acknowledged (synced), 0 if none."""
    return kill_after(__file__, [str(path), str(seed), kind], after_s)


def synced_states(seed: int, last: int) -> dict[int, tuple[Any, ...]]:
    """``observe`` of the reference log after each batch ``k`` in ``0..last`` of ``seed``."""
    ref = MemoryLogStorage()
    states = {0: observe(ref)}
    for k in range(1, last + 1):
        batch(seed, k, ref)
        states[k] = observe(ref)
    return states


def child_main(path: str, seed: int, kind: str = "lmdb") -> None:  # pragma: no cover - runs in a subprocess
    log = open_log(path, kind)
    print("ready", flush=True)
    k = 0
    while True:
        k += 1
        batch(seed, k, log)
        log.sync()
        print(k, flush=True)


if __name__ == "__main__":  # pragma: no cover
    child_main(sys.argv[1], int(sys.argv[2]), *sys.argv[3:4])

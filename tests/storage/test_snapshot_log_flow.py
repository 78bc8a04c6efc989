"""The whole snapshot flow across both stores: a leader's state machine is snapshotted
at an applied index, its Raft log is compacted behind it, and a new member installs the
Raft snapshot and restores the state machine from the stream."""

from __future__ import annotations

from pathlib import Path

import msgpack

from kvraft.raft.types import ConfState, Entry, HardState
from kvraft.storage import LmdbLogStorage, MVCCStore


def test_snapshot_compact_and_install(tmp_path: Path) -> None:
    log = LmdbLogStorage(tmp_path / "leader-raft.lmdb", map_size=1 << 26)
    store = MVCCStore(tmp_path / "leader-kv", map_size=1 << 26, sync=False)
    entries = [Entry(term=1, index=i, data=msgpack.packb([b"k%03d" % i, b"v%d" % i])) for i in range(1, 201)]
    log.append(entries)
    log.set_hard_state(HardState(term=1, vote=1, commit=200))
    log.sync()
    with store.batch():  # apply, recording the applied index with the writes
        for e in entries:
            key, value = msgpack.unpackb(e.data)
            store.put(key, value)
        store.set_consistent_index(200, 1)
    cs = ConfState(voters=frozenset({1, 2, 3}))
    stream = store.snapshot()
    chunks = list(stream)
    assert stream.consistent_index == (200, 1)
    snap = log.create_snapshot(200, cs, msgpack.packb({"revision": stream.revision, "sha256": stream.sha256}))
    log.compact(150)  # keep a tail for followers that are only a little behind
    log.sync()
    assert (log.first_index(), log.last_index(), log.term(150)) == (151, 200, 1)

    member_log = LmdbLogStorage(tmp_path / "member-raft.lmdb", map_size=1 << 26)
    member = MVCCStore(tmp_path / "member-kv", map_size=1 << 26, sync=False)
    member_log.apply_snapshot(snap)
    report = member.restore(chunks)
    assert report.sha256 == msgpack.unpackb(snap.data)["sha256"]
    assert member.consistent_index == (snap.metadata.index, snap.metadata.term)
    assert member.hash_kv() == store.hash_kv()
    assert member_log.initial_state()[1] == cs
    member_log.append([Entry(term=2, index=201, data=msgpack.packb([b"k201", b"x"]))])
    member_log.sync()
    assert (member_log.first_index(), member_log.last_index()) == (201, 201)
    for closeable in (log, store, member_log, member):
        closeable.close()

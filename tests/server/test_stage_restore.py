"""A received snapshot is installed with the store's rebuild in a worker thread: the member's
event loop goes on meanwhile, reads see the state before it until the switch, nothing else is
applied (inline or queued) until it is done, and its data is read in place, not copied."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import msgpack
import pytest

from kvraft.apply.ops import PutOp, RangeOp, encode_entry
from kvraft.apply.state_machine import StateMachine, split_snapshot
from kvraft.raft.types import ConfState, Entry, Snapshot, SnapshotMetadata
from kvraft.server.apply_stage import ApplyStage
from kvraft.server.membership import Membership
from kvraft.server.reads import AppliedWaiters


def _machine(path: Path) -> StateMachine:
    return StateMachine(path, quota_bytes=1 << 30, member_id=1, max_txn_ops=128, membership=Membership())


def _value(sm: StateMachine, key: bytes) -> bytes | None:
    kvs = sm.range(RangeOp(key=key)).kvs
    return kvs[0].value if kvs else None


def _leader_snapshot(tmp_path: Path, values: int) -> Snapshot:
    source = _machine(tmp_path / "leader")
    source.apply_ops([(i, PutOp(b"k%04d" % i, b"v" * 2000)) for i in range(values)], 50, 3)
    data = source.snapshot_data()
    source.close()
    return Snapshot(SnapshotMetadata(index=50, term=3, conf_state=ConfState(voters=frozenset({1, 2}))), data)


def test_split_snapshot_reads_the_store_stream_in_place(tmp_path: Path) -> None:
    snapshot = _leader_snapshot(tmp_path, 1200)  # ~2.4 MB: three pieces
    members, pieces = split_snapshot(snapshot.data)
    pieces = list(pieces)
    assert len(pieces) == 3 and all(isinstance(p, memoryview) and p.obj is snapshot.data for p in pieces)
    version, members_again, stream = msgpack.unpackb(snapshot.data, raw=False)
    assert members == members_again and b"".join(pieces) == stream
    packer = msgpack.Packer(use_bin_type=True)
    for bad, why in [
        (snapshot.data[:-1], "stream is"),  # truncated
        (packer.pack([2, members, b"x"]), "unknown snapshot format"),
        (packer.pack([1, members]), "unknown snapshot format"),
        (packer.pack([1, members, "text"]), "not a bin"),
        (snapshot.data[:3], "truncated"),
    ]:
        with pytest.raises(ValueError, match=why):
            split_snapshot(bad)


@pytest.mark.asyncio
async def test_the_loop_runs_while_the_store_is_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot = _leader_snapshot(tmp_path, 50)
    follower = _machine(tmp_path / "follower")
    follower.apply_ops([(1, PutOp(b"old", b"before"))], 10, 2)
    reloaded: list[int] = []
    follower.after_restore.append(lambda: reloaded.append(follower.applied_index()))
    rebuilding, release = threading.Event(), threading.Event()
    restore = follower.store.restore

    def held_restore(chunks: object, file: bool = False) -> object:
        rebuilding.set()
        assert release.wait(10)
        return restore(chunks, file=file)  # type: ignore[arg-type]

    monkeypatch.setattr(follower.store, "restore", held_restore)
    conf = ConfState(voters=frozenset({1}))
    stage = ApplyStage(follower, {}, AppliedWaiters(), conf, lambda: None)
    stage.applied.applied = 10
    task = asyncio.create_task(stage.run())
    try:
        stage.submit_snapshot(snapshot)
        later = (Entry(3, 51, data=encode_entry(7, PutOp(b"after", b"x"))),)
        stage.submit_entries(later, snapshot.metadata.conf_state)
        while not rebuilding.is_set():
            await asyncio.sleep(0.01)
        # the loop runs; the stage is busy (no inline apply), reads see the state before it
        for _ in range(5):
            await asyncio.sleep(0.01)
        assert not stage.idle() and stage.applying_snapshot == 1
        assert _value(follower, b"old") == b"before" and stage.applied.applied == 10
        with pytest.raises(RuntimeError):
            stage.apply_now(later, conf)
        release.set()
        while stage.applied.applied < 51:
            await asyncio.sleep(0.01)
        assert _value(follower, b"old") is None and _value(follower, b"k0000") == b"v" * 2000
        assert _value(follower, b"after") == b"x"
        assert reloaded == [50] and stage.snapshots_applied == 1 and stage.idle()
        assert (stage.conf_state, stage.applied_term) == (snapshot.metadata.conf_state, 3)
    finally:
        release.set()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        follower.close()


@pytest.mark.asyncio
async def test_a_snapshot_that_fails_to_restore_stops_the_stage(tmp_path: Path) -> None:
    follower = _machine(tmp_path / "follower")
    follower.apply_ops([(1, PutOp(b"old", b"before"))], 10, 2)
    stage = ApplyStage(follower, {}, AppliedWaiters(), ConfState(voters=frozenset({1})), lambda: None)
    stage.applied.applied = 10
    task = asyncio.create_task(stage.run())
    bad = Snapshot(SnapshotMetadata(index=50, term=3), msgpack.packb([1, [[], []], b"not a store stream"]))
    stage.submit_snapshot(bad)
    with pytest.raises(Exception, match="snapshot"):
        await task
    assert stage.failed is not None and not stage.idle() and stage.applying_snapshot == 0
    assert _value(follower, b"old") == b"before" and stage.applied.applied == 10  # unchanged
    follower.close()


def test_a_stop_before_the_end_of_a_restore_leaves_a_consistent_member(tmp_path: Path) -> None:
    """The registry (its own file) is restored before the store is switched: a member that
    stops after the switch (the stage cancelled while the thread finished) has the snapshot's
    store and the snapshot's registry; one that stops before it has neither, and a store
    behind the log's snapshot, which its next start restores again."""
    snapshot = _leader_snapshot(tmp_path, 5)
    registry = tmp_path / "follower-members.json"
    follower = StateMachine(tmp_path / "follower", quota_bytes=1 << 30, member_id=1, max_txn_ops=128,
                            membership=Membership(registry))
    follower.apply_ops([(1, PutOp(b"old", b"before"))], 10, 2)
    work = follower.restore_begin(snapshot)
    work()  # ... and the member stops here, restore_end never runs
    follower.close()
    again = Membership(registry)
    assert again.load() and again.to_wire() == split_snapshot(snapshot.data)[0]
    reopened = _machine(tmp_path / "follower")
    assert _value(reopened, b"k0000") == b"v" * 2000 and _value(reopened, b"old") is None
    reopened.close()


def test_the_streamed_format_restores_the_same_state(tmp_path: Path) -> None:
    """``[2, members]`` then the store's stream, unwrapped (what a leader streams to a member
    that announced ``snapshot-stream``): split and restored as the bin format is."""
    source = _machine(tmp_path / "leader")
    source.apply_ops([(i, PutOp(b"k%04d" % i, b"v" * 2000)) for i in range(1200)], 50, 3)
    pieces = source.snapshot_stream_source()
    source.apply_ops([(1, PutOp(b"after", b"pin"))], 51, 3)  # after the pin: not in it
    data = b"".join(pieces)
    assert data[:1] == b"\x92"  # (a two-field array)
    members, views = split_snapshot(data)
    assert members == source.membership.to_wire() and len(list(views)) == 3
    follower = _machine(tmp_path / "follower")
    follower.restore(Snapshot(SnapshotMetadata(index=50, term=3), data))
    assert _value(follower, b"k1199") == b"v" * 2000 and _value(follower, b"after") is None
    follower.close()
    source.close()

"""Group commit across apply batches (``MVCCStore.hold/publish/release``, driven by
``StateMachine.apply_ops``): units are visible on the applying thread and to listeners at
once, reach the disk in one commit, roll back together, and a crash before the commit
leaves the store at the last commit (the Raft log re-applies the rest)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from kvraft.apply import state_machine as sm_module
from kvraft.apply.chain import Applier
from kvraft.apply.ops import DeleteRangeOp, PutOp, RangeOp
from kvraft.apply.state_machine import StateMachine
from kvraft.raft.types import Snapshot, SnapshotMetadata
from kvraft.server.membership import Membership
from kvraft.storage.mvcc import RangeRequest
from kvraft.storage.mvcc import ops as mvcc_ops


class Boom(Applier):
    """Raises an unexpected error for the key ``boom`` (after the unit's earlier ops)."""

    def __init__(self, inner: Applier) -> None:
        self.inner = inner

    def apply(self, op: Any) -> Any:
        if isinstance(op, PutOp) and op.key == b"boom":
            raise RuntimeError("disk on fire")
        return self.inner.apply(op)


def machine(path: Path, **kw: Any) -> StateMachine:
    return StateMachine(path, quota_bytes=1 << 30, member_id=1, max_txn_ops=128, membership=Membership(), **kw)


def value_elsewhere(sm: StateMachine, key: bytes) -> tuple[bytes | None, int]:
    """(value, header revision) as a reader on another thread sees them."""
    out: list[tuple[bytes | None, int]] = []

    def read() -> None:
        result = sm.range(RangeOp(key))
        out.append((result.kvs[0].value if result.kvs else None, result.revision))

    thread = threading.Thread(target=read)
    thread.start()
    thread.join()
    return out[0]


def test_held_units_are_read_here_at_once_and_elsewhere_after_the_commit(tmp_path: Path) -> None:
    sm = machine(tmp_path / "sm")
    try:
        sm.apply_ops([(1, PutOp(b"a", b"1"))], 5, 2)
        sm.apply_ops([(2, PutOp(b"b", b"2")), (3, PutOp(b"a", b"3"))], 7, 2)
        assert sm.holding
        assert sm.revision() == 4 and sm.applied_index() == 7
        here = sm.range(RangeOp(b"a"))
        assert here.kvs[0].value == b"3" and here.revision == 4
        assert value_elsewhere(sm, b"a") == (None, 1)  # the disk: nothing committed yet
        sm.commit()
        assert not sm.holding and sm.commits == 1
        assert value_elsewhere(sm, b"a") == (b"3", 4)
        assert sm.store.range(b"b").kvs[0].mod_revision == 3
    finally:
        sm.close()


def test_listeners_get_each_unit_when_it_is_applied_and_can_read_it(tmp_path: Path) -> None:
    sm = machine(tmp_path / "sm")
    seen: list[tuple[int, list[bytes], bytes | None]] = []

    def listener(batches: list[tuple[int, list[Any]]]) -> None:
        for rev, events in batches:
            with sm.store.listener_read() as view:
                prev = mvcc_ops.apply_range(view, RangeRequest(b"a", revision=rev - 1)).kvs
            seen.append((rev, [ev.kv.key for ev in events], prev[0].value if prev else None))

    sm.store.add_listener(listener)
    try:
        sm.apply_ops([(1, PutOp(b"a", b"1"))], 5, 2)
        assert seen == [(2, [b"a"], None)]
        sm.apply_ops([(2, PutOp(b"a", b"2")), (3, PutOp(b"c", b"3"))], 6, 2)
        assert seen[1:] == [(3, [b"a"], b"1"), (4, [b"c"], b"2")]
        assert sm.holding
        sm.commit()
        assert len(seen) == 3  # the commit does not announce them again
    finally:
        sm.close()


def test_a_failure_rolls_back_every_held_unit(tmp_path: Path) -> None:
    sm = machine(tmp_path / "sm", wrap=Boom)
    try:
        sm.apply_ops([(1, PutOp(b"kept", b"1"))], 3, 1)
        sm.commit()
        sm.apply_ops([(2, PutOp(b"a", b"1"))], 4, 1)
        with pytest.raises(RuntimeError, match="disk on fire"):
            sm.apply_ops([(3, PutOp(b"b", b"2")), (4, PutOp(b"boom", b"x"))], 6, 1)
        assert not sm.holding
        assert sm.revision() == 2 and sm.applied_index() == 3
        assert sm.range(RangeOp(b"a")).kvs == () and sm.range(RangeOp(b"b")).kvs == ()
        sm.apply_ops([(5, PutOp(b"a", b"again"))], 4, 1)  # the log re-applies from index 4
        sm.commit()
        result = sm.range(RangeOp(b"a"))
        assert result.kvs[0].value == b"again" and result.kvs[0].mod_revision == 3
    finally:
        sm.close()


def test_units_commit_by_themselves_after_the_interval_or_the_op_limit(tmp_path: Path, monkeypatch: Any) -> None:
    sm = machine(tmp_path / "sm")
    try:
        monkeypatch.setattr(sm_module, "COMMIT_OPS", 3)
        sm.apply_ops([(1, PutOp(b"a", b"1")), (2, PutOp(b"b", b"1"))], 2, 1)
        assert sm.holding
        sm.apply_ops([(3, PutOp(b"c", b"1"))], 3, 1)
        assert not sm.holding and sm.commits == 1
        monkeypatch.setattr(sm_module, "COMMIT_OPS", 10_000)
        monkeypatch.setattr(sm_module, "COMMIT_INTERVAL_S", 0.05)
        sm.apply_ops([(4, PutOp(b"d", b"1"))], 4, 1)
        assert sm.holding
        time.sleep(0.06)
        sm.apply_ops([(5, PutOp(b"e", b"1"))], 5, 1)
        assert not sm.holding and sm.commits == 2
    finally:
        sm.close()


def test_snapshot_flush_and_close_commit_what_is_held(tmp_path: Path) -> None:
    sm = machine(tmp_path / "sm")
    sm.apply_ops([(1, PutOp(b"a", b"1"))], 5, 2)
    data = sm.snapshot_data()
    assert not sm.holding
    other = machine(tmp_path / "other")
    try:
        other.restore(Snapshot(SnapshotMetadata(index=5, term=2), data))
        assert other.range(RangeOp(b"a")).kvs[0].value == b"1"
    finally:
        other.close()
    sm.apply_ops([(2, PutOp(b"b", b"2"))], 6, 2)
    sm.close()
    reopened = machine(tmp_path / "sm")
    try:
        assert reopened.applied_index() == 6
        assert reopened.range(RangeOp(b"b")).kvs[0].value == b"2"
    finally:
        reopened.close()


CRASHING_CHILD = """
import os, sys
from kvraft.apply.ops import PutOp
from kvraft.apply.state_machine import StateMachine
from kvraft.server.membership import Membership
sm = StateMachine(sys.argv[1], quota_bytes=1 << 30, member_id=1, max_txn_ops=128, membership=Membership())
sm.apply_ops([(1, PutOp(b"a", b"committed"))], 10, 3)
sm.commit()
sm.apply_ops([(2, PutOp(b"a", b"held")), (3, PutOp(b"b", b"held"))], 12, 3)
assert sm.holding
os._exit(0)  # killed before the commit
"""


def test_a_crash_before_the_commit_leaves_the_last_commit(tmp_path: Path) -> None:
    path = tmp_path / "sm"
    subprocess.run([sys.executable, "-c", CRASHING_CHILD, str(path)], check=True, timeout=120)
    sm = machine(path)
    try:
        assert sm.applied_index() == 10 and sm.revision() == 2
        assert sm.range(RangeOp(b"a")).kvs[0].value == b"committed"
        assert sm.range(RangeOp(b"b")).kvs == ()
    finally:
        sm.close()


def test_the_committed_revision_reaches_the_disk_for_snapshots_and_reopening(tmp_path: Path) -> None:
    """The current revision is written with the held units (it was left out when every unit
    had been published before the commit: snapshots then said revision 1)."""
    from kvraft.storage.snapshot import SnapshotStream

    sm = machine(tmp_path / "sm")
    try:
        sm.apply_ops([(1, PutOp(b"a", b"1"))], 5, 2)
        sm.apply_ops([(2, PutOp(b"b", b"2")), (3, PutOp(b"a", b"3"))], 7, 2)
        sm.commit()
        stream = SnapshotStream(sm.store.backend)
        try:
            assert stream.revision == 4 and stream.consistent_index == (7, 2)
        finally:
            stream.close()
        sm.apply_ops([(4, DeleteRangeOp(b"b"))], 8, 2)  # the newest revision holds no live key
        sm.commit()
    finally:
        sm.close()
    sm = machine(tmp_path / "sm")
    try:
        assert sm.revision() == 5 and sm.applied_index() == 8
    finally:
        sm.close()


def test_a_snapshot_source_pins_the_state_and_builds_in_another_thread(tmp_path: Path) -> None:
    """``snapshot_source`` commits and pins the state where it is called; the build (in
    another thread here, as the driver runs it) gives exactly what ``packb`` of
    ``[1, members, stream]`` gave, however many writes come after the pin, and restores."""
    import msgpack

    from kvraft.apply.state_machine import SNAPSHOT_FORMAT, _bin_header

    for n in (0, 5, 255, 256, 65535, 65536, 300_000):
        assert _bin_header(n) + b"y" * n == msgpack.packb(b"y" * n, use_bin_type=True)
    sm = machine(tmp_path / "sm")
    try:
        for i in range(300):
            sm.apply_ops([(1, PutOp(b"k%03d" % i, b"v" * 500))], i + 1, 1)
        build = sm.snapshot_source()
        assert not sm.holding
        sm.apply_ops([(1, PutOp(b"after", b"1"))], 301, 1)  # after the pin: not in the snapshot
        sm.commit()
        out: list[list[bytes]] = []
        worker = threading.Thread(target=lambda: out.append(build()))
        worker.start()
        worker.join(30)
        (pieces,) = out
        assert len(pieces) > 1  # (sent as they are: the head, then the stream's chunks)
        data = b"".join(pieces)
        version, members, blob = msgpack.unpackb(data, raw=False)
        assert version == SNAPSHOT_FORMAT and members == sm.membership.to_wire()
        assert data == msgpack.packb([SNAPSHOT_FORMAT, members, blob], use_bin_type=True)
        other = machine(tmp_path / "other")
        try:
            other.restore(Snapshot(SnapshotMetadata(index=300, term=1), data))
            assert other.range(RangeOp(b"k299")).kvs[0].value == b"v" * 500
            assert not other.range(RangeOp(b"after")).kvs
            assert other.applied_index() == 300
        finally:
            other.close()
    finally:
        sm.close()

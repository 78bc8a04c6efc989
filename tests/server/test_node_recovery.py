"""A member restarted after installing a received snapshot in its log but before restoring
its store from it (a crash between the two) restores the store at startup; with the WAL
log, and with the LMDB log of a data directory from before the WAL."""

from __future__ import annotations

import shutil

import msgpack
import pytest

from kvraft.apply.ops import PutOp, RangeOp
from kvraft.apply.state_machine import SNAPSHOT_PREPARED_FORMAT, StateMachine
from kvraft.raft.types import ConfState, Entry, HardState, Snapshot, SnapshotMetadata
from kvraft.server.config import parse_config
from kvraft.server.local import free_port
from kvraft.server.membership import Membership
from kvraft.server.node import Node
from kvraft.storage.backend import Backend
from kvraft.storage.errors import StorageCorruptionError
from kvraft.storage.raft_log import LmdbLogStorage
from kvraft.storage.snapshot import prepared_name, restore_generation
from kvraft.storage.wal import WalLogStorage


@pytest.mark.parametrize("kind", ["wal", "lmdb"])
def test_store_is_restored_from_the_logs_snapshot(tmp_path, kind) -> None:
    source = StateMachine(tmp_path / "source", quota_bytes=1 << 30, member_id=1, max_txn_ops=128, membership=Membership())
    source.apply_ops([(1, PutOp(b"k", b"from-snapshot")), (2, PutOp(b"j", b"too"))], 10, 2)
    data = source.snapshot_data()
    source.close()

    peer = f"http://127.0.0.1:{free_port()}"
    config = parse_config([
        "--name", "n", "--data-dir", str(tmp_path / "member"),
        "--listen-client-urls", f"http://127.0.0.1:{free_port()}", "--advertise-client-urls", "http://127.0.0.1:1",
        "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", f"n={peer}",
    ])
    node = Node(config)
    member_id = node.member_id
    node.raft_log.close()
    node.state.close()

    if kind == "wal":
        log = WalLogStorage(tmp_path / "member" / "raft.wal")
        assert not log.is_empty()  # the node bootstrapped the WAL, not an LMDB log
    else:  # an older data directory: its log is raft.lmdb, and the node keeps using it
        shutil.rmtree(tmp_path / "member" / "raft.wal")
        log = LmdbLogStorage.bootstrap(tmp_path / "member" / "raft.lmdb", [member_id])
    meta = SnapshotMetadata(index=10, term=2, conf_state=ConfState(voters=frozenset({member_id})))
    log.apply_snapshot(Snapshot(meta, data))
    log.set_hard_state(HardState(term=2, vote=0, commit=10))  # as the driver persists a Ready
    log.sync()
    log.close()

    node = Node(config)
    try:
        assert isinstance(node.raft_log, WalLogStorage if kind == "wal" else LmdbLogStorage)
        assert node.state.applied_index() == 10
        result = node.state.range(RangeOp(key=b"k"))
        assert [kv.value for kv in result.kvs] == [b"from-snapshot"]
    finally:
        node.raft_log.close()
        node.state.close()


def _config(tmp_path):
    peer = f"http://127.0.0.1:{free_port()}"
    return parse_config([
        "--name", "n", "--data-dir", str(tmp_path / "member"),
        "--listen-client-urls", f"http://127.0.0.1:{free_port()}", "--advertise-client-urls", "http://127.0.0.1:1",
        "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", f"n={peer}",
    ])


def test_a_store_older_than_the_members_own_snapshot_is_refused(tmp_path) -> None:
    """The member's own snapshots hold no data (its store is the state, flushed before the
    log is compacted), so a store behind one cannot be rebuilt: the start is refused with
    what to do, not served from a state missing the compacted entries."""
    config = _config(tmp_path)
    node = Node(config)
    member_id, applied = node.member_id, node.state.applied_index()
    node.raft_log.close()
    node.state.close()
    log = WalLogStorage(tmp_path / "member" / "raft.wal")
    last = log.last_index()
    log.append([Entry(term=2, index=i) for i in range(last + 1, last + 11)])
    log.set_hard_state(HardState(term=2, vote=member_id, commit=last + 10))
    log.create_snapshot(last + 10, ConfState(voters=frozenset({member_id})), b"")
    log.compact(last + 10)
    log.sync()
    log.close()
    with pytest.raises(StorageCorruptionError, match=f"applied index {applied} .* snapshot at {last + 10}, which holds no data"):
        Node(config)


def test_flush_records_entries_that_wrote_nothing(tmp_path) -> None:
    """A leader's no-op after the last write changes nothing in the store, but a snapshot
    taken at its index says the store holds it: ``flush`` records the index."""
    sm = StateMachine(tmp_path / "sm", quota_bytes=1 << 30, member_id=1, max_txn_ops=128, membership=Membership())
    sm.apply_ops([(1, PutOp(b"k", b"v"))], 10, 2)
    sm.flush(12, 3)
    assert (sm.applied_index(), sm.applied_term()) == (12, 3)
    sm.flush(11, 3)  # never backwards
    assert sm.applied_index() == 12
    sm.close()
    again = StateMachine(tmp_path / "sm", quota_bytes=1 << 30, member_id=1, max_txn_ops=128, membership=Membership())
    assert again.applied_index() == 12
    assert [kv.value for kv in again.range(RangeOp(key=b"k")).kvs] == [b"v"]
    again.close()


def _received_store(tmp_path, member_id: int, index: int) -> bytes:
    """A leader's streamed snapshot built into ``prepared_name(index)`` in the member's store
    directory, as a follower's receiver does; the data its MsgSnap then carries."""
    source = StateMachine(tmp_path / "source", quota_bytes=1 << 30, member_id=1, max_txn_ops=128, membership=Membership())
    source.apply_ops([(1, PutOp(b"k", b"from-received-store"))], index - 2, 2)
    head, *stream = list(source.snapshot_stream_source())
    members = msgpack.unpackb(head, raw=False)[1]
    source.close()
    backend = Backend(tmp_path / "member" / "mvcc.lmdb")
    report = restore_generation(backend, stream, path=backend.directory / prepared_name(index))
    backend.close()
    return msgpack.packb([SNAPSHOT_PREPARED_FORMAT, members, prepared_name(index), report.sha256], use_bin_type=True)


@pytest.mark.parametrize("file", ["kept", "lost"])
def test_a_received_store_recorded_but_not_installed_is_installed_at_start(tmp_path, file) -> None:
    """A crash after the WAL recorded a snapshot whose store was built as it arrived, before the
    apply stage installed it: the next start installs the file the record names, and deletes
    other received stores (an older one never taken); without the file the start is refused."""
    config = _config(tmp_path)
    node = Node(config)
    member_id = node.member_id
    node.raft_log.close()
    node.state.close()
    log = WalLogStorage(tmp_path / "member" / "raft.wal")
    index = log.last_index() + 20
    log.close()
    data = _received_store(tmp_path, member_id, index)
    stale = tmp_path / "member" / "mvcc.lmdb" / prepared_name(index - 15)
    stale.write_bytes(b"never taken")
    if file == "lost":
        (tmp_path / "member" / "mvcc.lmdb" / prepared_name(index)).unlink()
    log = WalLogStorage(tmp_path / "member" / "raft.wal")
    meta = SnapshotMetadata(index=index, term=2, conf_state=ConfState(voters=frozenset({member_id})))
    log.apply_snapshot(Snapshot(meta, data))
    log.set_hard_state(HardState(term=2, vote=0, commit=index))
    log.sync()
    log.close()
    if file == "lost":
        with pytest.raises(StorageCorruptionError, match=f"store of the snapshot at {index} .* is missing"):
            Node(config)
        return
    node = Node(config)
    try:
        assert node.state.applied_index() == index
        assert [kv.value for kv in node.state.range(RangeOp(key=b"k")).kvs] == [b"from-received-store"]
        assert not stale.exists() and not list((tmp_path / "member" / "mvcc.lmdb").glob("snapshot-*"))
    finally:
        node.raft_log.close()
        node.state.close()

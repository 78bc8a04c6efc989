"""A member restarted after installing a received snapshot in its log but before restoring
its store from it (a crash between the two) restores the store at startup; with the WAL
log, and with the LMDB log of a data directory from before the WAL."""

from __future__ import annotations

import shutil

import pytest

from kvraft.apply.ops import PutOp, RangeOp
from kvraft.apply.state_machine import StateMachine
from kvraft.raft.types import ConfState, HardState, Snapshot, SnapshotMetadata
from kvraft.server.config import parse_config
from kvraft.server.local import free_port
from kvraft.server.membership import Membership
from kvraft.server.node import Node
from kvraft.storage.raft_log import LmdbLogStorage
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

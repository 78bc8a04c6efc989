"""``--force-new-cluster``'s rewrite of the Raft log (kvraft/server/force_new.py), on both
durable log formats, checked after a reopen."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import msgpack
import pytest

from kvraft.apply.ops import op_from_wire
from kvraft.raft.types import ConfChange, ConfChangeType, Entry, EntryType, HardState
from kvraft.server.force_new import (
    ForceNewClusterError,
    force_new_cluster,
    log_members,
    require_log,
)
from kvraft.storage.raft_log import LmdbLogStorage
from kvraft.storage.wal import WalLogStorage

Opener = Callable[[Path], WalLogStorage | LmdbLogStorage]
FORMATS: dict[str, tuple[str, Opener, Callable[..., WalLogStorage | LmdbLogStorage]]] = {
    "wal": ("raft.wal", WalLogStorage, WalLogStorage.bootstrap),
    "lmdb": ("raft.lmdb", LmdbLogStorage, LmdbLogStorage.bootstrap),
}


def _cc(kind: ConfChangeType, node: int, term: int, index: int, joint: bool = False) -> Entry:
    changes = ((kind, node), (ConfChangeType.ADD_VOTER, 99)) if joint else ((kind, node),)
    return Entry(term=term, index=index, type=EntryType.CONF_CHANGE, data=ConfChange(changes=changes).encode())


def _log(tmp_path: Path, fmt: str, tail: list[Entry], commit: int, term: int = 3):
    """Founders 1, 2, 3; ``tail`` appended after the bootstrap entries; hard state
    (term, vote 1, commit)."""
    name, _open, bootstrap = FORMATS[fmt]
    raft_log = bootstrap(tmp_path / name, [1, 2, 3])
    start = raft_log.last_index() + 1
    entries = [Entry(term=e.term, index=start + i, type=e.type, data=e.data) for i, e in enumerate(tail)]
    if entries:
        raft_log.append(entries)
    raft_log.set_hard_state(HardState(term=term, vote=1, commit=start - 1 + commit))
    raft_log.sync()
    return raft_log, start


def _reopen(tmp_path: Path, fmt: str, raft_log):
    raft_log.close()
    name, open_, _ = FORMATS[fmt]
    return open_(tmp_path / name)


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_whole_log_is_kept_and_the_others_are_removed_by_committed_entries(tmp_path: Path, fmt: str) -> None:
    tail = [
        Entry(term=2, index=0, data=b"committed-1"),
        _cc(ConfChangeType.ADD_LEARNER, 4, 2, 0),   # committed: 4 is a member
        Entry(term=3, index=0, data=b"committed-2"),
        _cc(ConfChangeType.REMOVE_NODE, 2, 3, 0),   # past the commit index, kept: 2 is gone
        Entry(term=3, index=0, data=b"maybe-acknowledged"),
    ]
    raft_log, start = _log(tmp_path, fmt, tail, commit=3)
    last = start + 4
    assert log_members(raft_log) == {1, 3, 4}

    assert force_new_cluster(raft_log, 1) == [3, 4]
    raft_log = _reopen(tmp_path, fmt, raft_log)
    try:
        hard, _ = raft_log.initial_state()
        assert hard == HardState(term=3, vote=1, commit=last + 2)
        assert raft_log.last_index() == last + 2
        kept = raft_log.entries(start, last + 1)
        assert [e.data for e in kept if e.type == EntryType.NORMAL] == [
            b"committed-1", b"committed-2", b"maybe-acknowledged"]
        removed = []
        for entry in raft_log.entries(last + 1, last + 3):
            assert (entry.type, entry.term) == (EntryType.CONF_CHANGE, 3)
            cc = ConfChange.decode(entry.data)
            (kind, node), = cc.changes
            assert kind == ConfChangeType.REMOVE_NODE
            _request, op_wire = msgpack.unpackb(cc.context, raw=False)
            op = op_from_wire(op_wire)
            assert (op.action, op.member_id) == ("remove", node)
            removed.append(node)
        assert removed == [3, 4]
        assert log_members(raft_log) == {1}
        # forcing again (the flag left on) changes nothing
        assert force_new_cluster(raft_log, 1) == []
        assert raft_log.last_index() == last + 2
        assert raft_log.initial_state()[0].commit == last + 2
    finally:
        raft_log.close()


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_lone_member_commits_its_tail(tmp_path: Path, fmt: str) -> None:
    name, _open, bootstrap = FORMATS[fmt]
    raft_log = bootstrap(tmp_path / name, [1])
    start = raft_log.last_index() + 1
    raft_log.append([Entry(term=2, index=start, data=b"a"), Entry(term=2, index=start + 1, data=b"b")])
    raft_log.set_hard_state(HardState(term=2, vote=1, commit=start))
    raft_log.sync()
    assert force_new_cluster(raft_log, 1) == []
    raft_log = _reopen(tmp_path, fmt, raft_log)
    try:
        assert raft_log.last_index() == start + 1
        assert raft_log.entries(start + 1, start + 2)[0].data == b"b"
        assert raft_log.initial_state()[0].commit == start + 1
    finally:
        raft_log.close()


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_removed_member_is_refused(tmp_path: Path, fmt: str) -> None:
    raft_log, _ = _log(tmp_path, fmt, [_cc(ConfChangeType.REMOVE_NODE, 1, 2, 0)], commit=1)
    last = raft_log.last_index()
    try:
        with pytest.raises(ForceNewClusterError, match="not in its cluster's configuration"):
            force_new_cluster(raft_log, 1)
        assert raft_log.last_index() == last  # nothing written
    finally:
        raft_log.close()


def test_a_joint_configuration_is_refused(tmp_path: Path) -> None:
    raft_log, _ = _log(tmp_path, "wal", [_cc(ConfChangeType.ADD_VOTER, 4, 2, 0, joint=True)], commit=1)
    try:
        with pytest.raises(ForceNewClusterError, match="joint"):
            force_new_cluster(raft_log, 1)
    finally:
        raft_log.close()


def test_no_log_no_force(tmp_path: Path) -> None:
    with pytest.raises(ForceNewClusterError, match="no Raft log"):
        require_log(tmp_path / "typo.kvraft", tmp_path / "typo.kvraft" / "raft.wal")
    assert not (tmp_path / "typo.kvraft").exists()
    empty = WalLogStorage(tmp_path / "raft.wal")  # a bootstrap a crash interrupted
    try:
        with pytest.raises(ForceNewClusterError, match="no Raft log"):
            force_new_cluster(empty, 1)
    finally:
        empty.close()

"""The small files of a data directory (cluster_id, members.json) and its permissions, at a
member's start: a file that does not read as what it holds, or a directory the member may not
write, is a one-line error naming the file and what to do (main prints it, exit 1), as etcd
refuses a data dir it cannot use; never a traceback, never a start that fails later."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvraft.server.config import parse_config
from kvraft.server.node import Node
from kvraft.server.wal_dir import DataDirError


def _create(data: Path) -> None:
    node = Node(parse_config(["--data-dir", str(data)]))
    node.raft_log.close()
    node.state.close()


@pytest.mark.parametrize("text", ["", "garbage\n", "-1\n", "18446744073709551616\n"])
def test_an_unreadable_cluster_id_file_is_a_data_dir_error(tmp_path: Path, text: str) -> None:
    _create(tmp_path / "d")
    (tmp_path / "d" / "cluster_id").write_text(text)
    with pytest.raises(DataDirError, match="cluster_id: unreadable .* holds the cluster's id"):
        Node(parse_config(["--data-dir", str(tmp_path / "d")]))


def test_the_cluster_id_file_is_written_whole_and_read_back(tmp_path: Path) -> None:
    _create(tmp_path / "d")
    first = (tmp_path / "d" / "cluster_id").read_text()
    assert int(first) > 0
    node = Node(parse_config(["--data-dir", str(tmp_path / "d")]))
    node.raft_log.close()
    node.state.close()
    assert node.cluster_id == int(first)


@pytest.mark.parametrize("text", ["", "{", "[]", "{}", "[[[1]], []]", '[[["x", "m", [], [], false]], []]', "[1, 2]"])
def test_an_unreadable_members_file_is_a_data_dir_error(tmp_path: Path, text: str) -> None:
    _create(tmp_path / "d")
    (tmp_path / "d" / "members.json").write_text(text)
    with pytest.raises(DataDirError, match="members.json: unreadable .* holds the cluster's members"):
        Node(parse_config(["--data-dir", str(tmp_path / "d")]))

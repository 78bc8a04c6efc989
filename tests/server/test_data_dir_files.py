"""The small files of a data directory (cluster_id, members.json) and its permissions, at a
member's start: a file that does not read as what it holds, or a directory the member may not
write, is a one-line error naming the file and what to do (main prints it, exit 1), as etcd
refuses a data dir it cannot use; never a traceback, never a start that fails later."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kvraft.server.config import parse_config
from kvraft.server.node import Node
from kvraft.server.wal_dir import DataDirError
from kvraft.testing.ports import free_port


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


def _as_unprivileged(argv: list[str]) -> list[str]:
    """``argv`` without the capabilities that let root write anywhere (root passes every
    permission check, so a read-only directory means nothing to it)."""
    if os.geteuid() != 0:
        return argv
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: permissions cannot be tested")
    drop = "-dac_override,-dac_read_search,-fowner"
    return ["setpriv", "--bounding-set", drop, "--inh-caps", drop, *argv]


def _start(data: Path) -> subprocess.CompletedProcess[str]:
    client, peer = free_port(), free_port()
    return subprocess.run(
        _as_unprivileged([sys.executable, "-m", "kvraft.server.main", "--data-dir", str(data),
                          "--listen-client-urls", f"http://127.0.0.1:{client}",
                          "--advertise-client-urls", f"http://127.0.0.1:{client}",
                          "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                          "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                          "--initial-cluster", f"default=http://127.0.0.1:{peer}"]),
        capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("sub", ["", "raft.wal", "mvcc.lmdb"])
def test_a_data_dir_the_member_may_not_write_is_refused_at_start(tmp_path: Path, sub: str) -> None:
    """It used to start (its files were writable) and stop on a fatal PermissionError at the
    first snapshot or WAL rotation; etcd refuses at start: 'cannot access data directory'."""
    data = tmp_path / "d"
    _create(data)
    (data / sub).chmod(0o555)
    try:
        done = _start(data)
    finally:
        (data / sub).chmod(0o755)
    assert done.returncode == 1, done.stderr[-800:]
    assert "cannot access data directory" in done.stderr and str(data / sub).rstrip("/") in done.stderr
    assert "Traceback" not in done.stderr


def test_a_store_file_the_member_may_not_write_is_one_line(tmp_path: Path) -> None:
    data = tmp_path / "d"
    _create(data)
    (store,) = (data / "mvcc.lmdb").glob("kv-*.lmdb")
    store.chmod(0o444)
    done = _start(data)
    assert done.returncode == 1, done.stderr[-800:]
    assert "Traceback" not in done.stderr
    assert f"{store}: Permission denied" in done.stderr


@pytest.mark.parametrize("damage", ["empty segment", "flipped head", "missing snapshot file"])
def test_a_damaged_wal_is_one_line_naming_where_and_what_to_do(tmp_path: Path, damage: str) -> None:
    """The WAL's own messages named a segment or snapshot file without its directory
    ("0000000000000002.wal: no head frame") and said nothing of what to do."""
    data = tmp_path / "d"
    _create(data)
    (segment,) = (data / "raft.wal").glob("*.wal")
    if damage == "empty segment":
        segment.write_bytes(b"")
    elif damage == "flipped head":
        raw = bytearray(segment.read_bytes()[:4096])
        raw[12] ^= 0x40
        with open(segment, "r+b") as f:
            f.write(bytes(raw))
    else:
        (data / "raft.wal" / "snap-0000000000000009.snap").write_bytes(b"x")  # an orphan: the log is missing
        segment.unlink()
    done = _start(data)
    assert done.returncode == 1, done.stderr[-800:]
    assert "Traceback" not in done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("kvraft: ")]
    assert str(data / "raft.wal") in line
    assert "refusing to start (restore this member from a snapshot" in line


def test_a_missing_members_file_beside_a_raft_log_is_a_data_dir_error(tmp_path: Path) -> None:
    """members.json was rebuilt from --initial-cluster when missing, even beside a Raft log:
    members added or moved since the cluster began were forgotten (the entries that taught
    them are applied, never replayed), so the member dialled the wrong peers, silently."""
    _create(tmp_path / "d")
    (tmp_path / "d" / "members.json").unlink()
    with pytest.raises(DataDirError, match="members.json is missing, but the data dir has a Raft log"):
        Node(parse_config(["--data-dir", str(tmp_path / "d")]))
    assert not (tmp_path / "d" / "members.json").exists()

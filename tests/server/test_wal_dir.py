"""``--wal-dir``: the Raft log in a directory of its own (kvraft/server/wal_dir.py), on a real
member: it is used and kept across restarts, a restart that forgets or changes the flag is
refused with a message, an existing member's log can be moved, and ``kvctl snapshot restore
--wal-dir`` makes a data dir whose log is there."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kvraft.server.local import LocalCluster
from kvraft.server.wal_dir import DataDirError, wal_location
from tests.server.conftest import FAST_FLAGS
from tests.server.helpers import get, put, wait_until


def _serving(url: str) -> bool:
    try:
        return put(url, "probe", "x", timeout_s=3.0)[0] == 200
    except OSError:
        return False


def _restart(cluster: LocalCluster, extra: list[str]) -> int | None:
    """Restart m0 with ``extra``: its exit status if it exits, None once it serves."""
    cluster.stop_member("m0")
    cluster.members["m0"].extra = extra
    cluster.start_member("m0")
    process = cluster.members["m0"].process
    assert process is not None
    wait_until(lambda: process.poll() is not None or _serving(cluster.url("m0")), 60, what="m0 to serve or exit")
    return process.poll()


def _tail(cluster: LocalCluster) -> str:
    return cluster.members["m0"].log_path.read_text()[-3000:]


def test_the_log_lives_in_the_wal_dir_and_a_restart_must_name_it(tmp_path: Path) -> None:
    wal = tmp_path / "fast-disk" / "m0-wal"
    cluster = LocalCluster(1, tmp_path / "c", extra_args=FAST_FLAGS)
    cluster.members["m0"].extra = ["--wal-dir", str(wal)]
    try:
        cluster.start(60)
        url = cluster.url("m0")
        assert put(url, "a", "1")[0] == 200
        data_dir = cluster.members["m0"].data_dir
        assert any(wal.iterdir()) and not (data_dir / "raft.wal").exists()

        assert _restart(cluster, ["--wal-dir", str(wal)]) is None
        assert get(url, "a") == {"a": "1"}

        assert _restart(cluster, []) == 1
        assert f"its Raft log is in {wal}" in _tail(cluster)
        assert _restart(cluster, ["--wal-dir", str(tmp_path / "elsewhere")]) == 1
        assert f"start with --wal-dir {wal}" in _tail(cluster)
        assert not (tmp_path / "elsewhere").exists()
        assert _restart(cluster, ["--wal-dir", str(wal)]) is None
        assert get(url, "a") == {"a": "1"}
    finally:
        cluster.stop()


def test_an_existing_members_log_is_moved(tmp_path: Path) -> None:
    cluster = LocalCluster(1, tmp_path / "c", extra_args=FAST_FLAGS)
    try:
        cluster.start(60)
        url = cluster.url("m0")
        assert put(url, "b", "2")[0] == 200
        data_dir = cluster.members["m0"].data_dir
        moved = tmp_path / "wal-disk"
        # naming a new place without moving the log first is refused
        assert _restart(cluster, ["--wal-dir", str(moved)]) == 1
        assert "move that directory to" in _tail(cluster)
        cluster.stop_member("m0")
        shutil.move(str(data_dir / "raft.wal"), str(moved))
        assert _restart(cluster, ["--wal-dir", str(moved)]) is None
        assert get(url, "b") == {"b": "2"}
    finally:
        cluster.stop()


def test_snapshot_restore_puts_the_log_in_the_wal_dir(tmp_path: Path) -> None:
    source = LocalCluster(1, tmp_path / "src", extra_args=FAST_FLAGS)
    try:
        source.start(60)
        assert put(source.url("m0"), "c", "3")[0] == 200
        snap = tmp_path / "backup.snap"
        kvctl = [sys.executable, "-m", "kvraft.cli"]
        saved = subprocess.run([*kvctl, "--endpoints", source.url("m0"), "snapshot", "save", str(snap)],
                               capture_output=True, text=True, timeout=60)
        assert saved.returncode == 0, saved.stderr
    finally:
        source.stop()
    target = LocalCluster(1, tmp_path / "dst", extra_args=FAST_FLAGS)
    member = target.members["m0"]
    wal = tmp_path / "restored-wal"
    restored = subprocess.run(
        [*kvctl, "snapshot", "restore", str(snap), "--name", "m0", "--data-dir", str(member.data_dir),
         "--wal-dir", str(wal), "--initial-cluster", target.initial_cluster(), "--initial-cluster-token", target.token,
         "--initial-advertise-peer-urls", member.peer_url],
        capture_output=True, text=True, timeout=60)
    assert restored.returncode == 0, restored.stderr
    assert any(wal.iterdir()) and not (member.data_dir / "raft.wal").exists()
    again = subprocess.run([*kvctl, "snapshot", "restore", str(snap), "--data-dir", str(tmp_path / "other"),
                            "--wal-dir", str(wal)], capture_output=True, text=True, timeout=60)
    assert again.returncode != 0 and f'wal-dir "{wal}" exists' in again.stderr
    assert not (tmp_path / "other").exists()
    member.extra = ["--wal-dir", str(wal)]
    try:
        target.start_member("m0")
        wait_until(lambda: _serving(target.url("m0")), 60, what="the restored member to serve")
        assert get(target.url("m0"), "c") == {"c": "3"}
    finally:
        target.stop()


@pytest.mark.parametrize("present", ["raft.lmdb"])
def test_a_legacy_lmdb_log_stays_in_the_data_dir(tmp_path: Path, present: str) -> None:
    (tmp_path / present).mkdir()
    with pytest.raises(DataDirError, match="LMDB Raft log"):
        wal_location(tmp_path, str(tmp_path / "wal"))
    assert wal_location(tmp_path, "") == tmp_path / "raft.wal"
    assert wal_location(tmp_path, str(tmp_path / "raft.wal")) == tmp_path / "raft.wal"

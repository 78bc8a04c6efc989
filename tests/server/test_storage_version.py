"""The data directory's format stamp (kvraft/server/storage_version.py): written on a new or
an older unstamped data directory, a newer format refused with a message naming its writer,
an unreadable stamp refused; on a real member, a downgrade is refused before anything is
written."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

import kvraft
from kvraft.server.storage_version import STORAGE_VERSION, check_storage_version, stamp
from kvraft.server.wal_dir import DataDirError


def test_an_unstamped_data_dir_is_stamped(tmp_path: Path) -> None:
    check_storage_version(tmp_path)
    doc = json.loads((tmp_path / "version").read_text())
    assert doc["storage"] == STORAGE_VERSION and doc["written_by"] == kvraft.__version__ == metadata.version("kvraft")
    check_storage_version(tmp_path)  # its own stamp passes


def test_a_newer_format_is_refused_with_its_writer(tmp_path: Path) -> None:
    (tmp_path / "version").write_text(json.dumps({"storage": STORAGE_VERSION + 1, "written_by": "9.9.9"}))
    with pytest.raises(DataDirError, match=r"storage format 2, written by kvraft 9\.9\.9.*reads format 1 at most"):
        check_storage_version(tmp_path)
    assert json.loads((tmp_path / "version").read_text())["written_by"] == "9.9.9"  # left as it was


@pytest.mark.parametrize("text", ["", "{", '{"written_by": "x"}', '{"storage": "1"}', '{"storage": true}',
                                  '{"storage": 0}', "[1]"])
def test_an_unreadable_stamp_is_refused(tmp_path: Path, text: str) -> None:
    (tmp_path / "version").write_text(text)
    with pytest.raises(DataDirError, match="unreadable"):
        check_storage_version(tmp_path)


def test_an_older_writer_is_restamped(tmp_path: Path) -> None:
    (tmp_path / "version").write_text(json.dumps({"storage": 1, "written_by": "0.0.1"}))
    check_storage_version(tmp_path)
    assert json.loads((tmp_path / "version").read_text())["written_by"] != "0.0.1"


def test_a_member_refuses_a_newer_data_dir_and_writes_nothing(tmp_path: Path) -> None:
    data = tmp_path / "m.kvraft"
    data.mkdir()
    stamp(data)
    (data / "version").write_text(json.dumps({"storage": STORAGE_VERSION + 1, "written_by": "9.9.9"}))
    before = sorted(p.name for p in data.iterdir())
    result = subprocess.run(
        [sys.executable, "-m", "kvraft.server.main", "--data-dir", str(data),
         "--listen-client-urls", "http://127.0.0.1:0", "--listen-peer-urls", "http://127.0.0.1:0"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert "written by kvraft 9.9.9" in result.stderr
    assert sorted(p.name for p in data.iterdir()) == before


@pytest.mark.parametrize("layout", ["member/wal/", "member/snap/db"])
def test_an_etcd_data_dir_is_refused_not_started_empty(tmp_path: Path, layout: str) -> None:
    """kvraft takes etcd's flags, so `--data-dir /var/lib/etcd` is an easy slip when moving
    from etcd: kvraft found none of its files there, started a new, empty cluster in it and
    wrote its own files beside etcd's. It is refused now, saying how to bring the data over."""
    data = tmp_path / "etcd-data"
    target = data / layout
    if layout.endswith("/"):
        target.mkdir(parents=True)
    else:
        target.parent.mkdir(parents=True)
        target.write_bytes(b"bbolt")
    with pytest.raises(DataDirError, match=r"etcd data directory .*kvctl snapshot restore"):
        check_storage_version(data)
    assert not (data / "version").exists()

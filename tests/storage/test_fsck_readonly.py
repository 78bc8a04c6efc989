"""``python -m kvraft.storage.fsck`` changes nothing it checks: an LMDB Raft log (an older
empty file, which opening would seal with a txnid record; a written one), and an MVCC
backend directory (whose open deletes older generations and ``.tmp`` leftovers). No byte
of any file changes and no file appears or goes (LMDB's ``-lock`` file included); a
damaged file is still reported, naming the original path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import lmdb

from kvraft.raft.types import Entry, HardState
from kvraft.storage.mvcc import MVCCStore
from kvraft.storage.raft_log import LmdbLogStorage

ROOT = Path(__file__).resolve().parents[2]


def files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def run(kind: str, path: Path) -> tuple[int, dict[str, Any]]:
    proc = subprocess.run([sys.executable, "-m", "kvraft.storage.fsck", kind, str(path)], capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    lines = proc.stdout.strip().splitlines()
    assert lines, proc.stderr[-2000:]
    return proc.returncode, json.loads(lines[-1])


def test_an_older_empty_lmdb_log_is_not_sealed_by_the_check(tmp_path: Path) -> None:
    """A file as older versions left it: one commit per database, no txnid record."""
    path = tmp_path / "raft.lmdb"
    env = lmdb.open(str(path), subdir=False, max_dbs=2, map_size=1 << 24)
    env.open_db(b"entries")
    env.open_db(b"state")
    assert env.info()["last_txnid"] == 2
    env.close()
    Path(str(path) + "-lock").unlink()
    before = files(tmp_path)
    rc, report = run("lmdb", path)
    assert rc == 0 and report["ok"] and report["summary"]["entries"] == 0, report
    assert files(tmp_path) == before


def test_a_written_lmdb_log_is_checked_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "raft.lmdb"
    log = LmdbLogStorage.bootstrap(path, [1, 2, 3], map_size=1 << 26)
    log.append([Entry(1, i, data=b"e%d" % i) for i in range(1, 21)])
    log.set_hard_state(HardState(term=1, vote=1, commit=20))
    log.sync()
    log.close()
    Path(str(path) + "-lock").unlink()
    before = files(tmp_path)
    rc, report = run("raftlog", path)
    assert rc == 0 and report["ok"], report
    summary = report["summary"]
    assert (summary["format"], summary["first"], summary["last"], summary["hard"]) == ("lmdb", 1, 20, [1, 1, 20])
    assert files(tmp_path) == before


def test_an_mvcc_backend_is_checked_unchanged_leftovers_included(tmp_path: Path) -> None:
    path = tmp_path / "kv"
    store = MVCCStore(path)
    for i in range(50):
        store.put(b"k%d" % (i % 7), b"v%d" % i)
    store.compact(20, physical=True)
    store.close()
    (live,) = path.glob("kv-*.lmdb")
    (path / "kv-00000000.lmdb").write_bytes(b"an older generation")  # the backend's open deletes these
    (path / (live.name + ".tmp")).write_bytes(b"a defragmentation's leftover")
    for lock in path.glob("*-lock"):
        lock.unlink()
    before = files(path)
    rc, report = run("mvcc", path)
    assert rc == 0 and report["ok"], report
    assert files(path) == before


def test_a_damaged_lmdb_log_is_still_reported_by_its_own_path(tmp_path: Path) -> None:
    path = tmp_path / "raft.lmdb"
    log = LmdbLogStorage.bootstrap(path, [1], map_size=1 << 26)
    log.append([Entry(1, i, data=b"payload-%04d" % i) for i in range(1, 6)])
    log.sync()
    log.close()
    raw = bytearray(path.read_bytes())
    at = raw.find(b"payload-0003")
    assert at > 0
    raw[at + 8] ^= 0x01
    path.write_bytes(bytes(raw))
    Path(str(path) + "-lock").unlink()
    before = files(tmp_path)
    rc, report = run("lmdb", path)
    assert rc == 3 and not report["ok"], report
    assert "3" in report["error"] and "kvraft-fsck-" not in report["error"], report
    assert files(tmp_path) == before


def test_mvcc_on_what_is_not_an_mvcc_store_is_an_error_not_an_empty_store(tmp_path: Path) -> None:
    """`fsck mvcc` on a data dir (instead of its mvcc.lmdb/) or any directory without a
    generation file answered ok with 0 records, an empty store it opened in a copy; on a file
    it was a NotADirectoryError traceback."""
    data = tmp_path / "m1.kvraft"
    data.mkdir()
    (data / "version").write_text("{}")
    afile = tmp_path / "kv.lmdb"
    afile.write_bytes(b"x" * 100)
    for path, why in ((data, "no generation file kv-<gen>.lmdb"), (afile, "not a directory")):
        done = subprocess.run([sys.executable, "-m", "kvraft.storage.fsck", "mvcc", str(path)],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 3, (done.stdout, done.stderr[-500:])
        report = json.loads(done.stdout.strip().splitlines()[-1])
        assert not report["ok"] and str(path) in report["error"] and why in report["error"], report
    assert sorted(p.name for p in data.iterdir()) == ["version"]

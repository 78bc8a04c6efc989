"""The WAL Raft log: one fdatasync per batch, crash safety (SIGKILL at random moments),
torn tails, corruption, segment rotation and snapshot files. The contract itself runs in
``test_raft_log_contract.py`` (against the reference and the LMDB log)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import raftlog_workload as workload

from kvraft.raft.memory_storage import MemoryLogStorage
from kvraft.raft.types import ConfState, Entry, HardState
from kvraft.storage import wal as wal_module
from kvraft.storage.errors import LogCorruptionError
from kvraft.storage.wal import WalLogStorage, is_wal_dir


def _segments(path: Path) -> list[Path]:
    return sorted(path.glob("*.wal"))


def _write(path: Path, batches: int, **kw: Any) -> None:
    workload.write_marked(WalLogStorage(path, **kw), batches)


def test_one_fdatasync_per_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = WalLogStorage(tmp_path / "wal")
    calls: list[int] = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (calls.append(fd), real(fd))[1])
    size = _segments(tmp_path / "wal")[0].stat().st_size
    for b in range(10):
        log.append([Entry(term=1, index=b * 100 + i + 1, data=b"x" * 50) for i in range(100)])
        log.set_hard_state(HardState(term=1, vote=1, commit=b * 100))
    assert calls == []  # nothing written while staging
    assert log.entries(999, 1001)[0].index == 999  # staged writes are readable
    log.sync()
    assert len(calls) == 1  # 1000 entries + 10 hard states: one fdatasync
    log.sync()
    assert len(calls) == 1  # nothing staged: nothing written
    assert _segments(tmp_path / "wal")[0].stat().st_size == size  # preallocated: no growth
    log.close()


def test_a_slow_fdatasync_logs_etcds_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             caplog: pytest.LogCaptureFixture) -> None:
    log = WalLogStorage(tmp_path / "wal")
    log.append([Entry(term=1, index=1, data=b"x")])
    with caplog.at_level("WARNING", logger="kvraft.wal"):
        log.sync()  # (well under the 1 s of etcd's warnSyncDuration)
        assert [r for r in caplog.records if r.getMessage() == "slow fdatasync"] == []
        monkeypatch.setattr(wal_module, "WARN_SYNC_S", 0.0)
        log.append([Entry(term=1, index=2, data=b"x")])
        log.sync()
    (slow,) = [r for r in caplog.records if r.getMessage() == "slow fdatasync"]
    fields = slow.fields  # type: ignore[attr-defined]
    assert fields["expected-duration"] == "0s" and fields["took"].endswith("s")
    log.close()


def test_a_replay_does_not_encode_the_entries_it_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Opening a log replays its records through the methods that wrote them; the entries'
    encoding, which only a write needs, is skipped (it copied every entry's data once more:
    a quarter of a member's start on a log of 100 KiB values)."""
    log = WalLogStorage(tmp_path / "wal")
    for b in range(5):
        log.append([Entry(term=1, index=b * 100 + i + 1, data=b"x" * 500) for i in range(100)])
    log.sync()
    log.close()
    encoded: list[int] = []
    real = wal_module.encode_entries
    monkeypatch.setattr(wal_module, "encode_entries", lambda entries: (encoded.append(len(entries)), real(entries))[1])
    log = WalLogStorage(tmp_path / "wal")
    assert encoded == [] and log.last_index() == 500 and log.entries(499, 501)[1].data == b"x" * 500
    log.append([Entry(term=1, index=501, data=b"y")])
    log.sync()
    assert encoded == [1]
    log.close()
    log = WalLogStorage(tmp_path / "wal")
    assert log.entries(501, 502)[0].data == b"y"
    log.close()


def test_bootstrap_matches_the_reference(tmp_path: Path) -> None:
    mem = MemoryLogStorage.bootstrap([1, 2, 3], [4])
    log = WalLogStorage.bootstrap(tmp_path / "wal", [1, 2, 3], [4])
    assert workload.observe(log) == workload.observe(mem)
    log.close()
    again = WalLogStorage(tmp_path / "wal")
    assert workload.observe(again) == workload.observe(mem)
    again.close()
    assert is_wal_dir(tmp_path / "wal") and not is_wal_dir(tmp_path / "nothing")
    with pytest.raises(ValueError):
        WalLogStorage.bootstrap(tmp_path / "wal", [1])


def _frames(segment: Path) -> list[tuple[int, int]]:
    """(offset, total length) of every frame in a segment."""
    data, pos, out = segment.read_bytes(), 0, []
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        if length == 0:
            break
        out.append((pos, 8 + length))
        pos += 8 + length
    return out


@pytest.mark.parametrize("cut", ["zero-half", "short-header", "zero-payload-byte"])
def test_torn_tail_is_cut_and_the_log_goes_on(tmp_path: Path, cut: str) -> None:
    path = tmp_path / "wal"
    _write(path, 5)
    segment = _segments(path)[-1]
    pos, length = _frames(segment)[-1]
    data = bytearray(segment.read_bytes())
    if cut == "zero-half":
        data[pos + length // 2 : pos + length] = bytes(length - length // 2)
    elif cut == "short-header":
        data[pos + 4 : pos + length] = bytes(length - 4)
    else:
        data[pos + 8] ^= 0xFF
        data[pos + 8 + 1 : pos + length] = bytes(length - 9)
    segment.write_bytes(bytes(data))
    log = WalLogStorage(path)
    assert log.last_index() == 40  # the last batch (41..50) was torn: gone, whole
    assert log.initial_state()[0] == HardState(term=1, vote=3, commit=30)
    log.append([Entry(term=2, index=41, data=b"after")])
    log.sync()
    log.close()
    log = WalLogStorage(path)
    assert log.entries(40, 42)[1].data == b"after"
    assert log.verify() == 41
    log.close()


def test_a_bad_frame_with_data_after_it_names_the_index(tmp_path: Path) -> None:
    path = tmp_path / "wal"
    _write(path, 30)
    segment = _segments(path)[-1]
    data = bytearray(segment.read_bytes())
    at = data.find(b"PAYLOAD-000123")
    data[at + 10] ^= 0x10
    segment.write_bytes(bytes(data))
    with pytest.raises(LogCorruptionError) as err:
        WalLogStorage(path)
    assert err.value.index == 121  # the first entry of the damaged batch (121..130)
    assert "raft log entry 121" in str(err.value)


def test_a_bad_head_is_corruption_not_a_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "wal"
    _write(path, 1)
    segment = _segments(path)[-1]
    data = bytearray(segment.read_bytes())
    data[12] ^= 0x01
    segment.write_bytes(bytes(data))
    with pytest.raises(LogCorruptionError, match="checksum"):
        WalLogStorage(path)


def _snapshotting_workload(path: Path, segment_bytes: int, batches: int) -> tuple[Any, Any]:
    log = WalLogStorage(path, segment_bytes=segment_bytes)
    ref = MemoryLogStorage()
    for k in range(1, batches + 1):
        for s in (log, ref):
            s.append([Entry(term=1, index=s.last_index() + 1 + i, data=bytes(100)) for i in range(20)])
            s.set_hard_state(HardState(term=1, vote=1, commit=s.last_index()))
            if k % 10 == 0:
                index = s.last_index() - 5
                s.create_snapshot(index, ConfState(voters=frozenset({1})), b"state@%d" % index)
                s.compact(index - 30)
        log.sync()
    return log, ref


def test_rotation_drops_whole_segments_and_old_snapshots(tmp_path: Path) -> None:
    path = tmp_path / "wal"
    log, ref = _snapshotting_workload(path, 16 << 10, 200)
    assert log.rotations > 10
    assert len(_segments(path)) == 1  # compaction dropped every older segment
    snaps = sorted(path.glob("snap-*.snap"))
    assert [p.name for p in snaps] == [f"snap-{ref.snapshot().metadata.index:016x}.snap"]
    assert sum(p.stat().st_size for p in path.iterdir()) < 4 * (16 << 10)
    assert workload.observe(log) == workload.observe(ref)
    log.close()
    again = WalLogStorage(path, segment_bytes=16 << 10)
    assert workload.observe(again) == workload.observe(ref)
    again.close()


def test_interrupted_rotation_leftovers_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "wal"
    log, ref = _snapshotting_workload(path, 16 << 10, 30)
    log.close()
    newest = _segments(path)[-1]
    # a crash between the new head and the deletion of the old segment; and one while
    # the next segment was still being written
    (path / "0000000000000001.wal").write_bytes(b"stale segment, superseded")
    (path / f"{int(newest.stem, 16) + 1:016x}.tmp").write_bytes(b"half a head")
    again = WalLogStorage(path, segment_bytes=16 << 10)
    assert workload.observe(again) == workload.observe(ref)
    assert _segments(path) == [newest] and not list(path.glob("*.tmp"))
    again.close()


def test_damaged_snapshot_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "wal"
    log, _ref = _snapshotting_workload(path, 1 << 20, 10)
    log.close()
    (snap,) = path.glob("snap-*.snap")
    data = bytearray(snap.read_bytes())
    data[-1] ^= 0x01
    snap.write_bytes(bytes(data))
    # a flipped bit is found where the data is read (a store restored from it; fsck), not
    # at every start: the file is the size of the store, and read only when it is needed
    reopened = WalLogStorage(path, segment_bytes=1 << 20)
    with pytest.raises(LogCorruptionError, match="snapshot file"):
        reopened.snapshot_data()
    reopened.close()
    snap.write_bytes(bytes(data[:-1]))  # a short file is found at the start
    with pytest.raises(LogCorruptionError, match="snapshot file"):
        WalLogStorage(path, segment_bytes=1 << 20)
    snap.unlink()
    with pytest.raises(LogCorruptionError, match="missing"):
        WalLogStorage(path, segment_bytes=1 << 20)


def test_a_failed_fdatasync_refuses_later_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "wal"
    log = WalLogStorage(path)
    log.append([Entry(term=1, index=1)])
    log.sync()

    def broken(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", broken)
    log.append([Entry(term=1, index=2)])
    with pytest.raises(OSError):
        log.sync()
    monkeypatch.undo()
    with pytest.raises(OSError, match="failed earlier"):
        log.append([Entry(term=1, index=3)])
    with pytest.raises(OSError, match="failed earlier"):
        log.sync()
    log.close()
    again = WalLogStorage(path)
    assert again.last_index() in (1, 2)  # the failed batch may or may not have reached the disk
    again.close()


def test_without_compaction_the_segment_grows_then_rotates_once_compacted(tmp_path: Path) -> None:
    path = tmp_path / "wal"
    log = WalLogStorage(path, segment_bytes=8 << 10)
    for _ in range(60):  # ~1.2 KiB of entries per batch, never compacted
        first = log.last_index() + 1
        log.append([Entry(term=1, index=first + i, data=bytes(100)) for i in range(10)])
        log.sync()
    assert log.rotations == 1  # (the first segment) retained entries are over half a segment: it grew
    assert _segments(path)[-1].stat().st_size > 8 << 10
    index = log.last_index()
    log.create_snapshot(index, ConfState(voters=frozenset({1})), b"state")
    log.compact(index)
    log.sync()  # the compaction's own sync looks again (it waited a quarter segment more)
    assert log.rotations == 2 and len(_segments(path)) == 1
    for _ in range(3):
        first = log.last_index() + 1
        log.append([Entry(term=1, index=first + i, data=bytes(100)) for i in range(10)])
        log.sync()
    assert log.rotations == 2
    assert _segments(path)[0].stat().st_size == 8 << 10  # a fresh, preallocated segment
    last = log.last_index()
    log.close()
    again = WalLogStorage(path, segment_bytes=8 << 10)
    assert (again.first_index(), again.last_index()) == (index + 1, last)
    again.close()


def test_a_wal_open_in_another_process_is_refused(tmp_path: Path) -> None:
    """Two members started on one data dir (a copy-pasted unit, a second `kvraft` by hand)
    both opened the WAL and both wrote to the same segment and LMDB file, each its own
    leader: the log no longer held what either had synced. etcd locks its WAL files; the
    WAL's directory is locked now, while the log is open."""
    path = tmp_path / "wal"
    first = WalLogStorage(path)
    first.append([Entry(term=1, index=1, data=b"a")])
    first.sync()
    child = (
        "import sys\nfrom kvraft.storage.wal import WalLogStorage\n"
        "try:\n    WalLogStorage(sys.argv[1])\nexcept OSError as exc:\n    print(exc)\n    sys.exit(3)\n"
    )
    done = subprocess.run([sys.executable, "-c", child, str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, (done.returncode, done.stderr[-500:])
    assert f"{path}: in use by another process" in done.stdout
    first.close()
    done = subprocess.run([sys.executable, "-c", child, str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr[-500:]  # closed: the lock is released


def test_a_full_disk_at_rotation_names_the_segment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A segment is preallocated whole (64 MiB by default); on a disk without that much free
    a member ended with "[Errno 28] No space left on device" and no word of which file or
    how much it needed."""
    log = WalLogStorage(tmp_path / "wal", segment_bytes=1 << 20)

    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(OSError) as err:
        log.bootstrap_members([1])
    assert err.value.errno == 28
    assert str(tmp_path / "wal" / "0000000000000002.tmp") in str(err.value)
    assert "1048576 bytes" in str(err.value)
    log.close()


@pytest.mark.parametrize("name", ["zzzz.wal", "abc.wal", "backup-0000000000000001.wal"])
def test_a_wal_file_not_named_as_a_segment_is_reported_not_a_traceback(tmp_path: Path, name: str) -> None:
    """A stray ``*.wal`` file in the directory (a copy, a backup) was taken for a segment by
    its name: 'zzzz.wal' was a ValueError out of int(.., 16) at start, 'abc.wal' the newest
    segment (0xabc). Refused as fsck refuses it, naming the file."""
    path = tmp_path / "wal"
    log = WalLogStorage(path)
    log.bootstrap_members([1])
    log.close()
    (path / name).write_bytes(b"")
    with pytest.raises(LogCorruptionError, match=f"segment name '{name}' is not <16 hex digits>.wal"):
        WalLogStorage(path)
    assert (path / name).exists()

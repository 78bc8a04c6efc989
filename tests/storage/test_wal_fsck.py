"""``python -m kvraft.storage.fsck`` on the WAL Raft log (``kvraft/storage/fsck_wal.py``):
an intact log, a torn tail (reported, not corruption), a flipped bit mid-log or in the head,
a missing segment, frames that pass their checksum but break the index sequence, a hard
state or a head that the Raft core would refuse. The check never changes the directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import raftlog_workload as workload
from test_wal import _frames  # the WAL tests' frame walker

from kvraft.raft.types import Entry, HardState
from kvraft.storage import fsck
from kvraft.storage.errors import StorageCorruptionError
from kvraft.storage.wal import WalLogStorage
from kvraft.storage.wal_format import encode_entries, encode_frame, encode_hard

ROOT = Path(__file__).resolve().parents[2]
SEGMENT = 64 << 10


def _segment(path: Path) -> Path:
    (segment,) = sorted(path.glob("*.wal"))
    return segment


def _build(path: Path, batches: int = 24) -> tuple[Any, ...]:
    """A WAL that rotated, snapshotted and compacted (the shared durability workload);
    returns what the log held when closed."""
    log = WalLogStorage(path, segment_bytes=SEGMENT)
    for k in range(1, batches + 1):
        workload.batch(5, k, log)
        log.sync()
    observed: tuple[Any, ...] = workload.observe(log)
    assert log.rotations >= 1 and log.snapshot().metadata.index > 0
    log.close()
    return observed


def _files(path: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted(path.iterdir())}


def _run(kind: str, path: Path) -> tuple[int, dict[str, Any] | None, str]:
    proc = subprocess.run([sys.executable, "-m", "kvraft.storage.fsck", kind, str(path)], capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    lines = proc.stdout.strip().splitlines()
    return proc.returncode, json.loads(lines[-1]) if lines else None, proc.stderr


def _append_frame(path: Path, payload: bytes) -> None:
    """Write a frame with a valid checksum after the last one (as ``sync()`` would)."""
    segment = _segment(path)
    pos, length = _frames(segment)[-1]
    with open(segment, "r+b") as f:
        f.seek(pos + length)
        f.write(encode_frame(payload))


def test_an_intact_log_passes_and_is_summarized(tmp_path: Path) -> None:
    path = tmp_path / "raft.wal"
    first, last, digest, hard, conf, meta, _data = _build(path)
    before = _files(path)
    rc, report, _err = _run("raftlog", path)  # a directory: the WAL
    assert rc == 0 and report is not None and report["ok"], report
    s = report["summary"]
    assert (s["format"], s["first"], s["last"], s["digest"]) == ("wal", first, last, digest)
    assert s["hard"] == [hard.term, hard.vote, hard.commit] and s["conf"] == sorted(conf.voters)
    assert (s["snapshot_index"], s["snapshot_term"]) == (meta.index, meta.term)
    assert s["torn_tail"] is None and s["notes"] == [] and s["frames"] >= 1
    assert fsck.check("wal", path) == s
    assert _files(path) == before


def test_a_torn_tail_is_reported_as_such_not_as_corruption(tmp_path: Path) -> None:
    path = tmp_path / "raft.wal"
    _build(path)
    segment = _segment(path)
    pos, length = _frames(segment)[-1]
    data = bytearray(segment.read_bytes())
    data[pos + length // 2 : pos + length] = bytes(length - length // 2)  # the last batch, half written
    segment.write_bytes(bytes(data))
    before = _files(path)
    summary = fsck.check("raftlog", path)
    assert summary["torn_tail"] == {"segment": segment.name, "offset": pos, "bytes": summary["torn_tail"]["bytes"]}
    assert 0 < summary["torn_tail"]["bytes"] <= length // 2 + 1
    assert any("torn tail" in note for note in summary["notes"])
    assert _files(path) == before  # the check cut nothing
    log = WalLogStorage(path, segment_bytes=SEGMENT)  # the open cuts it, to the same log
    assert (log.first_index(), log.last_index()) == (summary["first"], summary["last"])
    log.close()
    assert fsck.check("raftlog", path)["torn_tail"] is None


def test_a_flipped_bit_mid_log_is_corruption_naming_the_batch(tmp_path: Path) -> None:
    path = tmp_path / "raft.wal"
    _build(path)
    segment = _segment(path)
    frames = _frames(segment)
    assert len(frames) >= 3
    pos, length = frames[1]  # a batch after the head, with batches after it
    data = bytearray(segment.read_bytes())
    data[pos + length // 2] ^= 0x08
    segment.write_bytes(bytes(data))
    rc, report, _err = _run("raftlog", path)
    assert rc == 3 and report is not None and not report["ok"]
    error = report["error"]
    assert f"frame at byte {pos} fails its checksum" in error and "damage inside the log, not a torn write" in error
    assert "raft log entry " in error  # the first index of the damaged batch
    data[pos + length // 2] ^= 0x08
    data[12] ^= 0x01  # the head
    segment.write_bytes(bytes(data))
    with pytest.raises(StorageCorruptionError, match=r"frame at byte 0 fails its checksum \(the head\), not a torn write"):
        fsck.check("raftlog", path)


def test_a_missing_segment_is_reported_and_refused_at_open(tmp_path: Path) -> None:
    path = tmp_path / "raft.wal"
    _build(path)
    assert list(path.glob("snap-*.snap"))
    _segment(path).unlink()
    with pytest.raises(StorageCorruptionError, match="no segment, but snapshot file .* the log is missing"):
        fsck.check("raftlog", path)
    before = _files(path)
    with pytest.raises(StorageCorruptionError, match="the log is missing"):
        WalLogStorage(path)  # used to open as an empty log and delete the snapshot file
    assert _files(path) == before
    for snap in path.glob("snap-*.snap"):
        snap.unlink()
    summary = fsck.check("raftlog", path)  # an empty directory: a log never written
    assert summary["last"] == 0 and "never written" in summary["notes"][0]


def test_leftovers_and_a_snapshot_newer_than_the_log_are_notes(tmp_path: Path) -> None:
    path = tmp_path / "raft.wal"
    _build(path)
    segment = _segment(path)
    stale = path / "0000000000000000.wal"
    stale.write_bytes(b"superseded")
    (path / f"{int(segment.stem, 16) + 1:016x}.tmp").write_bytes(b"half a head")
    newer = path / "snap-00000000ffffffff.snap"
    newer.write_bytes(b"x")
    summary = fsck.check("raftlog", path)
    notes = " | ".join(summary["notes"])
    assert f"{stale.name}: older than {segment.name}" in notes and ".tmp: left by" in notes
    assert f"{newer.name} is newer than the log's snapshot" in notes and "lost its newest segment" in notes


def test_frames_that_break_the_index_sequence_are_corruption(tmp_path: Path) -> None:
    path = tmp_path / "raft.wal"
    _build(path)
    summary = fsck.check("raftlog", path)
    last, term = summary["last"], summary["hard"][0]
    gap = path.parent / "gap"
    gap.mkdir()
    for name, data in _files(path).items():
        (gap / name).write_bytes(data)
    _append_frame(gap, encode_entries([Entry(term=term, index=last + 2, data=b"x")]))
    with pytest.raises(StorageCorruptionError) as err:
        fsck.check("raftlog", gap)
    assert f"passes its checksum but does not replay: ValueError: append at {last + 2} leaves a gap after {last}" in str(
        err.value
    )
    _append_frame(path, encode_entries([Entry(term=term, index=last + 1), Entry(term=term, index=last + 3)]))
    with pytest.raises(StorageCorruptionError, match=f"entries not contiguous: {last + 1} then {last + 3}"):
        fsck.check("raftlog", path)


def test_a_hard_state_the_raft_core_would_refuse_is_corruption(tmp_path: Path) -> None:
    path = tmp_path / "raft.wal"
    _build(path)
    last = fsck.check("raftlog", path)["last"]
    _append_frame(path, encode_hard(HardState(term=9, vote=1, commit=last + 5)))
    with pytest.raises(StorageCorruptionError, match=f"hard state commit {last + 5} outside the stored log"):
        fsck.check("raftlog", path)


def test_a_head_that_starts_past_its_snapshot_is_corruption(tmp_path: Path) -> None:
    """A head frame that passes its checksum but whose log starts after the snapshot's end:
    the entries in between are in neither (the log would serve a hole)."""
    path = tmp_path / "raft.wal"
    log = WalLogStorage(path)
    log.append([Entry(term=1, index=i) for i in range(1, 51)])
    log.set_hard_state(HardState(term=1, vote=1, commit=50))
    log.sync()
    log._entries = [Entry(term=1, index=10), *log._entries[11:]]  # dropped without a snapshot
    log._rotate()  # a new head of exactly that state
    log.close()
    with pytest.raises(StorageCorruptionError, match=r"starts at 11 but the snapshot covers only up to 0: entries 1\.\.10"):
        fsck.check("raftlog", path)


def test_exit_codes(tmp_path: Path) -> None:
    assert _run("raftlog", tmp_path / "nope")[0] == 2  # not created
    assert not (tmp_path / "nope").exists()
    assert _run("bogus", tmp_path)[0] == 2
    path = tmp_path / "raft.lmdb"  # the LMDB log still goes by file, now with the same checks
    from kvraft.storage.raft_log import LmdbLogStorage

    log = LmdbLogStorage(path, map_size=1 << 26)
    for k in range(1, 6):
        workload.batch(5, k, log)
        log.sync()
    observed = workload.observe(log)
    log.close()
    rc, report, _err = _run("raftlog", path)
    assert rc == 0 and report is not None
    assert (report["summary"]["format"], report["summary"]["digest"]) == ("lmdb", observed[2])


def test_a_data_dir_given_for_its_wal_says_which_directory_to_check(tmp_path: Path) -> None:
    """`fsck raftlog DATA-DIR` said "segment name 'raft.wal' is not <16 hex digits>.wal" (the
    WAL directory's own name taken for a segment's)."""
    data = tmp_path / "m1.kvraft"
    WalLogStorage.bootstrap(data / "raft.wal", [1]).close()
    rc, report, _err = _run("raftlog", data)
    assert rc == 3 and report is not None
    assert report["error"].endswith(f"{data}: a data directory, not a WAL: check {data / 'raft.wal'}"), report

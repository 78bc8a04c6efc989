"""``kvraft.storage.snapshot.read_frames``: the one parser of the snapshot stream format,
used by restore and by ``kvctl snapshot status`` (``kvraft/cli/snapshot_file.py``)."""

from __future__ import annotations

import random
import struct
import zlib
from pathlib import Path

import msgpack
import pytest

from kvraft.cli.snapshot_file import SnapshotFileError, is_kvraft_snapshot, verify_snapshot
from kvraft.storage.mvcc.store import MVCCStore
from kvraft.storage.snapshot import MAGIC, SnapshotFrameError, read_frames


def frame(payload: bytes) -> bytes:
    return struct.pack(">II", len(payload), zlib.crc32(payload)) + payload


PAYLOADS = [{"magic": MAGIC, "version": 1}, [b"key", [b"a", b"1", b"b", b"2"]], {"end": True}]
FRAMES = [frame(msgpack.packb(p)) for p in PAYLOADS]
STREAM = b"".join(FRAMES)


def cut(data: bytes, rng: random.Random) -> list[bytes]:
    points = sorted(rng.sample(range(1, len(data)), 5))
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def test_frames_come_back_whole_and_decoded_however_the_stream_is_cut() -> None:
    rng = random.Random(3)
    for _ in range(50):
        out = list(read_frames(cut(STREAM, rng)))
        assert [raw for raw, _ in out] == FRAMES
        assert [p for _, p in out] == PAYLOADS
    assert list(read_frames([])) == []


def test_a_damaged_frame_is_named_by_number_and_offset() -> None:
    flipped = bytearray(STREAM)
    flipped[len(FRAMES[0]) + 12] ^= 0x40  # inside frame 1's payload
    with pytest.raises(SnapshotFrameError) as err:
        list(read_frames([bytes(flipped)]))
    assert (err.value.reason, err.value.frame, err.value.offset) == ("checksum", 1, len(FRAMES[0]))
    assert str(err.value) == f"snapshot frame 1 at byte {len(FRAMES[0])} fails its checksum"

    garbage = FRAMES[0] + frame(b"\xc1")  # 0xc1 is never valid msgpack
    with pytest.raises(SnapshotFrameError) as err:
        list(read_frames([garbage]))
    assert (err.value.reason, err.value.frame) == ("decode", 1) and "does not decode" in str(err.value)

    with pytest.raises(SnapshotFrameError) as err:
        list(read_frames([STREAM[:-3]]))
    assert (err.value.reason, err.value.frame, err.value.stray) == ("truncated", 2, len(FRAMES[2]) - 3)
    assert "ends" in str(err.value)


def test_the_cli_reads_files_with_the_same_parser_and_keeps_its_messages(tmp_path: Path) -> None:
    store = MVCCStore(tmp_path / "kv")
    try:
        for i in range(300):
            store.put(b"k%03d" % i, b"v" * 50)
        good = b"".join(store.snapshot(chunk_bytes=4096))
    finally:
        store.close()
    path = tmp_path / "s.snap"
    path.write_bytes(good)
    assert is_kvraft_snapshot(str(path)) and verify_snapshot(str(path)).total_key > 300
    cases = {
        "flip": good[:100] + bytes([good[100] ^ 1]) + good[101:],
        "truncate": good[:-7],
    }
    messages = {}
    for name, data in cases.items():
        path.write_bytes(data)
        with pytest.raises(SnapshotFileError) as err:
            verify_snapshot(str(path))
        messages[name] = str(err.value)
    assert messages["flip"] == "snapshot frame fails its checksum (the file is damaged)"
    assert messages["truncate"].startswith("snapshot truncated: ") and messages["truncate"].endswith(
        " stray bytes at the end"
    )
    path.write_bytes(good[:5])
    assert not is_kvraft_snapshot(str(path))
    path.write_bytes(frame(msgpack.packb({"magic": "other"})) + good)
    assert not is_kvraft_snapshot(str(path))

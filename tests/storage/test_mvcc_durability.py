"""Crash safety and corruption detection of the MVCC store: SIGKILL during writes (and
background compaction), flipped bytes in the LMDB file."""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
from pathlib import Path

import mvcc_workload as workload
import pytest
from sigkill import kill_after

from kvraft.storage import fsck
from kvraft.storage.errors import KVCorruptionError, StorageCorruptionError
from kvraft.storage.mvcc import MemoryKV, MVCCStore

HERE = Path(__file__).resolve().parent


@pytest.mark.parametrize("seed", range(4))
def test_sigkill_leaves_a_committed_prefix(tmp_path: Path, seed: int) -> None:
    path = tmp_path / "kv"
    last = kill_after(HERE / "mvcc_workload.py", [str(path), str(seed)], random.Random(seed).uniform(0.2, 1.2))
    assert last >= 3, "the writer barely started: the kill tested nothing"
    model = MemoryKV()
    for k in range(1, last + 1):
        workload.step(seed, k, model)
    states = {last: workload.observe(model)}
    workload.step(seed, last + 1, model)
    states[last + 1] = workload.observe(model)
    store = MVCCStore(path, map_size=1 << 30)
    try:
        got = workload.observe(store)
        assert got in (states[last], states[last + 1]), f"acked {last}"
        # step last + 1 may leave the observed state unchanged, so either step may be the
        # last one committed; the consistent index commits with its batch (compaction steps
        # carry none)
        def consistent_after(j: int) -> tuple[int, int]:
            ci = max((k for k in range(1, j + 1) if k % 9), default=0)
            return (ci, 1) if ci else (0, 0)

        candidates = {consistent_after(j) for j in (last, last + 1) if states[j] == got}
        assert store.consistent_index in candidates
        if store.last_job is not None:  # an interrupted physical compaction resumes
            store.last_job.wait()
        assert store.verify()["hash"] == got[2]
    finally:
        store.close()


def _write_store(path: Path) -> list[tuple[int, int]]:
    """A store with distinctive values; returns (revision, hash) after every commit."""
    store = MVCCStore(path, map_size=1 << 26)
    states = [(store.rev, store.hash_kv().hash)]
    for b in range(20):
        with store.batch():
            for i in range(10):
                n = b * 10 + i
                store.put(b"key/%04d" % (n % 70), b"VALUE-%06d-" % n + bytes(30))
        states.append((store.rev, store.hash_kv().hash))
    store.compact(store.rev - 5, physical=True)
    states.append((store.rev, store.hash_kv().hash))
    store.close()
    return states


def test_flipped_value_byte_is_reported_with_its_revision(tmp_path: Path) -> None:
    path = tmp_path / "kv"
    _write_store(path)
    (data,) = path.glob("kv-*.lmdb")
    raw = bytearray(data.read_bytes())
    at = raw.find(b"VALUE-000187-")
    assert at > 0
    while at != -1:  # every copy (LMDB may keep stale copies in free pages)
        raw[at + 8] ^= 0x04
        at = raw.find(b"VALUE-000187-", at + 1)
    data.write_bytes(bytes(raw))
    with pytest.raises(KVCorruptionError) as err:
        MVCCStore(path, map_size=1 << 26)
    # each put is its own revision (a batch shares the commit, not the revision):
    # value 187 is the 188th put, revision 189, sub 0
    assert err.value.revision == (189, 0)
    assert "revision 189.0" in str(err.value)
    with pytest.raises(StorageCorruptionError, match="revision 189.0"):
        fsck.check("mvcc", path)


def test_random_flips_are_reported_or_harmless(tmp_path: Path) -> None:
    base = tmp_path / "base"
    states = _write_store(base)
    (data,) = base.glob("kv-*.lmdb")
    raw = data.read_bytes()
    rng = random.Random(99)
    reported = 0
    for trial in range(12):
        bad = bytearray(raw)
        bad[rng.randrange(len(bad))] ^= 1 << rng.randrange(8)
        path = tmp_path / f"t{trial}"
        path.mkdir()
        (path / data.name).write_bytes(bytes(bad))
        try:
            summary = fsck.check("mvcc", path)
        except StorageCorruptionError:
            reported += 1
            continue
        finally:
            shutil.rmtree(path, ignore_errors=True)
        assert (summary["revision"], summary["hash"]) in states, f"trial {trial}: {summary}"
    assert reported > 0


@pytest.mark.parametrize("keep", [0.25, 0.6, 0.95])
def test_a_truncated_file_is_refused_at_open_not_a_sigbus(tmp_path: Path, keep: float) -> None:
    """A store file cut short (a copy that stopped, a truncate): LMDB maps the file and its
    newest meta page points at pages past the end, so reading them killed the process with
    SIGBUS, a member exiting without a word. Refused at open now, naming the file."""
    path = tmp_path / "kv"
    _write_store(path)
    (data,) = path.glob("kv-*.lmdb")
    size = data.stat().st_size
    pages = size // 4096
    with open(data, "r+b") as f:
        f.truncate(max(3, int(pages * keep)) * 4096 - 100)
    done = subprocess.run(
        [sys.executable, "-c", "import sys\nfrom kvraft.storage.mvcc import MVCCStore\n"
         "from kvraft.storage.errors import StorageCorruptionError\n"
         "try:\n    MVCCStore(sys.argv[1], map_size=1 << 26)\n"
         "except StorageCorruptionError as exc:\n    print(exc)\n    sys.exit(3)\n", str(path)],
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, (done.returncode, done.stderr[-500:])
    assert str(data) in done.stdout and "truncated" in done.stdout

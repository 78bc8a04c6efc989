"""Group commit, crash safety (SIGKILL at random moments) and corruption detection of the
LMDB Raft log; the crash cases run against the WAL too (its own cases: ``test_wal.py``)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import raftlog_workload as workload

from kvraft.raft.types import Entry, HardState
from kvraft.storage import fsck
from kvraft.storage.errors import LogCorruptionError, StorageCorruptionError
from kvraft.storage.raft_log import LmdbLogStorage


def _reference() -> Any:
    try:
        from kvraft.raft.memory_storage import MemoryLogStorage
    except ImportError:  # pragma: no cover - the reference is part of the raft core
        pytest.skip("MemoryLogStorage not available")
    return MemoryLogStorage()


def _txnid(log: LmdbLogStorage) -> int:
    return int(log._env.info()["last_txnid"])


def test_one_durable_commit_per_batch(tmp_path: Path) -> None:
    log = LmdbLogStorage(tmp_path / "raft.lmdb", map_size=1 << 26)
    before = _txnid(log)
    for b in range(10):
        log.append([Entry(term=1, index=b * 100 + i + 1, data=b"x" * 50) for i in range(100)])
        log.set_hard_state(HardState(term=1, vote=1, commit=b * 100))
    assert _txnid(log) == before  # nothing committed while staging
    assert log.entries(999, 1001)[0].index == 999  # staged writes are readable
    log.sync()
    assert _txnid(log) == before + 1  # 1000 entries + 10 hard states: one commit
    log.sync()
    assert _txnid(log) == before + 1  # nothing staged: no commit
    log.append([Entry(term=1, index=1001)])
    log.sync()
    assert _txnid(log) == before + 2
    log.close()


@pytest.mark.parametrize("kind", ["lmdb", "wal"])
def test_unsynced_writes_are_lost_synced_ones_kept(tmp_path: Path, kind: str) -> None:
    path = str(tmp_path / kind)
    log = workload.open_log(path, kind)
    log.append([Entry(term=1, index=i) for i in range(1, 6)])
    log.set_hard_state(HardState(term=1, vote=2, commit=3))
    log.sync()
    log.append([Entry(term=2, index=i) for i in range(4, 9)])
    log.set_hard_state(HardState(term=2, vote=3, commit=5))
    log.close(sync=False)  # as a crash would
    log = workload.open_log(path, kind)
    assert (log.last_index(), log.term(5)) == (5, 1)
    assert log.initial_state()[0] == HardState(term=1, vote=2, commit=3)
    log.close()


def test_bootstrap_matches_the_reference(tmp_path: Path) -> None:
    mod = pytest.importorskip("kvraft.raft.memory_storage")
    mem = mod.MemoryLogStorage.bootstrap([1, 2, 3], [4])
    log = LmdbLogStorage.bootstrap(tmp_path / "raft.lmdb", [1, 2, 3], [4])
    assert workload.observe(log) == workload.observe(mem)
    log.close()
    with pytest.raises(ValueError):
        LmdbLogStorage.bootstrap(tmp_path / "raft.lmdb", [1])


# -- crash: SIGKILL a writer at random moments -----------------------------------------------


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("kind", ["lmdb", "wal"])
def test_sigkill_leaves_a_synced_prefix(tmp_path: Path, kind: str, seed: int) -> None:
    path = tmp_path / kind
    last_acked = workload.kill_writer(path, seed, kind, random.Random(seed).uniform(0.1, 0.8))
    assert last_acked >= 3, "the writer barely started: the kill tested nothing"
    # Replay the batches into the reference to learn every synced state.
    states = workload.synced_states(seed, last_acked + 1)
    log = workload.open_log(str(path), kind)
    got = workload.observe(log)
    log.verify()
    log.close()
    # Every acknowledged batch survived; at most the one in flight got in too.
    assert got in (states[last_acked], states[last_acked + 1]), f"acked {last_acked}"


# -- corruption: flipped bytes are detected and reported ----------------------------------


def _write_log(path: Path, batches: int = 30) -> None:
    # a hard-state term whose bytes are easy to find in the file
    workload.write_marked(LmdbLogStorage(path, map_size=1 << 26), batches, hard_term=0x0102030405060708)


def _flip_all(path: Path, needle: bytes, delta: int = 0) -> int:
    data = bytearray(path.read_bytes())
    n, at = 0, data.find(needle)
    while at != -1:
        data[at + delta] ^= 0x10
        n += 1
        at = data.find(needle, at + 1)
    path.write_bytes(bytes(data))
    return n


def test_flipped_payload_byte_names_the_index(tmp_path: Path) -> None:
    path = tmp_path / "raft.lmdb"
    _write_log(path)
    assert _flip_all(path, b"PAYLOAD-000123", delta=10) >= 1
    log = LmdbLogStorage(path)
    assert [e.index for e in log.entries(120, 123)] == [120, 121, 122]
    with pytest.raises(LogCorruptionError) as err:
        log.entries(100, 130)
    assert err.value.index == 123
    assert "raft log entry 123" in str(err.value)
    with pytest.raises(LogCorruptionError) as err:
        log.verify()
    assert err.value.index == 123
    log.close()
    with pytest.raises(StorageCorruptionError, match="entry 123"):
        fsck.check("raftlog", path)


def test_flipped_entry_header_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "raft.lmdb"
    _write_log(path)
    assert _flip_all(path, b"PAYLOAD-000077", delta=-1) >= 1  # the entry type byte
    log = LmdbLogStorage(path)
    with pytest.raises(LogCorruptionError) as err:
        log.term(77)
    assert err.value.index == 77
    log.close()


def test_flipped_hard_state_is_detected_on_open(tmp_path: Path) -> None:
    path = tmp_path / "raft.lmdb"
    _write_log(path)
    assert _flip_all(path, bytes.fromhex("0102030405060708"), delta=3) >= 1
    with pytest.raises(LogCorruptionError, match="state record"):
        LmdbLogStorage(path)


def test_random_flips_are_reported_or_harmless(tmp_path: Path) -> None:
    """Flip one random bit anywhere in the file (seeded): the checker either reports
    corruption, or sees exactly the data of some committed state (the flip hit free
    space, or LMDB's older meta page and selected the previous commit)."""
    base = tmp_path / "base.lmdb"
    log = LmdbLogStorage(base, map_size=1 << 26)
    ref = _reference()
    states = [workload.observe(ref)]
    for k in range(1, 25):
        workload.batch(7, k, log)
        log.sync()
        workload.batch(7, k, ref)
        states.append(workload.observe(ref))
    log.close()
    data = base.read_bytes()
    rng = random.Random(2024)
    outcomes = {"reported": 0, "intact": 0, "older": 0}
    for trial in range(16):
        bad = bytearray(data)
        bad[rng.randrange(len(bad))] ^= 1 << rng.randrange(8)
        path = tmp_path / f"t{trial}.lmdb"
        path.write_bytes(bytes(bad))
        try:
            summary = fsck.check("raftlog", path)
        except StorageCorruptionError:
            outcomes["reported"] += 1
            continue
        log = LmdbLogStorage(path)
        got = workload.observe(log)
        log.close()
        assert got in states, f"trial {trial}: undetected corruption: {summary}"
        outcomes["intact" if got == states[-1] else "older"] += 1
    assert outcomes["reported"] > 0, outcomes

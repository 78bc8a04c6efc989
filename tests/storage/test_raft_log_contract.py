"""The ``WritableLogStorage`` contract, run against every implementation.

To add an implementation, add one entry to ``IMPLEMENTATIONS``: a name and a factory
``(tmp_path) -> storage``. The differential test at the end drives random operation
sequences through all of them and requires identical observable behaviour.
"""

from __future__ import annotations

import importlib
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kvraft.raft.storage import (
    CompactedError,
    LogStorage,
    SnapshotOutOfDateError,
    UnavailableError,
    WritableLogStorage,
)
from kvraft.raft.types import ConfState, Entry, EntryType, HardState, Snapshot, SnapshotMetadata
from kvraft.storage.raft_log import LmdbLogStorage
from kvraft.storage.wal import WalLogStorage


def _memory(tmp_path: Path) -> Any:
    mod = pytest.importorskip("kvraft.raft.memory_storage")
    return mod.MemoryLogStorage()


def _lmdb(tmp_path: Path) -> Any:
    return LmdbLogStorage(tmp_path / "raft.lmdb", map_size=1 << 26)


def _wal(tmp_path: Path) -> Any:
    # small segments, so the random sequences below rotate (and drop) segments
    return WalLogStorage(tmp_path / "raft.wal", segment_bytes=4096)


IMPLEMENTATIONS: dict[str, Callable[[Path], Any]] = {
    "memory": _memory,
    "lmdb": _lmdb,
    "wal": _wal,
}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def log(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    storage = IMPLEMENTATIONS[request.param](tmp_path)
    yield storage
    if isinstance(storage, (LmdbLogStorage, WalLogStorage)):
        storage.close()


def ents(lo: int, hi: int, term: int = 1) -> list[Entry]:
    return [Entry(term=term, index=i, data=b"e%d" % i) for i in range(lo, hi)]


def test_satisfies_the_protocols(log: Any) -> None:
    assert isinstance(log, LogStorage)
    assert isinstance(log, WritableLogStorage)


def test_empty_log(log: Any) -> None:
    assert (log.first_index(), log.last_index()) == (1, 0)
    assert log.term(0) == 0
    assert log.entries(1, 1) == []
    assert log.initial_state() == (HardState(), ConfState())
    assert log.snapshot().is_empty()
    with pytest.raises(UnavailableError):
        log.term(1)
    with pytest.raises(UnavailableError):
        log.entries(1, 2)
    with pytest.raises(CompactedError):
        log.entries(0, 1)


def test_append_read_and_terms(log: Any) -> None:
    log.append(ents(1, 4, term=1) + ents(4, 6, term=2))
    log.sync()
    assert (log.first_index(), log.last_index()) == (1, 5)
    assert [e.index for e in log.entries(2, 5)] == [2, 3, 4]
    assert [log.term(i) for i in range(0, 6)] == [0, 1, 1, 1, 2, 2]
    assert log.entries(1, 6) == ents(1, 4, 1) + ents(4, 6, 2)
    kinds = [Entry(term=2, index=6, type=EntryType.CONF_CHANGE, data=b"cc")]
    log.append(kinds)
    assert log.entries(6, 7) == kinds
    with pytest.raises(UnavailableError):
        log.entries(6, 8)
    with pytest.raises(UnavailableError):
        log.term(7)


def test_append_truncates_conflicting_suffix(log: Any) -> None:
    log.append(ents(1, 6, term=1))
    log.append(ents(3, 5, term=2))
    assert log.last_index() == 4
    assert [log.term(i) for i in range(1, 5)] == [1, 1, 2, 2]
    with pytest.raises(UnavailableError):
        log.term(5)
    log.append(ents(5, 7, term=3))
    assert [e.term for e in log.entries(1, 7)] == [1, 1, 2, 2, 3, 3]


def test_append_rejects_gaps_and_holes(log: Any) -> None:
    log.append(ents(1, 3))
    with pytest.raises(ValueError):
        log.append(ents(5, 6))
    with pytest.raises(ValueError):
        log.append([Entry(1, 3), Entry(1, 5)])
    assert log.last_index() == 2


def test_max_bytes_returns_at_least_one(log: Any) -> None:
    big = [Entry(term=1, index=i, data=b"x" * 100) for i in range(1, 6)]
    log.append(big)
    size = big[0].size() if hasattr(big[0], "size") else 116
    assert len(log.entries(1, 6, max_bytes=0)) == 1
    assert len(log.entries(1, 6, max_bytes=size)) == 1
    assert len(log.entries(1, 6, max_bytes=2 * size)) == 2
    assert len(log.entries(1, 6, max_bytes=2 * size + 1)) == 2
    assert len(log.entries(1, 6, max_bytes=10_000)) == 5
    assert len(log.entries(1, 6, max_bytes=None)) == 5


def test_create_snapshot_and_compact(log: Any) -> None:
    log.append(ents(1, 4, 1) + ents(4, 11, 2))
    cs = ConfState(voters=frozenset({1, 2, 3}))
    snap = log.create_snapshot(7, cs, b"state@7")
    assert snap.metadata == SnapshotMetadata(index=7, term=2, conf_state=cs)
    assert _snapshot(log) == snap
    assert log.initial_state()[1] == cs
    with pytest.raises(SnapshotOutOfDateError):
        log.create_snapshot(7, cs, b"again")
    with pytest.raises(UnavailableError):
        log.create_snapshot(11, cs, b"future")
    assert log.first_index() == 1  # creating a snapshot does not discard entries
    with pytest.raises(ValueError):
        log.compact(8)  # not covered by the snapshot
    log.compact(5)
    assert (log.first_index(), log.last_index()) == (6, 10)
    assert log.term(5) == 2
    with pytest.raises(CompactedError):
        log.term(4)
    with pytest.raises(CompactedError):
        log.entries(5, 7)
    assert [e.index for e in log.entries(6, 11)] == [6, 7, 8, 9, 10]
    log.compact(3)  # already compacted: no-op
    assert log.first_index() == 6
    log.compact(7)
    assert (log.first_index(), log.term(7)) == (8, 2)


def test_append_over_the_compacted_prefix(log: Any) -> None:
    log.append(ents(1, 11))
    log.create_snapshot(5, ConfState(), b"")
    log.compact(5)
    log.append(ents(2, 5, term=1))  # entirely compacted: ignored
    assert log.last_index() == 10
    log.append(ents(3, 9, term=2))  # trimmed to 6..8, then truncates 9..10
    assert log.first_index() == 6
    assert log.last_index() == 8
    assert [e.term for e in log.entries(6, 9)] == [2, 2, 2]


def test_apply_snapshot_discards_or_keeps_the_suffix(log: Any) -> None:
    log.append(ents(1, 11, term=2))
    cs = ConfState(voters=frozenset({1, 2}), learners=frozenset({3}))
    keep = Snapshot(SnapshotMetadata(index=6, term=2, conf_state=cs), b"six")
    log.apply_snapshot(keep)  # entry 6 has term 2: entries 7..10 stay
    assert (log.first_index(), log.last_index()) == (7, 10)
    assert log.term(6) == 2
    assert _snapshot(log) == keep
    assert log.initial_state()[1] == cs
    with pytest.raises(SnapshotOutOfDateError):
        log.apply_snapshot(keep)
    other = Snapshot(SnapshotMetadata(index=8, term=5, conf_state=cs), b"eight")
    log.apply_snapshot(other)  # term mismatch: everything goes
    assert (log.first_index(), log.last_index()) == (9, 8)
    assert log.term(8) == 5
    assert log.entries(9, 9) == []
    far = Snapshot(SnapshotMetadata(index=50, term=6, conf_state=cs), b"fifty")
    log.apply_snapshot(far)
    assert (log.first_index(), log.last_index(), log.term(50)) == (51, 50, 6)
    log.append(ents(51, 53, term=6))
    assert log.last_index() == 52


def test_hard_state(log: Any) -> None:
    log.set_hard_state(HardState(term=3, vote=2, commit=7))
    log.sync()
    assert log.initial_state()[0] == HardState(term=3, vote=2, commit=7)


def _snapshot(log: Any) -> Snapshot:
    """The log's snapshot with its data: the WAL's ``snapshot()`` holds the metadata alone
    and reads the data from its file on demand (``snapshot_data``)."""
    snap = log.snapshot()
    if hasattr(log, "snapshot_data"):
        return Snapshot(snap.metadata, log.snapshot_data())
    return snap


def test_the_wal_keeps_no_snapshot_data_in_memory(tmp_path: Path) -> None:
    """A received snapshot's data is the size of the store; the WAL writes it to its file and
    forgets it (read again only to restore a store behind it)."""
    log = WalLogStorage(tmp_path / "wal")
    cs = ConfState(voters=frozenset({1}))
    log.apply_snapshot(Snapshot(SnapshotMetadata(index=5, term=1, conf_state=cs), b"x" * 4096))
    log.sync()
    assert log.snapshot().data == b"" and log.snapshot_data() == b"x" * 4096
    assert [p.name for p in (tmp_path / "wal").glob("snap-*")] == [f"snap-{5:016x}.snap"]
    # a snapshot without data (the member's own: its store is the state) has no file, and
    # the received one's file goes once it is superseded
    log.append([Entry(term=1, index=6)])
    log.create_snapshot(6, cs, b"")
    log.sync()
    assert log.snapshot_data() == b"" and not list((tmp_path / "wal").glob("snap-*"))
    log.close()
    again = WalLogStorage(tmp_path / "wal")
    assert again.snapshot().metadata.index == 6 and again.snapshot_data() == b""
    again.close()


# -- differential: random operation sequences ----------------------------------------------


def _observe(s: Any) -> tuple[Any, ...]:
    first, last = s.first_index(), s.last_index()
    terms = [s.term(i) for i in range(first - 1, last + 1)]
    return (first, last, terms, s.entries(first, last + 1), s.initial_state(), _snapshot(s))


def _step(s: Any, rng: random.Random, op: int) -> Any:
    """Apply one random op (chosen from ``rng``); return its outcome or error type."""
    first, last = s.first_index(), s.last_index()
    try:
        if op < 5:
            # Raft never truncates at or below a snapshot (snapshots hold committed
            # entries), so appends start after it, or fall entirely in the compacted prefix.
            snap = s.snapshot().metadata.index
            lo = rng.randint(max(1, snap + 1), last + 1)
            if first > 2 and rng.random() < 0.1:
                lo = rng.randint(1, first - 2)
                s.append([Entry(term=1, index=i) for i in range(lo, first)])
                return None
            term = rng.randint(1, 5)
            s.append([Entry(term=term, index=i, data=rng.randbytes(rng.randint(0, 20)))
                      for i in range(lo, lo + rng.randint(1, 6))])
            return None
        if op == 5:
            lo, hi = rng.randint(first - 2, last + 2), rng.randint(first - 2, last + 3)
            return s.entries(lo, max(lo, hi), rng.choice([None, 0, 30, 80]))
        if op == 6:
            return s.term(rng.randint(first - 3, last + 3))
        if op == 7:
            cs = ConfState(voters=frozenset(rng.sample(range(1, 6), rng.randint(1, 3))))
            return s.create_snapshot(rng.randint(first - 2, last + 1), cs, rng.randbytes(4))
        if op == 8:
            return s.compact(rng.randint(first - 2, s.snapshot().metadata.index + 1))
        if op == 9:
            idx = rng.randint(s.snapshot().metadata.index, last + 3)
            term = s.term(idx) if first <= idx <= last and rng.random() < 0.5 else rng.randint(1, 6)
            snap = Snapshot(SnapshotMetadata(index=idx, term=term, conf_state=ConfState()), b"x")
            return s.apply_snapshot(snap)
        s.set_hard_state(HardState(term=rng.randint(0, 9), vote=rng.randint(0, 3), commit=rng.randint(0, 9)))
        return None
    except (CompactedError, UnavailableError, SnapshotOutOfDateError, ValueError) as exc:
        return type(exc)
    finally:
        if rng.random() < 0.3:
            s.sync()


@pytest.mark.parametrize("seed", range(6))
def test_implementations_agree_on_random_sequences(tmp_path: Path, seed: int) -> None:
    names = sorted(IMPLEMENTATIONS)
    stores = {}
    for n in names:
        if n == "memory" and importlib.util.find_spec("kvraft.raft.memory_storage") is None:
            continue
        d = tmp_path / n
        d.mkdir()
        stores[n] = IMPLEMENTATIONS[n](d)
    if len(stores) < 2:
        pytest.skip("only one implementation available")
    rngs = {n: random.Random(seed) for n in stores}
    ops = random.Random(seed + 1000)
    for _ in range(250):
        op = ops.randint(0, 10)
        outcomes = {n: _step(s, rngs[n], op) for n, s in stores.items()}
        assert len({repr(o) for o in outcomes.values()}) == 1, outcomes
        views = {n: _observe(s) for n, s in stores.items()}
        assert len({repr(v) for v in views.values()}) == 1, views
    lm = stores.get("lmdb")
    if lm is not None:  # what was synced survives a reopen
        lm.sync()
        before = _observe(lm)
        lm.close()
        again = LmdbLogStorage(tmp_path / "lmdb" / "raft.lmdb")
        assert _observe(again) == before
        again.close()
    wal = stores.get("wal")
    if wal is not None:  # the same for the WAL (replayed from its newest segment)
        wal.sync()
        before = _observe(wal)
        wal.close()
        again = WalLogStorage(tmp_path / "wal" / "raft.wal", segment_bytes=4096)
        assert _observe(again) == before
        again.verify()
        again.close()

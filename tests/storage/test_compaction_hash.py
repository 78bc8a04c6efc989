"""The hash a compaction records before it deletes anything (``compaction_hash``, etcd's
``KeyValueHash`` in its ``HashStorage``): what it covers, that healthy replicas agree on it
whatever their own compaction progress, and that a diverged record changes it."""

from __future__ import annotations

import random
from pathlib import Path

from kvraft.storage.mvcc import MVCCStore
from kvraft.storage.mvcc.store import COMPACTION_HASHES_KEPT
from kvraft.storage.schema import BUCKET_KEY, decode_kv, encode_kv


def open_store(path: Path) -> MVCCStore:
    return MVCCStore(path, map_size=1 << 27, sync=False)


def workload(store: MVCCStore, seed: int, count: int) -> None:
    """Puts, overwrites and deletes over 20 keys (deterministic by seed)."""
    rng = random.Random(seed)
    for _ in range(count):
        key = b"k%02d" % rng.randrange(20)
        if rng.random() < 0.2:
            store.delete_range(key, None)
        else:
            store.put(key, b"v%d" % rng.randrange(1000))


def compact(store: MVCCStore, rev: int) -> None:
    store.compact(rev, physical=True)


def test_a_compaction_records_the_hash_at_its_revision_from_the_previous_point(tmp_path: Path) -> None:
    with open_store(tmp_path / "s") as store:
        workload(store, 1, 200)
        first = store.rev - 50
        before = store.hash_kv(first)  # (never compacted: compaction point -1)
        compact(store, first)
        [recorded] = store.compaction_hashes()
        assert (recorded.hash, recorded.compact_revision, recorded.hash_revision) == (before.hash, -1, first)
        workload(store, 2, 100)
        second = store.rev - 10
        before = store.hash_kv(second)
        assert before.compact_revision == first
        compact(store, second)
        assert [h.hash_revision for h in store.compaction_hashes()] == [first, second]
        recorded = store.compaction_hashes()[-1]
        assert (recorded.hash, recorded.compact_revision) == (before.hash, first)
        # HashKV at a compaction revision answers the recorded hash (etcd's HashByRev); the
        # live hash there is another one (its compaction point is the revision itself)
        answer = store.hash_by_rev(second)
        assert (answer.hash, answer.compact_revision, answer.hash_revision, answer.revision) == \
            (recorded.hash, first, second, store.rev)
        live = store.hash_kv(second)
        assert live.compact_revision == second and live.hash != recorded.hash
        assert store.hash_by_rev(store.rev).compact_revision == second  # (no compaction there: live)


def test_replicas_agree_whether_or_not_they_have_compacted_there_yet(tmp_path: Path) -> None:
    """A member behind the leader's compaction hashes the revision itself: with the same
    previous compaction point it gets the recorded hash."""
    with open_store(tmp_path / "a") as ahead, open_store(tmp_path / "b") as behind:
        for store in (ahead, behind):
            workload(store, 7, 150)
            compact(store, 60)
            workload(store, 8, 150)
        compact(ahead, 240)
        recorded = ahead.compaction_hashes()[-1]
        answer = behind.hash_by_rev(240)
        assert (answer.hash, answer.compact_revision) == (recorded.hash, recorded.compact_revision) == \
            (recorded.hash, 60)
        compact(behind, 240)
        assert behind.compaction_hashes() == ahead.compaction_hashes()


def test_a_diverged_record_changes_the_compaction_hash(tmp_path: Path) -> None:
    with open_store(tmp_path / "a") as healthy, open_store(tmp_path / "b") as damaged:
        for store in (healthy, damaged):
            workload(store, 3, 100)
        with damaged.backend.batch() as batch:  # one record's value rewritten, checksum and all
            bucket = batch.dbis[BUCKET_KEY]
            rev_key, raw = next(iter(batch.txn.cursor(db=bucket)))
            key, create, mod, version, _value, lease = decode_kv(rev_key, raw)
            batch.txn.put(rev_key, encode_kv(rev_key, key, create, mod, version, b"flipped", lease), db=bucket)
        for store in (healthy, damaged):
            compact(store, 90)
        assert healthy.compaction_hashes()[0].hash != damaged.compaction_hashes()[0].hash


def test_the_newest_ten_are_kept_and_a_restore_forgets_them(tmp_path: Path) -> None:
    with open_store(tmp_path / "s") as store, open_store(tmp_path / "other") as other:
        workload(store, 5, 300)
        for rev in range(100, 100 + 12 * 10, 10):
            compact(store, rev)
        assert [h.hash_revision for h in store.compaction_hashes()] == \
            list(range(100 + 2 * 10, 100 + 12 * 10, 10))
        assert len(store.compaction_hashes()) == COMPACTION_HASHES_KEPT
        workload(other, 6, 10)
        store.restore(list(other.snapshot()))
        assert store.compaction_hashes() == []


def test_the_last_compactions_time_and_open_read_views_are_counted(tmp_path: Path) -> None:
    """``etcd_debugging_mvcc_db_compaction_last`` and ``etcd_mvcc_db_open_read_transactions``."""
    import time

    with open_store(tmp_path / "s") as store:
        workload(store, 9, 20)
        assert store.timings.db_compaction_last == 0 and store.gate.readers == 0
        with store.read(), store.read():
            assert store.gate.readers == 1  # (one thread's nested views hold the gate once)
        before = time.time()
        compact(store, 10)
        assert before <= store.timings.db_compaction_last <= time.time()
        assert store.gate.readers == 0

"""Reading the ``key`` bucket in revision order: rebuilding the store's in-memory state
on open (etcd's ``restore``), history for watchers, and full verification.

Rebuild walks every record once, oldest first, verifying its checksum: the first record
of a key restores its ``KeyIndex`` from the record's create revision and version (older
history may be compacted away; a key whose oldest record is a tombstone is restored as
deleted); later records replay as puts and tombstones. The lease of each key's newest
record gives the key -> lease map. The current revision is the largest of the newest
record, the persisted ``currentRev`` and the compaction revisions (a compaction may have
removed the newest records' predecessors but never the newest).
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kvraft.storage.backend import Backend
from kvraft.storage.errors import KVCorruptionError, StorageCorruptionError
from kvraft.storage.lmdb_env import LMDB_CORRUPTION
from kvraft.storage.mvcc.index import TreeIndex
from kvraft.storage.mvcc.key_index import KeyIndex
from kvraft.storage.mvcc.types import Event, EventType, KeyValue
from kvraft.storage.revision import bytes_to_rev, pack, rev_to_bytes
from kvraft.storage.schema import (
    ALARM_NOSPACE,
    BUCKET_ALARM,
    BUCKET_KEY,
    BUCKET_META,
    META_CONSISTENT_INDEX,
    META_CURRENT_REV,
    META_FINISHED_COMPACT,
    META_NOSPACE_ALARM,
    META_SCHEDULED_COMPACT,
    alarm_from_record,
    decode_consistent_index,
    decode_int,
    decode_kv,
    decode_meta,
)

if TYPE_CHECKING:
    from kvraft.storage.mvcc.store import MVCCStore
    from kvraft.storage.mvcc.views import ReadView

__all__ = ["State", "load_state", "read_events", "verify_store"]


@dataclass
class State:
    index: TreeIndex
    current_rev: int = 1
    compact_rev: int = -1
    consistent_index: tuple[int, int] = (0, 0)
    alarms: frozenset[tuple[int, int]] = frozenset()
    resume_compaction: bool = False
    key_lease: dict[bytes, int] = field(default_factory=dict)
    records: int = 0


def _rev_of(rev_key: bytes) -> tuple[int, int, bool]:
    try:
        return bytes_to_rev(rev_key)
    except ValueError as exc:
        raise KVCorruptionError((0, 0), str(exc)) from None


def load_state(backend: Backend) -> State:
    """Rebuild the index, revisions, leases and flags from the live generation. The
    cyclic garbage collector is paused meanwhile: building millions of small objects
    would otherwise trigger a full collection over all of them again and again."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        with backend.read() as r:
            return _load(r.txn, r.dbis)
    except LMDB_CORRUPTION as exc:
        raise StorageCorruptionError(f"{backend.path}: lmdb: {exc}") from exc
    finally:
        if was_enabled:
            gc.enable()


def _load(txn: Any, dbis: dict[bytes, Any]) -> State:
    meta = dbis[BUCKET_META]

    def meta_int(name: bytes) -> int | None:
        raw = txn.get(name, db=meta)
        return None if raw is None else decode_int(name, raw)

    finished = meta_int(META_FINISHED_COMPACT)
    scheduled = meta_int(META_SCHEDULED_COMPACT)
    current = meta_int(META_CURRENT_REV) or 1
    kis: dict[bytes, KeyIndex] = {}
    leases: dict[bytes, int] = {}
    last_main, records = 1, 0
    for rev_key, raw in txn.cursor(db=dbis[BUCKET_KEY]):
        main, sub, tomb = _rev_of(rev_key)
        key, create, _mod, version, _value, lease = decode_kv(rev_key, raw)
        packed = pack(main, sub)
        ki = kis.get(key)
        if ki is None:
            ki = kis[key] = KeyIndex(key)
            if tomb:
                ki.restore_tombstone(packed)
            else:
                ki.restore(pack(create, 0), packed, version)
        elif tomb:
            ki.tombstone(packed)
        else:
            ki.put(packed)
        if tomb or not lease:
            leases.pop(key, None)
        else:
            leases[key] = lease
        last_main = main
        records += 1
    index = TreeIndex()
    index.load(kis.values())
    state = State(index=index, key_lease=leases, records=records)
    state.compact_rev = finished if finished is not None else -1
    state.current_rev = max(last_main, current, state.compact_rev, scheduled or 0)
    if scheduled is not None and scheduled > state.compact_rev:
        state.compact_rev = scheduled
        state.resume_compaction = True
    state.consistent_index = decode_consistent_index(txn.get(META_CONSISTENT_INDEX, db=meta))
    alarm_db = dbis.get(BUCKET_ALARM)
    alarms = set() if alarm_db is None else {alarm_from_record(k, v) for k, v in txn.cursor(db=alarm_db).iternext()}
    raw = txn.get(META_NOSPACE_ALARM, db=meta)
    if raw is not None and decode_meta(META_NOSPACE_ALARM, raw) == b"\x01" and not any(t == ALARM_NOSPACE for _, t in alarms):
        alarms.add((0, ALARM_NOSPACE))  # a store from before the alarm bucket: who raised it is unknown
    state.alarms = frozenset(alarms)
    return state


def read_events(view: ReadView, start_rev: int, end_rev: int) -> list[tuple[int, list[Event]]]:
    """Events of revisions ``[start_rev, end_rev)`` from the view's transaction."""
    out: list[tuple[int, list[Event]]] = []
    cur = view._txn.cursor(db=view._key_db)
    if not cur.set_range(rev_to_bytes(max(start_rev, 1), 0)):
        return out
    upper = rev_to_bytes(end_rev, 0)
    for rev_key, raw in cur:
        if rev_key >= upper:
            break
        main, _sub, tomb = _rev_of(rev_key)
        key, create, mod, version, value, lease = decode_kv(rev_key, raw)
        if tomb:
            event = Event(EventType.DELETE, KeyValue(key, mod_revision=mod))
        else:
            event = Event(EventType.PUT, KeyValue(key, create, mod, version, value, lease))
        if out and out[-1][0] == main:
            out[-1][1].append(event)
        else:
            out.append((main, [event]))
    return out


def verify_store(store: MVCCStore) -> dict[str, Any]:
    """Re-read every record (checksums) and compare a fresh rebuild with the live index
    (the keys alive now and their revisions; what older history each keeps depends on how
    far a background compaction has got). Returns a summary (records, keys alive,
    revisions, hash). Raises StorageCorruptionError."""
    state = load_state(store.backend)
    live = store.index
    rev = store.rev
    on_disk = dict(state.index.keys_alive(rev))
    in_memory = dict(live.keys_alive(rev))
    if on_disk != in_memory:
        diff = sorted(set(on_disk.items()) ^ set(in_memory.items()))[:3]
        raise StorageCorruptionError(f"index and records disagree at revision {rev}: {diff!r}")
    h = store.hash_kv()
    return {
        "records": state.records, "keys": len(on_disk), "revision": store.rev,
        "compact_revision": store.compact_revision, "hash": h.hash,
        "consistent_index": list(store.consistent_index),
    }

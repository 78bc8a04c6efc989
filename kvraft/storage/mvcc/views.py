"""Read and write views of the MVCC store (etcd's ``TxnRead`` / ``TxnWrite``).

A ``ReadView`` sees the store as of one revision, ``rev`` (the last committed revision
when it was opened), through one LMDB read transaction: a consistent snapshot that
writers never block. A ``WriteView`` is one atomic change of the store: every ``put``
and ``delete_range`` made through it gets the same main revision, ``rev + 1``, with sub
revisions 0, 1, ... in call order; it reads its own writes.

The range convention here is the index's (``end is None``: one key; ``b""``: every key
>= ``key``); the etcd request conventions (``"\\0"``) are translated in ``ops``.

Ownership and threading: views are opened by ``MVCCStore.read()`` / ``write()`` as
context managers and are valid only inside the ``with`` block, on the thread that opened
them. KeyValues returned are immutable and belong to the caller.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from kvraft.storage.errors import KVCorruptionError
from kvraft.storage.mvcc.errors import CompactedRevisionError, FutureRevisionError
from kvraft.storage.mvcc.types import Event, EventType, KeyValue
from kvraft.storage.revision import bytes_to_rev, main_of, pack, rev_to_bytes, unpack  # noqa: F401
from kvraft.storage.schema import BUCKET_KEY, decode_kv, encode_kv

if TYPE_CHECKING:
    from kvraft.storage.backend import Batch
    from kvraft.storage.mvcc.store import MVCCStore

__all__ = ["ReadView", "View", "WriteView", "put_event"]

_new_kv = tuple.__new__  # KeyValue from a 6-tuple without re-checking the fields


class View(Protocol):
    """What ``ops`` needs from a view (both view kinds and the reference model's)."""

    @property
    def rev(self) -> int: ...

    @property
    def first_rev(self) -> int: ...

    def range(
        self, key: bytes, end: bytes | None, *, rev: int = 0, limit: int = 0,
        count_only: bool = False, count: bool = True,
    ) -> tuple[list[KeyValue], int, int]:
        """``(kvs, count, header_revision)``: the keys alive at ``rev`` (0: the view's
        current revision) in key order, at most ``limit`` of them (0: all), and how many
        are alive in total (0 without ``count``: the scan stops at ``limit``). Raises
        FutureRevisionError / CompactedRevisionError."""
        ...


class ReadView:
    """See the module docstring. ``first_rev`` is the compaction point when opened."""

    def __init__(self, store: MVCCStore, txn: Any, dbis: dict[bytes, Any], rev: int) -> None:
        self._store = store
        self._txn = txn
        self._key_db = dbis[BUCKET_KEY]
        self._rev = rev
        self._first_rev = store.compact_revision
        self._index = store.index  # the index of this view's generation of the state

    @property
    def rev(self) -> int:
        return self._rev

    @property
    def first_rev(self) -> int:
        return self._first_rev

    def _current(self) -> int:
        return self._rev

    def range(
        self, key: bytes, end: bytes | None, *, rev: int = 0, limit: int = 0,
        count_only: bool = False, count: bool = True,
    ) -> tuple[list[KeyValue], int, int]:
        cur = self._current()
        if rev > cur:
            raise FutureRevisionError()
        if rev <= 0:
            rev = cur
        store = self._store
        if rev < store.compact_revision:
            raise CompactedRevisionError()
        if count_only:
            total = self._index.count(key, end, rev)
            kvs: list[KeyValue] = []
        else:
            hits, total = self._index.range(key, end, rev, limit, count)
            kvs = [self._fetch(modified) for _key, modified, _c, _v in hits]
        if rev < store.compact_revision:  # compacted while we read the index
            raise CompactedRevisionError()
        return kvs, total, cur

    def _fetch(self, packed: int) -> KeyValue:
        rev_key = rev_to_bytes(packed >> 32, packed & 0xFFFFFFFF)
        raw = self._txn.get(rev_key, db=self._key_db)
        if raw is None:
            raise KVCorruptionError(unpack(packed), "record missing from the key bucket")
        return _new_kv(KeyValue, decode_kv(rev_key, raw))


class WriteView(ReadView):
    """One revision's worth of changes; see the module docstring."""

    def __init__(self, store: MVCCStore, batch: Batch, begin_rev: int) -> None:
        super().__init__(store, batch.txn, batch.dbis, begin_rev)
        self._batch = batch
        self.changes: list[Event] = []

    def _current(self) -> int:
        return self._rev + 1 if self.changes else self._rev

    def _append(self, rev_key: bytes, record: bytes) -> None:
        if not self._txn.put(rev_key, record, db=self._key_db, append=True):
            main, sub, _ = bytes_to_rev(rev_key)
            raise KVCorruptionError((main, sub), "revision is not past the newest stored one")

    def put(self, key: bytes, value: bytes, lease: int = 0) -> int:
        """Write ``key``; returns the new revision. The key's create revision and version
        continue its current generation (or start one)."""
        main = self._rev + 1
        self.changes.append(put_event(self._store, self._batch, main, len(self.changes), key, value, lease))
        return main

    def delete_range(self, key: bytes, end: bytes | None) -> tuple[int, int]:
        """Delete the keys alive in the range; returns ``(deleted, revision)`` (the
        revision is unchanged when nothing was deleted and nothing else was written)."""
        store = self._store
        hits, _total = store.index.range(key, end, self._current())
        main = self._rev + 1
        for k, *_ in hits:
            sub = len(self.changes)
            rev_key = rev_to_bytes(main, sub, tombstone=True)
            store._remember(self._batch, k, store.index.shape(k))
            store.index.tombstone(k, pack(main, sub))
            self._append(rev_key, encode_kv(rev_key, k, 0, main, 0, b"", 0))
            store._set_lease(k, 0)
            self.changes.append(Event(EventType.DELETE, KeyValue(k, mod_revision=main)))
        return len(hits), self._current()


def put_event(store: MVCCStore, batch: Batch, main: int, sub: int, key: bytes, value: bytes, lease: int) -> Event:
    """Write ``key`` at revision ``(main, sub)`` in ``batch`` (index, undo record, key
    bucket, lease map) and return its PUT event: the body of ``WriteView.put``, shared with
    ``MVCCStore.put_request``'s path for plain puts inside a batch."""
    got, shape = store.index.put_returning(key, main << 32 | sub)  # revision.pack
    store._remember(batch, key, shape)
    created, version = (got[1] >> 32, got[2] + 1) if got is not None else (main, 1)
    rev_key = rev_to_bytes(main, sub)
    if not batch.txn.put(rev_key, encode_kv(rev_key, key, created, main, version, value, lease),
                         db=batch.dbis[BUCKET_KEY], append=True):
        raise KVCorruptionError((main, sub), "revision is not past the newest stored one")
    if lease or key in store._key_lease:
        store._set_lease(key, lease)
    kv = _new_kv(KeyValue, (key, created, main, version, value, lease))
    return _new_kv(Event, (EventType.PUT, kv))

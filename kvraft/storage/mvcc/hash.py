"""``hash_kv``: a hash of the key-value history up to a revision, equal across replicas
(etcd's ``HashByRev``, used to detect diverged members).

The hash is a crc32 over the bucket name ``b"key"`` followed by ``revision key || record``
of every record in revision order with main revision <= ``rev`` that is either

- newer than the compaction point, or
- older, and still the key's visible (not deleted) revision at ``rev`` (what compaction
  at ``rev`` would keep; etcd's ``kvindex.Keep``).

So records a replica has not yet physically deleted, and tombstones kept at the
compaction point, never change the hash: two replicas with the same logical history and
the same compaction point agree whatever their physical compaction progress. The records
are our deterministic encoding (``schema.encode_kv``) and the crc is zlib's (IEEE), so
the numbers differ from etcd's (protobuf, Castagnoli); the semantics are etcd's.

``compaction_hash``: what a compaction at ``rev`` records before it deletes anything (etcd's
``scheduleCompaction`` hashes as it goes): the hash at ``rev`` as it was while the compaction
point was still the previous one, kept as ``compact_revision`` (etcd's ``KeyValueHash``).
Every member compacts at the same revisions with the same previous point, so the hashes of
healthy members agree whatever their revision now: the compact hash check
(``kvraft.server.corruption``) compares them under any write load.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING, Any

from kvraft.storage.mvcc.errors import CompactedRevisionError, FutureRevisionError
from kvraft.storage.mvcc.types import HashKVResult
from kvraft.storage.revision import bytes_to_rev, pack, rev_to_bytes
from kvraft.storage.schema import BUCKET_KEY, decode_kv

if TYPE_CHECKING:
    from kvraft.storage.mvcc.index import TreeIndex
    from kvraft.storage.mvcc.store import MVCCStore

__all__ = ["compaction_hash", "hash_kv"]


def hash_kv(store: MVCCStore, rev: int = 0) -> HashKVResult:
    """The hash at ``rev`` (0: the current revision). CompactedRevisionError if ``rev``
    is below the compaction point, FutureRevisionError if above the current revision."""
    with store.read() as view:
        compact, current = store.compact_revision, view.rev
        if 0 < rev < compact:
            raise CompactedRevisionError()
        if rev > current:
            raise FutureRevisionError()
        if rev <= 0:
            rev = current
        crc = _hash(store.index, view._txn, view._key_db, rev, compact)
        if 0 < rev < store.compact_revision:  # compacted past ``rev`` while hashing
            raise CompactedRevisionError()
        return HashKVResult(hash=crc, compact_revision=compact, hash_revision=rev, revision=current)


def compaction_hash(store: MVCCStore, index: TreeIndex, rev: int, previous: int) -> HashKVResult:
    """The hash a compaction at ``rev`` records, the compaction point before it ``previous``.
    Called by the compactor before it deletes anything, so the records it would delete are
    still there; it takes no read view (the compaction gate would hold up the next
    compaction's apply for the whole scan), which is safe because only the compactor's own
    thread, after this, deletes records or compacts the index."""
    with store.backend.read() as read:
        crc = _hash(index, read.txn, read.dbis[BUCKET_KEY], rev, previous)
    return HashKVResult(hash=crc, compact_revision=previous, hash_revision=rev, revision=rev)


def _hash(index: TreeIndex, txn: Any, key_db: Any, rev: int, compact: int) -> int:
    crc = zlib.crc32(BUCKET_KEY)
    upper = rev_to_bytes(rev + 1, 0)
    for rev_key, raw in txn.cursor(db=key_db):
        if rev_key >= upper:
            break
        main, sub, tomb = bytes_to_rev(rev_key)
        if main <= compact:
            if tomb:
                continue
            key = decode_kv(rev_key, raw)[0]
            got = index.get(key, rev)
            if got is None or got[0] != pack(main, sub):
                continue
        crc = zlib.crc32(rev_key, crc)
        crc = zlib.crc32(raw, crc)
    return crc

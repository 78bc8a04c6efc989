"""Online defragmentation: rewrite the backend compactly without stopping the store.

etcd's defragment holds its backend lock for the whole copy (writes stop for seconds on
a large database, etcd-io/etcd#9222, #20952). Here writes and reads continue:

1. Under ``maint_lock`` only (no physical compaction or restore can interleave), open a
   read transaction T0 and copy every bucket as of T0, record by record in key order,
   into a fresh scratch file with LMDB's append mode: pages come out full. (LMDB's own
   compacting copy only drops free pages; pages left half empty by deletions, which is
   what compaction leaves behind, stay half empty.)
2. Catch up without blocking anyone: the ``key`` bucket is append-only by revision
   (only physical compaction deletes from it, and it is excluded), so what was written
   since T0 is exactly the records past the last key copied. Copy them from a fresh read
   transaction; repeat while the delta is large (``catchup_rounds``); fsync the scratch
   file.
3. Take the writer lock (writers wait; readers never do) and copy the last small delta,
   then replace the small buckets wholesale (``meta``, ``lease``, ``auth``, ...: their
   entries may have been overwritten or deleted, and they are tiny), fsync, rename into
   place and switch (``Backend.install``). Open readers finish on the old file.

The writers' pause is step 3 only: a few milliseconds, independent of the database size
(the benchmark records it). A crash at any point leaves the old generation or the new one
live, complete (``Backend``'s rename protocol).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from kvraft import failpoints
from kvraft.storage.backend import Backend
from kvraft.storage.schema import BUCKET_KEY

__all__ = ["DefragReport", "defragment"]


@dataclass(frozen=True)
class DefragReport:
    size_before: int
    size_after: int
    in_use_before: int
    in_use_after: int
    catchup_rounds: int
    delta_records: int
    writer_pause_s: float
    total_s: float


def _copy_delta(backend: Backend, env: Any, dbis: dict[bytes, Any], after: bytes | None) -> tuple[int, bytes | None]:
    """Copy key-bucket records with keys > ``after``; return (count, last key copied)."""
    with backend.read() as r:
        cur = r.txn.cursor(db=r.dbis[BUCKET_KEY])
        if after is None:
            found = cur.first()
        else:
            found = cur.set_range(after)
            if found and cur.key() == after:
                found = cur.next()
        if not found:
            return 0, after
        n, last = 0, after
        with env.begin(write=True) as txn:
            out = txn.cursor(db=dbis[BUCKET_KEY])
            for pairs in _chunks(cur.iternext()):
                out.putmulti(pairs, append=True)
                n, last = n + len(pairs), pairs[-1][0]
    return n, last


CHUNK_RECORDS = 5_000
CHUNK_BYTES = 4 << 20


def _chunks(pairs: Iterator[tuple[bytes, bytes]], records: int = CHUNK_RECORDS,
            size: int = CHUNK_BYTES) -> Iterator[list[tuple[bytes, bytes]]]:
    """``pairs`` in lists of at most ``records`` records or about ``size`` bytes. Built by a
    Python loop, not ``list(islice(...))``: a C-level loop holds the GIL for its whole run,
    and 5,000 values of 100 KiB (500 MB in one list) stopped the member's event loop, the
    writers with it, for a second and more (``python -m kvraft.bench defrag-online``)."""
    chunk: list[tuple[bytes, bytes]] = []
    held = 0
    for key, value in pairs:
        chunk.append((key, value))
        held += len(key) + len(value)
        if len(chunk) >= records or held >= size:
            yield chunk
            chunk, held = [], 0
    if chunk:
        yield chunk


def _copy_bucket(txn: Any, dbi: Any, env: Any, target: Any) -> int:
    """Copy one bucket in key order, one write transaction per chunk (``_chunks``)."""
    n = 0
    for pairs in _chunks(txn.cursor(db=dbi).iternext()):
        with env.begin(write=True) as out:
            out.cursor(db=target).putmulti(pairs, append=True)
        n += len(pairs)
    return n


def _last_key(txn: Any, dbi: Any) -> bytes | None:
    cur = txn.cursor(db=dbi)
    return bytes(cur.key()) if cur.last() else None


def defragment(
    backend: Backend, *, catchup_rounds: int = 8, catchup_threshold: int = 1000,
    progress: Callable[[str], None] | None = None,
) -> DefragReport:
    """Defragment ``backend`` online (see the module docstring). Must not be called by a
    thread holding a write batch."""
    if backend.current_batch() is not None:
        raise RuntimeError("defragment cannot run inside a write batch")
    say = progress or (lambda msg: None)
    t0 = time.perf_counter()
    with backend.maint_lock:
        size_before, in_use_before = backend.sizes()
        scratch = backend.next_generation_path()
        for p in (scratch, scratch.with_name(scratch.name + "-lock")):
            p.unlink(missing_ok=True)
        env, dbis = backend.open_scratch(scratch)
        try:
            with backend.read() as r:
                last = _last_key(r.txn, r.dbis[BUCKET_KEY])
                copied = sum(_copy_bucket(r.txn, r.dbis[name], env, dbis[name]) for name in backend.buckets)
            say(f"defrag: copied {copied} records ({in_use_before} bytes in use) into {scratch.name}")
            failpoints.hit("defrag_after_copy")  # writers go on: the catch-up copies what they wrote
            rounds = delta = 0
            for rounds in range(1, catchup_rounds + 1):  # noqa: B007 - reported below
                n, last = _copy_delta(backend, env, dbis, last)
                delta += n
                if n < catchup_threshold:
                    break
            env.sync(True)
            say(f"defrag: caught up {delta} records in {rounds} rounds; switching")
            with backend.writer_lock:
                pause0 = time.perf_counter()
                n, last = _copy_delta(backend, env, dbis, last)
                delta += n
                with backend.read() as r, env.begin(write=True) as txn:
                    for name in backend.buckets:
                        if name == BUCKET_KEY:
                            continue
                        txn.drop(dbis[name], delete=False)
                        pairs = list(r.txn.cursor(db=r.dbis[name]).iternext())
                        txn.cursor(db=dbis[name]).putmulti(pairs, append=True)
                env.close()  # install() fsyncs the file and the directory
                failpoints.hit("defrag_before_install")  # writers wait; the new file is whole, not live
                old = backend.install(scratch)
                pause = time.perf_counter() - pause0
            backend.release_old(old)
        except BaseException:
            env.close()
            for p in (scratch, scratch.with_name(scratch.name + "-lock")):
                if p.exists():
                    os.unlink(p)
            raise
        size_after, in_use_after = backend.sizes()
    return DefragReport(size_before, size_after, in_use_before, in_use_after, rounds, delta,
                        pause, time.perf_counter() - t0)

"""``Backend``: the LMDB file holding the state machine, its read and write transactions.

Files: a directory of generations, ``kv-<generation:08d>.lmdb`` (plus LMDB's ``-lock``
file). Exactly one generation is live; defragmentation and snapshot restore build the
next one beside it (``*.tmp``), fsync it, rename it into place and fsync the directory,
then switch. On open, leftovers (``*.tmp``, older generations) are deleted, so a crash at
any point leaves either the old or the new generation live, never a mix.

Transactions:

- ``read()`` opens an LMDB read transaction: a consistent snapshot of the live
  generation that writers never block and that is never blocked by them. A generation
  switch does not disturb open readers: the old file stays open (and on disk) until its
  last reader is done.
- ``batch()`` is the single writer's transaction. The first (outermost) ``batch()`` of a
  thread takes the writer lock and begins an LMDB write transaction; nested ``batch()``
  calls join it; the outermost exit commits: ONE commit (fsynced when ``sync=True``) for
  everything in the batch. ``Batch.commit_now()`` commits early and carries on in a
  fresh transaction. An exception out of the outermost ``batch()``, or a batch marked
  ``poison()``-ed, aborts it; a poisoned batch always ends in ``BatchAbortedError``
  (chained to the cause), an unpoisoned one re-raises the exception as it is.

Hooks (set once by the owner, the MVCC store): ``before_commit(batch)`` runs inside the
transaction just before each commit, ``after_commit(batch)`` right after it,
``after_abort(batch)`` after an abort; all on the writer thread, under the writer lock.

Threading: any thread may ``read()``. One thread at a time holds the writer lock; the
LMDB write transaction is used only by the thread that began it. ``maint_lock``
serializes maintenance that must not interleave (physical compaction, defragmentation,
restore).
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import lmdb

from kvraft.durations import DurationHistogram
from kvraft.storage.errors import BatchAbortedError, StorageCorruptionError
from kvraft.storage.lmdb_env import LMDB_CORRUPTION, env_sizes, fsync_dir, open_env
from kvraft.storage.schema import DEFAULT_BUCKETS

__all__ = ["DEFAULT_MAP_SIZE", "Backend", "Batch", "ReadTxn"]

DEFAULT_MAP_SIZE = 64 << 30
"""Address space reserved per generation file; the file grows only as pages are used."""

_GEN = re.compile(r"^kv-(\d{8})\.lmdb$")


@dataclass
class _Handle:
    env: Any
    path: Path
    generation: int
    dbis: dict[bytes, Any]
    readers: int = 0
    retired: bool = False


class ReadTxn(NamedTuple):
    """An open read transaction and the bucket handles to use with it."""

    txn: Any
    dbis: dict[bytes, Any]
    generation: int
    env: Any


@dataclass
class Batch:
    """The open write transaction (see the module docstring)."""

    backend: Backend
    txn: Any
    dbis: dict[bytes, Any]
    owner: int = 0
    depth: int = 1
    poisoned: BaseException | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def poison(self, cause: BaseException) -> None:
        """Mark the batch failed: it will be aborted, whatever happens next."""
        if self.poisoned is None:
            self.poisoned = cause

    def commit_now(self) -> None:
        """Commit what is staged and continue in a new transaction (refused, with
        ``BatchAbortedError``, once the batch is poisoned)."""
        if self.poisoned is not None:
            raise BatchAbortedError(f"write batch rolled back: {self.poisoned!r}")
        self.backend._commit(self)
        self.txn = self.backend._live.env.begin(write=True)


class _ReadContext:
    __slots__ = ("_backend", "_handle", "_txn")

    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    def __enter__(self) -> ReadTxn:
        backend = self._backend
        with backend._handles_lock:
            handle = self._handle = backend._live
            handle.readers += 1
        try:
            self._txn = handle.env.begin()
        except BaseException:
            backend._release(handle)
            raise
        return ReadTxn(self._txn, handle.dbis, handle.generation, handle.env)

    def __exit__(self, *exc: object) -> None:
        try:
            self._txn.abort()
        finally:
            self._backend._release(self._handle)


class _BatchContext:
    __slots__ = ("_backend", "_batch")

    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    def __enter__(self) -> Batch:
        backend = self._backend
        backend.writer_lock.acquire()
        try:
            self._batch = backend._begin()
        except BaseException:
            backend.writer_lock.release()
            raise
        return self._batch

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        try:
            self._backend._end(self._batch, exc)
        finally:
            self._backend.writer_lock.release()


class Backend:
    """See the module docstring."""

    def __init__(
        self, directory: str | os.PathLike[str], *, map_size: int = DEFAULT_MAP_SIZE,
        sync: bool = True, metasync: bool = True, buckets: tuple[bytes, ...] = DEFAULT_BUCKETS,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.map_size = map_size
        self.sync_commits = sync
        self.metasync = metasync
        self.buckets = tuple(buckets)
        self.writer_lock = threading.RLock()
        self.maint_lock = threading.Lock()
        self._handles_lock = threading.Lock()
        self._batch: Batch | None = None
        self._closed = False
        self.before_commit: Callable[[Batch], None] = lambda batch: None
        self.after_commit: Callable[[Batch], None] = lambda batch: None
        self.after_abort: Callable[[Batch], None] = lambda batch: None
        self.commit_seconds = DurationHistogram()  # etcd_disk_backend_commit_duration_seconds
        self.changes = 0
        """Commits and installs so far: the file's sizes change only when this does."""
        generation = self._clean_directory()
        self._live = self._open(self.generation_path(generation), generation)

    # -- files ---------------------------------------------------------------------------

    def generation_path(self, generation: int) -> Path:
        return self.directory / f"kv-{generation:08d}.lmdb"

    def _clean_directory(self) -> int:
        gens = sorted(int(m.group(1)) for p in self.directory.iterdir() if (m := _GEN.match(p.name)))
        live = gens[-1] if gens else 1
        for p in self.directory.iterdir():
            m = _GEN.match(p.name.removesuffix("-lock"))
            stale = p.name.endswith((".tmp", ".tmp-lock")) or (m is not None and int(m.group(1)) != live)
            if stale:
                p.unlink()
        return live

    def _open(self, path: Path, generation: int) -> _Handle:
        try:
            env = open_env(path, map_size=self.map_size, max_dbs=len(self.buckets) + 1,
                           sync=self.sync_commits, metasync=self.metasync)
            with env.begin(write=True) as txn:
                dbis = {name: env.open_db(name, txn=txn) for name in self.buckets}
        except LMDB_CORRUPTION as exc:
            raise StorageCorruptionError(f"{path}: lmdb: {exc}") from exc
        return _Handle(env, path, generation, dbis)

    @property
    def generation(self) -> int:
        return self._live.generation

    @property
    def path(self) -> Path:
        return self._live.path

    def next_generation_path(self) -> Path:
        """Where to build the next generation (a ``.tmp`` file, not yet live)."""
        return self.generation_path(self._live.generation + 1).with_suffix(".lmdb.tmp")

    def open_scratch(self, path: Path) -> tuple[Any, dict[bytes, Any]]:
        """Create an empty environment at ``path`` with this backend's buckets, for
        building a new generation (commits there are not synced: ``install`` syncs)."""
        env = open_env(path, map_size=self.map_size, max_dbs=len(self.buckets) + 1, sync=False,
                       metasync=False)
        with env.begin(write=True) as txn:
            dbis = {name: env.open_db(name, txn=txn) for name in self.buckets}
        return env, dbis

    def install(self, scratch_path: Path) -> Any:
        """Make the finished scratch file the live generation. The caller holds the
        writer lock (no batch open) and has closed the scratch environment. Returns a
        token for ``release_old``, to be called once the writer lock is released:
        closing and unlinking the old file (slow for a large one) happens there."""
        assert self._batch is None, "install inside a write batch"
        final = self.generation_path(self._live.generation + 1)
        with open(scratch_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(scratch_path, final)
        Path(str(scratch_path) + "-lock").unlink(missing_ok=True)
        fsync_dir(self.directory)
        new = self._open(final, self._live.generation + 1)
        with self._handles_lock:
            old, self._live = self._live, new
            self.changes += 1
            old.retired = True
            old.readers += 1  # held by the installer until release_old()
        return old

    def release_old(self, token: Any) -> None:
        """Let the generation replaced by ``install`` go once its readers are done."""
        self._release(token)

    def _retire(self, handle: _Handle) -> None:
        handle.env.close()
        for p in (handle.path, Path(str(handle.path) + "-lock")):
            if p.exists():
                p.unlink()

    # -- reads ---------------------------------------------------------------------------

    def read(self) -> _ReadContext:
        """``with backend.read() as r:`` a ReadTxn (see the module docstring)."""
        return _ReadContext(self)

    def _release(self, handle: _Handle) -> None:
        with self._handles_lock:
            handle.readers -= 1
            idle = handle.retired and handle.readers == 0
        if idle:
            self._retire(handle)

    # -- writes --------------------------------------------------------------------------

    def batch(self) -> _BatchContext:
        """``with backend.batch() as b:`` the write batch (see the module docstring)."""
        return _BatchContext(self)

    def _begin(self) -> Batch:
        """Join or begin the batch; the caller holds the writer lock."""
        if self._closed:
            raise RuntimeError("backend is closed")
        batch = self._batch
        if batch is not None:
            batch.depth += 1
            return batch
        batch = Batch(self, self._live.env.begin(write=True), self._live.dbis,
                      owner=threading.get_ident())
        self._batch = batch
        return batch

    def _end(self, batch: Batch, exc: BaseException | None) -> None:
        """Leave the batch; the outermost exit commits or aborts it."""
        batch.depth -= 1
        if batch.depth:
            return
        if exc is not None:
            self._abort(batch)
            if batch.poisoned is not None and not isinstance(exc, BatchAbortedError):
                raise BatchAbortedError(f"write batch rolled back: {batch.poisoned!r}") from exc
            return
        if batch.poisoned is not None:
            cause = batch.poisoned
            self._abort(batch)
            raise BatchAbortedError(f"write batch rolled back: {cause!r}") from cause
        try:
            self._commit(batch)
        finally:
            self._batch = None

    def current_batch(self) -> Batch | None:
        """The open batch if the calling thread holds it."""
        batch = self._batch
        if batch is not None and batch.owner == threading.get_ident():
            return batch
        return None

    def _commit(self, batch: Batch) -> None:
        try:
            self.before_commit(batch)
            started = time.perf_counter()
            batch.txn.commit()
            self.commit_seconds.observe(time.perf_counter() - started)
            self.changes += 1
        except (lmdb.Error, StorageCorruptionError) as exc:
            self._abort(batch)
            raise BatchAbortedError(f"write batch rolled back: {exc!r}") from exc
        self.after_commit(batch)

    def _abort(self, batch: Batch) -> None:
        self._batch = None
        try:
            batch.txn.abort()
        finally:
            self.after_abort(batch)

    # -- sizes and lifecycle -------------------------------------------------------------

    def sizes(self) -> tuple[int, int]:
        """``(size, size_in_use)`` of the live generation, in bytes (see ``env_sizes``)."""
        handle = self._live
        return env_sizes(handle.env, list(handle.dbis.values()))

    def file_size(self) -> int:
        return self._live.path.stat().st_size

    def sync(self) -> None:
        """Flush to disk (needed only when opened with ``sync=False``)."""
        self._live.env.sync(True)

    def close(self) -> None:
        with self.writer_lock:
            if self._closed:
                return
            self._closed = True
            if self._batch is not None:  # pragma: no cover - closing inside a batch
                self._abort(self._batch)
            if not self.sync_commits:
                self._live.env.sync(True)
            self._live.env.close()

"""The one place that opens LMDB environments, and what LMDB failures mean.

Every environment kvraft opens is a single file (``subdir=False``; the lock file is
``<path>-lock``) with ``MDB_NOTLS`` (py-lmdb always sets it, so one thread may hold many
read transactions), ``readahead=False`` (random access; the page cache is shared with
everything else on the box) and a fixed map size that only reserves address space: the
file grows as pages are written.

``LMDB_CORRUPTION`` are the errors by which LMDB reports damaged pages; storage code turns
them into ``StorageCorruptionError`` subclasses that say which store and where.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lmdb

__all__ = ["LMDB_CORRUPTION", "env_sizes", "fsync_dir", "open_env"]

LMDB_CORRUPTION: tuple[type[BaseException], ...] = (
    lmdb.CorruptedError,
    lmdb.PageNotFoundError,
    lmdb.PanicError,
    lmdb.InvalidError,
    lmdb.VersionMismatchError,
    lmdb.IncompatibleError,
    lmdb.BadValsizeError,
)


def open_env(
    path: str | os.PathLike[str], *, map_size: int, max_dbs: int, sync: bool = True,
    metasync: bool = True, max_readers: int = 1024, readonly: bool = False,
) -> Any:
    """Open (creating if needed) the single-file environment at ``path``."""
    return lmdb.open(
        str(path), subdir=False, map_size=map_size, max_dbs=max_dbs, sync=sync,
        metasync=metasync, readahead=False, lock=True, max_readers=max_readers,
        readonly=readonly, create=not readonly,
    )


def env_sizes(env: Any, dbis: list[Any]) -> tuple[int, int]:
    """``(size, size_in_use)`` in bytes. ``size`` is the high-water mark of the file
    (pages ever allocated); ``size_in_use`` counts the pages reachable from the trees
    (the two meta pages, the main tree, every named tree in ``dbis``); the difference is
    free pages LMDB will reuse (etcd's ``dbSize`` and ``dbSizeInUse``)."""
    info, stat = env.info(), env.stat()
    psize = stat["psize"]
    size = (info["last_pgno"] + 1) * psize
    pages = 2 + stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"]
    with env.begin() as txn:
        for dbi in dbis:
            s = txn.stat(dbi)
            pages += s["branch_pages"] + s["leaf_pages"] + s["overflow_pages"]
    return size, min(size, pages * psize)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a directory so a rename or unlink in it is durable."""
    fd = os.open(str(Path(path)), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

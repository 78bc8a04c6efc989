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
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmdb

__all__ = ["LMDB_CORRUPTION", "MetaPage", "env_sizes", "fsync_dir", "open_env", "read_meta_pages", "read_via_meta"]

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


def write_durably(path: Path, text: str) -> None:
    """Replace the small file ``path`` with ``text`` atomically and durably (a temporary
    file synced, renamed over it, the directory synced)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a directory so a rename or unlink in it is durable."""
    fd = os.open(str(Path(path)), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class MetaPage:
    """One of LMDB's two meta pages as stored. ``valid``: magic and data version are LMDB's."""

    valid: bool
    txnid: int
    main_root: int
    psize: int


_META_MAGIC, _META_VERSION = 0xBEEFC0DE, 1
_PAGE_HEADER = 16  # pgno u64, pad u16, flags u16, lower u16, upper u16


def read_meta_pages(path: str | os.PathLike[str]) -> tuple[MetaPage, MetaPage] | None:
    """The two meta pages of an LMDB file, read from the file (not through LMDB, which
    picks the one with the larger txnid and keeps no checksum of either). Layout of
    MDB_meta (64-bit little-endian builds) after the page header: magic u32, version u32,
    address, mapsize, the free and the main MDB_db (48 bytes each; the free one's first u32
    is the page size, the main one's root page number is its last u64), last_pg, txnid.
    Page ``p`` starts at ``p * page size``. ``None`` if the file is missing or too short."""
    try:
        with open(path, "rb") as f:
            first = f.read(_PAGE_HEADER + 160)
            if len(first) < _PAGE_HEADER + 160:
                return None
            (psize,) = struct.unpack_from("<I", first, _PAGE_HEADER + 24)
            if psize < 512 or psize > 1 << 16 or psize & (psize - 1):
                psize = os.sysconf("SC_PAGE_SIZE")  # damaged; LMDB itself will judge
            f.seek(psize)
            second = f.read(_PAGE_HEADER + 160)
            if len(second) < _PAGE_HEADER + 160:
                return None
    except FileNotFoundError:
        return None

    def meta(raw: bytes) -> MetaPage:
        magic, version = struct.unpack_from("<II", raw, _PAGE_HEADER)
        (root,) = struct.unpack_from("<Q", raw, _PAGE_HEADER + 112)
        (txnid,) = struct.unpack_from("<Q", raw, _PAGE_HEADER + 128)
        return MetaPage((magic, version) == (_META_MAGIC, _META_VERSION), txnid, root, psize)

    return meta(first), meta(second)


_P_BRANCH, _P_LEAF, _F_BIGDATA, _F_SUBDATA = 0x01, 0x02, 0x01, 0x02


def read_via_meta(path: str | os.PathLike[str], meta: MetaPage, db: bytes, key: bytes) -> bytes | None:
    """The value of ``key`` in the named database ``db`` of the tree ``meta`` points at,
    read by walking LMDB's pages in the file with plain reads (not through LMDB, which only
    ever opens the newest meta page; no mmap, so a damaged page cannot kill the process).
    ``None`` when the tree does not hold it or anything on the way does not look like an
    LMDB page: this answers "what does that tree say", never "is the file intact".

    Pages (64-bit builds): a 16-byte header (pgno u64, pad u16, flags u16, lower u16, upper
    u16), then ``(lower - 16) / 2`` u16 offsets of its nodes. A node: lo u16, hi u16, flags
    u16, key size u16, the key, then (leaf) the data, ``lo | hi << 16`` bytes, a named
    database's data being its MDB_db record (root page number at byte 40); in a branch the
    child page number is ``lo | hi << 16 | flags << 32`` and the first key is empty."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            psize = meta.psize

            def page(pgno: int) -> bytes | None:
                if pgno <= 1 or (pgno + 1) * psize > size:
                    return None
                f.seek(pgno * psize)
                return f.read(psize)

            def lookup(root: int, want: bytes) -> tuple[int, bytes] | None:
                pgno = root
                for _depth in range(16):
                    raw = page(pgno)
                    if raw is None:
                        return None
                    _pg, _pad, flags, lower, _upper = struct.unpack_from("<QHHHH", raw)
                    if lower < _PAGE_HEADER or lower > psize:
                        return None
                    nodes = []
                    for i in range((lower - _PAGE_HEADER) // 2):
                        (off,) = struct.unpack_from("<H", raw, _PAGE_HEADER + 2 * i)
                        if off + 8 > psize:
                            return None
                        lo, hi, nflags, ksize = struct.unpack_from("<HHHH", raw, off)
                        nodes.append((raw[off + 8 : off + 8 + ksize], lo | hi << 16, nflags, off + 8 + ksize))
                    if flags & _P_BRANCH:
                        chosen = [n for i, n in enumerate(nodes) if i == 0 or n[0] <= want]
                        if not chosen:
                            return None
                        _k, lohi, nflags, _at = chosen[-1]
                        pgno = lohi | nflags << 32
                        continue
                    if not flags & _P_LEAF:
                        return None
                    for k, dsize, nflags, at in nodes:
                        if k == want and not nflags & _F_BIGDATA and at + dsize <= psize:
                            return nflags, raw[at : at + dsize]
                    return None
                return None

            found = lookup(meta.main_root, db)
            if found is None or not found[0] & _F_SUBDATA or len(found[1]) != 48:
                return None
            (db_root,) = struct.unpack_from("<Q", found[1], 40)
            value = lookup(db_root, key)
            return None if value is None else value[1]
    except OSError:
        return None

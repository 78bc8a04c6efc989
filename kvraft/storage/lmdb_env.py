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

from kvraft.storage.errors import StorageCorruptionError

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
    """Open (creating if needed) the single-file environment at ``path``. LMDB's errors other
    than ``LMDB_CORRUPTION`` (``Permission denied`` on the file or its lock file) are raised
    as ``OSError`` with LMDB's message, which names the file. A file shorter
    than its newest commit is refused first (``StorageCorruptionError``): LMDB maps the
    file, and reading a page past its end kills the process with SIGBUS."""
    cut = _truncation(path)
    if cut:
        raise StorageCorruptionError(
            f"{path}: {cut}: the file was truncated; refusing to open it (restore this member from a snapshot, "
            "or remove it from the cluster and add it again with an empty data dir)")
    try:
        return lmdb.open(
            str(path), subdir=False, map_size=map_size, max_dbs=max_dbs, sync=sync,
            metasync=metasync, readahead=False, lock=True, max_readers=max_readers,
            readonly=readonly, create=not readonly,
        )
    except LMDB_CORRUPTION:
        raise
    except lmdb.Error as exc:  # the file or its lock file not writable, a lock held: the OS's refusal
        raise OSError(str(exc)) from exc


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


def _truncation(path: str | os.PathLike[str]) -> str:
    """What is missing from an LMDB file whose newest commit uses pages past its end, or
    "" (also for a new, empty or unreadable file: LMDB judges those itself). LMDB writes
    every page it allocates, except one a commit allocated and freed again (a "loose"
    page: it goes on the free list unwritten), so the pages past the end of an intact file
    are all on the free list of its newest commit."""
    metas = read_meta_pages(path)
    if metas is None or not (metas[0].valid and metas[1].valid):
        return ""
    newest = max(metas, key=lambda m: m.txnid)
    need = (newest.last_pg + 1) * newest.psize
    size = os.stat(path).st_size
    if size >= need:
        return ""
    missing = range(size // newest.psize, newest.last_pg + 1)
    free = _free_pages(path, newest)
    if len(missing) <= len(free) and all(p in free for p in missing):
        return ""
    return f"{size} bytes, but its newest commit uses {need} ({newest.last_pg + 1} pages of {newest.psize})"


def _free_pages(path: str | os.PathLike[str], meta: MetaPage) -> set[int]:
    """The pages on the free list of the commit ``meta`` points at, read with plain reads
    (an empty set when it cannot be read: the caller then judges the file truncated). The
    free list is a tree keyed by txnid whose values are page lists: count u64, then the
    page numbers u64; a long list lives in overflow pages (the node holds their first page
    number, the data follows that page's 16-byte header)."""
    pages: set[int] = set()
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            psize = meta.psize

            def read(pgno: int, length: int) -> bytes:
                if pgno <= 1 or pgno * psize + length > size:
                    raise ValueError(f"page {pgno} past the end")
                f.seek(pgno * psize)
                return f.read(length)

            seen: set[int] = set()

            def walk(pgno: int, depth: int) -> None:
                if depth > 16 or pgno in seen:
                    raise ValueError(f"page {pgno} is not a tree page")
                seen.add(pgno)
                raw = read(pgno, psize)
                _pg, _pad, flags, lower, _upper = struct.unpack_from("<QHHHH", raw)
                if lower < _PAGE_HEADER or lower > psize:
                    raise ValueError(f"page {pgno} is not a tree page")
                for i in range((lower - _PAGE_HEADER) // 2):
                    (off,) = struct.unpack_from("<H", raw, _PAGE_HEADER + 2 * i)
                    lo, hi, nflags, ksize = struct.unpack_from("<HHHH", raw, off)
                    if flags & _P_BRANCH:
                        walk(lo | hi << 16 | nflags << 32, depth + 1)
                        continue
                    at, dsize = off + 8 + ksize, lo | hi << 16
                    if nflags & _F_BIGDATA:
                        (first,) = struct.unpack_from("<Q", raw, at)
                        data = read(first, _PAGE_HEADER + dsize)[_PAGE_HEADER:]
                    else:
                        data = raw[at : at + dsize]
                    (count,) = struct.unpack_from("<Q", data)
                    pages.update(struct.unpack_from(f"<{count}Q", data, 8))

            if meta.free_root != _P_INVALID:
                walk(meta.free_root, 0)
    except (OSError, ValueError, struct.error):
        return set()
    return pages


@dataclass(frozen=True)
class MetaPage:
    """One of LMDB's two meta pages as stored. ``valid``: magic and data version are LMDB's."""

    valid: bool
    txnid: int
    main_root: int
    psize: int
    last_pg: int = 0
    free_root: int = 0


_META_MAGIC, _META_VERSION = 0xBEEFC0DE, 1
_PAGE_HEADER = 16  # pgno u64, pad u16, flags u16, lower u16, upper u16


def read_meta_pages(path: str | os.PathLike[str]) -> tuple[MetaPage, MetaPage] | None:
    """The two meta pages of an LMDB file, read from the file (not through LMDB, which
    picks the one with the larger txnid and keeps no checksum of either). Layout of
    MDB_meta (64-bit little-endian builds) after the page header: magic u32, version u32,
    address, mapsize, the free and the main MDB_db (48 bytes each; the free one's first u32
    is the page size, each one's root page number is its last u64), last_pg (the highest
    page number allocated), txnid.
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
        (free_root,) = struct.unpack_from("<Q", raw, _PAGE_HEADER + 64)
        root, last_pg, txnid = struct.unpack_from("<QQQ", raw, _PAGE_HEADER + 112)
        return MetaPage((magic, version) == (_META_MAGIC, _META_VERSION), txnid, root, psize, last_pg, free_root)

    return meta(first), meta(second)


_P_BRANCH, _P_LEAF, _F_BIGDATA, _F_SUBDATA = 0x01, 0x02, 0x01, 0x02
_P_INVALID = (1 << 64) - 1  # the root of an empty tree


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

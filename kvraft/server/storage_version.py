"""The data directory's format version, so that a kvraft never runs on data it cannot read.

``<data-dir>/version`` (JSON) names the format of everything the member keeps on disk (the
WAL, the MVCC backend's buckets and records, the registry) and the kvraft that last wrote
it::

    {"storage": 1, "written_by": "0.1.0"}

At start, a member stamps a new data directory, and one written before the stamp existed (it
is format 1: no format has changed since kvraft began); it refuses one whose format is newer
than it reads: an older kvraft started on a newer member's data (a downgrade) could misread
records or write ones the newer version then misreads. The message says which version wrote
it and what to do. An unstamped directory holding etcd's ``member/wal`` or ``member/snap/db``
is refused too (kvraft would start a new, empty cluster in it). A future format change raises ``STORAGE_VERSION`` and converts older data
directories here, at start (etcd 3.6 keeps its ``storageVersion`` in the backend's meta for
the same purpose).
"""

from __future__ import annotations

import json
from pathlib import Path

from kvraft import __version__
from kvraft.server.wal_dir import DataDirError
from kvraft.storage.lmdb_env import write_durably

__all__ = ["STORAGE_VERSION", "check_storage_version", "stamp"]

STORAGE_VERSION = 1
FILE = "version"


def stamp(data_dir: Path) -> None:
    """Write the stamp of this kvraft (durably, atomically)."""
    write_durably(data_dir / FILE, json.dumps({"storage": STORAGE_VERSION, "written_by": __version__}) + "\n")


def check_storage_version(data_dir: Path) -> None:
    """Refuse a data directory of a newer format; stamp one without a stamp."""
    path = data_dir / FILE
    if not path.exists():
        _refuse_etcd_data_dir(data_dir)
        stamp(data_dir)
        return
    try:
        doc = json.loads(path.read_text())
        version, writer = doc["storage"], str(doc.get("written_by", "unknown"))
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ValueError(f"storage {version!r} is not a format number")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataDirError(f"{path}: unreadable ({exc}); it names the data directory's format: restore it "
                           f'(it held {{"storage": 1, ...}} for every kvraft so far) or the member from a snapshot') from None
    if version > STORAGE_VERSION:
        raise DataDirError(
            f"{data_dir} holds storage format {version}, written by kvraft {writer}; this kvraft "
            f"({__version__}) reads format {STORAGE_VERSION} at most. Run the version that wrote it, "
            "or restore this member from a snapshot (kvctl snapshot restore) made with this version")
    if writer != __version__:
        stamp(data_dir)


def _refuse_etcd_data_dir(data_dir: Path) -> None:
    """kvraft takes etcd's flags, so an etcd data directory is an easy slip when moving from
    etcd; finding none of its own files there, kvraft would start a new, empty cluster in it."""
    member = data_dir / "member"
    if (member / "wal").is_dir() or (member / "snap" / "db").exists():
        raise DataDirError(
            f"{data_dir} is an etcd data directory (member/wal, member/snap/db), which kvraft cannot run on: "
            f"bring its data over with 'kvctl snapshot restore {member / 'snap' / 'db'} --skip-hash-check "
            "--data-dir NEW-DIR' (or an etcdctl snapshot save file) and start kvraft on NEW-DIR")

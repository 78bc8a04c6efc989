"""``--wal-dir``: the Raft log (the WAL) in a directory of its own, as etcd's flag puts it
on a dedicated disk, where its fsyncs do not queue behind the backend's writes.

Without the flag the WAL is ``<data-dir>/raft.wal/``. With it, the WAL is that directory, and
the data directory records where it is (``raft.wal.path``), so that a restart that forgets
the flag, or names another directory, is refused with a message instead of starting on an
empty log. Moving an existing member's log: stop it, move ``<data-dir>/raft.wal`` to the new
place, start it with ``--wal-dir`` naming that place.
"""

from __future__ import annotations

import os
from pathlib import Path

from kvraft.storage.lmdb_env import write_durably

__all__ = ["MARKER", "DataDirError", "record_wal_dir", "require_writable", "wal_location"]

MARKER = "raft.wal.path"


class DataDirError(RuntimeError):
    """The data directory and the flags disagree on where the member's Raft log is."""


def wal_location(data_dir: Path, wal_dir: str) -> Path:
    """Where this member's WAL is, or ``DataDirError`` when that contradicts what the data
    directory holds or records."""
    default = data_dir / "raft.wal"
    marker = data_dir / MARKER
    recorded = marker.read_text().strip() if marker.exists() else ""
    if not wal_dir or Path(os.path.abspath(wal_dir)) == Path(os.path.abspath(default)):
        if recorded:
            raise DataDirError(
                f"{data_dir}: its Raft log is in {recorded} (the member was started with --wal-dir); "
                f"start it with --wal-dir {recorded}")
        return default
    wal = Path(os.path.abspath(wal_dir))
    if default.exists():
        raise DataDirError(
            f"--wal-dir {wal}: {data_dir} keeps its Raft log in {default}; with the member stopped, "
            f"move that directory to {wal} first, or start without --wal-dir")
    if (data_dir / "raft.lmdb").exists():
        raise DataDirError(
            f"--wal-dir {wal}: {data_dir} has the LMDB Raft log of an older data directory (raft.lmdb), "
            "which stays inside it; start without --wal-dir")
    if recorded and Path(recorded) != wal:
        raise DataDirError(
            f"--wal-dir {wal}: {data_dir}'s Raft log is in {recorded}; start with --wal-dir {recorded}")
    return wal


def record_wal_dir(data_dir: Path, wal: Path) -> None:
    """Write (durably) where the WAL is, when it is not the default place."""
    marker = data_dir / MARKER
    if wal == data_dir / "raft.wal" or marker.exists():
        return
    write_durably(marker, f"{wal}\n")


def require_writable(*dirs: Path) -> None:
    """Refuse, as etcd does at start ("cannot access data directory"), a directory of the
    member's that exists but where it may not create a file: a read-only mount, another
    user's directory, a file where a directory belongs. Its files may still be writable, so
    such a member used to start and stop on a fatal error at its first snapshot or WAL
    rotation. Checked as etcd checks: a ``.touch`` file created and removed."""
    for directory in dirs:
        if not directory.exists() and not directory.is_symlink():
            continue
        touch = directory / ".touch"
        try:
            with open(touch, "w"):
                pass
            touch.unlink()
        except OSError as exc:
            raise DataDirError(f"cannot access data directory: {directory}: {exc.strerror or exc}") from None

"""Check a store file in a separate process: ``python -m kvraft.storage.fsck KIND PATH``.

LMDB keeps no checksums of its own pages. Our records carry checksums (verified on every
read), but a flipped bit in one of LMDB's structural pages (a branch pointer, a node
size) can make LMDB read outside the file, and the process dies of SIGBUS or SIGSEGV
before any Python code can react. So the full check runs in a child process: a clean
exit with a summary means every record decoded and passed its checksum; a
``StorageCorruptionError`` or a death by signal is reported as corruption, naming the file
(and the index or revision when the child could say).

KIND is ``raftlog`` (a Raft log: a directory is the WAL ``raft.wal/`` of current data
directories, checked read-only by ``fsck_wal``; a file is the ``LmdbLogStorage`` of older
ones), ``wal`` or ``lmdb`` (the same, format forced), or ``mvcc`` (a ``Backend``
directory, ``mvcc.lmdb/`` of a data directory; a path that is not a directory or holds no
generation file is an error, not an empty store). Both Raft log checks end with what the Raft core checks when it starts (the
hard state's commit inside the stored log, the snapshot covering the log's start, terms
never decreasing). The child prints one JSON line: ``{"ok": true, "summary": {...}}`` or
``{"ok": false, "error": ...}``; exit status 0 (intact; a WAL's torn tail, the remains of
an unacknowledged batch that the next open cuts, is not corruption: it is reported in the
summary's ``torn_tail`` and ``notes``), 3 (corruption, named in ``error``), 2 (usage).

Nothing checked is modified. The WAL is read by ``fsck_wal`` without writing. An LMDB file
cannot be opened by the stores without writing (a write transaction on an older empty Raft
log, which records its txnid; LMDB's ``-lock`` file; the MVCC backend deletes leftovers and
resumes a pending compaction), so an LMDB Raft log file or the MVCC backend's live
generation is copied byte for byte into a private temporary directory (``$TMPDIR``: room
for one copy) and the copy is opened and checked; errors name the original path. Run it
on a stopped member's files (a copy taken while a member writes may be torn).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kvraft.storage.errors import StorageCorruptionError

__all__ = ["KINDS", "check", "main", "summarize"]

KINDS = ("raftlog", "wal", "lmdb", "mvcc")


_GENERATION = re.compile(r"^kv-(\d{8})\.lmdb$")


@contextlib.contextmanager
def _private_copy(kind: str, path: str) -> Iterator[str]:
    """A byte-for-byte copy of what ``summarize`` opens (see the module docstring), in a
    temporary directory removed afterwards; corruption errors name ``path``, not the copy."""
    source = Path(path)
    with tempfile.TemporaryDirectory(prefix="kvraft-fsck-") as scratch:
        if kind == "mvcc":
            target = Path(scratch) / source.name
            target.mkdir()
            gens = sorted((int(m.group(1)), p) for p in source.iterdir() if (m := _GENERATION.match(p.name)))
            if gens:  # the live generation (the backend's open deletes the others: not checked)
                shutil.copyfile(gens[-1][1], target / gens[-1][1].name)
        else:
            target = Path(scratch) / source.name
            shutil.copyfile(source, target)
        try:
            yield str(target)
        except StorageCorruptionError as exc:
            exc.args = tuple(a.replace(str(target), str(source)) if isinstance(a, str) else a for a in exc.args)
            raise


def summarize(kind: str, path: str) -> dict[str, Any]:
    """Read every record of the store at ``path`` in this process, changing nothing there
    (may crash on a damaged LMDB page: use ``check`` for that). Returns a summary with a
    content digest."""
    if kind == "wal" or (kind == "raftlog" and Path(path).is_dir()):
        from kvraft.storage.fsck_wal import summarize_wal

        return summarize_wal(path)
    if kind == "mvcc":  # (opened, anything else would check an empty store made in the copy)
        source = Path(path)
        if not source.is_dir():
            raise StorageCorruptionError(f"{path}: not a directory (an MVCC store is a directory of generation "
                                         "files kv-<gen>.lmdb: a data dir's mvcc.lmdb/)")
        if not any(_GENERATION.match(p.name) for p in source.iterdir()):
            raise StorageCorruptionError(f"{path}: no generation file kv-<gen>.lmdb: not an MVCC store "
                                         "(a data dir's store is its mvcc.lmdb/)")
    with _private_copy(kind, path) as copy:
        return _summarize_copy(kind, copy)


def _summarize_copy(kind: str, path: str) -> dict[str, Any]:
    if kind in ("raftlog", "lmdb"):
        from kvraft.storage.fsck_wal import check_log_consistency, entries_digest
        from kvraft.storage.raft_log import LmdbLogStorage

        log = LmdbLogStorage(path)
        try:
            n = log.verify()
            check_log_consistency(log, Path(path).name)
            first, last = log.first_index(), log.last_index()
            hard, conf = log.initial_state()
            snap = log.snapshot().metadata
            return {
                "format": "lmdb", "entries": n, "first": first, "last": last, "digest": entries_digest(log),
                "hard": [hard.term, hard.vote, hard.commit], "conf": sorted(conf.voters),
                "snapshot_index": snap.index, "snapshot_term": snap.term,
            }
        finally:
            log.close(sync=False)
    if kind == "mvcc":
        from kvraft.storage.mvcc.store import MVCCStore

        store = MVCCStore(path)
        try:
            return store.verify()
        finally:
            store.close()
    raise ValueError(f"unknown store kind {kind!r}")


def check(kind: str, path: str | os.PathLike[str], *, timeout_s: float = 600.0) -> dict[str, Any]:
    """Run ``summarize`` in a child process. Returns the summary; raises
    ``StorageCorruptionError`` if the child found corruption or died of a signal."""
    root = str(Path(__file__).resolve().parents[2])  # the directory holding kvraft/
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run(
        [sys.executable, "-m", "kvraft.storage.fsck", kind, str(path)],
        capture_output=True, text=True, timeout=timeout_s, env=env,
    )
    if proc.returncode < 0:
        sig = signal.Signals(-proc.returncode).name
        raise StorageCorruptionError(f"{path}: reading the {kind} store killed the checker ({sig})")
    lines = proc.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError(f"fsck of {path} failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    report = json.loads(lines[-1])
    if not report["ok"]:
        raise StorageCorruptionError(f"{path}: {report['error']}")
    summary: dict[str, Any] = report["summary"]
    return summary


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in KINDS:
        print(f"usage: python -m kvraft.storage.fsck {'|'.join(KINDS)} PATH", file=sys.stderr)
        return 2
    if not os.path.exists(args[1]):  # opening would create an empty store
        print(f"fsck: {args[1]}: no such file or directory", file=sys.stderr)
        return 2
    try:
        summary = summarize(args[0], args[1])
    except StorageCorruptionError as exc:
        print(json.dumps({"ok": False, "error": str(exc)}))
        return 3
    print(json.dumps({"ok": True, "summary": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Check a store file in a separate process: ``python -m kvraft.storage.fsck KIND PATH``.

LMDB keeps no checksums of its own pages. Our records carry checksums (verified on every
read), but a flipped bit in one of LMDB's structural pages (a branch pointer, a node
size) can make LMDB read outside the file, and the process dies of SIGBUS or SIGSEGV
before any Python code can react. So the full check runs in a child process: a clean
exit with a summary means every record decoded and passed its checksum; a
``StorageCorruptionError`` or a death by signal is reported as corruption, naming the file
(and the index or revision when the child could say).

KIND is ``raftlog`` (an ``LmdbLogStorage`` file) or ``mvcc`` (a ``Backend`` directory).
The child prints one JSON line: ``{"ok": true, ...summary}`` or ``{"ok": false, "error":
...}``; exit status 0 or 3.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from kvraft.storage.errors import StorageCorruptionError

__all__ = ["check", "main", "summarize"]


def summarize(kind: str, path: str) -> dict[str, Any]:
    """Open the store read-write in this process and read every record (may crash on a
    damaged LMDB page: use ``check`` for that). Returns a summary with a content digest."""
    if kind == "raftlog":
        from kvraft.storage.raft_log import LmdbLogStorage

        log = LmdbLogStorage(path)
        try:
            n = log.verify()
            first, last = log.first_index(), log.last_index()
            digest = hashlib.sha256()
            for e in log.entries(first, last + 1):
                digest.update(b"%d/%d/%d/%d:" % (e.index, e.term, e.type, len(e.data)) + e.data)
            hard, conf = log.initial_state()
            return {
                "entries": n, "first": first, "last": last, "digest": digest.hexdigest(),
                "hard": [hard.term, hard.vote, hard.commit], "conf": sorted(conf.voters),
                "snapshot_index": log.snapshot().metadata.index,
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
    if len(args) != 2:
        print("usage: python -m kvraft.storage.fsck raftlog|mvcc PATH", file=sys.stderr)
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

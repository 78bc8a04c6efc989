"""A power-loss model for LMDB files, to say exactly what each of our flag settings risks.

LMDB (without ``MDB_WRITEMAP``, as we open it) writes a commit's dirty pages with
``pwrite`` and then the meta page; the flags decide where the fsync barriers go:

====================  ===========================================================
``sync, metasync``    a commit is
====================  ===========================================================
True, True            data pages; fsync; meta page; fsync  (the Raft log, ``sync=True`` stores)
True, False           data pages; fsync; meta page          (``MDB_NOMETASYNC``)
False, any            data pages; meta page                 (``MDB_NOSYNC``: barriers only
                                                             at ``env.sync()``)
====================  ===========================================================

A power cut keeps, for every page, the version it had at the last barrier or any version
written after it (the kernel writes dirty pages back in any order, a page at a time).
``Recorder`` runs a workload on a real environment and snapshots the file after every
commit (plain reads of the file see the page cache, that is, every ``pwrite``); which pages
a commit wrote is the difference between two snapshots. ``crash_image`` draws one power-cut
image from that history for a flag setting; ``read_images`` opens images in a child process
(a damaged page can make LMDB read past the end of the file and die of SIGBUS) and returns
each one's content digest or the error.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvraft.storage.lmdb_env import open_env

__all__ = ["Recorder", "crash_image", "digest_of", "log_digest", "read_images"]

DB = b"data"


def digest_of(items: dict[bytes, bytes]) -> str:
    h = hashlib.sha256()
    for key in sorted(items):
        h.update(len(key).to_bytes(4, "big") + key + len(items[key]).to_bytes(4, "big") + items[key])
    return h.hexdigest()


@dataclass
class Recorder:
    """A workload of random puts/deletes, one LMDB commit per step, recorded page by page."""

    path: Path
    sync: bool
    metasync: bool
    states: list[str] = field(default_factory=list)  # digest after commit i (0: the initial state)
    files: list[bytes] = field(default_factory=list)  # the file after commit i
    psize: int = 4096

    def run(self, rng: random.Random, commits: int, keys: int = 120, ops: int = 12) -> None:
        env = open_env(self.path, map_size=1 << 26, max_dbs=2, sync=self.sync, metasync=self.metasync)
        try:
            self.psize = int(env.stat()["psize"])
            dbi = env.open_db(DB)
            model: dict[bytes, bytes] = {}
            with env.begin(write=True) as txn:
                for i in range(keys):
                    value = rng.randbytes(rng.randint(20, 1500))
                    txn.put(b"k%04d" % i, value, db=dbi)
                    model[b"k%04d" % i] = value
            env.sync(True)  # the starting point is durable
            self._record(model)
            for _ in range(commits):
                with env.begin(write=True) as txn:
                    for _ in range(ops):
                        key = b"k%04d" % rng.randrange(keys)
                        if rng.random() < 0.25:
                            txn.delete(key, db=dbi)
                            model.pop(key, None)
                        else:
                            value = rng.randbytes(rng.randint(20, 1500))
                            txn.put(key, value, db=dbi)
                            model[key] = value
                self._record(model)
        finally:
            env.close()

    def _record(self, model: dict[bytes, bytes]) -> None:
        self.states.append(digest_of(model))
        self.files.append(self.path.read_bytes())

    # -- the write history ---------------------------------------------------------------
    def pages(self, i: int) -> int:
        return (len(self.files[i]) + self.psize - 1) // self.psize

    def page(self, i: int, p: int) -> bytes:
        chunk = self.files[i][p * self.psize : (p + 1) * self.psize]
        return chunk + b"\0" * (self.psize - len(chunk))

    def written(self, i: int) -> tuple[list[int], list[int]]:
        """(data pages, meta pages) commit ``i`` (>= 1) wrote: the pages that changed."""
        before, after = self.pages(i - 1), self.pages(i)
        changed = [p for p in range(after) if p >= before or self.page(i, p) != self.page(i - 1, p)]
        return [p for p in changed if p > 1], [p for p in changed if p <= 1]


def _events(rec: Recorder) -> tuple[list[tuple[str, int, int]], list[int]]:
    """The write history as ("write", page, version) and ("barrier", 0, 0) (a version is the
    commit whose file holds that page's bytes), and for each commit the number of events
    after which it has returned to its caller."""
    events: list[tuple[str, int, int]] = []
    ends = [0]
    for i in range(1, len(rec.files)):
        data, meta = rec.written(i)
        events += [("write", p, i) for p in data]
        if rec.sync:
            events.append(("barrier", 0, 0))
        events += [("write", p, i) for p in meta]
        if rec.sync and rec.metasync:
            events.append(("barrier", 0, 0))
        ends.append(len(events))
    return events, ends


def crash_image(rec: Recorder, rng: random.Random, out: Path) -> int:
    """Write one power-cut image to ``out``; returns how many commits had returned to the
    caller before the cut (states 0..that number were acknowledged)."""
    events, ends = _events(rec)
    cut = rng.randint(0, len(events))
    durable: dict[int, int] = {}  # page -> version surely on disk (written before the last barrier)
    pending: dict[int, list[int]] = {}  # page -> versions written since
    for kind, page, version in events[:cut]:
        if kind == "barrier":
            for p, versions in pending.items():
                durable[p] = versions[-1]
            pending = {}
        else:
            pending.setdefault(page, []).append(version)
    returned = max(i for i, end in enumerate(ends) if end <= cut)
    npages = max([rec.pages(0)] + [p + 1 for p in durable] + [p + 1 for p in pending])
    with open(out, "wb") as f:
        for p in range(npages):
            choices = [durable.get(p, 0 if p < rec.pages(0) else -1)] + pending.get(p, [])
            version = rng.choice(choices)
            f.write(rec.page(version, p) if version >= 0 else b"\0" * rec.psize)
    return returned


_CHILD = r"""
import hashlib, json, sys
import lmdb
sys.path.insert(0, sys.argv[1])
from tests.storage.lmdb_crash_model import DB, digest_of
for line in sys.stdin:
    path = line.strip()
    try:
        env = lmdb.open(path, subdir=False, readonly=True, lock=False, max_dbs=2, map_size=1 << 26)
        try:
            with env.begin() as txn:
                items = dict(txn.cursor(db=env.open_db(DB, txn=txn)))
            result = {"digest": digest_of(items)}
        finally:
            env.close()
    except Exception as exc:
        result = {"error": type(exc).__name__ + ": " + str(exc)[:200]}
    print(json.dumps(result), flush=True)
"""


_LOG_CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from kvraft.storage.raft_log import LmdbLogStorage
from tests.storage.lmdb_crash_model import log_digest
for line in sys.stdin:
    path = line.strip()
    try:
        log = LmdbLogStorage(path, map_size=1 << 26)
        try:
            result = {"digest": log_digest(log)}
        finally:
            log.close(sync=False)
    except Exception as exc:
        result = {"error": type(exc).__name__ + ": " + str(exc)[:300]}
    print(json.dumps(result), flush=True)
"""


def log_digest(log: Any) -> str:
    """Everything a Raft log holds (entries, hard state, membership, snapshot), as one digest."""
    h = hashlib.sha256()
    first, last = log.first_index(), log.last_index()
    hard, conf = log.initial_state()
    snap = log.snapshot()
    h.update(repr((first, last, hard.term, hard.vote, hard.commit, sorted(conf.voters), snap.metadata.index,
                   snap.metadata.term, snap.data)).encode())
    for e in log.entries(first, last + 1):
        h.update(b"%d/%d/%d/%d:" % (e.index, e.term, e.type, len(e.data)) + e.data)
    return h.hexdigest()


def read_images(paths: list[Path], *, raft_log: bool = False) -> list[dict[str, Any]]:
    """Open each image in a child process: ``{"digest": ...}``, ``{"error": ...}`` or
    ``{"signal": n}`` (the child died reading it; a new child goes on with the next). With
    ``raft_log`` the images are opened as ``LmdbLogStorage`` files (``log_digest``), else
    as the ``Recorder``'s database (``digest_of``)."""
    root = str(Path(__file__).resolve().parents[2])
    child = _LOG_CHILD if raft_log else _CHILD
    results: list[dict[str, Any]] = []
    while len(results) < len(paths):
        todo = paths[len(results):]
        proc = subprocess.run([sys.executable, "-c", child, root], input="".join(f"{p}\n" for p in todo),
                              capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=root), timeout=600)
        lines = [json.loads(x) for x in proc.stdout.splitlines() if x.strip()]
        results += lines
        if proc.returncode != 0 and len(results) < len(paths):
            if proc.returncode >= 0:
                raise RuntimeError(f"image reader failed: {proc.stderr[-2000:]}")
            results.append({"signal": -proc.returncode})
    return results

"""The read-only check of a WAL Raft log directory (``raft.wal/``) for ``kvraft.storage.fsck``.

Nothing is changed on disk (opening the log would cut a torn tail and delete leftovers).
What is checked, in order:

- the directory's files: segments ``<seq:016x>.wal`` (the newest is the log; an older one
  is a leftover of a rotation a crash interrupted, reported as a note), snapshot files
  ``snap-<index:016x>.snap``, ``*.tmp`` leftovers (notes). Snapshot files but no segment:
  the log is missing (corruption; the WAL refuses to open such a directory too);
- the newest segment, frame by frame, replayed by ``WalLogStorage`` itself: every frame's
  crc32, a head frame naming this segment, records that replay (an append that leaves a gap
  in the indexes or is not contiguous, a compaction past the snapshot, ...). A bad frame
  with only zeros after it is a **torn tail** (a batch whose ``sync()`` never returned): not
  corruption, reported in ``torn_tail`` (the open cuts it). A bad frame with data after it,
  or a bad head, is **corruption** inside the log, reported with the frame's byte offset and
  first entry index;
- the current snapshot's file (length and crc recorded in the log);
- what the Raft core checks when it starts, so a log that passes would start: the hard
  state's commit within ``[first_index - 1, last_index]``; the snapshot covering the log's
  start (``first_index - 1 <= snapshot index``, else entries in between are in neither);
  the snapshot's term equal to the log's term at that index when the log holds it; entry
  terms never decreasing.

``summarize_wal`` returns a summary (the fields of the LMDB log's, plus ``format``,
``segment``, ``frames``, ``torn_tail`` and ``notes``) or raises ``LogCorruptionError``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from kvraft.storage.errors import LogCorruptionError
from kvraft.storage.wal import WalLogStorage

__all__ = ["check_log_consistency", "entries_digest", "summarize_wal"]


def _seq(segment: Path) -> int | None:
    stem = segment.stem
    if len(stem) != 16:
        return None
    try:
        return int(stem, 16)
    except ValueError:
        return None


def summarize_wal(path: str | os.PathLike[str]) -> dict[str, Any]:
    root = Path(path)
    if not root.is_dir():
        raise LogCorruptionError(0, f"{root}: not a directory (a WAL Raft log is a directory of segments)")
    if (root / "raft.wal").is_dir():
        raise LogCorruptionError(0, f"{root}: a data directory, not a WAL: check {root / 'raft.wal'}")
    segments: dict[int, Path] = {}
    snaps: list[str] = []
    notes: list[str] = []
    for f in sorted(root.iterdir()):
        if f.suffix == ".wal":
            seq = _seq(f)
            if seq is None:
                raise LogCorruptionError(0, f"{root}: segment name {f.name!r} is not <16 hex digits>.wal")
            segments[seq] = f
        elif f.name.startswith("snap-") and f.suffix == ".snap":
            snaps.append(f.name)
        elif f.suffix == ".tmp":
            notes.append(f"{f.name}: left by an interrupted rotation or snapshot write (deleted at open)")
        else:
            notes.append(f"{f.name}: not a file of the WAL (ignored)")
    if not segments:
        if snaps:
            raise LogCorruptionError(0, f"{root}: no segment, but snapshot file {snaps[-1]}: the log is missing")
        notes.append("no segment: a log created but never written (it opens empty)")
        return {"format": "wal", "entries": 0, "first": 1, "last": 0, "digest": hashlib.sha256().hexdigest(),
                "hard": [0, 0, 0], "conf": [], "snapshot_index": 0, "snapshot_term": 0, "segment": None,
                "frames": 0, "torn_tail": None, "notes": notes}
    newest = max(segments)
    name = segments[newest].name
    for seq in sorted(segments)[:-1]:
        notes.append(f"{segments[seq].name}: older than {name}, left by an interrupted rotation (deleted at open)")
    log = WalLogStorage.replay_only(root, newest)
    meta = log.snapshot().metadata
    current = f"snap-{meta.index:016x}.snap"
    for snap in snaps:
        if snap != current:
            notes.append(f"{snap}: not the log's snapshot (at {meta.index}); deleted at open")
            if int(snap[5:21], 16) > meta.index:
                notes.append(f"{snap} is newer than the log's snapshot: written by a snapshot whose record "
                              "never synced (a crash), or the log lost its newest segment")
    first, last = log.first_index(), log.last_index()
    check_log_consistency(log, name)
    hard, conf = log.initial_state()
    torn = None
    if log.torn_tail is not None:
        offset, size = log.torn_tail
        torn = {"segment": name, "offset": offset, "bytes": size}
        notes.append(f"{name}: torn tail at byte {offset} ({size} bytes of a batch whose sync never completed; "
                     "cut at open, no acknowledged write is lost)")
    return {
        "format": "wal", "entries": last - first + 1, "first": first, "last": last,
        "digest": entries_digest(log), "hard": [hard.term, hard.vote, hard.commit], "conf": sorted(conf.voters),
        "snapshot_index": meta.index, "snapshot_term": meta.term, "segment": name, "frames": log.frames,
        "torn_tail": torn, "notes": notes,
    }


def entries_digest(log: Any) -> str:
    """sha256 over every entry the log holds (index, term, type, data): the ``digest`` of
    both fsck summaries, so two logs can be compared entry for entry."""
    digest = hashlib.sha256()
    first, last = log.first_index(), log.last_index()
    for e in log.entries(first, last + 1):
        digest.update(b"%d/%d/%d/%d:" % (e.index, e.term, e.type, len(e.data)) + e.data)
    return digest.hexdigest()


def check_log_consistency(log: Any, name: str) -> None:
    """The checks the Raft core makes when it starts, and that terms never decrease, on any
    ``LogStorage`` (the LMDB log's check uses it too). ``name`` prefixes the messages."""
    first, last = log.first_index(), log.last_index()
    meta = log.snapshot().metadata
    hard, _conf = log.initial_state()
    if first - 1 > meta.index:
        raise LogCorruptionError(
            meta.index + 1,
            f"{name}: the log starts at {first} but the snapshot covers only up to {meta.index}: "
            f"entries {meta.index + 1}..{first - 1} are in neither",
        )
    if meta.index > last:
        raise LogCorruptionError(meta.index, f"{name}: the log ends at {last}, before its snapshot at {meta.index}")
    if meta.index and meta.index >= first - 1 and log.term(meta.index) != meta.term:
        raise LogCorruptionError(
            meta.index, f"{name}: the snapshot at {meta.index} has term {meta.term}, the log {log.term(meta.index)}"
        )
    if not hard.is_empty() and not first - 1 <= hard.commit <= last:
        raise LogCorruptionError(
            0, f"{name}: hard state commit {hard.commit} outside the stored log [{first - 1}, {last}] "
            "(the Raft core refuses to start on it)",
        )
    previous = log.term(first - 1)
    for e in log.entries(first, last + 1):
        if e.term < previous:
            raise LogCorruptionError(e.index, f"{name}: term {e.term} after term {previous}: terms never decrease")
        previous = e.term

"""The snapshots a leader sends: built from its live state when they are sent (etcd's design).

A member's own Raft snapshot holds no data: its state is the store, made durable at the
snapshot's index before the log behind it is compacted (``NodeDriver._create_snapshot``).
So when the core sends a follower a snapshot (``MsgSnap``, the follower being behind the
log's first index), that message names the local snapshot and carries nothing. Here it gets
its data: the target's state is pinned as it is now, at the applied index ``A`` (a read
transaction on the store, the member registry copied), a worker thread builds the data from
that pin (``ApplyTarget.snapshot_source``, in pieces the transport sends as they are: the data is
never joined on the leader), and the message goes out describing ``A``: its
term and the membership as of ``A`` (the apply stage's ``applied_term`` and ``conf_state``,
which change with the state in one step, so the three agree).

``A`` is at least the local snapshot's index and at most the commit index, so the follower
restores a committed state, and the leader's log still holds the entries after it (compacted
only up to the local snapshot less ``--snapshot-catchup-entries``). The core, which thought
it sent the older snapshot, learns the follower's match index from its answer (``A``) and
goes on from there. Until session 52 each member copied its whole store into every snapshot
it took (once per ``--snapshot-count`` entries) and kept the latest copy in memory.

Followers that fall behind together share one build: a message arriving while a build of
the same applied index runs waits for it. A failed build (or no state to describe yet: the
stage has applied nothing since the start, or is still installing a snapshot it received)
is reported to the core as a failed send; it tries again later.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

from kvraft.durations import DurationHistogram
from kvraft.raft.types import Message, Snapshot, SnapshotMetadata

log = logging.getLogger(__name__)

__all__ = ["SnapshotSender"]


class SnapshotSender:
    def __init__(
        self,
        target: Any,
        stage: Any,
        send: Callable[[Message, list[bytes]], None],
        report: Callable[[int, bool], None],
    ) -> None:
        self.target = target
        self.stage = stage
        self._send = send
        self._report = report
        self._builds: dict[int, tuple[asyncio.Future[list[bytes]], SnapshotMetadata, list[Message]]] = {}
        self.build_seconds = DurationHistogram()
        """Time to build one snapshot's data (the store's copy and its packing)."""
        self.built = 0
        self.sent = 0
        self.failed = 0

    def send(self, msg: Message) -> None:
        """Send ``msg`` (a ``MsgSnap``) with the data of the state as it is now."""
        stage = self.stage
        index, term = stage.applied.applied, stage.applied_term
        wanted = msg.snapshot.metadata.index if msg.snapshot is not None else 0
        if stage.failed is not None or term == 0 or index < wanted:
            log.info("snapshot for %x not sent now: no applied state to describe yet (applied %d, the log's "
                     "snapshot %d); the core tries again", msg.to, index, wanted)
            self.failed += 1
            self._report(msg.to, False)
            return
        running = self._builds.get(index)
        if running is not None:
            running[2].append(msg)
            return
        meta = SnapshotMetadata(index=index, term=term, conf_state=stage.conf_state)
        build = self.target.snapshot_source()  # (pinned here, with the stage between steps)

        def timed() -> list[bytes]:
            started = time.monotonic()
            data: list[bytes] = build()
            self.build_seconds.observe(time.monotonic() - started)
            return data

        future = asyncio.get_running_loop().run_in_executor(None, timed)
        self._builds[index] = (future, meta, [msg])
        log.info("building a snapshot at %d (term %d) for %x", index, term, msg.to)
        future.add_done_callback(lambda f: self._built(index, f))

    def _built(self, index: int, future: asyncio.Future[list[bytes]]) -> None:
        _future, meta, waiting = self._builds.pop(index)
        try:
            data = future.result()
        except BaseException as exc:  # noqa: BLE001 - reported to the core, which retries
            if not isinstance(exc, asyncio.CancelledError):
                log.error("building the snapshot at %d failed: %r", index, exc)
            for msg in waiting:
                self.failed += 1
                self._report(msg.to, False)
            return
        self.built += 1
        snapshot = Snapshot(metadata=meta)  # (its data: the pieces, sent as they are)
        size = sum(len(piece) for piece in data)
        for msg in waiting:
            self.sent += 1
            log.info("sending a snapshot at %d (%d bytes) to %x", index, size, msg.to)
            self._send(dataclasses.replace(msg, snapshot=snapshot), data)

    async def drain(self) -> None:
        """Wait for the builds running (their threads read the store: before it closes)."""
        for future, _meta, _waiting in list(self._builds.values()):
            with contextlib.suppress(BaseException):
                await asyncio.shield(future)

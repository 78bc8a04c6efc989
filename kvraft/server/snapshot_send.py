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
from collections import Counter
from collections.abc import Awaitable, Callable, Generator
from typing import Any

from kvraft.durations import ETCD_SNAPSHOT_BUCKETS_S, DurationHistogram
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
        stream: Callable[[Message, Callable[[], Awaitable[bytes | None]]], Awaitable[bool]] | None = None,
        streams_to: Callable[[int], bool] = lambda _member: False,
        files_to: Callable[[int], bool] = lambda _member: False,
    ) -> None:
        self.target = target
        self.stage = stage
        self._send = send
        self._report = report
        self._stream = stream
        self._streams_to = streams_to
        """Whether a member takes the streamed format (it announced ``snapshot-stream``)."""
        self._files_to = files_to
        """Whether a streamed snapshot goes to a member as the store's file (it announced this
        platform's ``snapshot-file``)."""
        self._streaming: set[asyncio.Task[None]] = set()
        self._builds: dict[int, tuple[asyncio.Future[list[bytes]], SnapshotMetadata, list[Message]]] = {}
        self.built = 0
        self.sent = 0
        self.failed = 0
        # etcd's etcd_network_snapshot_send_{success,failures,total_duration_seconds}{To}: a send
        # from the core's MsgSnap to the transport's report that its last frame went out (or a
        # failure: the transport's, or a build or read that failed here)
        self.send_success: Counter[int] = Counter()
        self.send_failures: Counter[int] = Counter()
        self.send_seconds: dict[int, DurationHistogram] = {}
        self._sending_since: dict[int, float] = {}

    def settled(self, member_id: int, ok: bool) -> None:
        """The transport's report on a snapshot sent to ``member_id`` (whether its last frame
        went out), for etcd's send metrics; the core is told by the caller."""
        started = self._sending_since.pop(member_id, None)
        if not ok:
            self.send_failures[member_id] += 1
            return
        self.send_success[member_id] += 1
        if started is not None:
            hist = self.send_seconds.get(member_id)
            if hist is None:
                self.send_seconds[member_id] = hist = DurationHistogram(ETCD_SNAPSHOT_BUCKETS_S)
            hist.observe(time.monotonic() - started)

    def _fail(self, member_id: int) -> None:
        """A send that failed here (no state yet, a failed build or read): counted, and
        reported to the core."""
        self.failed += 1
        self._sending_since.pop(member_id, None)
        self.send_failures[member_id] += 1
        self._report(member_id, False)

    def send(self, msg: Message) -> None:
        """Send ``msg`` (a ``MsgSnap``) with the data of the state as it is now."""
        self._sending_since[msg.to] = time.monotonic()
        stage = self.stage
        index, term = stage.applied.applied, stage.applied_term
        wanted = msg.snapshot.metadata.index if msg.snapshot is not None else 0
        if stage.failed is not None or term == 0 or index < wanted:
            log.info("snapshot for %x not sent now: no applied state to describe yet (applied %d, the log's "
                     "snapshot %d); the core tries again", msg.to, index, wanted)
            self._fail(msg.to)
            return
        meta = SnapshotMetadata(index=index, term=term, conf_state=stage.conf_state)
        if self._stream is not None and self._streams_to(msg.to):
            file = self._files_to(msg.to)
            pieces = self.target.snapshot_stream_source(file=file)  # (pinned here, with the stage between steps)
            task = asyncio.get_running_loop().create_task(self._send_streamed(msg, meta, pieces, file))
            self._streaming.add(task)
            task.add_done_callback(self._streaming.discard)
            return
        running = self._builds.get(index)
        if running is not None:
            running[2].append(msg)
            return
        build = self.target.snapshot_source()  # (pinned here, with the stage between steps)
        future: asyncio.Future[list[bytes]] = asyncio.get_running_loop().run_in_executor(None, build)
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
                self._fail(msg.to)
            return
        self.built += 1
        snapshot = Snapshot(metadata=meta)  # (its data: the pieces, sent as they are)
        size = sum(len(piece) for piece in data)
        for msg in waiting:
            self.sent += 1
            log.info("sending a snapshot at %d (%d bytes) to %x", index, size, msg.to)
            self._send(dataclasses.replace(msg, snapshot=snapshot), data)

    async def _send_streamed(self, msg: Message, meta: SnapshotMetadata, pieces: Generator[bytes, None, None],
                             file: bool = False) -> None:
        """Send ``msg`` with the data ``pieces`` yields, each read in a worker thread and queued
        as it comes (``PeerTransport.stream_snapshot``): the leader holds a few pieces, not the
        whole store, and the first is on the wire before the last is read."""
        assert self._stream is not None
        loop = asyncio.get_running_loop()
        size = 0
        reading: asyncio.Future[bytes | None] | None = None

        async def next_piece() -> bytes | None:
            nonlocal reading, size
            reading = loop.run_in_executor(None, next, pieces, None)
            piece = await asyncio.shield(reading)  # (cancelled, the thread reads on: awaited below)
            if piece is not None:
                if not size:
                    log.info("sending a snapshot at %d (term %d) to %x, streamed as it is read (%s)", meta.index,
                             meta.term, msg.to, "the store's file" if file else "the store's records")
                size += len(piece)
            return piece

        try:
            queued = await self._stream(dataclasses.replace(msg, snapshot=Snapshot(metadata=meta)), next_piece)
        except asyncio.CancelledError:
            self.failed += 1
            raise
        except Exception as exc:  # noqa: BLE001 - the read failed: reported to the core, which retries
            log.error("streaming the snapshot at %d to %x failed: %r", meta.index, msg.to, exc)
            self._fail(msg.to)
            return
        finally:
            if reading is not None and not reading.done():  # (a thread still reads the store)
                with contextlib.suppress(BaseException):
                    await asyncio.shield(reading)
            with contextlib.suppress(ValueError):
                pieces.close()  # (the read transaction)
        if not queued:  # (the transport reported it)
            self.failed += 1
            return
        self.built += 1
        self.sent += 1
        log.info("sent a snapshot at %d (%d bytes) to %x", meta.index, size, msg.to)

    async def drain(self) -> None:
        """Wait for the builds running (their threads read the store: before it closes); the
        streams under way are stopped, each after the read its thread has under way, and
        counted failed (the member is stopping: the core is not told)."""
        for future, _meta, _waiting in list(self._builds.values()):
            with contextlib.suppress(BaseException):
                await asyncio.shield(future)
        for task in list(self._streaming):
            task.cancel()
        for task in list(self._streaming):
            with contextlib.suppress(BaseException):
                await task

"""A follower's side of a snapshot: the store rebuilt as the snapshot's chunks arrive.

A leader streams ``[2, members]`` and then its store's snapshot stream, as it reads it
(``kvraft.server.snapshot_send``), in ``SNAP_CHUNK`` frames; the MsgSnap itself comes last,
in ``SNAP_END`` (``kvraft.server.wire``). Before, the follower joined the chunks in memory,
wrote them to the WAL's snapshot file, then rebuilt its store from them: after the last chunk
the store's bytes were written twice, and held whole until the install.

Now a ``Receipt`` (one per stream, made by ``SnapshotReceiver.begin``) hands the store's
stream to a worker thread as it arrives. The thread builds a new store generation beside the
live one (``restore_generation``, which checks every frame and the stream's sha256). A leader
of the same platform sends its store's file itself (``[4, members]``, then the file LMDB
copied, since session 54): the thread writes its bytes (``restore_file``, checked against the
trailer's length and sha256, then opened as a store). When the
MsgSnap comes, the file, synced, is named after the snapshot's index (``prepared_name``: in
the store's directory), and the message goes to Raft with only ``[3, members, name, sha256]``
as its data (``SNAPSHOT_PREPARED_FORMAT``). That is what the WAL records. The apply stage
installs the file (``MVCCStore.install_prepared``), as it would a generation it built. etcd
does the same: it saves a received database as ``<index>.snap.db`` and its Raft snapshot holds
only the membership.

- A crash after the WAL recorded the snapshot and before the install: the next start finds
  the file by its name and installs it (``Node._restore_if_behind``). The files no longer
  needed are deleted when a snapshot is installed (those at or below its index) and at each
  start (all). An unfinished build is a ``.tmp`` file, deleted when the store opens.
- Memory: at most ``BACKLOG_BYTES`` of chunks wait for the thread; past that the connection
  stops reading (``pause``) until the thread has taken half of them.
- A snapshot in any other format (``[1, members, bin]``, from a member that does not stream)
  is joined in memory, as before.
- A damaged or cut stream fails the receipt: the file is removed, the MsgSnap dropped, and
  the leader, hearing nothing, sends a snapshot again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack

from kvraft import failpoints
from kvraft.apply.state_machine import (
    SNAPSHOT_FILE_FORMAT,
    SNAPSHOT_PREPARED_FORMAT,
    SNAPSHOT_STREAM_FORMAT,
    snapshot_head,
)
from kvraft.raft.types import Message, Snapshot
from kvraft.storage.backend import Backend
from kvraft.storage.errors import SnapshotCorruptionError
from kvraft.storage.lmdb_env import fsync_dir
from kvraft.storage.snapshot import RestoreReport, prepared_name, restore_file, restore_generation

__all__ = ["BACKLOG_BYTES", "HEAD_MAX_BYTES", "Receipt", "SnapshotReceiver"]

log = logging.getLogger(__name__)

BACKLOG_BYTES = 8 << 20
"""Chunks held for the build thread at most before the connection stops reading."""
HEAD_MAX_BYTES = 64 << 20
"""The most bytes taken to find the data's head (the member registry; a few KB)."""

_CUT = object()
"""Put on a receipt's queue when it is abandoned: the build fails (the stream was cut)."""


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class Receipt:
    """One snapshot being received from ``source``: ``feed`` each chunk (on the loop), then
    ``finish`` with the MsgSnap, or ``abort``."""

    def __init__(self, receiver: SnapshotReceiver | None, source: int, name: str = "",
                 pause: Callable[[], None] = lambda: None, resume: Callable[[], None] = lambda: None) -> None:
        """Without a ``receiver`` every snapshot is joined in memory (a transport on its own)."""
        self.source = source
        self.started = time.monotonic()
        self.bytes = 0
        self._receiver = receiver
        self._tmp = Path(receiver.directory if receiver else ".") / f"{name}.lmdb.tmp"
        self._pause, self._resume = pause, resume
        self._head = bytearray()
        self._members: Any = None
        self._pieces: list[bytes] | None = None if receiver else []  # (joined in memory)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._queued = 0
        self._paused = False
        self._done = False
        self._ended = False
        self._build: asyncio.Future[RestoreReport] | None = None
        self._file = False
        """The data is the leader's store file (``SNAPSHOT_FILE_FORMAT``): written, not rebuilt."""

    # -- on the loop ------------------------------------------------------------------------
    def feed(self, chunk: bytes) -> None:
        self.bytes += len(chunk)
        if self._pieces is not None:
            self._pieces.append(chunk)
            return
        if self._build is None:
            self._head += chunk
            head = snapshot_head(self._head)
            if head is None:
                if len(self._head) > HEAD_MAX_BYTES:
                    raise ValueError(f"a snapshot's head is over {HEAD_MAX_BYTES} bytes")
                return
            fields, version, members, offset = head
            if fields != 2 or version not in (SNAPSHOT_STREAM_FORMAT, SNAPSHOT_FILE_FORMAT):
                self._pieces = [bytes(self._head)]
                return
            assert self._receiver is not None
            self._members = members
            self._file = version == SNAPSHOT_FILE_FORMAT
            chunk, self._head = bytes(self._head[offset:]), bytearray()
            self._build = asyncio.get_running_loop().run_in_executor(None, self._run)
            self._build.add_done_callback(_retrieved)  # (an abandoned build's error is not news)
        if not chunk or self._done:
            return
        with self._lock:
            self._queued += len(chunk)
            pause = self._queued > BACKLOG_BYTES and not self._paused
            self._paused = self._paused or pause
        self._queue.put(chunk)
        if pause:
            self._pause()

    async def finish(self, msg: Message) -> Message:
        """``msg`` (the MsgSnap) with its data: the chunks joined, or, for a store built as it
        arrived, the file named after the snapshot's index (``SNAPSHOT_PREPARED_FORMAT``).
        Raises when the stream does not check out (nothing is left behind)."""
        assert msg.snapshot is not None
        if self._build is None:
            data = b"".join(self._pieces) if self._pieces is not None else bytes(self._head)
            return dataclasses.replace(msg, snapshot=Snapshot(msg.snapshot.metadata, data))
        assert self._receiver is not None
        self.end()
        report = await self._build
        meta = msg.snapshot.metadata
        final = self._receiver.directory / prepared_name(meta.index)
        try:
            await asyncio.get_running_loop().run_in_executor(None, self._keep, final)
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise
        data = msgpack.packb([SNAPSHOT_PREPARED_FORMAT, self._members, final.name, report.sha256], use_bin_type=True)
        return dataclasses.replace(msg, snapshot=Snapshot(meta, data))

    def end(self) -> None:
        """The last chunk came (the MsgSnap is here): the build may finish."""
        if not self._ended:
            self._ended = True
            self._queue.put(None)

    def abort(self) -> None:
        """The stream ends unfinished (its connection closed): the build fails and removes its file."""
        if not self._ended:
            self._ended = True
            self._queue.put(_CUT)

    # -- in the worker thread ---------------------------------------------------------------
    def _chunks(self) -> Iterator[bytes]:
        while (chunk := self._queue.get()) is not None:
            if chunk is _CUT:
                raise SnapshotCorruptionError("the snapshot's stream was cut off (its connection closed)")
            with self._lock:
                self._queued -= len(chunk)
                resume = self._paused and self._queued <= BACKLOG_BYTES // 2
                self._paused = self._paused and not resume
            if resume:
                self._call_soon(self._resume)
            failpoints.hit("snapshot_receive_chunk")  # (a slow disk under the build)
            yield chunk

    def _run(self) -> RestoreReport:
        assert self._receiver is not None
        try:
            if self._file:
                return restore_file(self._receiver.backend, self._chunks(), self._tmp)
            return restore_generation(self._receiver.backend, self._chunks(), path=self._tmp)
        finally:
            with self._lock:
                self._done = True
                resume, self._paused = self._paused, False
            if resume:  # (chunks fed from now on are dropped)
                self._call_soon(self._resume)

    def _call_soon(self, fn: Callable[[], None]) -> None:
        assert self._receiver is not None
        loop = self._receiver.loop
        assert loop is not None
        with contextlib.suppress(RuntimeError):  # (the loop closed: the member is stopping)
            loop.call_soon_threadsafe(fn)

    def _keep(self, final: Path) -> None:
        """Name the finished (synced) file after the snapshot's index, durably. One already
        there (the same index sent again: the same state) is kept, never replaced: the apply
        stage may be installing it."""
        try:
            os.link(self._tmp, final)
        except FileExistsError:
            pass
        except OSError:  # (a file system without hard links: a rename, unless one is there)
            if not final.exists():
                os.replace(self._tmp, final)
        self._tmp.unlink(missing_ok=True)
        Path(f"{self._tmp}-lock").unlink(missing_ok=True)
        fsync_dir(final.parent)


class SnapshotReceiver:
    """Makes a ``Receipt`` for each snapshot a peer starts sending; the store's files go in
    ``backend``'s directory."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.directory = backend.directory
        self.loop: asyncio.AbstractEventLoop | None = None
        self._seq = 0

    def begin(self, source: int, pause: Callable[[], None], resume: Callable[[], None]) -> Receipt:
        self.loop = asyncio.get_running_loop()
        self._seq += 1
        return Receipt(self, source, f"recv-{source:x}-{os.getpid()}-{self._seq}", pause, resume)

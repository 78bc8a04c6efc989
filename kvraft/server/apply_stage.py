"""The apply stage: committed entries -> ops -> the state machine, in log order.

It runs as its own task, fed by the driver's Ready loop through a queue, so the Ready loop
can persist and replicate the next batch while this one is applied. Runs of ordinary ops
are applied as one batch (one store commit); a conf change or a membership op is a batch
boundary, and a compaction begins a new batch (it commits the store at once: see
``_commits_early``). Each op's result (or ``EtcdError``) resolves the waiter registered
under its request id, if the proposal came from this member.

The state machine group-commits applied batches (``StateMachine.apply_ops``: one LMDB
commit per ``COMMIT_INTERVAL_S`` or ``COMMIT_OPS``); when it holds applied batches and this
stage has nothing more to apply, a timer queues a ``commit`` after ``COMMIT_INTERVAL_S``,
so what was applied reaches the disk within that time even when no further entry comes.

A stage that failed (a batch the state machine could not apply: the member is stopping on
it) applies nothing more, on its task or inline (``failed``): anything applied after the
failed batch would take that batch's revisions, answer clients with them and reach the disk
when the state machine closes (``tests/storage/test_apply_stage_failure.py``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import msgpack

from kvraft import failpoints
from kvraft.apply.errors import EtcdError
from kvraft.apply.feature_ops import AuthedOp
from kvraft.apply.ops import CompactOp, MemberOp, decode_entry, op_from_wire, op_to_wire
from kvraft.apply.state_machine import COMMIT_INTERVAL_S
from kvraft.raft.types import ConfChange, ConfChangeType, ConfState, Entry, EntryType, Snapshot
from kvraft.server.reads import AppliedWaiters

__all__ = ["ApplyStage"]

log = logging.getLogger("kvraft.apply")

_COMPACT_TAG = op_to_wire(CompactOp())[0]


def _commits_early(op: Any) -> bool:
    """Whether applying ``op`` commits the store's write batch in its midst: a compaction
    persists its scheduled revision at once (``MVCCStore.compact``), and that commit
    carries the consistent index of the last whole batch applied. So nothing of the
    compaction's own batch may be applied before it: a restart after that commit (and
    before the next: up to ``COMMIT_INTERVAL_S`` with group commit) would apply those
    ops again from the log."""
    if isinstance(op, AuthedOp):
        return bool(op.wire) and op.wire[0] == _COMPACT_TAG
    return isinstance(op, CompactOp)


class ApplyStage:
    def __init__(
        self,
        target: Any,
        waiters: dict[int, Any],  # request id -> its future or ``driver.CallbackWaiter``
        applied: AppliedWaiters,
        conf_state: ConfState,
        on_applied: Callable[[], None],
        records: dict[int, Any] | None = None,
    ) -> None:
        self.target = target
        self.waiters = waiters
        self.records = {} if records is None else records
        """Request id -> what the driver keeps of a proposal until it is applied (dropped here
        with its waiter: ``driver.NodeDriver._own``)."""
        self.applied = applied
        self.conf_state = conf_state
        """The membership as of the last applied entry (for snapshots taken now)."""
        self.applied_term = 0
        """The term of the entry at ``applied.applied`` (0: none applied since the start, not
        known here). With ``conf_state`` and the target's state it is what a snapshot sent
        now describes: all three change together, in one step without an await."""
        self.on_applied = on_applied
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.entries_applied = 0
        self.snapshots_applied = 0
        self.applying_snapshot = 0
        """1 while a received snapshot is being installed (etcd's
        ``etcd_server_snapshot_apply_in_progress_total``)."""
        self.failed: BaseException | None = None  # what stopped it; then it applies nothing more
        self._commit_timer: asyncio.TimerHandle | None = None

    def submit_entries(self, entries: tuple[Entry, ...], conf_after: ConfState) -> None:
        self.queue.put_nowait(("entries", (entries, conf_after)))

    def submit_snapshot(self, snapshot: Snapshot) -> None:
        self.queue.put_nowait(("snapshot", snapshot))

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            if self._commit_timer is not None:
                self._commit_timer.cancel()
                self._commit_timer = None

    def _commit_due(self) -> None:
        self._commit_timer = None
        self.queue.put_nowait(("commit", None))

    def idle(self) -> bool:
        """Nothing queued: entries applied now by ``apply_now`` keep the log order. (An
        item put on the queue stays there until this task resumes and takes it, and the
        task processes an item without awaiting, so an empty queue means nothing is
        pending or half done.) Never once the stage has failed."""
        return self.failed is None and self.queue.empty() and not self.applying_snapshot

    def apply_now(self, entries: tuple[Entry, ...], conf_after: ConfState) -> None:
        """Apply ``entries`` on the caller's stack instead of queueing them (the Ready
        loop does so for a small batch when the stage is idle: the waiters are resolved
        one task wake-up sooner). Only while ``idle()``."""
        if not self.queue.empty():
            raise RuntimeError("apply_now while entries are queued")
        self._process("entries", (entries, conf_after))

    async def _run(self) -> None:
        while True:
            kind, payload = await self.queue.get()
            if kind == "snapshot":
                await self._restore(payload)
            else:
                self._process(kind, payload)

    async def _restore(self, snapshot: Snapshot) -> None:
        """Install a received snapshot with the store's rebuild in a worker thread (seconds
        for a large store: the member's loop goes on answering heartbeats and reads of the
        state before it). Nothing else is applied meanwhile: entries wait on the queue, and
        ``idle()`` is false, so none is applied inline."""
        if self.failed is not None:
            raise self.failed
        self.applying_snapshot = 1
        loop = asyncio.get_running_loop()
        started = loop.time()
        log.info("installing the snapshot at %d (term %d)", snapshot.metadata.index, snapshot.metadata.term)
        try:
            failpoints.hit("apply_before_restore")  # (the snapshot is in the log; the store is not yet switched)
            work = self.target.restore_begin(snapshot)
            await loop.run_in_executor(None, work)
            self.target.restore_end(snapshot)
            self._restored(snapshot)
            log.info("installed the snapshot at %d in %.3f s", snapshot.metadata.index, loop.time() - started)
        except BaseException as exc:
            self.failed = exc
            raise
        finally:
            self.applying_snapshot = 0

    def _process(self, kind: str, payload: Any) -> None:
        if self.failed is not None:
            raise self.failed
        try:
            self._process_one(kind, payload)
        except BaseException as exc:
            self.failed = exc
            raise

    def _process_one(self, kind: str, payload: Any) -> None:
        if kind == "commit":  # (on this task, so a failed commit stops the member)
            commit = getattr(self.target, "commit", None)
            if commit is not None:
                commit()
            return
        entries, conf_after = payload
        if self._apply(entries):
            self.conf_state = conf_after
        self._applied()

    def _restored(self, snapshot: Snapshot) -> None:
        self.snapshots_applied += 1
        self.conf_state = snapshot.metadata.conf_state
        self.applied_term = snapshot.metadata.term
        self.applied.advance(snapshot.metadata.index)
        self._applied()

    def _applied(self) -> None:
        self.on_applied()
        if self._commit_timer is None and getattr(self.target, "holding", False):
            loop = asyncio.get_running_loop()
            interval = getattr(self.target, "interval_s", None)
            self._commit_timer = loop.call_later(interval() if interval else COMMIT_INTERVAL_S, self._commit_due)

    def _apply(self, entries: tuple[Entry, ...]) -> bool:
        """Apply ``entries``; whether the last is now the applied one (False: all of them were
        applied before, a restart replaying its log: the membership and term as of the applied
        index are not theirs)."""
        items: list[tuple[int, Any]] = []
        previous = last = entries[-1]
        for entry in entries:
            if entry.index <= self.applied.applied:
                continue  # already in the state machine (a restart replays from the log)
            if entry.type == EntryType.CONF_CHANGE:
                self._flush(items, previous)
                items = []
                change = ConfChange.decode(entry.data)
                if change.context:
                    request_id, op_wire = msgpack.unpackb(change.context, raw=False)
                    self.target.apply_member(op_from_wire(op_wire), entry.index, entry.term)
                    self.resolve(request_id, None)
                else:  # a founder's bootstrap entry: its id, as the founders computed it
                    for kind, member_id in change.changes:
                        if kind != ConfChangeType.REMOVE_NODE:
                            op = MemberOp("found", member_id, is_learner=kind == ConfChangeType.ADD_LEARNER)
                            self.target.apply_member(op, entry.index, entry.term)
            elif entry.data:  # (empty data: a new leader's no-op)
                request_id, op = decode_entry(entry.data)
                if isinstance(op, MemberOp):
                    self._flush(items, previous)
                    items = []
                    self.target.apply_member(op, entry.index, entry.term)
                    self.resolve(request_id, None)
                else:
                    if items and _commits_early(op):
                        self._flush(items, previous)
                        items = []
                    items.append((request_id, op))
            previous = entry
        self._flush(items, last)
        self.entries_applied += len(entries)
        reached = last.index >= self.applied.applied
        if reached:
            self.applied_term = last.term
        self.applied.advance(last.index)
        return reached

    def _flush(self, items: list[tuple[int, Any]], upto: Entry) -> None:
        if not items:
            return
        failpoints.hit("apply_before_commit")
        results = self.target.apply_ops(items, upto.index, upto.term)
        failpoints.hit("apply_after_commit")
        for (request_id, _op), result in zip(items, results, strict=True):
            self.resolve(request_id, result)

    def resolve(self, request_id: int, result: Any) -> None:
        future = self.waiters.pop(request_id, None)
        self.records.pop(request_id, None)
        if future is None or future.done():
            return
        if isinstance(result, EtcdError):
            future.set_exception(result)
        else:
            future.set_result(result)

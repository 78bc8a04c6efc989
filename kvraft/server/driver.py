"""The node driver: the only async loop around the pure Raft core.

One task runs the Ready loop; one turns wall time into ticks; one applies committed
entries (the apply stage). Everything runs on the member's event loop thread; the core is
never touched from another thread.

Ready handling (the contract of ``kvraft.raft.types.Ready``):

1. A leader whose term and vote did not change in this Ready sends its messages first, so
   followers write their logs while the leader writes its own (Raft thesis 10.2.1: the
   core counts the leader's own entries toward commitment only after ``advance``, i.e.
   after they are durable here). Everyone else sends after step 2.
2. Persist: install the snapshot, append the entries, save the hard state, then ONE
   ``sync()`` for all of it (group commit: every proposal that arrived while the previous
   sync ran is in this batch).
3. Hand the committed entries (and an incoming snapshot) to the apply stage, in order;
   conf changes are switched on in the core right here (``apply_conf_change``), their
   member bookkeeping happens in the apply stage.
4. ``advance``.

Proposals wait on a future keyed by request id, resolved by the apply stage with the op's
result. A follower forwards proposals to the leader (``FORWARD`` frames); the entry comes
back through the log and is applied here too, where the waiter is found. Linearizable
reads go through batched ReadIndex rounds (``reads.ReadBatcher``); a follower's round is
forwarded to the leader by the core itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from kvraft.apply.errors import EtcdError, Unavailable
from kvraft.apply.ops import MemberOp, decode_entry, encode_entry, op_from_wire, op_to_wire
from kvraft.raft.errors import NotLeaderError, ProposalDroppedError, RaftError
from kvraft.raft.types import (
    NONE,
    ConfChange,
    ConfState,
    Entry,
    EntryType,
    Message,
    Ready,
    Snapshot,
    StateRole,
)
from kvraft.server import wire
from kvraft.server.reads import AppliedWaiters, ReadBatcher

__all__ = ["ApplyTarget", "DriverStats", "NodeDriver"]

log = logging.getLogger("kvraft.driver")

REQUEST_TIMEOUT_S = 7.0
READ_ROUND_TIMEOUT_S = 1.0


class ApplyTarget:
    """What the apply stage drives (implemented by ``kvraft.server.member_state``)."""

    def applied_index(self) -> int:
        raise NotImplementedError

    def apply_ops(self, items: list[tuple[int, Any]], index: int, term: int) -> list[Any]:
        """Apply ops in order, record ``index`` as applied; one result (or EtcdError) per op."""
        raise NotImplementedError

    def apply_member(self, op: MemberOp, index: int, term: int) -> None:
        raise NotImplementedError

    def snapshot_data(self) -> bytes:
        raise NotImplementedError

    def flush(self) -> None:
        """Make everything applied durable (before the log behind it is compacted)."""
        raise NotImplementedError

    def restore(self, snapshot: Snapshot) -> None:
        raise NotImplementedError


@dataclass
class DriverStats:
    readies: int = 0
    syncs: int = 0
    entries_persisted: int = 0
    entries_applied: int = 0
    proposals_forwarded: int = 0
    read_rounds: int = 0
    snapshots_created: int = 0
    snapshots_applied: int = 0


class NodeDriver:
    def __init__(
        self,
        member_id: int,
        raw: Any,
        log_storage: Any,
        target: ApplyTarget,
        transport: Any,
        *,
        heartbeat_interval_s: float,
        conf_state: ConfState,
        snapshot_count: int,
        snapshot_catchup_entries: int,
        on_conf_change: Callable[[ConfState, ConfChange], None] | None = None,
    ) -> None:
        self.member_id = member_id
        self.raw = raw
        self.storage = log_storage
        self.target = target
        self.transport = transport
        self.heartbeat_interval_s = heartbeat_interval_s
        self.conf_state = conf_state
        self._applied_conf = conf_state
        self.snapshot_count = snapshot_count
        self.snapshot_catchup_entries = snapshot_catchup_entries
        self.on_conf_change = on_conf_change or (lambda _conf, _cc: None)
        self.stats = DriverStats()
        self.leader = NONE
        self.role = StateRole.FOLLOWER
        self.term = 0
        self.commit_index = 0
        self.applied = AppliedWaiters()
        self.applied.applied = target.applied_index()
        self._snapshot_index = log_storage.snapshot().metadata.index
        self._reads = ReadBatcher(member_id)
        self._read_started = 0.0
        self._waiters: dict[int, asyncio.Future[Any]] = {}
        self._next_request_id = random.getrandbits(62) + 1
        self._forward: list[bytes] = []
        self._wake = asyncio.Event()
        self._leader_known = asyncio.Event()
        self._apply_queue: asyncio.Queue[Any] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._persisted_hard = log_storage.initial_state()[0]
        self._stopped = False
        self.fatal: BaseException | None = None

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._ready_loop(), name="raft-ready"),
            loop.create_task(self._tick_loop(), name="raft-tick"),
            loop.create_task(self._apply_loop(), name="raft-apply"),
        ]

    async def stop(self) -> None:
        self._stopped = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        stopped = Unavailable("etcdserver: server stopped")
        for future in self._waiters.values():
            if not future.done():
                future.set_exception(stopped)
        self._reads.fail_inflight(stopped)
        self.applied.fail_all(stopped)

    def kick(self) -> None:
        self._wake.set()

    # -- inputs ---------------------------------------------------------------------------
    def on_frame(self, source: int, kind: int, body: Any) -> None:
        """Transport callback: a frame from an authenticated peer."""
        if kind == wire.RAFT:
            for msg in body:
                self._step(msg)
        elif kind == wire.SNAP_END:
            self._step(body)
        elif kind == wire.FORWARD:
            if self.role == StateRole.LEADER:
                datas = [bytes(d) for d in body]
                with contextlib.suppress(ProposalDroppedError):
                    self.raw.propose_batch(datas)
        elif kind == wire.FORWARD_CONF and self.role == StateRole.LEADER:
            with contextlib.suppress(RaftError, ValueError):
                self.raw.propose_conf_change(ConfChange.decode(bytes(body)))
        self.kick()

    def _step(self, msg: Message) -> None:
        try:
            self.raw.step(msg)
        except (RaftError, ValueError) as exc:
            log.debug("dropped %s from %x: %s", msg.type.name, msg.from_, exc)

    def report_unreachable(self, member_id: int) -> None:
        self.raw.report_unreachable(member_id)
        self.kick()

    def report_snapshot(self, member_id: int, ok: bool) -> None:
        self.raw.report_snapshot(member_id, ok)
        self.kick()

    # -- proposals ------------------------------------------------------------------------
    def new_request_id(self) -> int:
        self._next_request_id += 1
        return self._next_request_id

    async def propose(self, op: Any, timeout_s: float = REQUEST_TIMEOUT_S) -> Any:
        """Replicate ``op`` and return its apply result (raises its EtcdError)."""
        request_id = self.new_request_id()
        return await self._replicate(request_id, encode_entry(request_id, op), False, timeout_s)

    async def propose_conf_change(
        self, changes: tuple[Any, ...], member_op: MemberOp, timeout_s: float = REQUEST_TIMEOUT_S
    ) -> None:
        """Replicate a membership change (``changes`` for the core, ``member_op`` for the
        registry) and return once it is applied here."""
        request_id = self.new_request_id()
        context = msgpack.packb([request_id, op_to_wire(member_op)], use_bin_type=True)
        data = ConfChange(changes=changes, context=context).encode()
        await self._replicate(request_id, data, True, timeout_s)

    async def _replicate(self, request_id: int, data: bytes, conf: bool, timeout_s: float) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters[request_id] = future
        deadline = time.monotonic() + timeout_s
        try:
            await self._submit(data, conf, deadline)
            remaining = deadline - time.monotonic()
            return await asyncio.wait_for(future, max(remaining, 0.001))
        except TimeoutError:
            raise Unavailable("etcdserver: request timed out") from None
        finally:
            self._waiters.pop(request_id, None)

    async def _submit(self, data: bytes, conf: bool, deadline: float) -> None:
        while True:
            try:
                if conf:
                    self.raw.propose_conf_change(ConfChange.decode(data))
                else:
                    self.raw.propose(data)
                self.kick()
                return
            except NotLeaderError as exc:
                if exc.leader != NONE:
                    if conf:
                        self.transport.send_frame(exc.leader, wire.FORWARD_CONF, data)
                    else:
                        self._forward.append(data)
                    self.stats.proposals_forwarded += 1
                    self.kick()
                    return
            except ProposalDroppedError:
                pass
            if time.monotonic() >= deadline:
                raise Unavailable("etcdserver: no leader")
            self._leader_known.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._leader_known.wait(), min(0.2, deadline - time.monotonic()))

    async def read_barrier(self, timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        """Return once this member has applied everything committed before the call."""
        deadline = time.monotonic() + timeout_s
        while True:
            future = self._reads.enqueue()
            self.kick()
            try:
                index = await asyncio.wait_for(future, max(0.001, deadline - time.monotonic()))
            except TimeoutError:
                raise Unavailable("etcdserver: request timed out") from None
            except Unavailable:
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(0.02)
                continue
            remaining = deadline - time.monotonic()
            try:
                await asyncio.wait_for(self.applied.wait(index), max(0.001, remaining))
            except TimeoutError:
                raise Unavailable("etcdserver: request timed out") from None
            return

    def _start_read_round(self) -> None:
        if not self._reads.idle() and time.monotonic() - self._read_started > READ_ROUND_TIMEOUT_S:
            self._reads.fail_inflight(Unavailable("etcdserver: leader changed"))  # retried by caller
        ctx = self._reads.next_round()
        if ctx is None:
            return
        try:
            self.raw.read_index(ctx)
            self._read_started = time.monotonic()
            self.stats.read_rounds += 1
        except RaftError:
            self._reads.fail_inflight(Unavailable("etcdserver: no leader"))

    # -- the loops ------------------------------------------------------------------------
    async def _tick_loop(self) -> None:
        next_tick = time.monotonic()
        while True:
            next_tick += self.heartbeat_interval_s
            delay = next_tick - time.monotonic()
            if delay < -self.heartbeat_interval_s:  # fell far behind (a long pause): resync
                next_tick = time.monotonic()
            await asyncio.sleep(max(0.0, delay))
            self.raw.tick()
            self._start_read_round()
            self.kick()

    async def _ready_loop(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                if self._forward:
                    batch, self._forward = self._forward, []
                    if self.leader != NONE and self.leader != self.member_id:
                        self.transport.send_frame(self.leader, wire.FORWARD, batch)
                self._start_read_round()
                while self.raw.has_ready():
                    rd = self.raw.ready()
                    self._handle_ready(rd)
                    self.raw.advance(rd)
                    await asyncio.sleep(0)  # let requests in: they join the next batch
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a storage failure: stop serving rather than diverge
            self.fatal = exc
            log.critical("raft loop stopped: %r", exc)
            raise

    def _handle_ready(self, rd: Ready) -> None:
        self.stats.readies += 1
        if rd.soft_state is not None:
            self._on_soft_state(rd.soft_state.leader, rd.soft_state.role)
        hard = rd.hard_state
        vote_changed = hard is not None and (hard.term, hard.vote) != (
            self._persisted_hard.term,
            self._persisted_hard.vote,
        )
        early = self.role == StateRole.LEADER and not vote_changed and rd.snapshot.is_empty()
        if early and rd.messages:
            self.transport.send(rd.messages)
        if not rd.snapshot.is_empty():
            self.storage.apply_snapshot(rd.snapshot)
        if rd.entries:
            self.storage.append(list(rd.entries))
            self.stats.entries_persisted += len(rd.entries)
        if hard is not None:
            self.storage.set_hard_state(hard)
            self._persisted_hard = hard
            self.term = hard.term
            self.commit_index = hard.commit
        if rd.must_sync:  # a commit-index-only change rides along with the next sync
            self.storage.sync()
            self.stats.syncs += 1
        if not early and rd.messages:
            self.transport.send(rd.messages)
        if not rd.snapshot.is_empty():
            self.conf_state = rd.snapshot.metadata.conf_state
            self._snapshot_index = rd.snapshot.metadata.index
            self._apply_queue.put_nowait(("snapshot", rd.snapshot))
        if rd.committed_entries:
            for entry in rd.committed_entries:
                if entry.type == EntryType.CONF_CHANGE:
                    self._switch_conf(entry)
            self._apply_queue.put_nowait(("entries", (rd.committed_entries, self.conf_state)))
        for rs in rd.read_states:
            self._reads.complete(rs.request_ctx, rs.index)

    def _switch_conf(self, entry: Entry) -> None:
        cc = ConfChange.decode(entry.data)
        try:
            self.conf_state = self.raw.apply_conf_change(cc)
        except RaftError as exc:
            log.warning("conf change at %d refused: %s", entry.index, exc)
            return
        if hasattr(self.storage, "set_conf_state"):
            self.storage.set_conf_state(self.conf_state, entry.index)
        self.on_conf_change(self.conf_state, cc)

    def _on_soft_state(self, leader: int, role: StateRole) -> None:
        if leader != self.leader:
            log.info("member %x: leader is now %x", self.member_id, leader)
            if self.leader != NONE:
                # rounds sent to the old leader will never be answered
                self._reads.fail_inflight(Unavailable("etcdserver: leader changed"))
        self.leader, self.role = leader, role
        if leader != NONE:
            self._leader_known.set()

    async def _apply_loop(self) -> None:
        try:
            await self._apply_forever()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # the state machine failed: stop serving
            self.fatal = exc
            log.critical("apply stage stopped: %r", exc)
            raise

    async def _apply_forever(self) -> None:
        while True:
            kind, payload = await self._apply_queue.get()
            if kind == "snapshot":
                self.target.restore(payload)
                self._applied_conf = payload.metadata.conf_state
                self.stats.snapshots_applied += 1
                self.applied.advance(payload.metadata.index)
                continue
            entries, self._applied_conf = payload
            self._apply_entries(entries)
            self._maybe_snapshot()

    def _apply_entries(self, entries: tuple[Entry, ...]) -> None:
        items: list[tuple[int, Any]] = []
        last = entries[-1]
        previous = last
        for entry in entries:
            if entry.index <= self.applied.applied:
                continue
            if entry.type == EntryType.CONF_CHANGE:
                self._flush_apply(items, previous)
                items = []
                context = ConfChange.decode(entry.data).context
                if context:
                    request_id, op_wire = msgpack.unpackb(context, raw=False)
                    self.target.apply_member(op_from_wire(op_wire), entry.index, entry.term)
                    self._resolve(request_id, None)
            elif entry.data:  # (empty data: a leader's no-op)
                request_id, op = decode_entry(entry.data)
                if isinstance(op, MemberOp):
                    self._flush_apply(items, previous)
                    items = []
                    self.target.apply_member(op, entry.index, entry.term)
                    self._resolve(request_id, None)
                else:
                    items.append((request_id, op))
            previous = entry
        self._flush_apply(items, last)
        self.stats.entries_applied += len(entries)
        self.applied.advance(last.index)

    def _flush_apply(self, items: list[tuple[int, Any]], upto: Entry) -> None:
        if not items:
            return
        results = self.target.apply_ops(items, upto.index, upto.term)
        for (request_id, _op), result in zip(items, results, strict=True):
            self._resolve(request_id, result)

    def _resolve(self, request_id: int, result: Any) -> None:
        future = self._waiters.get(request_id)
        if future is None or future.done():
            return
        if isinstance(result, EtcdError):
            future.set_exception(result)
        else:
            future.set_result(result)

    def _maybe_snapshot(self) -> None:
        applied = self.applied.applied
        if applied - self._snapshot_index < self.snapshot_count:
            return
        data = self.target.snapshot_data()
        self.storage.create_snapshot(applied, self._applied_conf, data)
        self._snapshot_index = applied
        self.target.flush()
        compact_to = applied - self.snapshot_catchup_entries
        if compact_to > self.storage.first_index():
            self.storage.compact(compact_to)
        self.storage.sync()
        self.stats.snapshots_created += 1


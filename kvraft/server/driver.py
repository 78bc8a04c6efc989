"""The node driver: the only async loop around the pure Raft core.

Tasks: the Ready loop (the only code that touches the core), a ticker (wall time ->
ticks), and the apply stage (``apply_stage.ApplyStage``). Log writes run on the log
writer's thread (``log_writer.LogWriter``), so a slow fsync never stalls the event loop.

Everything that reaches the core arrives as an input and is queued: peer messages, ticks,
transport reports, proposals, read requests, leadership transfers. The Ready loop drains
the queue into the core between Readies, never while a log write is in flight (the core
reads the log), and proposes every queued proposal as ONE batch (one log append, one
MsgApp per follower). A follower forwards its batch to the leader (``FORWARD`` frames).

Ready handling (the contract of ``kvraft.raft.types.Ready``):

1. A leader whose term and vote did not change in this Ready sends its messages first, so
   followers write their logs while the leader writes its own (Raft thesis 10.2.1: the
   core counts the leader's own entries toward commitment only after ``advance``, i.e.
   after they are durable). Everyone else sends after step 2.
2. Persist: snapshot, entries and hard state, then ONE sync (group commit: everything
   proposed while the previous sync ran is in this batch). A Ready whose only change is
   the commit index is not synced: the commit index rides along with the next sync (a
   lower commit index after a crash is safe; the leader re-sends it).
3. Hand committed entries (and an incoming snapshot) to the apply stage, in order; conf
   changes are switched on in the core right here (``apply_conf_change``). A Ready with
   nothing to persist and a few committed entries is applied here when the stage is idle,
   and its messages are sent once the answered handlers ran (``_apply_inline``).
4. ``advance``.

Proposals wait on a future keyed by request id, resolved by the apply stage with the op's
result. A proposal of this member that a leader change lost (appended by a leader that
stepped down before committing it, or forwarded into a connection that then broke) is
proposed again once that can no longer duplicate it (``own_proposals.OwnProposals``), so a
write through any member survives a leader's death instead of timing out. Linearizable
reads go through batched ReadIndex rounds (``reads.ReadBatcher``); a follower's round is
forwarded to the leader by the core itself.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import msgpack

from kvraft.aio import cancel_and_wait
from kvraft.apply.errors import InvalidArgument, Unavailable
from kvraft.apply.ops import BatchOp, MemberOp, encode_entry, op_to_wire
from kvraft.durations import DurationHistogram
from kvraft.raft.errors import RaftError
from kvraft.raft.types import (
    NONE,
    ConfChange,
    ConfState,
    EntryType,
    HardState,
    Message,
    MessageType,
    Ready,
    Snapshot,
    StateRole,
)
from kvraft.server import wire
from kvraft.server.apply_stage import ApplyStage
from kvraft.server.heartbeats import LateHeartbeats
from kvraft.server.log_writer import LogWriter
from kvraft.server.proposals import ProposalQueue
from kvraft.server.reads import AppliedWaiters, BarrierWait, ReadBatcher
from kvraft.server.snapshot_send import SnapshotSender

__all__ = ["ApplyTarget", "DriverStats", "NodeDriver"]

_FORWARDS = frozenset({wire.FORWARD, wire.FORWARD_TERM, wire.FORWARD_CONF, wire.FORWARD_CONF_TERM})
_ACK_TYPES = frozenset({MessageType.APP_RESP, MessageType.HEARTBEAT_RESP})
"""What a leader steps while its own sync runs (``NodeDriver._step_acks``)."""

log = logging.getLogger("kvraft.driver")

REQUEST_TIMEOUT_S = 7.0
READ_ROUND_TIMEOUT_S = 1.0
EXPIRE_EVERY_S = 0.1
INLINE_APPLY_MAX = 256
"""Committed entries applied in the Ready loop itself at most (see ``_apply_inline``)."""
COMMIT_HOLD_S = 0.002
"""How long a leader holds a MsgApp without entries (a follower's new commit index) for
the next MsgApp to that follower to carry it instead (``_transmit``)."""


def _nothing() -> None:
    return None


class CallbackWaiter:
    """A proposal's waiter that calls ``then(result, None)`` or ``then(None, error)`` on the
    stack that resolves it (the apply, the expiry, ``stop``), instead of a future whose
    callbacks run a loop turn later, after the rest of the Ready loop's pass (``submit_then``).
    Has the part of a future's interface the apply stage and the expiry use."""

    __slots__ = ("_done", "ops", "then")

    def __init__(self, then: Callable[[Any, BaseException | None], None], ops: int = 1) -> None:
        self.then = then
        self.ops = ops
        """The clients' writes it answers (a ``BatchOp``'s puts), for ``NodeDriver._alone``."""
        self._done = False

    def done(self) -> bool:
        return self._done

    def set_result(self, result: Any) -> None:
        self._settle(result, None)

    def set_exception(self, error: BaseException) -> None:
        self._settle(None, error)

    def _settle(self, result: Any, error: BaseException | None) -> None:
        if self._done:
            return
        self._done = True
        try:  # (whoever resolves it, the apply included, must go on)
            self.then(result, error)
        except Exception:
            log.exception("a proposal's callback failed")


class ApplyTarget(Protocol):
    """What the apply stage drives (implemented by ``kvraft.apply.state_machine.StateMachine``)."""

    def applied_index(self) -> int:
        raise NotImplementedError

    def apply_ops(self, items: list[tuple[int, Any]], index: int, term: int) -> list[Any]:
        """Apply ops in order, record ``index`` as applied; one result (or EtcdError) per op."""
        raise NotImplementedError

    def apply_member(self, op: MemberOp, index: int, term: int) -> None:
        raise NotImplementedError

    def snapshot_data(self) -> bytes:
        raise NotImplementedError

    def snapshot_source(self) -> Callable[[], list[bytes]]:
        """The state as it is now, pinned, and a function that builds ``snapshot_data``'s bytes
        from it, as pieces sent in order, and may run in another thread (the copy of a large
        store takes seconds): the data of a snapshot sent to a follower (``snapshot_send``).
        This default builds them here."""
        data = self.snapshot_data()
        return lambda: [data]

    def flush(self, index: int = 0, term: int = 0) -> None:
        """Make everything applied durable, recording ``index`` (of ``term``) as applied if
        the state is behind it (entries that changed nothing), before the log behind it is
        compacted: a snapshot this member takes holds no data, its state is the target's."""
        raise NotImplementedError

    def restore(self, snapshot: Snapshot) -> None:
        raise NotImplementedError

    def restore_begin(self, snapshot: Snapshot) -> Callable[[], None]:
        """The first step of installing a received snapshot, here; the returned work may run
        in another thread (``ApplyStage._restore``), then ``restore_end`` runs here. This
        default does the whole ``restore`` in ``restore_end``."""
        return lambda: None

    def restore_end(self, snapshot: Snapshot) -> None:
        self.restore(snapshot)

    def discard_snapshot(self, snapshot: Snapshot) -> None:
        """A received snapshot Raft did not take (it had those entries already): what was kept
        for installing it may go (a store built as it arrived). May run in another thread."""


@dataclass
class DriverStats:
    readies: int = 0
    syncs: int = 0
    entries_persisted: int = 0
    entries_applied: int = 0
    proposals_forwarded: int = 0
    proposals_reforwarded: int = 0
    """Forwarded proposals handed back unsent (the leader's connection down, or a new leader)
    and proposed again."""
    proposals_reproposed: int = 0
    """This member's proposals handed to a leader in a term that can no longer commit them
    (an entry of a later term committed first) and proposed again (``OwnProposals.lost``)."""
    forwards_dropped: int = 0
    """Proposals forwarded for a term in which this member does not lead (``FORWARD_TERM``),
    dropped: their sender proposes them again."""
    read_rounds: int = 0
    snapshots_created: int = 0
    snapshots_applied: int = 0
    snapshots_sent: int = 0
    """Snapshots handed to the transport for a follower (their data built when sent)."""
    snapshot_sends_failed: int = 0
    """Snapshots not sent: their build failed, or there was no applied state to describe yet."""
    leader_changes: int = 0  # etcd_server_leader_changes_seen_total
    proposals_failed: int = 0  # etcd_server_proposals_failed_total
    heartbeat_send_failures: int = 0  # etcd_server_heartbeat_send_failures_total
    slow_read_indexes: int = 0  # etcd_server_slow_read_indexes_total: rounds timed out, late answers
    read_indexes_failed: int = 0  # etcd_server_read_indexes_failed_total: no leader, leader changed


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
        self.writer = LogWriter(log_storage)
        self.target = target
        self.transport = transport
        self.heartbeat_interval_s = heartbeat_interval_s
        self.conf_state = conf_state
        self.snapshot_count = snapshot_count
        self.snapshot_catchup_entries = snapshot_catchup_entries
        self.on_conf_change = on_conf_change or (lambda _conf, _cc: None)
        self._stats = DriverStats()
        self.leader = NONE
        self.role = StateRole.FOLLOWER
        self.term = 0
        self.commit_index = 0
        self.applied = AppliedWaiters()
        self.applied.applied = target.applied_index()
        self._waiters: dict[int, asyncio.Future[Any] | CallbackWaiter] = {}
        self._queue = ProposalQueue(member_id, self._stats, REQUEST_TIMEOUT_S)
        self._deadlines: list[tuple[float, int, float]] = []  # (deadline, request id, submitted at)
        self._leader_since = 0.0  # when the current leader became known (time.monotonic())
        self.stage = ApplyStage(target, self._waiters, self.applied, conf_state, self._on_applied,
                                 self._queue.own.records)
        self._snapshot_index = log_storage.snapshot().metadata.index
        self._snapshots_taken: set[int] = set()
        """Indexes of received snapshots the core took and the apply stage has not installed."""
        self._snapshot_due = False
        # etcd's etcd_debugging_snap_save_{total,marshalling}_duration_seconds: a snapshot taken,
        # from the store's flush to the snapshot recorded; the record alone (its encoding and write)
        self.snap_save_seconds = DurationHistogram()
        self.snap_marshal_seconds = DurationHistogram()
        self.snapshots_out = SnapshotSender(
            target, self.stage, lambda m, pieces: self.transport.send_snapshot(m, pieces), self.report_snapshot,
            stream=(lambda m, next_piece: self.transport.stream_snapshot(m, next_piece))
            if hasattr(target, "snapshot_stream_source") else None,
            streams_to=lambda member: bool(self.transport.supports(member, wire.FEATURE_SNAPSHOT_STREAM)),
            files_to=lambda member: bool(self.transport.supports(member, wire.FEATURE_SNAPSHOT_FILE)),
        )
        """Builds the data of the snapshots sent to followers, when they are sent."""
        self._reads = ReadBatcher(member_id)
        self._read_started = 0.0
        self._late = LateHeartbeats(heartbeat_interval_s)  # etcd_server_heartbeat_send_failures_total
        self._next_request_id = random.getrandbits(62) + 1
        self._inbox: list[tuple[Any, ...]] = []
        self._later: list[Message] = []
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._persisted_hard: HardState = log_storage.initial_state()[0]
        self._unsynced_hard: HardState | None = None
        self.fatal: BaseException | None = None
        self.dropped_inputs: dict[tuple[str, str], int] = {}  # (input kind, error type) -> count
        self._acks_now = False  # the leader's own sync runs: acks are stepped on arrival
        self._held: dict[int, Message] = {}  # follower -> its held MsgApp without entries
        self._held_timer: asyncio.TimerHandle | None = None
        self._acks_stepped = 0

    @property
    def stats(self) -> DriverStats:
        self._stats.syncs = self.writer.syncs
        self._stats.entries_applied = self.stage.entries_applied
        self._stats.snapshots_applied = self.stage.snapshots_applied
        self._stats.snapshots_sent = self.snapshots_out.sent
        self._stats.snapshot_sends_failed = self.snapshots_out.failed
        return self._stats

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._guard(self._ready_loop(), "raft loop"), name="raft-ready"),
            loop.create_task(self._tick_loop(), name="raft-tick"),
            loop.create_task(self._guard(self.stage.run(), "apply stage"), name="raft-apply"),
            loop.create_task(self._expire_loop(), name="raft-expire"),
        ]

    async def stop(self) -> None:
        if self._held_timer is not None:
            self._held_timer.cancel()
            self._held_timer = None
        await cancel_and_wait(*self._tasks)
        await self.snapshots_out.drain()  # (their threads read the store: done before it closes)
        self.writer.close()
        stopped = Unavailable("etcdserver: server stopped")
        for future in self._waiters.values():
            if not future.done():
                future.set_exception(stopped)
        self._reads.fail_inflight(stopped)
        self.applied.fail_all(stopped)

    async def _guard(self, work: Any, what: str) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # storage or state machine failure: stop serving
            self.fatal = exc
            log.critical("%s stopped: %r", what, exc, exc_info=exc)
            raise

    def kick(self) -> None:
        self._wake.set()

    def advance_ticks(self, ticks: int) -> None:
        """Fast-forward the election timer by ``ticks`` (kvraft.server.tick_advance)."""
        self._inbox.append(("ticks", ticks))
        self.kick()

    def campaign_now(self) -> None:
        """Start an election at once (the only voter, at start)."""
        self._inbox.append(("campaign",))
        self.kick()

    # -- inputs (queued; the Ready loop hands them to the core) ---------------------------
    def on_frame(self, source: int, kind: int, body: Any) -> None:
        """Transport callback: a frame from an authenticated peer."""
        if kind == wire.RAFT:
            if self._acks_now and not self._inbox:
                body = self._step_acks(body)
            self._inbox.extend(("step", msg) for msg in body)
        elif kind == wire.SNAP_END:
            self._inbox.append(("snap", body))
        elif kind in _FORWARDS:
            self._queue.add_forwarded(source, kind, body)
        self.kick()

    def return_unsent(self, _target: int, kind: int, body: Any) -> None:
        """Transport callback: forwarded proposals that never left this member are proposed
        again, to whoever leads now (``ProposalQueue.returned``)."""
        returned = self._queue.returned(kind, body)
        if returned:
            log.debug("member %x: %d forwarded proposal(s) returned unsent; proposing again", self.member_id, returned)
            self.kick()

    def report_unreachable(self, member_id: int) -> None:
        self._inbox.append(("unreachable", member_id))
        self.kick()

    def report_snapshot(self, member_id: int, ok: bool) -> None:
        self._inbox.append(("snapshot", member_id, ok))
        self.kick()

    def transfer_leader(self, member_id: int) -> None:
        self._inbox.append(("transfer", member_id))
        self.kick()

    def _step_acks(self, messages: list[Message]) -> list[Message]:
        """While the leader's own log sync runs on the writer thread, step its followers'
        acknowledgements of this term at once instead of after the sync: the commit is then
        decided the moment the sync returns. Safe because a leader's core reads only entries
        below its unstable ones from storage, which the writer does not touch (a leader only
        appends); the core itself allows inputs between ``ready()`` and ``advance()``.
        Stops at the first message of another kind or term; it and all after it are
        returned, to be queued in order."""
        for i, msg in enumerate(messages):
            if msg.type not in _ACK_TYPES or msg.term != self.term:
                return messages[i:]
            self._step_input(("step", msg))
        self._acks_stepped += len(messages)
        return []

    def _step_snapshot(self, msg: Message) -> None:
        """Step a received MsgSnap; if the core does not take it, what was kept for it goes
        (``ApplyTarget.discard_snapshot``, off the loop), unless a snapshot taken at that index
        is still to be installed (a copy sent again shares its file)."""
        assert msg.snapshot is not None
        index = msg.snapshot.metadata.index
        try:
            self.raw.step(msg)
        finally:
            pending = self.raw.pending_snapshot()
            self._snapshots_taken = {i for i in self._snapshots_taken if i > self.applied.applied}
            if pending is not None and pending.index == index:
                self._snapshots_taken.add(index)
            elif index not in self._snapshots_taken:
                asyncio.get_running_loop().run_in_executor(None, self.target.discard_snapshot, msg.snapshot)

    def _drain_inbox(self) -> None:
        inbox, self._inbox = self._inbox, []
        for item in inbox:
            self._step_input(item)

    def _step_input(self, item: tuple[Any, ...]) -> None:
        try:
            if item[0] == "step":
                self.raw.step(item[1])
            elif item[0] == "snap":
                self._step_snapshot(item[1])
            elif item[0] == "tick":
                self.raw.tick()
            elif item[0] == "ticks":  # --initial-election-tick-advance
                for _ in range(item[1]):
                    self.raw.tick()
            elif item[0] == "campaign":
                self.raw.campaign()
            elif item[0] == "unreachable":
                self.raw.report_unreachable(item[1])
            elif item[0] == "snapshot":
                self.raw.report_snapshot(item[1], item[2])
            elif item[0] == "transfer":
                self.raw.transfer_leader(item[1])
        except (RaftError, ValueError) as exc:
            # expected now and then (a response from a removed peer, a proposal with no
            # leader), so not fatal; but a member that drops every message it gets must
            # not do so silently: the first of each kind, then one in 1,000, at WARNING
            what = (item[0], type(exc).__name__)
            self.dropped_inputs[what] = self.dropped_inputs.get(what, 0) + 1
            count = self.dropped_inputs[what]
            if count == 1 or count % 1000 == 0:
                log.warning("dropped input %s (%d so far of this kind): %r", item[0], count, exc)
            else:
                log.debug("dropped input %s: %s", item[0], exc)

    # -- proposals ------------------------------------------------------------------------
    def new_request_id(self) -> int:
        self._next_request_id += 1
        return self._next_request_id

    async def propose(
        self, op: Any, timeout_s: float = REQUEST_TIMEOUT_S, max_bytes: int = 0, *, repropose: bool = True
    ) -> Any:
        """Replicate ``op`` and return its apply result (raises its EtcdError). With
        ``max_bytes``, an op whose log entry would be larger is refused first. Without
        ``repropose``, a leader change that loses it leaves it to its deadline (for what a
        leader decides from its own state: a lease's expiry, a checkpoint of remaining TTLs;
        proposed again through the next leader it could undo that leader's renewals)."""
        return await self.submit(op, timeout_s, max_bytes, repropose=repropose)

    def submit(
        self, op: Any, timeout_s: float = REQUEST_TIMEOUT_S, max_bytes: int = 0, *, repropose: bool = True
    ) -> asyncio.Future[Any]:
        """``propose`` without the coroutine: queue ``op`` now and return the future of its
        result (for callers that submit many ops and await them together)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._submit(op, future, timeout_s, max_bytes, repropose)
        return future

    async def propose_conf_change(
        self, changes: tuple[Any, ...], member_op: MemberOp, timeout_s: float = REQUEST_TIMEOUT_S
    ) -> None:
        """Replicate a membership change (``changes`` for the core, ``member_op`` for the
        registry) and return once it is applied here."""
        request_id = self.new_request_id()
        context = msgpack.packb([request_id, op_to_wire(member_op)], use_bin_type=True)
        data = ConfChange(changes=changes, context=context).encode()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._register(request_id, data, True, timeout_s, future)
        await future

    def submit_then(
        self, op: Any, then: Callable[[Any, BaseException | None], None], timeout_s: float = REQUEST_TIMEOUT_S,
        max_bytes: int = 0,
    ) -> None:
        """``submit`` without the future: ``then(result, None)`` or ``then(None, error)`` is
        called where the op is applied (or fails), in the same pass of the Ready loop.
        Raises as ``submit``."""
        self._submit(op, CallbackWaiter(then, len(op.ops) if isinstance(op, BatchOp) else 1), timeout_s, max_bytes)

    def _submit(
        self, op: Any, waiter: asyncio.Future[Any] | CallbackWaiter, timeout_s: float, max_bytes: int,
        repropose: bool = True,
    ) -> None:
        """Encode ``op`` as an entry (refused when over ``max_bytes``) and queue it."""
        request_id = self.new_request_id()
        data = encode_entry(request_id, op)
        if max_bytes and len(data) > max_bytes:
            raise InvalidArgument("etcdserver: request is too large")
        self._register(request_id, data, False, timeout_s, waiter, repropose)

    def _register(
        self, request_id: int, data: bytes, conf: bool, timeout_s: float, waiter: asyncio.Future[Any] | CallbackWaiter,
        repropose: bool = True,
    ) -> None:
        """Queue a proposal; its ``waiter`` is resolved by the apply stage (which drops it)
        or failed by the expiry task after ``timeout_s``. One heap push per proposal: a
        timer or ``asyncio.wait_for`` each cost ~14% of a put's CPU."""
        self._waiters[request_id] = waiter
        now = time.monotonic()
        deadline = now + timeout_s
        self._queue.add_own(request_id, data, conf, deadline, repropose)
        heapq.heappush(self._deadlines, (deadline, request_id, now))
        self.kick()

    async def _expire_loop(self) -> None:
        """Fail the waiters whose deadline passed (checked every ``EXPIRE_EVERY_S``)."""
        while True:
            await asyncio.sleep(EXPIRE_EVERY_S)
            now, heap = time.monotonic(), self._deadlines
            while heap and heap[0][0] <= now:
                _, request_id, submitted = heapq.heappop(heap)
                self._queue.own.forget(request_id)
                future = self._waiters.pop(request_id, None)
                if future is not None and not future.done():
                    self._stats.proposals_failed += 1
                    future.set_exception(Unavailable(f"etcdserver: {self._timeout_reason(submitted)}"))

    def _timeout_reason(self, submitted: float) -> str:
        """Why a proposal timed out, in etcd's words (its ``parseProposeCtxErr``): the leader
        changed while it waited (ErrTimeoutDueToLeaderFail), the connection to the leader (a
        leader's: to a quorum) was not up the whole time (ErrTimeoutDueToConnectionLost),
        else ErrTimeout; "no leader" while there is none (kvraft's: etcd says ErrTimeout)."""
        leader = self.leader
        if leader == NONE:
            return "no leader"
        if submitted < self._leader_since:
            return "request timed out, possibly due to previous leader failure"
        peers = [leader] if leader != self.member_id else [m for m in self.conf_state.voters if m != self.member_id]
        up = sum(1 for m in peers if (since := self.transport.active_since(m)) is not None and since <= submitted)
        if (leader != self.member_id and not up) or (leader == self.member_id and up + 1 < (len(peers) + 1) // 2 + 1):
            return "request timed out, possibly due to connection lost"
        return "request timed out"

    def _propose_queued(self) -> None:
        self._queue.propose(self.raw, self.transport)

    # -- reads ----------------------------------------------------------------------------
    async def read_barrier(self, timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        """Return once this member has applied everything committed before the call
        (``read_barrier_future``'s steps, awaited)."""
        await self.read_barrier_future(_nothing, timeout_s)

    def read_barrier_future(self, then: Callable[[], Any], timeout_s: float = REQUEST_TIMEOUT_S) -> asyncio.Future[Any]:
        """``read_barrier`` without a coroutine (``reads.BarrierWait``, the same steps): a
        future of ``then()``, called once the barrier is passed; fails as ``read_barrier``."""
        return BarrierWait(self._reads.enqueue, self.kick, self.applied, time.monotonic() + timeout_s, then).future

    def _start_read_round(self) -> None:
        if not self._reads.idle() and time.monotonic() - self._read_started > READ_ROUND_TIMEOUT_S:
            self._reads.fail_inflight(Unavailable("etcdserver: leader changed"))  # retried by caller
            self._stats.slow_read_indexes += 1  # (not idle: a round was in flight)
            log.warning("timed out waiting for read index response (local node might have slow network) "
                        "(member %x, after %.1f s)", self.member_id, READ_ROUND_TIMEOUT_S)
        ctx = self._reads.next_round()
        if ctx is None:
            return
        try:
            self.raw.read_index(ctx)
            self._read_started = time.monotonic()
            self._stats.read_rounds += 1
        except RaftError:
            self._reads.fail_inflight(Unavailable("etcdserver: no leader"))
            self._stats.read_indexes_failed += 1

    # -- the loops ------------------------------------------------------------------------
    async def _tick_loop(self) -> None:
        next_tick = time.monotonic()
        while True:
            next_tick += self.heartbeat_interval_s
            delay = next_tick - time.monotonic()
            if delay < -self.heartbeat_interval_s:  # fell far behind (a long pause): resync
                next_tick = time.monotonic()
            await asyncio.sleep(max(0.0, delay))
            self._inbox.append(("tick",))
            self.kick()

    async def _ready_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while True:
                self._drain_inbox()
                self._propose_queued()
                self._start_read_round()
                if self._snapshot_due:
                    await self._create_snapshot()
                if not self.raw.has_ready():
                    break
                rd = self.raw.ready()
                await self._handle_ready(rd)
                self.raw.advance(rd)

    async def _handle_ready(self, rd: Ready) -> None:
        self._stats.readies += 1
        if rd.committed_entries or not rd.snapshot.is_empty():
            self._queue.own.note(rd)
        if rd.soft_state is not None:
            self._on_soft_state(rd.soft_state.leader, rd.soft_state.role)
        hard = rd.hard_state
        vote_changed = hard is not None and (hard.term, hard.vote) != (
            self._persisted_hard.term,
            self._persisted_hard.vote,
        )
        sync = rd.must_sync or not rd.snapshot.is_empty()
        if not sync and self._apply_inline(rd):
            # nothing to persist: the committed entries were applied first (their waiters
            # answer the clients), then the messages (commit indexes, acks) go out
            if hard is not None:
                self.term, self.commit_index = hard.term, hard.commit
                self._unsynced_hard = hard  # commit index only: saved with the next sync
            if rd.messages:
                self._send_after_answers(rd.messages)
            self._read_states(rd)
            return
        early = self.role == StateRole.LEADER and not vote_changed and rd.snapshot.is_empty()
        if early and rd.messages:
            self._send(rd.messages)
        if hard is not None:
            self.term, self.commit_index = hard.term, hard.commit
        if sync:
            # small persists on the loop on followers, and on a leader whose Ready holds
            # the only write in flight (``_alone``); otherwise a leader's loop parses
            # requests meanwhile (8 clients: -20% with the leader always inline)
            inline_ok = self.role != StateRole.LEADER or self._alone(rd)
            self._acks_now = not inline_ok and rd.snapshot.is_empty()
            try:
                await self.writer.persist(rd.snapshot, rd.entries, hard or self._unsynced_hard, inline_ok)
            finally:
                self._acks_now = False
            self._stats.entries_persisted += len(rd.entries)
            self._persisted_hard = hard or self._persisted_hard
            self._unsynced_hard = None
        elif hard is not None:
            self._unsynced_hard = hard  # commit index only: saved with the next sync
        if not early and rd.messages:
            self._send(rd.messages)
        if not rd.snapshot.is_empty():
            self.conf_state = rd.snapshot.metadata.conf_state
            self._snapshot_index = rd.snapshot.metadata.index
            self.stage.submit_snapshot(rd.snapshot)
        if rd.committed_entries:
            for entry in rd.committed_entries:
                if entry.type == EntryType.CONF_CHANGE:
                    await self._switch_conf(ConfChange.decode(entry.data), entry.index)
            self.stage.submit_entries(rd.committed_entries, self.conf_state)
        self._read_states(rd)

    def _read_states(self, rd: Ready) -> None:
        for rs in rd.read_states:
            if not self._reads.complete(rs.request_ctx, rs.index):
                # the answer to a round already abandoned (timed out): etcd's "ignored
                # out-of-date read index response"
                self._stats.slow_read_indexes += 1

    def _alone(self, rd: Ready) -> bool:
        """Whether a leader's Ready carries the only write in flight: one entry, and at
        most one proposal of this member waiting (the entry's own, or none for a follower's
        forwarded one) for one client's write (not a ``BatchOp`` of several puts). Then
        nothing would use the loop during the sync, and persisting it right there saves
        the two thread wake-ups around it (the writer's, then the loop's: ~0.25 ms at the
        median on this box, on the path of a lone client's put)."""
        if len(rd.entries) != 1 or len(self._waiters) > 1:
            return False
        return all(getattr(waiter, "ops", 1) == 1 for waiter in self._waiters.values())

    def _send(self, messages: tuple[Message, ...]) -> None:
        if self._later:
            self._send_later()  # (in order: what was put off goes first)
        self._transmit(messages)

    def _transmit(self, messages: tuple[Message, ...] | list[Message]) -> None:
        """Hand ``messages`` to the transport, but hold a leader's MsgApps without entries
        (the new commit index after every commit: one frame to each follower, which wakes
        it to step, answer and apply) for up to ``COMMIT_HOLD_S``: the next MsgApp to that
        follower (with a lone client, the next put's, ~0.5 ms later) carries a commit index
        at least as high and replaces it; otherwise it goes out when the time is up. Holding
        a message is a delay the network could add (safe in Raft); it is never dropped
        unless a later MsgApp to the same follower goes out in its place, and only a
        follower's apply and commit index lag by that time (heartbeats carry the commit
        index too). Not held: the commit index that commits entries a follower forwarded
        (its clients wait for it to apply them, and no next MsgApp may come before they
        are answered). Everything else goes out at once, in order."""
        held = self._held
        out: list[Message] = []
        for m in messages:
            if m.type == MessageType.HEARTBEAT:
                self._heartbeat_out(m.to)
            elif m.type == MessageType.SNAP:
                self.snapshots_out.send(m)  # (its data is built now, in a worker thread)
                continue
            elif m.type == MessageType.APP:
                forwarded = self._queue.forwarded.get(m.to)
                if forwarded is not None and m.commit >= forwarded:
                    del self._queue.forwarded[m.to]  # (it learns that its proposals are committed)
                elif not m.entries and self.role == StateRole.LEADER:
                    held[m.to] = m
                    continue
                held.pop(m.to, None)  # (replaced: this one carries a commit index >= its)
            out.append(m)
        if not held:
            if self._held_timer is not None:  # (all replaced: no wake-up for nothing)
                self._held_timer.cancel()
                self._held_timer = None
        elif self._held_timer is None:
            self._held_timer = asyncio.get_running_loop().call_later(COMMIT_HOLD_S, self._send_held)
        if out:
            self.transport.send(out)

    def _heartbeat_out(self, to: int) -> None:
        """A late heartbeat (``LateHeartbeats``) is counted and logged as etcd does."""
        exceeded = self._late.sent(to, time.monotonic())
        if exceeded > 0:
            self._stats.heartbeat_send_failures += 1
            log.warning("leader failed to send out heartbeat on time; took too long, leader is overloaded likely "
                        "from slow disk (to %x, expected within %.0f ms, exceeded by %.0f ms)",
                        to, self._late.expected_s * 1000, exceeded * 1000)

    def _send_held(self) -> None:
        self._held_timer = None
        held, self._held = self._held, {}
        if held:
            self.transport.send(list(held.values()))

    def _send_after_answers(self, messages: tuple[Message, ...]) -> None:
        """Send ``messages`` once the tasks woken so far (the handlers whose waiters the
        inline apply just resolved) have run: they answer their clients first, and a
        send costs a socket write each (~0.1 ms on a busy box). Only for Readies without
        entries (commit indexes, heartbeats); still ahead of any later message."""
        if not self._later:
            asyncio.get_running_loop().call_soon(self._send_later)
        self._later.extend(messages)

    def _send_later(self) -> None:
        later, self._later = self._later, []
        if later:
            self._transmit(later)

    def _apply_inline(self, rd: Ready) -> bool:
        """Apply a Ready's committed entries right here, in the Ready loop, when that Ready
        has nothing to persist (so nothing is awaited before them), the apply stage is idle
        (order kept), the batch is small (the loop stays responsive) and holds no conf
        change (those are switched on in the core with an awaited log write first). This
        saves the apply task's wake-up between commit and the client's answer. A Ready
        that persists keeps the stage: the stage applies while the log writer syncs."""
        committed = rd.committed_entries
        if not committed or len(committed) > INLINE_APPLY_MAX or not self.stage.idle():
            return False
        if any(entry.type == EntryType.CONF_CHANGE for entry in committed):
            return False
        self.stage.apply_now(committed, self.conf_state)
        return True

    async def _switch_conf(self, cc: ConfChange, index: int) -> None:
        try:
            self.conf_state = self.raw.apply_conf_change(cc)
        except RaftError as exc:
            log.warning("conf change at %d refused: %s", index, exc)
            return
        await self.writer.set_conf_state(self.conf_state, index)
        self.on_conf_change(self.conf_state, cc)

    def _on_soft_state(self, leader: int, role: StateRole) -> None:
        self._late.reset()
        if leader != self.leader:
            if leader != NONE:  # as etcd: a change to a known leader
                self._stats.leader_changes += 1
            # etcd's raft.node lines (operators grep "elected leader" and "lost leader")
            term = self.raw.term
            if self.leader == NONE:
                log.info("raft.node: %x elected leader %x at term %d", self.member_id, leader, term)
            elif leader == NONE:
                log.info("raft.node: %x lost leader %x at term %d", self.member_id, self.leader, term)
            else:
                log.info("raft.node: %x changed leader from %x to %x at term %d", self.member_id, self.leader,
                         leader, term)
            if self.leader != NONE:
                # rounds sent to the old leader will never be answered
                abandoned = self._reads.fail_inflight(Unavailable("etcdserver: leader changed"))
                self._stats.read_indexes_failed += bool(abandoned)
                # proposals still queued for it (its connection down) go to the new one
                for kind, body in self.transport.take_unsent(self.leader):
                    self.return_unsent(self.leader, kind, body)
        if leader != self.leader:
            self._leader_since = time.monotonic()
        self.leader, self.role = leader, role

    # -- snapshots ------------------------------------------------------------------------
    def _on_applied(self) -> None:
        lost = self._queue.requeue_lost(self.applied.applied)
        if lost:
            log.info("member %x: %d proposal(s) lost to a leader change proposed again", self.member_id, lost)
            self.kick()
        if self.applied.applied - self._snapshot_index >= self.snapshot_count:
            self._snapshot_due = True
            self.kick()

    async def _create_snapshot(self) -> None:
        """Take a snapshot at the applied index and compact the log behind it. It holds no
        data: the store is made durable at that index first (``flush``), and it is the state
        the snapshot stands for (etcd's design). A follower that needs one is sent the live
        store (``snapshot_send``). Until session 52 each snapshot copied the whole store into
        a file (at 160 MB, 0.2 s of stolen event loop, 1.6 s before session 51) and the member
        kept the latest copy in memory."""
        self._snapshot_due = False
        index = self.applied.applied
        if index - self._snapshot_index < self.snapshot_count or not self.stage.idle() or not self.stage.applied_term:
            return  # (``_on_applied`` asks again; no term yet: nothing applied since the start)
        started = time.monotonic()
        self.target.flush(index, self.stage.applied_term)
        recording = time.monotonic()
        await self.writer.snapshot(index, self.stage.conf_state, self.snapshot_catchup_entries)
        done = time.monotonic()
        self.snap_marshal_seconds.observe(done - recording)
        self.snap_save_seconds.observe(done - started)
        self._snapshot_index = max(self._snapshot_index, index)
        self._stats.snapshots_created += 1

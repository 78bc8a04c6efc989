"""The driver's Ready handling with fakes around it: a Ready with nothing to persist has its
committed entries applied in the Ready loop itself when the apply stage is idle (and queued
behind the stage's work when it is not), its messages go out after the clients' handlers
ran and before any later message, and a Ready that persists keeps the apply stage."""

from __future__ import annotations

import asyncio
from typing import Any

from kvraft.apply.ops import PutOp, encode_entry
from kvraft.raft.types import (
    ConfState,
    Entry,
    HardState,
    Message,
    MessageType,
    Ready,
    Snapshot,
    SnapshotMetadata,
    StateRole,
)
from kvraft.server import wire
from kvraft.server.driver import INLINE_APPLY_MAX, ApplyTarget, NodeDriver


class Log:
    def __init__(self) -> None:
        self.appended: list[Entry] = []
        self.syncs = 0

    def snapshot(self) -> Snapshot:
        return Snapshot(metadata=SnapshotMetadata(index=0, term=0, conf_state=ConfState(voters=frozenset({1}))))

    def initial_state(self) -> tuple[HardState, ConfState]:
        return HardState(), ConfState(voters=frozenset({1}))

    def append(self, entries: list[Entry]) -> None:
        self.appended.extend(entries)

    def set_hard_state(self, hard: HardState) -> None:
        pass

    def sync(self) -> None:
        self.syncs += 1


class Target(ApplyTarget):
    def __init__(self, events: list[Any]) -> None:
        self.events = events
        self.index = 0

    def applied_index(self) -> int:
        return self.index

    def apply_ops(self, items: list[tuple[int, Any]], index: int, term: int) -> list[Any]:
        self.events.append(("apply", index))
        self.index = index
        return [("ok", op.key) for _, op in items]


class Transport:
    def __init__(self, events: list[Any]) -> None:
        self.events = events

    def send(self, messages: Any) -> None:
        self.events.append(("send", [m.index for m in messages]))


def make_driver(events: list[Any]) -> NodeDriver:
    log = Log()
    driver = NodeDriver(
        1, None, log, Target(events), Transport(events),
        heartbeat_interval_s=0.1, conf_state=ConfState(voters=frozenset({1})),
        snapshot_count=10**9, snapshot_catchup_entries=10,
    )  # fmt: skip
    driver.role = StateRole.LEADER
    return driver


def committed(driver: NodeDriver, first: int, count: int) -> tuple[tuple[Entry, ...], list[asyncio.Future[Any]]]:
    """Entries ``first..first+count-1`` for puts proposed on this member, and their waiters."""
    entries, futures = [], []
    for index in range(first, first + count):
        request_id = driver.new_request_id()
        future = asyncio.get_running_loop().create_future()
        driver._waiters[request_id] = future
        futures.append(future)
        entries.append(Entry(term=1, index=index, data=encode_entry(request_id, PutOp(b"k%d" % index, b"v"))))
    return tuple(entries), futures


def msg(index: int) -> Message:
    """A heartbeat (a MsgApp without entries would be held back: ``test_commit_indexes_...``)."""
    return Message(type=MessageType.HEARTBEAT, to=2, from_=1, term=1, index=index, commit=index)


def app(index: int, to: int = 2, entries: int = 0) -> Message:
    """A MsgApp after ``index`` with ``entries`` new entries."""
    new = tuple(Entry(term=1, index=index + 1 + i, data=b"") for i in range(entries))
    return Message(type=MessageType.APP, to=to, from_=1, term=1, index=index, commit=index, entries=new)


async def test_a_commit_only_ready_is_applied_inline_and_answers_before_its_messages_go_out() -> None:
    events: list[Any] = []
    driver = make_driver(events)
    entries, futures = committed(driver, 1, 3)

    async def handler(future: asyncio.Future[Any]) -> None:
        events.append(("answered", (await future)[1]))

    handlers = [asyncio.ensure_future(handler(f)) for f in futures]
    await asyncio.sleep(0)  # the handlers wait on their futures
    await driver._handle_ready(Ready(hard_state=HardState(term=1, commit=3), committed_entries=entries, messages=(msg(3),)))
    # applied on the spot (no apply-stage task ran), the waiters resolved, nothing sent yet
    assert events == [("apply", 3)]
    assert all(f.done() for f in futures) and driver.applied.applied == 3
    assert driver.stage.entries_applied == 3
    await asyncio.gather(*handlers)
    await asyncio.sleep(0)
    assert events == [("apply", 3), ("answered", b"k1"), ("answered", b"k2"), ("answered", b"k3"), ("send", [3])]


async def test_put_off_messages_go_out_before_any_later_message() -> None:
    events: list[Any] = []
    driver = make_driver(events)
    entries, _ = committed(driver, 1, 1)
    await driver._handle_ready(Ready(hard_state=HardState(term=1, commit=1), committed_entries=entries, messages=(msg(1),)))
    # the next Ready persists new entries and sends at once (leader: before its fsync)
    new = (Entry(term=1, index=2, data=b""),)
    await driver._handle_ready(Ready(entries=new, messages=(app(1, entries=1),), must_sync=True))
    assert [e for e in events if e[0] == "send"] == [("send", [1]), ("send", [1])]
    await asyncio.sleep(0)
    assert [e for e in events if e[0] == "send"] == [("send", [1]), ("send", [1])]  # not sent twice


async def test_entries_queue_behind_a_busy_apply_stage_and_keep_their_order() -> None:
    events: list[Any] = []
    driver = make_driver(events)
    first, _ = committed(driver, 1, 2)
    driver.stage.submit_entries(first, driver.conf_state)  # queued, the stage task not started
    second, futures = committed(driver, 3, 1)
    await driver._handle_ready(Ready(hard_state=HardState(term=1, commit=3), committed_entries=second))
    assert events == [] and not futures[0].done()  # not applied ahead of the queued entries
    task = asyncio.ensure_future(driver.stage.run())
    try:
        await asyncio.wait_for(futures[0], 5)
        assert events == [("apply", 2), ("apply", 3)]
    finally:
        task.cancel()


async def test_a_ready_that_persists_leaves_applying_to_the_stage() -> None:
    events: list[Any] = []
    driver = make_driver(events)
    entries, futures = committed(driver, 1, 1)
    rd = Ready(entries=(Entry(term=1, index=2, data=b""),), committed_entries=entries, must_sync=True)
    await driver._handle_ready(rd)
    assert driver.storage.syncs == 1
    assert ("apply", 1) not in events and driver.stage.queue.qsize() == 1 and not futures[0].done()
    driver.writer.close()


async def test_a_large_commit_goes_through_the_stage() -> None:
    events: list[Any] = []
    driver = make_driver(events)
    entries, _ = committed(driver, 1, INLINE_APPLY_MAX + 1)
    await driver._handle_ready(Ready(hard_state=HardState(term=1, commit=len(entries)), committed_entries=entries))
    assert events == [] and driver.stage.queue.qsize() == 1


async def test_small_persists_run_inline_on_a_follower_and_on_a_leader_only_when_alone() -> None:
    """A follower's small persist runs on the loop; a leader's only when its Ready holds the
    only write in flight (one entry, at most one waiting proposal, for one client's write):
    else on the writer thread, so its loop parses the other requests during the sync."""
    import threading

    from kvraft.server.driver import CallbackWaiter

    def one_entry() -> tuple[Entry, ...]:
        return (Entry(term=1, index=1, data=b""),)

    def two_entries() -> tuple[Entry, ...]:
        return (Entry(term=1, index=1, data=b""), Entry(term=1, index=2, data=b""))

    cases = [  # (role, entries, waiters' ops counts, inline?)
        (StateRole.FOLLOWER, one_entry(), [1, 1, 1], True),
        (StateRole.LEADER, one_entry(), [], True),  # a follower's forwarded write
        (StateRole.LEADER, one_entry(), [1], True),  # a lone client's put
        (StateRole.LEADER, one_entry(), [1, 1], False),  # another write waits
        (StateRole.LEADER, one_entry(), [3], False),  # one entry of three clients' puts
        (StateRole.LEADER, two_entries(), [1], False),
    ]
    for role, new, ops, inline in cases:
        driver = make_driver([])
        driver.role = role
        for count in ops:
            driver._waiters[driver.new_request_id()] = CallbackWaiter(lambda _r, _e: None, count)
        synced_on: list[int] = []
        driver.storage.sync = lambda out=synced_on: out.append(threading.get_ident())  # type: ignore[method-assign]
        try:
            await driver._handle_ready(Ready(entries=new, must_sync=True))
            assert (synced_on == [threading.get_ident()]) is inline, (role, len(new), ops)
        finally:
            driver.writer.close()


class Raw:
    """Records what the driver steps into the core."""

    def __init__(self) -> None:
        self.stepped: list[Message] = []

    def step(self, msg: Message) -> None:
        self.stepped.append(msg)


async def test_a_leader_steps_its_followers_acks_while_its_own_sync_runs() -> None:
    """The acks of this term that arrive during the leader's own log sync (on the writer
    thread) reach the core at once, so the commit is decided when the sync returns; another
    kind of message, another term's, and everything after either wait in the inbox, in order.
    Before: every frame waited in the inbox until the sync was done."""
    import threading

    driver = make_driver([])
    driver.raw = Raw()
    driver.term = 5
    started, release = threading.Event(), threading.Event()

    def slow_sync() -> None:
        started.set()
        release.wait(10)

    driver.storage.sync = slow_sync  # type: ignore[method-assign]
    for _ in range(2):  # other writes wait: the sync runs on the writer thread
        driver._waiters[driver.new_request_id()] = asyncio.get_running_loop().create_future()
    ack = Message(type=MessageType.APP_RESP, to=1, from_=2, term=5, index=1)
    beat = Message(type=MessageType.HEARTBEAT_RESP, to=1, from_=3, term=5)
    old = Message(type=MessageType.APP_RESP, to=1, from_=3, term=4, index=1)
    vote = Message(type=MessageType.VOTE, to=1, from_=3, term=6)
    try:
        persist = asyncio.create_task(
            driver._handle_ready(Ready(hard_state=HardState(term=5), entries=(Entry(term=5, index=1, data=b""),),
                                       must_sync=True)))
        while not started.is_set():
            await asyncio.sleep(0.001)
        driver.on_frame(2, wire.RAFT, [ack, beat])
        assert driver.raw.stepped == [ack, beat] and driver._inbox == []
        driver.on_frame(3, wire.RAFT, [old, ack])  # another term: it and what follows wait
        assert driver.raw.stepped == [ack, beat] and [m for _, m in driver._inbox] == [old, ack]
        driver.on_frame(2, wire.RAFT, [ack])  # something is queued: queue behind it
        assert len(driver._inbox) == 3
        release.set()
        await persist
        driver._inbox.clear()
        driver.on_frame(2, wire.RAFT, [ack, vote])  # no sync running: everything queues
        assert driver.raw.stepped == [ack, beat] and len(driver._inbox) == 2
    finally:
        release.set()
        driver.writer.close()


class Recorder:
    def __init__(self) -> None:
        self.sent: list[Message] = []

    def send(self, messages: Any) -> None:
        self.sent.extend(messages)


async def test_commit_indexes_wait_for_the_next_append_to_carry_them() -> None:
    """A leader's MsgApp without entries (a follower's new commit index, sent after every
    commit) is held for up to COMMIT_HOLD_S: the next MsgApp to that follower replaces it
    (one frame instead of two, one wake-up of the follower instead of two); a follower with
    no later MsgApp gets it when the time is up; other messages are never held. Before:
    each went out at once."""
    from kvraft.server.driver import COMMIT_HOLD_S

    driver = make_driver([])
    driver.transport = transport = Recorder()
    beat = msg(3)
    driver._send((app(3, to=2), app(3, to=3), beat))
    assert transport.sent == [beat]  # the two commit indexes held, the heartbeat not
    with_entries = app(3, to=2, entries=1)
    driver._send((with_entries,))
    assert transport.sent == [beat, with_entries]  # it carries follower 2's commit index
    await asyncio.sleep(COMMIT_HOLD_S * 3)
    assert transport.sent == [beat, with_entries, app(3, to=3)]  # follower 3's, on time
    await asyncio.sleep(COMMIT_HOLD_S * 3)
    assert transport.sent == [beat, with_entries, app(3, to=3)]  # follower 2's was dropped
    driver.role = StateRole.FOLLOWER  # (not a leader: nothing is held)
    driver._send((app(4, to=2),))
    assert transport.sent[-1] == app(4, to=2)


class ProposingRaw:
    term = 1

    def __init__(self, last: int) -> None:
        self.last = last
        self.proposed: list[bytes] = []

    def propose_batch(self, datas: list[bytes]) -> int:
        self.proposed.extend(datas)
        return self.last


async def test_the_commit_index_of_a_followers_forwarded_proposals_is_not_held() -> None:
    """A follower's clients wait for it to apply what it forwarded; with one client no next
    MsgApp comes before that answer, so the commit index that commits those entries goes
    out at once (held, the put through a follower waited COMMIT_HOLD_S). Commit indexes
    below them, and those for other followers, are still held."""
    driver = make_driver([])
    driver.transport = transport = Recorder()
    driver.raw = ProposingRaw(last=7)
    driver.on_frame(3, wire.FORWARD, [b"put"])
    driver._propose_queued()
    assert driver.raw.proposed == [b"put"]
    driver._send((app(6, to=3), app(7, to=2)))
    assert transport.sent == []  # entry 7 is not committed yet; follower 2 forwarded nothing
    driver._send((app(7, to=3),))
    assert transport.sent == [app(7, to=3)]  # commits follower 3's entry: at once
    driver._send((app(8, to=3),))
    assert transport.sent == [app(7, to=3)]  # nothing of its own waits any more: held
    driver._send_held()
    assert sorted(m.to for m in transport.sent[1:]) == [2, 3]


async def test_a_callback_waiter_is_called_in_the_apply_and_a_failing_one_stops_nothing() -> None:
    """``submit_then``'s callback runs where the entry is applied (inside ``_handle_ready``
    for an inline apply, not a loop turn later as a future's callbacks); one that raises is
    logged and the apply goes on (the next op still gets its answer)."""
    events: list[Any] = []
    driver = make_driver(events)

    def broken(result: Any, error: BaseException | None) -> None:
        raise RuntimeError("the client went away")

    driver.submit_then(PutOp(b"a", b"v"), broken)
    driver.submit_then(PutOp(b"b", b"v"), lambda result, error: events.append(("answered", result[1], error)))
    entries = tuple(Entry(term=1, index=i + 1, data=data) for i, (data, *_) in enumerate(driver._queue.items))
    await driver._handle_ready(Ready(hard_state=HardState(term=1, commit=2), committed_entries=entries))
    assert events == [("apply", 2), ("answered", b"b", None)]  # before any loop turn
    assert driver._waiters == {} and driver.applied.applied == 2


class _Raw:
    """The core's answer to a MsgSnap: taken (it is the pending snapshot) or not."""

    def __init__(self) -> None:
        self.take = False
        self.pending: SnapshotMetadata | None = None

    def step(self, m: Message) -> None:
        assert m.snapshot is not None
        self.pending = m.snapshot.metadata if self.take else None

    def pending_snapshot(self) -> SnapshotMetadata | None:
        return self.pending


async def test_a_received_snapshot_the_core_does_not_take_is_discarded_unless_one_at_its_index_awaits_install() -> None:
    discarded: list[int] = []

    class Keeps(Target):
        def discard_snapshot(self, snapshot: Snapshot) -> None:
            discarded.append(snapshot.metadata.index)

    driver = make_driver([])
    driver.target = Keeps([])
    raw = driver.raw = _Raw()  # type: ignore[assignment]

    def snap(index: int) -> Message:
        meta = SnapshotMetadata(index=index, term=1, conf_state=ConfState(voters=frozenset({1})))
        return Message(type=MessageType.SNAP, to=1, from_=2, term=1, snapshot=Snapshot(meta, b"x"))

    async def step(index: int, take: bool) -> None:
        raw.take = take
        driver.on_frame(2, wire.SNAP_END, snap(index))
        driver._drain_inbox()
        await asyncio.sleep(0.05)  # (discarded off the loop)

    await step(50, take=True)
    await step(50, take=False)  # the same snapshot sent again: its file awaits the install
    await step(30, take=False)  # behind the commit: never installed
    assert discarded == [30]
    driver.applied.advance(50)  # installed
    await step(50, take=False)  # a copy received after the install: its file would linger
    assert discarded == [30, 50]

"""``KeepaliveRouter`` (986f4a1, de7975f) in one process, with a scripted node: what a
keepalive is answered when the leader's view is stale, and what a malformed
``LEASE_RENEW`` / ``LEASE_RENEW_RESP`` peer frame does.

etcd's ``EtcdServer.LeaseRenew`` on the leader first confirms its leadership with a
quorum (``ensureLeadership``, after etcd-io/etcd#15247) and waits until it has applied
everything committed (``waitAppliedIndex``, "linearizable renew lease", etcd-io/etcd#13675):
so a deposed leader that has not noticed yet answers no keepalive, and a lease whose
revocation is committed is not renewed by a leader still applying it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from types import SimpleNamespace
from typing import Any

import pytest

from kvraft.apply.errors import Unavailable
from kvraft.apply.feature_ops import LeaseCheckpointOp, LeaseExpireOp
from kvraft.lease import Lessor
from kvraft.raft.types import StateRole
from kvraft.server import lease_renew, wire
from kvraft.server.features import Features
from kvraft.server.lease_renew import KeepaliveRouter

LEADER, FOLLOWER = 1, 2


class Driver:
    """The parts of ``NodeDriver`` the router uses. ``committed`` holds what the core
    committed and the apply stage has not applied yet; ``read_barrier`` applies it when a
    quorum confirms the leadership (``quorum``), else fails as a ReadIndex round does."""

    def __init__(self, member_id: int, role: StateRole, leader: int) -> None:
        self.member_id, self.role, self.leader = member_id, role, leader
        self.term = 1
        self.committed: list[Any] = []
        self.quorum = True
        self.barriers = 0
        self.frames: list[tuple[int, int, Any]] = []

    def on_frame(self, source: int, kind: int, body: Any) -> None:
        self.frames.append((source, kind, body))

    def apply_committed(self) -> None:
        while self.committed:
            self.committed.pop(0)()

    async def read_barrier(self, timeout_s: float = 7.0) -> None:
        self.barriers += 1
        await asyncio.sleep(0)
        if not self.quorum:
            raise Unavailable("etcdserver: request timed out")
        self.apply_committed()


class Transport:
    def __init__(self) -> None:
        self.sent: list[tuple[int, int, Any]] = []

    def send_frame(self, target: int, kind: int, body: Any) -> bool:
        self.sent.append((target, kind, body))
        return True


class Store:
    rev = 7


class State:
    store = Store()


class Node:
    def __init__(self, member_id: int, role: StateRole, leader: int) -> None:
        self.driver = Driver(member_id, role, leader)
        self.transport = Transport()
        self.state = State()


def leader_router(now: list[float]) -> tuple[Node, Lessor, KeepaliveRouter]:
    node = Node(LEADER, StateRole.LEADER, LEADER)
    lessor = Lessor(min_ttl_s=1)
    lessor.grant(5, 10, now[0])
    lessor.promote(now[0])
    return node, lessor, KeepaliveRouter(node, lessor, clock=lambda: now[0])


async def until(condition: Any, what: str, deadline_s: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while not condition():
        assert loop.time() < end, what
        await asyncio.sleep(0.01)


async def test_a_keepalive_after_a_committed_revoke_is_not_renewed() -> None:
    """The revoke is committed (a client may already have its answer from a follower
    that applied it) but the leader's apply stage has not applied it yet: the checkpoint
    carrying the renewal is applied after it and finds the lease gone."""
    node, lessor, router, _stub, proposals = _leader_with_lease_loop()
    node.driver.committed.append(lambda: lessor.revoke(5))
    renew = asyncio.get_running_loop().create_task(router.renew(5))
    await until(lambda: proposals.ops, "no checkpoint proposed for the renewal")
    _, committed = proposals.ops.pop(0)
    node.driver.apply_committed()  # the log applies the revoke, then the checkpoint
    committed.set_result(7)
    result = await asyncio.wait_for(renew, 30)
    assert result.ttl == 0, "a lease whose revocation was committed got a TTL"
    assert 5 not in lessor.leases


async def test_a_lease_granted_but_not_applied_here_yet_is_looked_for_after_a_barrier() -> None:
    """Its grant was answered by a member that applied it first: the leader applies what
    is committed (etcd's waitAppliedIndex) before it answers 'not found'."""
    node, lessor, router, _stub, proposals = _leader_with_lease_loop()
    node.driver.committed.append(lambda: lessor.grant(9, 10, time.monotonic()))
    renew = asyncio.get_running_loop().create_task(router.renew(9))
    await until(lambda: proposals.ops, "the lease granted by a committed entry was not renewed")
    assert node.driver.barriers == 1
    proposals.ops.pop(0)[1].set_result(7)
    assert (await asyncio.wait_for(renew, 30)).ttl == 10


async def _fail_proposals(proposals: Proposals, until_done: asyncio.Task[Any]) -> None:
    while not until_done.done():
        while proposals.ops:
            proposals.ops.pop(0)[1].set_exception(Unavailable("etcdserver: request timed out"))
        await asyncio.sleep(0.01)


async def test_a_deposed_leader_answers_no_keepalive() -> None:
    """Partitioned, it still believes it leads (until check-quorum steps it down); a TTL
    it hands out is unknown to the new leader, which may then expire the lease while the
    client believes it held. etcd confirms its leadership first and answers ErrNotPrimary;
    here the answer waits for the checkpoint to commit in the term of the renewal: one
    that cannot commit, or that commits only in a later term (a queued proposal the driver
    forwarded to the new leader: applied on its primary lessor it moves no deadline),
    answers nothing."""
    node, lessor, router, _stub, proposals = _leader_with_lease_loop()
    deadline = lease_renew.RENEW_TIMEOUT_S
    lease_renew.RENEW_TIMEOUT_S = 1.0
    try:
        renew = asyncio.get_running_loop().create_task(router.renew(5))
        await until(lambda: proposals.ops, "no checkpoint proposed")
        _, committed = proposals.ops.pop(0)
        node.driver.term = 2  # committed, but only once another member led a later term
        committed.set_result(7)
        failing = asyncio.get_running_loop().create_task(_fail_proposals(proposals, renew))
        with pytest.raises(Unavailable):
            await asyncio.wait_for(renew, 30)
        await failing
    finally:
        lease_renew.RENEW_TIMEOUT_S = deadline


async def test_a_peer_keepalive_is_answered_after_its_checkpoint_too() -> None:
    node, lessor, router, _stub, proposals = _leader_with_lease_loop()
    node.driver.committed.append(lambda: lessor.revoke(5))
    node.driver.on_frame(FOLLOWER, wire.LEASE_RENEW, [3, [5]])
    await until(lambda: proposals.ops, "no checkpoint proposed for the peer's keepalive")
    assert node.transport.sent == []
    _, committed = proposals.ops.pop(0)
    node.driver.apply_committed()
    committed.set_result(7)
    await until(lambda: node.transport.sent, "the peer's keepalive was never answered")
    assert node.transport.sent == [(FOLLOWER, wire.LEASE_RENEW_RESP, [3, [0], 7])]
    lessor.grant(6, 10, time.monotonic())
    node.driver.on_frame(FOLLOWER, wire.LEASE_RENEW, [4, [6]])
    await until(lambda: proposals.ops, "no checkpoint proposed for the peer's keepalive")
    proposals.ops.pop(0)[1].set_exception(Unavailable("etcdserver: request timed out"))
    await until(lambda: len(node.transport.sent) == 2, "the peer's keepalive was never answered")
    assert node.transport.sent[1] == (FOLLOWER, wire.LEASE_RENEW_RESP, [4, None, 7])  # (ask again)


@pytest.mark.parametrize("body", [
    lambda rid: [rid, [], 7],  # fewer TTLs than keepalives
    lambda rid: [rid, "x", 7],
    lambda rid: [rid, [10], "rev"],
    lambda rid: [rid, [None], 7],
    lambda rid: [rid],
])
async def test_a_malformed_answer_does_not_strand_the_keepalive(body: Any) -> None:
    """The transport closes the connection on a frame its handler cannot take; the
    keepalive it answered must still end (asked again, then answered properly), not wait
    forever with its timer cancelled."""
    node = Node(FOLLOWER, StateRole.FOLLOWER, LEADER)
    router = KeepaliveRouter(node, Lessor(min_ttl_s=1))
    task = asyncio.get_running_loop().create_task(router.renew(5))
    sent = node.transport.sent
    await until(lambda: sent, "no LEASE_RENEW sent")
    assert sent[0][:2] == (LEADER, wire.LEASE_RENEW)
    request_id = sent[0][2][0]
    with pytest.raises(Exception):  # noqa: B017, PT011 (the transport's reader catches any)
        node.driver.on_frame(LEADER, wire.LEASE_RENEW_RESP, body(request_id))
    await until(lambda: len(sent) >= 2, "the keepalive waits for an answer that will not come")
    node.driver.on_frame(LEADER, wire.LEASE_RENEW_RESP, [sent[-1][2][0], [10], 9])
    result = await asyncio.wait_for(task, 30)
    assert (result.ttl, result.revision) == (10, 9)


@pytest.mark.parametrize("body", [None, 5, [], [1], [1, 5], [1, ["a"]], [1, [5, None]], [1, None]])
async def test_a_malformed_request_is_refused_and_renews_nothing(body: Any) -> None:
    """Refused as a whole (the transport's reader closes the connection on the error),
    not half-served: no lease of it is renewed, nothing is answered."""
    now = [100.0]
    node, lessor, router = leader_router(now)
    now[0] = 103.0
    with pytest.raises(Exception):  # noqa: B017, PT011
        node.driver.on_frame(FOLLOWER, wire.LEASE_RENEW, body)
    for _ in range(20):
        await asyncio.sleep(0)
    assert lessor.leases[5].deadline == 110.0
    assert node.transport.sent == [] and node.driver.barriers == 0


def _lease_loop_stub(quorum: bool) -> tuple[SimpleNamespace, list[Any]]:
    """The parts of ``Features`` its lease loop uses, on a leader whose lessor holds
    lease 5 already past its deadline."""
    node = Node(LEADER, StateRole.LEADER, LEADER)
    node.driver.quorum = quorum
    lessor = Lessor(min_ttl_s=1)
    lessor.grant(5, 1, time.monotonic() - 10)
    lessor.promote(time.monotonic() - 10)
    spawned: list[Any] = []
    stub = SimpleNamespace(node=node, lessor=lessor,
                           keepalives=SimpleNamespace(poke=lambda: None), promote_extend_s=0.5, _pending=set(),
                           _spawn=spawned.append, _checkpoint=lambda now: None)
    stub._expire = lambda ids: Features._expire(stub, ids)  # type: ignore[arg-type]
    return stub, spawned


async def test_an_expiry_is_never_proposed_again_through_the_next_leader() -> None:
    """A leader change that loses a revocation leaves it lost (the next leader's lessor
    decides on its own, with the renewals it got): ``repropose=False``."""
    proposals = Proposals()
    stub = SimpleNamespace(node=SimpleNamespace(driver=proposals), _pending=set(),
                           _proposed=lambda task: None, _expiry_done=lambda task: None)
    Features._spawn(stub, LeaseExpireOp(5))  # type: ignore[arg-type]
    await _turns()
    assert [type(op) for op, _ in proposals.ops] == [LeaseExpireOp] and proposals.repropose == [False]
    for task in stub._pending:
        task.cancel()


@pytest.mark.parametrize("quorum", [False, True])
async def test_a_deposed_leader_proposes_no_expiry(quorum: bool) -> None:
    """Its deadlines miss the keepalives the new leader renewed; a revocation it queued
    while no leader is known would be forwarded to the new leader and committed (etcd
    confirms leadership before revoking, etcd-io/etcd#15247). A confirmed leader expires."""
    stub, spawned = _lease_loop_stub(quorum)
    loop = asyncio.get_running_loop().create_task(Features._lease_loop(stub))  # type: ignore[arg-type]
    try:
        if quorum:
            await until(lambda: spawned, "the expired lease was never revoked")
            assert [type(op) for op in spawned if not isinstance(op, LeaseCheckpointOp)] == [LeaseExpireOp]
        else:
            await until(lambda: stub.node.driver.barriers >= 1, "expiry was proposed without a barrier")
            for _ in range(20):
                await asyncio.sleep(0)
            assert [op for op in spawned if isinstance(op, LeaseExpireOp)] == []
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop


class Proposals:
    """``driver.propose`` for the lease loop: each proposal waits until the test commits
    it (applied on the follower ``B`` as the log would) or fails it (the leader died)."""

    def __init__(self) -> None:
        self.ops: list[tuple[Any, asyncio.Future[Any]]] = []
        self.repropose: list[bool] = []

    async def propose(self, op: Any, timeout_s: float = 5.0, repropose: bool = True) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.ops.append((op, future))
        self.repropose.append(repropose)
        return await future


def _leader_with_lease_loop() -> tuple[Node, Lessor, KeepaliveRouter, SimpleNamespace, Proposals]:
    """A leader whose lessor (on the real clock, as the lease loop's) holds lease 5 (TTL
    10), granted 5 s ago; its lease loop proposes through ``Proposals``."""
    node = Node(LEADER, StateRole.LEADER, LEADER)
    lessor = Lessor(min_ttl_s=1)
    lessor.grant(5, 10, time.monotonic() - 5)
    lessor.promote(time.monotonic())
    router = KeepaliveRouter(node, lessor)
    proposals = Proposals()
    node.driver.propose = proposals.propose  # type: ignore[attr-defined]
    stub = SimpleNamespace(node=node, lessor=lessor, keepalives=router, promote_extend_s=0.5, _pending=set(),
                           _checkpoints_in_flight=0, _checkpoint_soon=False)
    for name in ("_spawn", "_expire", "_checkpoint", "_renewals_parked", "_checkpoint_now"):
        setattr(stub, name, getattr(Features, name).__get__(stub))
    router.on_parked = stub._renewals_parked
    return node, lessor, router, stub, proposals


async def _turns(n: int = 20) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_a_keepalive_is_answered_only_once_its_checkpoint_committed() -> None:
    """The known window of docs/design/lease.md, closed: leader A renews lease 5 (TTL 10,
    granted 5 s ago); follower B holds what the checkpoints gave it (the grant's deadline,
    5 s from now). Answered at once (before), the TTL reached the client while only A knew
    it: A dying before its checkpoint committed left B, promoted with the election
    timeout (0.5 s), 4.5 s short of what the client was told. Now the answer waits for the
    checkpoint: a lost one answers nothing (the client asks the next leader), a committed
    one is on B before the client hears."""
    node, lessor, router, stub, proposals = _leader_with_lease_loop()
    b = Lessor(min_ttl_s=1)
    b.grant(5, 10, time.monotonic() - 5)
    loop_task = asyncio.get_running_loop().create_task(Features._lease_loop(stub))  # type: ignore[arg-type]
    try:
        sent_at = time.monotonic()
        renew = asyncio.get_running_loop().create_task(router.renew(5))
        await _turns()
        if not renew.done():
            await until(lambda: proposals.ops or renew.done(), "no checkpoint proposed for the renewal")
        assert not renew.done(), "the keepalive was answered before any checkpoint carried it"
        op, committed = proposals.ops.pop(0)
        assert isinstance(op, LeaseCheckpointOp) and op.items == [[5, 10]]
        # this leader's view of the TTLs: never proposed again through the next leader
        # (it would undo that leader's renewals; kvraft.server.driver._repropose)
        assert proposals.repropose == [False]
        await _turns()
        assert not renew.done(), "the keepalive was answered before its checkpoint committed"
        # the checkpoint commits: B applies it, then the proposer hears
        for lease_id, left in op.items:
            b.checkpoint(lease_id, left, time.monotonic())
        committed.set_result(7)
        result = await asyncio.wait_for(renew, 30)
        assert result.ttl == 10
        b.promote(time.monotonic(), extend_s=0.5)
        assert b.leases[5].deadline >= sent_at + result.ttl, "B would end the lease before the client's deadline"

        # a checkpoint lost with the leader: that renewal is never acknowledged
        renew = asyncio.get_running_loop().create_task(router.renew(5))
        await until(lambda: proposals.ops or renew.done(), "no checkpoint proposed for the second renewal")
        assert not renew.done()
        _, lost = proposals.ops.pop(0)
        node.driver.role = StateRole.FOLLOWER  # deposed: the proposal fails
        node.driver.leader = 3
        lost.set_exception(Unavailable("etcdserver: leader changed"))
        await until(lambda: node.transport.sent, "the keepalive was not asked of the new leader")
        assert not renew.done(), "a renewal whose checkpoint failed was acknowledged"
        assert node.transport.sent[0][:2] == (3, wire.LEASE_RENEW)
        renew.cancel()
    finally:
        loop_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop_task


async def test_renewals_a_checkpoint_left_out_or_a_demotion_are_not_stranded() -> None:
    """A renewal waits for a checkpoint only while the lessor still has it pending: one
    whose lease was revoked before the lease loop took it, and every one waiting when
    the lessor is demoted, is settled as failed (asked again), not left waiting."""
    now = [100.0]
    node, lessor, router = leader_router(now)
    lessor.grant(6, 10, 100.0)
    first = asyncio.get_running_loop().create_task(router.renew_durably([5, 6]))
    await _turns()
    lessor.revoke(6)
    taken = router.checkpoint_proposed([5])
    assert len(taken) == 1
    router.settle(taken, True)
    await _turns()
    assert first.done() and first.result() is None, "lease 6's renewal, never checkpointed, was acknowledged"
    second = asyncio.get_running_loop().create_task(router.renew_durably([5]))
    await _turns()
    assert not second.done()
    lessor.demote()
    router.poke()
    await _turns()
    assert second.done() and second.result() is None
    assert await router.renew_durably([5]) is None  # not primary: not renewed at all


async def test_checkpoints_for_keepalives_are_proposed_at_once_one_at_a_time() -> None:
    """Without waiting for the lease loop's turn: a parked renewal gets a checkpoint
    proposed in the same event-loop turn; renewals parked while it is in flight go in the
    next one, proposed when it ends (so at most one such proposal is in flight)."""
    node, lessor, router, stub, proposals = _leader_with_lease_loop()
    lessor.grant(6, 10, time.monotonic())
    first = asyncio.get_running_loop().create_task(router.renew_durably([5]))
    await until(lambda: proposals.ops, "no checkpoint proposed for a parked renewal")
    second = asyncio.get_running_loop().create_task(router.renew_durably([6]))
    await _turns()
    assert len(proposals.ops) == 1, "a second checkpoint was proposed while one was in flight"
    op, committed = proposals.ops.pop(0)
    assert [i for i, _ in op.items] == [5]
    committed.set_result(7)
    assert await asyncio.wait_for(first, 30) == [10]
    await until(lambda: proposals.ops, "the renewal parked meanwhile got no checkpoint")
    op, committed = proposals.ops.pop(0)
    assert [i for i, _ in op.items] == [6] and not second.done()
    committed.set_result(8)
    assert await asyncio.wait_for(second, 30) == [10]

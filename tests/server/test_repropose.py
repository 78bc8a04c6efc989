"""Proposals lost to a leader change, proposed again exactly when that cannot duplicate them
(``NodeDriver.OwnProposals.lost``), with a fake core and transport around the real driver.

The rule: a proposal of this member handed to the leader of term t (appended there, or
forwarded with ``FORWARD_TERM`` naming t, which a receiver appends only while leading in t)
can never commit once an entry of a later term is committed and applied here, so it is
proposed again then. A proposal forwarded to a member that does not check the term, or one
that a received snapshot may hold, is left to its deadline. The receiving side drops a
proposal forwarded for a term it does not lead in, and never passes it on."""

from __future__ import annotations

from typing import Any

import pytest

from kvraft.apply.ops import PutOp, encode_entry
from kvraft.raft.errors import NotLeaderError
from kvraft.raft.types import (
    NONE,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    HardState,
    Ready,
    Snapshot,
    SnapshotMetadata,
)
from kvraft.server import wire
from kvraft.server.driver import NodeDriver
from tests.server.test_driver_ready import make_driver


class Raw:
    """The core as the driver sees it: a term, who leads (1 is this member), proposals."""

    def __init__(self, term: int, leader: int) -> None:
        self.term = term
        self.leader = leader
        self.proposed: list[bytes] = []
        self.confs: list[ConfChange] = []

    def propose_batch(self, datas: list[bytes]) -> int:
        if self.leader != 1:
            raise NotLeaderError(self.leader)
        self.proposed.extend(datas)
        return len(self.proposed)

    def propose_conf_change(self, cc: ConfChange) -> None:
        if self.leader != 1:
            raise NotLeaderError(self.leader)
        self.confs.append(cc)


class Transport:
    def __init__(self, checks_term: bool = True) -> None:
        self.checks_term = checks_term
        self.frames: list[tuple[int, int, Any]] = []
        self.gone: set[int] = set()
        """Peers removed from the transport: a frame to one goes nowhere (``send_frame`` False)."""

    def supports(self, member_id: int, feature: str) -> bool:
        return self.checks_term and member_id not in self.gone and feature == wire.FEATURE_FORWARD_TERM

    def send_frame(self, target: int, kind: int, body: Any) -> bool:
        if target in self.gone:
            return False
        self.frames.append((target, kind, body))
        return True

    def send(self, messages: Any) -> None:
        pass

    def take_unsent(self, member_id: int) -> list[tuple[int, Any]]:
        return []


def driver_with(term: int, leader: int, checks_term: bool = True) -> tuple[NodeDriver, Raw, Transport]:
    driver = make_driver([])
    raw, transport = Raw(term, leader), Transport(checks_term)
    driver.raw, driver.transport = raw, transport
    return driver, raw, transport


def handed_put(term: int, leader: int, checks_term: bool = True) -> tuple[NodeDriver, Raw, Transport]:
    """A driver in ``term`` under ``leader`` that has submitted one put and handed it over
    (appended as leader, forwarded, or kept queued when no leader is known)."""
    driver, raw, transport = driver_with(term, leader, checks_term)
    driver.submit(PutOp(b"k", b"v"))
    driver._propose_queued()
    return driver, raw, transport


async def commit(driver: NodeDriver, term: int, index: int, data: bytes = b"", snapshot: Snapshot | None = None) -> None:
    """A Ready committing one entry (empty data: a new leader's no-op), applied here."""
    ready = Ready(hard_state=HardState(term=term, commit=index), committed_entries=(Entry(term=term, index=index, data=data),))
    if snapshot is not None:
        ready = Ready(hard_state=HardState(term=term, commit=index), snapshot=snapshot)
    await driver._handle_ready(ready)
    stage = driver.stage  # (its task is not running here: what the Ready queued, applied now)
    while not stage.queue.empty():
        kind, payload = stage.queue.get_nowait()
        if kind == "snapshot":  # (as the task's loop does)
            await stage._restore(payload)
        else:
            stage._process(kind, payload)


def queued_ids(driver: NodeDriver) -> list[int]:
    return [p[3] for p in driver._queue.items]


async def test_a_forward_lost_with_its_leader_is_proposed_again_once_a_later_term_commits() -> None:
    driver, raw, transport = driver_with(term=3, leader=2)
    future = driver.submit(PutOp(b"k", b"v"))
    (request_id,) = driver._queue.own.records
    data = driver._queue.own.records[request_id][0]
    driver._propose_queued()
    assert transport.frames == [(2, wire.FORWARD_TERM, [3, [data]])]
    # member 2 dies with it; member 3 wins term 4 and its first entry is applied here
    raw.term, raw.leader = 4, 3
    await commit(driver, 4, 5)
    assert queued_ids(driver) == [request_id] and driver.stats.proposals_reproposed == 1
    driver._propose_queued()
    assert transport.frames[-1] == (3, wire.FORWARD_TERM, [4, [data]])
    await commit(driver, 4, 6, data)
    assert await future == ("ok", b"k")  # (the fake target's answer) once
    assert driver._queue.own.records == {}
    raw.term = 5
    await commit(driver, 5, 7)
    assert driver._queue.items == [] and driver.stats.proposals_reproposed == 1


async def test_an_entry_of_the_same_term_proposes_nothing_again() -> None:
    driver, raw, _ = handed_put(term=3, leader=2)
    await commit(driver, 3, 5)  # the leader it went to still leads: it may commit it yet
    assert driver._queue.items == [] and driver.stats.proposals_reproposed == 0


async def test_a_forward_to_a_member_that_does_not_check_the_term_is_left_to_its_deadline() -> None:
    """An older member appends a forward at whatever term it leads in when it reads it:
    a copy may commit later, so it is never proposed again."""
    driver, raw, transport = handed_put(term=3, leader=2, checks_term=False)
    assert [kind for _, kind, _ in transport.frames] == [wire.FORWARD]
    raw.term, raw.leader = 4, 3
    await commit(driver, 4, 5)
    assert driver._queue.items == [] and driver.stats.proposals_reproposed == 0


async def test_a_leaders_own_proposal_is_proposed_again_after_it_stepped_down() -> None:
    driver, raw, transport = handed_put(term=3, leader=1)
    assert len(raw.proposed) == 1 and transport.frames == []
    raw.term, raw.leader = 4, 2  # deposed before committing it
    await commit(driver, 4, 5)
    driver._propose_queued()
    assert transport.frames == [(2, wire.FORWARD_TERM, [4, raw.proposed])]


async def test_a_snapshot_received_may_hold_the_proposal_so_it_is_not_proposed_again() -> None:
    driver, raw, _ = handed_put(term=3, leader=2)
    raw.term, raw.leader = 4, 3
    snapshot = Snapshot(SnapshotMetadata(index=20, term=4, conf_state=ConfState(voters=frozenset({1, 2, 3}))))
    driver.target.restore = lambda _snapshot: None  # type: ignore[attr-defined]
    driver.writer.persist = _persisted  # type: ignore[method-assign]
    await commit(driver, 4, 20, snapshot=snapshot)
    assert driver.applied.applied == 20
    await commit(driver, 5, 21)
    assert driver._queue.items == [] and driver.stats.proposals_reproposed == 0


async def _persisted(*_args: Any) -> None:
    return None


async def test_a_proposal_never_handed_is_queued_once() -> None:
    driver, raw, _ = driver_with(term=3, leader=NONE)
    driver.submit(PutOp(b"a", b"v"))
    driver._propose_queued()  # no leader known: kept queued
    raw.term = 4
    await commit(driver, 4, 5)
    assert queued_ids(driver) == list(driver._queue.own.records) and driver.stats.proposals_reproposed == 0


async def test_a_forward_returned_unsent_is_queued_once() -> None:
    """Its frame never left (``on_unsent``): queued again at once, and the term rule firing
    afterwards does not queue it a second time."""
    driver, raw, transport = driver_with(term=3, leader=2)
    driver.submit(PutOp(b"b", b"v"))
    driver._propose_queued()
    ((_, kind, body),) = transport.frames
    driver.return_unsent(2, kind, body)
    assert queued_ids(driver) == list(driver._queue.own.records) and driver.stats.proposals_reforwarded == 1
    driver.return_unsent(2, kind, body)  # (the same frame again: already queued)
    raw.term, raw.leader = 4, 3
    await commit(driver, 4, 5)
    assert queued_ids(driver) == list(driver._queue.own.records) and driver.stats.proposals_reproposed == 0


async def test_a_leader_drops_what_was_forwarded_for_another_term_and_proposes_the_rest() -> None:
    driver, raw, _ = driver_with(term=5, leader=1)
    driver.on_frame(2, wire.FORWARD_TERM, [4, [b"old"]])  # sent to it while it led term 4
    driver.on_frame(2, wire.FORWARD_TERM, [5, [b"now"]])
    driver.on_frame(3, wire.FORWARD, [b"untagged"])  # a member of the first version
    cc = ConfChange(changes=((ConfChangeType.REMOVE_NODE, 3),)).encode()
    driver.on_frame(2, wire.FORWARD_CONF_TERM, [4, cc])
    driver._propose_queued()
    assert raw.proposed == [b"now", b"untagged"] and raw.confs == []
    assert driver.stats.forwards_dropped == 2


async def test_a_follower_never_passes_on_what_was_forwarded_to_it_for_a_term() -> None:
    """Passed on, it could be appended at a term its sender does not know of."""
    driver, raw, transport = driver_with(term=5, leader=3)
    driver.on_frame(2, wire.FORWARD_TERM, [5, [b"tagged"]])
    driver.on_frame(2, wire.FORWARD, [b"untagged"])
    driver._propose_queued()
    assert transport.frames == [(3, wire.FORWARD_TERM, [5, [b"untagged"]])]
    assert driver.stats.forwards_dropped == 1


@pytest.mark.parametrize("body", [["4", [b"x"]], [0, [b"x"]], [4]])
def test_a_malformed_forward_for_a_term_is_refused(body: Any) -> None:
    driver, _, _ = driver_with(term=5, leader=1)
    with pytest.raises((ValueError, IndexError)):
        driver.on_frame(2, wire.FORWARD_TERM, body)
    assert driver._queue.items == []


async def test_a_put_forwarded_and_applied_leaves_nothing_behind() -> None:
    driver, raw, _ = driver_with(term=3, leader=2)
    future = driver.submit(PutOp(b"k", b"v"))
    driver._propose_queued()
    (request_id,) = driver._queue.own.records
    await commit(driver, 3, 5, encode_entry(request_id, PutOp(b"k", b"v")))
    assert await future == ("ok", b"k") and driver._queue.own.records == {}


async def test_a_proposal_made_without_repropose_is_left_to_its_deadline() -> None:
    """What a leader decides from its own state (a lease's expiry, a checkpoint of TTLs)."""
    driver, raw, transport = driver_with(term=3, leader=1)
    driver.submit(PutOp(b"k", b"v"), repropose=False)
    driver._propose_queued()
    raw.term, raw.leader = 4, 2
    await commit(driver, 4, 5)
    assert driver._queue.items == [] and driver._queue.own.records == {} and driver.stats.proposals_reproposed == 0


async def test_a_forward_to_a_leader_removed_here_waits_for_the_next_leader() -> None:
    """The leader removed itself; this member applied the removal (the transport dropped its
    peer) while its Raft still names it. A put then found no peer to go to. It was taken for
    one forwarded to a member that does not check the term, so never proposed again: it waited
    out its 7 s deadline (``python -m kvraft.bench remove-leader``, one round in three). It
    stays queued until a leader is known."""
    driver, raw, transport = driver_with(term=3, leader=2)
    transport.gone.add(2)
    driver.submit(PutOp(b"k", b"v"))
    (request_id,) = driver._queue.own.records
    data = driver._queue.own.records[request_id][0]
    driver._propose_queued()
    assert transport.frames == [] and queued_ids(driver) == [request_id]
    driver._propose_queued()  # (the next turn, the same leader named: still kept)
    assert transport.frames == [] and queued_ids(driver) == [request_id]
    raw.term, raw.leader = 4, 3  # member 3 won the election
    driver._propose_queued()
    assert transport.frames == [(3, wire.FORWARD_TERM, [4, [data]])]

"""``SnapshotSender``: a leader's MsgSnap gets the data of its state as it is when sent, and
describes that state (applied index, its term, the membership then), not the log's snapshot."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

from kvraft.raft.types import ConfState, Message, MessageType, Snapshot, SnapshotMetadata
from kvraft.server.reads import AppliedWaiters
from kvraft.server.snapshot_send import SnapshotSender


class _Stage:
    def __init__(self, applied: int, term: int, conf: ConfState) -> None:
        self.applied = AppliedWaiters()
        self.applied.applied = applied
        self.applied_term = term
        self.conf_state = conf
        self.failed: BaseException | None = None


class _Target:
    def __init__(self) -> None:
        self.state = b"state-1"
        self.pins = 0
        self.gate = threading.Event()
        self.gate.set()
        self.fail: BaseException | None = None

    def snapshot_source(self) -> Callable[[], bytes]:
        self.pins += 1
        pinned = self.state  # what is pinned is the state now, whatever changes later

        def build() -> bytes:
            self.gate.wait(10)
            if self.fail is not None:
                raise self.fail
            return pinned

        return build


def _msg(to: int, local_index: int = 100) -> Message:
    local = Snapshot(SnapshotMetadata(index=local_index, term=1, conf_state=ConfState(voters=frozenset({1}))))
    return Message(type=MessageType.SNAP, to=to, from_=1, term=3, snapshot=local)


def _sender(stage: _Stage, target: _Target) -> tuple[SnapshotSender, list[Message], list[tuple[int, bool]]]:
    sent: list[Message] = []
    reports: list[tuple[int, bool]] = []
    return SnapshotSender(target, stage, sent.extend, lambda to, ok: reports.append((to, ok))), sent, reports


async def _settle(sender: SnapshotSender) -> None:
    await sender.drain()
    await asyncio.sleep(0)  # (the done callbacks)


@pytest.mark.asyncio
async def test_the_data_and_metadata_are_the_applied_state_when_sent() -> None:
    conf = ConfState(voters=frozenset({1, 2, 3}))
    stage, target = _Stage(applied=150, term=3, conf=conf), _Target()
    sender, sent, reports = _sender(stage, target)
    sender.send(_msg(2))
    target.state = b"state-2"  # applied after the pin: not in this snapshot
    await _settle(sender)
    (out,) = sent
    assert out.to == 2 and out.type == MessageType.SNAP and out.term == 3
    assert out.snapshot == Snapshot(SnapshotMetadata(index=150, term=3, conf_state=conf), b"state-1")
    assert reports == [] and (sender.built, sender.sent) == (1, 1)


@pytest.mark.asyncio
async def test_followers_behind_together_share_one_build() -> None:
    stage, target = _Stage(applied=150, term=3, conf=ConfState(voters=frozenset({1, 2, 3}))), _Target()
    target.gate.clear()
    sender, sent, _reports = _sender(stage, target)
    sender.send(_msg(2))
    sender.send(_msg(3))
    target.gate.set()
    await _settle(sender)
    assert target.pins == 1 and [m.to for m in sent] == [2, 3]
    assert sent[0].snapshot is sent[1].snapshot
    stage.applied.applied = 160  # a later one: a build of its own
    sender.send(_msg(2))
    await _settle(sender)
    assert target.pins == 2 and sent[-1].snapshot is not None and sent[-1].snapshot.metadata.index == 160


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("applied", "term", "failed"),
    [
        (150, 0, None),  # nothing applied since the start: the term is not known
        (90, 3, None),  # a received snapshot (at 100) not yet installed by the stage
        (150, 3, RuntimeError("stage stopped")),
    ],
)
async def test_no_state_to_describe_is_a_failed_send(applied: int, term: int, failed: Any) -> None:
    stage, target = _Stage(applied=applied, term=term, conf=ConfState(voters=frozenset({1}))), _Target()
    stage.failed = failed
    sender, sent, reports = _sender(stage, target)
    sender.send(_msg(2, local_index=100))
    await _settle(sender)
    assert sent == [] and reports == [(2, False)] and target.pins == 0


@pytest.mark.asyncio
async def test_a_failed_build_is_reported_for_every_follower_waiting() -> None:
    stage, target = _Stage(applied=150, term=3, conf=ConfState(voters=frozenset({1}))), _Target()
    target.fail = OSError("store closed")
    sender, sent, reports = _sender(stage, target)
    sender.send(_msg(2))
    sender.send(_msg(3))
    await _settle(sender)
    assert sent == [] and sorted(reports) == [(2, False), (3, False)] and sender.failed == 2

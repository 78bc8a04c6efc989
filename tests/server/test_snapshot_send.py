"""``SnapshotSender``: a leader's MsgSnap gets the data of its state as it is when sent, and
describes that state (applied index, its term, the membership then), not the log's snapshot."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Generator
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

    def snapshot_source(self) -> Callable[[], list[bytes]]:
        self.pins += 1
        pinned = self.state  # what is pinned is the state now, whatever changes later

        def build() -> list[bytes]:
            self.gate.wait(10)
            if self.fail is not None:
                raise self.fail
            return [pinned[:3], pinned[3:]]

        return build


def _msg(to: int, local_index: int = 100) -> Message:
    local = Snapshot(SnapshotMetadata(index=local_index, term=1, conf_state=ConfState(voters=frozenset({1}))))
    return Message(type=MessageType.SNAP, to=to, from_=1, term=3, snapshot=local)


Sent = list[tuple[Message, list[bytes]]]


def _sender(stage: _Stage, target: _Target) -> tuple[SnapshotSender, Sent, list[tuple[int, bool]]]:
    sent: Sent = []
    reports: list[tuple[int, bool]] = []

    def send(msg: Message, pieces: list[bytes]) -> None:
        sent.append((msg, pieces))

    return SnapshotSender(target, stage, send, lambda to, ok: reports.append((to, ok))), sent, reports


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
    ((out, pieces),) = sent
    assert out.to == 2 and out.type == MessageType.SNAP and out.term == 3
    # the data goes as the pieces built (never joined on the leader), the message describes it
    assert out.snapshot == Snapshot(SnapshotMetadata(index=150, term=3, conf_state=conf))
    assert b"".join(pieces) == b"state-1" and len(pieces) == 2
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
    assert target.pins == 1 and [m.to for m, _ in sent] == [2, 3]
    assert sent[0][0].snapshot is sent[1][0].snapshot and sent[0][1] is sent[1][1]
    stage.applied.applied = 160  # a later one: a build of its own
    sender.send(_msg(2))
    await _settle(sender)
    last = sent[-1][0].snapshot
    assert target.pins == 2 and last is not None and last.metadata.index == 160


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


class _StreamTarget(_Target):
    def __init__(self) -> None:
        super().__init__()
        self.closed = 0
        self.read = 0
        self.files: list[bool] = []

    def snapshot_stream_source(self, file: bool = False) -> Generator[bytes, None, None]:
        self.pins += 1
        self.files.append(file)
        pinned = self.state

        def pieces() -> Generator[bytes, None, None]:
            try:
                for i in range(0, len(pinned), 2):
                    self.gate.wait(10)
                    if self.fail is not None and i >= 4:
                        raise self.fail
                    self.read += 1
                    yield pinned[i : i + 2]
            finally:
                self.closed += 1

        return pieces()


def _streaming_sender(stage: _Stage, target: _Target, queued: bool = True, streams: bool = True,
                      files_to: Callable[[int], bool] = lambda _member: False) -> tuple[
        SnapshotSender, list[tuple[Message, bytes]], list[tuple[int, bool]]]:
    out: list[tuple[Message, bytes]] = []
    reports: list[tuple[int, bool]] = []

    async def stream(msg: Message, next_piece: Callable[[], Awaitable[bytes | None]]) -> bool:
        data = b""
        while (piece := await next_piece()) is not None:
            data += piece
        out.append((msg, data))
        return queued

    def send(msg: Message, pieces: list[bytes]) -> None:
        out.append((msg, b"".join(pieces)))

    sender = SnapshotSender(target, stage, send, lambda to, ok: reports.append((to, ok)), stream=stream,
                            streams_to=lambda member: streams and member != 9, files_to=files_to)
    return sender, out, reports


@pytest.mark.asyncio
async def test_a_member_that_takes_the_streamed_format_gets_the_pieces_as_they_are_read() -> None:
    conf = ConfState(voters=frozenset({1, 2, 9}))
    stage, target = _Stage(applied=150, term=3, conf=conf), _StreamTarget()
    target.state = b"abcdefgh"
    sender, out, reports = _streaming_sender(stage, target)
    sender.send(_msg(2))
    target.state = b"later"  # after the pin
    sender.send(_msg(9))  # did not announce snapshot-stream: the built format, whole
    for _ in range(100):
        if len(out) == 2 and not sender._streaming:
            break
        await asyncio.sleep(0.01)
    await _settle(sender)
    streamed = next(data for m, data in out if m.to == 2)
    assert streamed == b"abcdefgh" and target.read == 4 and target.closed == 1
    msg = next(m for m, _ in out if m.to == 2)
    assert msg.snapshot == Snapshot(SnapshotMetadata(index=150, term=3, conf_state=conf))
    assert next(data for m, data in out if m.to == 9) == b"later"  # (the _Target build: [:3] + [3:])
    assert reports == [] and sender.sent == 2


@pytest.mark.asyncio
async def test_a_member_of_this_platform_that_takes_files_gets_the_stores_file() -> None:
    """A streaming member whose ``snapshot-file`` name is this member's (``files_to``) is sent
    the store's file; another gets the records."""
    stage, target = _Stage(applied=150, term=3, conf=ConfState(voters=frozenset({1, 2, 3}))), _StreamTarget()
    target.state = b"abcd"
    sender, out, reports = _streaming_sender(stage, target, files_to=lambda member: member == 3)
    sender.send(_msg(2))
    sender.send(_msg(3))
    for _ in range(100):
        if len(out) == 2 and not sender._streaming:
            break
        await asyncio.sleep(0.01)
    await _settle(sender)
    assert target.files == [False, True] and sorted(m.to for m, _ in out) == [2, 3] and sender.sent == 2


@pytest.mark.asyncio
async def test_a_stream_whose_read_fails_is_reported_and_closed() -> None:
    stage, target = _Stage(applied=150, term=3, conf=ConfState(voters=frozenset({1, 2}))), _StreamTarget()
    target.state, target.fail = b"abcdefgh", OSError("store closed")
    sender, out, reports = _streaming_sender(stage, target)
    sender.send(_msg(2))
    for _ in range(100):
        if reports:
            break
        await asyncio.sleep(0.01)
    assert reports == [(2, False)] and out == [] and target.closed == 1 and sender.failed == 1


@pytest.mark.asyncio
async def test_a_stream_the_transport_could_not_queue_is_not_reported_twice() -> None:
    stage, target = _Stage(applied=150, term=3, conf=ConfState(voters=frozenset({1, 2}))), _StreamTarget()
    sender, _out, reports = _streaming_sender(stage, target, queued=False)
    sender.send(_msg(2))
    for _ in range(100):
        if sender.failed:
            break
        await asyncio.sleep(0.01)
    assert sender.failed == 1 and sender.sent == 0 and reports == []  # (the transport reported it)


@pytest.mark.asyncio
async def test_a_stream_stopped_with_the_member_waits_for_its_read_and_closes() -> None:
    stage, target = _Stage(applied=150, term=3, conf=ConfState(voters=frozenset({1, 2}))), _StreamTarget()
    target.state = b"abcdefgh"
    target.gate.clear()
    sender, out, _reports = _streaming_sender(stage, target)
    sender.send(_msg(2))
    await asyncio.sleep(0.05)  # a worker thread is in the read, held
    asyncio.get_running_loop().call_later(0.1, target.gate.set)
    await sender.drain()
    assert target.closed == 1 and out == [] and not sender._streaming


@pytest.mark.asyncio
async def test_etcds_send_metrics_count_by_follower() -> None:
    """``etcd_network_snapshot_send_{success,failures,total_duration_seconds}{To}``: the
    transport's report settles a send (its duration from the MsgSnap); a failure here counts."""
    stage, target = _Stage(applied=150, term=3, conf=ConfState(voters=frozenset({1, 2, 3}))), _Target()
    sender, sent, reports = _sender(stage, target)
    sender.send(_msg(2))
    await _settle(sender)
    assert len(sent) == 1
    sender.settled(2, True)  # (the transport wrote the last frame)
    sender.send(_msg(3))
    await _settle(sender)
    sender.settled(3, False)  # (its connection broke)
    stage.applied_term = 0
    sender.send(_msg(2))  # no state to describe: failed here
    assert sender.send_success == {2: 1} and sender.send_failures == {3: 1, 2: 1}
    assert sum(sender.send_seconds[2].counts) == 1 and 3 not in sender.send_seconds
    assert reports == [(2, False)]

"""A follower builds a streamed snapshot's store as the chunks arrive (``SnapshotReceiver``):
the MsgSnap then carries only a reference to the built file, which the WAL records and the
apply stage installs; damaged or cut streams leave nothing behind; a slow build holds the
connection's reading, not the chunks in memory."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest

from kvraft.apply.ops import PutOp, RangeOp
from kvraft.apply.state_machine import (
    SNAPSHOT_FILE_FORMAT,
    SNAPSHOT_PREPARED_FORMAT,
    SNAPSHOT_STREAM_FORMAT,
    StateMachine,
    prepared_snapshot,
)
from kvraft.raft.types import ConfState, Message, MessageType, Snapshot, SnapshotMetadata
from kvraft.server import snapshot_receive, wire
from kvraft.server.membership import Membership
from kvraft.server.snapshot_receive import Receipt, SnapshotReceiver
from kvraft.server.transport import PeerTransport, cluster_key
from kvraft.storage.errors import SnapshotCorruptionError
from kvraft.storage.snapshot import prepared_name
from kvraft.testing.ports import free_port

META = SnapshotMetadata(index=60, term=4, conf_state=ConfState(voters=frozenset({1, 2})))
"""(The leader's store is at 50: entries after it wrote nothing, a leader's no-op.)"""


def _machine(path: Path) -> StateMachine:
    return StateMachine(path, quota_bytes=1 << 30, member_id=1, max_txn_ops=128, membership=Membership())


def _value(sm: StateMachine, key: bytes) -> bytes | None:
    kvs = sm.range(RangeOp(key=key)).kvs
    return kvs[0].value if kvs else None


def _leader_pieces(tmp_path: Path, values: int = 1500, streamed: bool = True, file: bool = False) -> list[bytes]:
    """What a leader sends: ``[2, members]`` and its store's stream (``file``: ``[4, members]``
    and its store's file; or the built format)."""
    source = _machine(tmp_path / "leader")
    source.apply_ops([(i, PutOp(b"k%04d" % i, b"v%04d" % i * 500)) for i in range(values)], 50, 3)
    pieces = list(source.snapshot_stream_source(file=file)) if streamed else source.snapshot_source()()
    source.close()
    return pieces


def _resplit(pieces: list[bytes], first: int, size: int) -> list[bytes]:
    """The same bytes cut elsewhere: a receiver may not count on the sender's pieces."""
    data = b"".join(pieces)
    return [data[:first]] + [data[i : i + size] for i in range(first, len(data), size)]


def _msg(meta: SnapshotMetadata = META) -> Message:
    return Message(MessageType.SNAP, to=2, from_=1, term=3, snapshot=Snapshot(meta))


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def _gated_build(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """The build thread waits for the returned event before it takes any chunk."""
    gate = threading.Event()
    real, real_file = snapshot_receive.restore_generation, snapshot_receive.restore_file

    def slow(backend: Any, chunks: Any, path: Any = None) -> Any:
        gate.wait(10)
        return real(backend, chunks, path=path)

    def slow_file(backend: Any, chunks: Any, path: Any) -> Any:
        gate.wait(10)
        return real_file(backend, chunks, path)

    monkeypatch.setattr(snapshot_receive, "restore_generation", slow)
    monkeypatch.setattr(snapshot_receive, "restore_file", slow_file)
    return gate


@contextlib.asynccontextmanager
async def _leader_and_follower(tmp_path: Path, follower: StateMachine, got: list[int],
                               **follower_options: Any) -> AsyncIterator[
                                   tuple[PeerTransport, PeerTransport, Callable[[], Any]]]:
    """A leader's transport (1) connected to a follower's (2) that builds received stores in
    ``follower`` and records the kinds of the frames handed on in ``got``; yields both
    transports and a ``next_piece`` over a 200-value store's streamed snapshot."""
    key, port_b = cluster_key("tok"), free_port()
    a = PeerTransport(1, key, lambda *_: None)
    b = PeerTransport(2, key, lambda _source, kind, _body: got.append(kind),
                      receive_snapshot=SnapshotReceiver(follower.store.backend).begin, **follower_options)
    try:
        await b.listen([f"http://127.0.0.1:{port_b}"])
        a.set_peer(2, f"http://127.0.0.1:{port_b}")
        pieces = iter(_leader_pieces(tmp_path, 200))

        async def next_piece() -> bytes | None:
            return next(pieces, None)

        for _ in range(100):
            if a._peers[2].connected:
                break
            await asyncio.sleep(0.02)
        yield a, b, next_piece
    finally:
        await a.close()
        await b.close()


async def _drained(receipt: Receipt) -> None:
    for _ in range(400):
        if receipt._queued == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the build thread never took the chunks")


@pytest.mark.parametrize("form", ["stream", "file"])
async def test_the_store_is_built_as_it_arrives_and_the_message_names_the_file(tmp_path: Path, form: str) -> None:
    """``stream``: the store's records, inserted into a new file as they come; ``file``: the
    leader's store file (a member of its platform), written as it comes, checked, opened."""
    follower = _machine(tmp_path / "follower")
    follower.apply_ops([(1, PutOp(b"old", b"state"))], 7, 1)
    directory = follower.store.backend.directory
    receiver = SnapshotReceiver(follower.store.backend)
    try:
        receipt = receiver.begin(1, lambda: None, lambda: None)
        pieces = _leader_pieces(tmp_path, file=form == "file")
        assert msgpack.unpackb(pieces[0])[0] == (SNAPSHOT_FILE_FORMAT if form == "file" else SNAPSHOT_STREAM_FORMAT)
        for piece in _resplit(pieces, 7, 300_000):  # (the head cut in two)
            receipt.feed(piece)
        await _drained(receipt)  # (built before the MsgSnap comes: named only then)
        assert any(n.endswith(".lmdb.tmp") for n in _files(directory))
        receipt.end()
        msg = await receipt.finish(_msg())
        assert msg.snapshot is not None and msg.snapshot.metadata == META
        data = msg.snapshot.data
        assert len(data) < 1000 and msgpack.unpackb(data)[0] == SNAPSHOT_PREPARED_FORMAT
        assert prepared_snapshot(data) == (follower.membership.to_wire(), prepared_name(60))
        assert prepared_name(60) in _files(directory) and not any(".tmp" in n for n in _files(directory))
        assert receipt._build is not None and receipt._build.done()
        assert _value(follower, b"old") == b"state"  # nothing installed yet

        follower.restore_begin(msg.snapshot)()  # what the apply stage (or a restart) does with it
        # the file went live at the snapshot's index: a crash now finds a store not behind its log
        assert follower.store.consistent_index == (60, 4) and _value(follower, b"old") is None
        assert prepared_name(60) not in _files(directory)
        follower.restore_end(msg.snapshot)
        assert follower.applied_index() == 60 and _value(follower, b"k1499") == b"v1499" * 500
    finally:
        follower.close()


@pytest.mark.parametrize("form", ["stream", "file"])
@pytest.mark.parametrize("fault", ["damaged", "cut off"])
async def test_a_damaged_or_cut_stream_fails_and_leaves_no_file(tmp_path: Path, fault: str, form: str) -> None:
    follower = _machine(tmp_path / "follower")
    directory = follower.store.backend.directory
    before = _files(directory)
    receiver = SnapshotReceiver(follower.store.backend)
    try:
        data = bytearray(b"".join(_leader_pieces(tmp_path, file=form == "file")))
        if fault == "damaged":
            data[len(data) // 2] ^= 0xFF
        else:
            del data[len(data) // 2 :]
        receipt = receiver.begin(1, lambda: None, lambda: None)
        for i in range(0, len(data), 1 << 20):
            receipt.feed(bytes(data[i : i + (1 << 20)]))
        if fault == "damaged":
            receipt.end()
            with pytest.raises(SnapshotCorruptionError):
                await receipt.finish(_msg())
        else:  # (its connection closed)
            receipt.abort()
            assert receipt._build is not None
            with pytest.raises(SnapshotCorruptionError, match="cut off"):
                await receipt._build
        assert _files(directory) == before and receipt._build is not None and receipt._build.done()
    finally:
        follower.close()


async def test_a_slow_build_pauses_reading_then_resumes_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks wait for the build thread up to ``BACKLOG_BYTES``: past that the connection stops
    reading (the sender's socket fills, and so its backlog), and reads again once the thread
    has taken half."""
    monkeypatch.setattr(snapshot_receive, "BACKLOG_BYTES", 1 << 20)
    gate = _gated_build(monkeypatch)
    follower = _machine(tmp_path / "follower")
    calls: list[str] = []
    try:
        receipt = SnapshotReceiver(follower.store.backend).begin(1, lambda: calls.append("pause"),
                                                                 lambda: calls.append("resume"))
        for piece in _resplit(_leader_pieces(tmp_path), 100, 256 << 10):
            receipt.feed(piece)
        assert calls == ["pause"] and receipt._queued > 1 << 20
        gate.set()
        await _drained(receipt)
        await asyncio.sleep(0.05)
        assert calls == ["pause", "resume"]
        receipt.end()
        msg = await receipt.finish(_msg())
        assert msg.snapshot is not None and prepared_snapshot(msg.snapshot.data) is not None
    finally:
        gate.set()
        follower.close()


@pytest.mark.parametrize("receiving", ["built format", "no receiver"])
async def test_other_formats_and_a_transport_alone_join_the_chunks(tmp_path: Path, receiving: str) -> None:
    """``[1, members, bin]`` (from a member that does not stream), or any snapshot where the
    transport has no receiver: the chunks joined in memory, the data as sent, no thread."""
    follower = _machine(tmp_path / "follower")
    try:
        receiver = SnapshotReceiver(follower.store.backend)
        if receiving == "built format":
            pieces = _leader_pieces(tmp_path, 200, streamed=False)
            receipt = receiver.begin(1, lambda: None, lambda: None)
        else:
            pieces = _leader_pieces(tmp_path, 200)
            receipt = Receipt(None, 1)
        for piece in _resplit(pieces, 3, 50_000):
            receipt.feed(piece)
        receipt.end()
        msg = await receipt.finish(_msg())
        assert msg.snapshot == Snapshot(META, b"".join(pieces))
        assert receipt._build is None  # (no thread)
    finally:
        follower.close()


async def test_a_peer_streams_a_snapshot_and_the_receiving_member_counts_it(tmp_path: Path) -> None:
    """Over real sockets: the MsgSnap reaches the member with the prepared store's reference;
    etcd's ``etcd_network_snapshot_receive_{success,failures,total_duration_seconds}{From}``
    count it, and a stream whose connection closes halfway counts as a failure."""
    follower = _machine(tmp_path / "follower")
    got: list[tuple[int, int, Any]] = []
    arrived = asyncio.Event()

    def inbox(source: int, kind: int, body: Any) -> None:
        got.append((source, kind, body))
        arrived.set()

    key = cluster_key("tok")
    port_a, port_b = free_port(), free_port()
    a = PeerTransport(1, key, lambda *_: None)
    b = PeerTransport(2, key, inbox, receive_snapshot=SnapshotReceiver(follower.store.backend).begin)
    try:
        await a.listen([f"http://127.0.0.1:{port_a}"])
        await b.listen([f"http://127.0.0.1:{port_b}"])
        a.set_peer(2, f"http://127.0.0.1:{port_b}")
        pieces = iter(_leader_pieces(tmp_path))

        async def next_piece() -> bytes | None:
            return next(pieces, None)

        for _ in range(100):  # (a stream needs the connection up)
            if a._peers[2].connected:
                break
            await asyncio.sleep(0.02)
        assert await a.stream_snapshot(_msg(), next_piece)
        await asyncio.wait_for(arrived.wait(), 20)
        (source, kind, msg), = got
        assert (source, kind) == (1, wire.SNAP_END) and prepared_snapshot(msg.snapshot.data) is not None
        stats = b.stats
        assert stats.snapshot_receive_success == {1: 1} and stats.snapshot_receive_inflight == {1: 0}
        assert stats.snapshot_receive_seconds[1].count == 1 and not stats.snapshot_receive_failures

        # half a stream, then the connection goes: a failure, and the build's file is removed
        head, stall = _leader_pieces(tmp_path / "again")[:4], asyncio.Event()

        async def partial() -> bytes | None:
            if head:
                return head.pop(0)
            await stall.wait()
            return None

        sending = asyncio.get_running_loop().create_task(a.stream_snapshot(_msg(), partial))
        for _ in range(200):
            if stats.snapshot_receive_inflight.get(1) == 1:
                break
            await asyncio.sleep(0.01)
        a.remove_peer(2)
        for _ in range(200):
            if stats.snapshot_receive_failures.get(1) == 1 and not any(
                    ".tmp" in n for n in _files(follower.store.backend.directory)):
                break
            await asyncio.sleep(0.02)
        assert stats.snapshot_receive_failures == {1: 1} and stats.snapshot_receive_inflight == {1: 0}
        assert not any(".tmp" in n for n in _files(follower.store.backend.directory))
        stall.set()
        await asyncio.wait_for(sending, 10)
    finally:
        await a.close()
        await b.close()
        follower.close()


async def test_a_snapshot_received_again_at_the_same_index_keeps_the_first_file(tmp_path: Path) -> None:
    """The same index is the same state; the file already there may be the one the apply stage
    is installing, so a second receipt never replaces it (and leaves nothing of its own)."""
    follower = _machine(tmp_path / "follower")
    directory = follower.store.backend.directory
    receiver = SnapshotReceiver(follower.store.backend)
    try:
        pieces = _leader_pieces(tmp_path)
        inodes = []
        for _ in range(2):
            receipt = receiver.begin(1, lambda: None, lambda: None)
            for piece in pieces:
                receipt.feed(piece)
            receipt.end()
            msg = await receipt.finish(_msg())
            inodes.append((directory / prepared_name(60)).stat().st_ino)
        assert inodes[0] == inodes[1] and not any(".tmp" in n for n in _files(directory))
        follower.restore(msg.snapshot)
        assert _value(follower, b"k0001") == b"v0001" * 500
    finally:
        follower.close()


@pytest.mark.parametrize("connection", ["own", "shared"])
async def test_frames_after_a_snapshot_are_handed_on_after_its_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                        connection: str) -> None:
    """The MsgSnap is handed on once its store is built; what the leader sent after it (its
    appends from the snapshot's index on) must not overtake it: stepped first, they would be
    refused, and the leader would send the whole snapshot again.

    ``own``: the snapshot goes on a connection of its own, and the sender hears it was taken
    (``SNAP_ACK``) only once its message was handed on, so the appends it sends next, on the
    main connection, come after it; the heartbeats sent while the store is built arrive at
    once. ``shared`` (a receiver of a version without ``snapshot-connection``): on the main
    connection, where nothing after the snapshot is read until its message is handed on."""
    gate = _gated_build(monkeypatch)
    follower = _machine(tmp_path / "follower")
    got: list[int] = []
    features = wire.FEATURES if connection == "own" else tuple(
        f for f in wire.FEATURES if f != wire.FEATURE_SNAPSHOT_CONNECTION)
    append = Message(MessageType.APP, to=2, from_=1, term=3, log_term=4, index=60, commit=60)
    heartbeat = Message(MessageType.HEARTBEAT, to=2, from_=1, term=3)
    try:
        async with _leader_and_follower(tmp_path, follower, got, features=features) as (a, _b, next_piece):
            if connection == "own":
                sending = asyncio.get_running_loop().create_task(a.stream_snapshot(_msg(), next_piece))
                await asyncio.sleep(0.1)
                a.send([heartbeat])
                await asyncio.sleep(0.3)
                assert got == [wire.RAFT] and not sending.done()  # (the build is held: no answer yet)
                gate.set()
                assert await asyncio.wait_for(sending, 10)
                assert got == [wire.RAFT, wire.SNAP_END]
                a.send([append])
                want = [wire.RAFT, wire.SNAP_END, wire.RAFT]
            else:
                assert await a.stream_snapshot(_msg(), next_piece)
                a.send([append])
                await asyncio.sleep(0.3)
                assert got == []  # (the build is held: nothing handed on, the append waits too)
                gate.set()
                want = [wire.SNAP_END, wire.RAFT]
            for _ in range(200):
                if len(got) == len(want):
                    break
                await asyncio.sleep(0.02)
            assert got == want
    finally:
        gate.set()
        follower.close()


async def test_without_hard_links_the_file_is_renamed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_links(*_: Any) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(snapshot_receive.os, "link", no_links)
    follower = _machine(tmp_path / "follower")
    try:
        receipt = SnapshotReceiver(follower.store.backend).begin(1, lambda: None, lambda: None)
        for piece in _leader_pieces(tmp_path, 100):
            receipt.feed(piece)
        receipt.end()
        msg = await receipt.finish(_msg())
        assert prepared_name(60) in _files(follower.store.backend.directory)
        assert not any(".tmp" in n for n in _files(follower.store.backend.directory))
        follower.restore(msg.snapshot)
        assert _value(follower, b"k0099") == b"v0099" * 500
    finally:
        follower.close()


async def test_a_snapshot_connection_waiting_for_its_build_is_not_closed_as_silent(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--raft-read-timeout`` closes a peer connection nothing was read from for that long;
    a snapshot's connection that this member stopped reading (its build behind, or its
    message not yet handed on) is not silent by the peer's fault, and is kept."""
    gate = _gated_build(monkeypatch)
    follower = _machine(tmp_path / "follower")
    got: list[int] = []
    try:
        async with _leader_and_follower(tmp_path, follower, got, read_timeout_s=0.3) as (a, b, next_piece):
            sending = asyncio.get_running_loop().create_task(a.stream_snapshot(_msg(), next_piece))
            await asyncio.sleep(1.0)  # (three read timeouts, the build held)
            assert not sending.done()
            gate.set()
            assert await asyncio.wait_for(sending, 10)
            assert got == [wire.SNAP_END] and b.stats.snapshot_receive_success == {1: 1}
    finally:
        gate.set()
        follower.close()


@pytest.mark.parametrize("gone", [wire.FEATURE_SNAPSHOT_CONNECTION, wire.FEATURE_SNAPSHOT_FILE])
async def test_a_peer_that_no_longer_announces_what_a_snapshot_needs_gets_it_as_it_takes_it(
        tmp_path: Path, gone: str) -> None:
    """What a peer announced is kept across its restarts; one that restarted as an older kvraft
    (or on another platform) announces less. The snapshot connection's own handshake says so:
    that send fails (an older member would fail to install a file it cannot read), the
    features are refreshed, and the next send goes as the peer takes it."""
    follower = _machine(tmp_path / "follower")
    got: list[int] = []
    reports: list[bool] = []
    key, port_b = cluster_key("tok"), free_port()
    a = PeerTransport(1, key, lambda *_: None, on_snapshot_sent=lambda _to, ok: reports.append(ok))
    b = PeerTransport(2, key, lambda _source, kind, _body: got.append(kind),
                      receive_snapshot=SnapshotReceiver(follower.store.backend).begin,
                      features=tuple(f for f in wire.FEATURES if f != gone))
    try:
        await b.listen([f"http://127.0.0.1:{port_b}"])
        a.set_peer(2, f"http://127.0.0.1:{port_b}")
        for _ in range(100):
            if a._peers[2].connected:
                break
            await asyncio.sleep(0.02)
        a._peers[2].features = frozenset(wire.FEATURES)  # (what it announced before its restart)

        def pieces_of(where: str, file: bool) -> Callable[[], Any]:
            pieces = iter(_leader_pieces(tmp_path / where, 200, file=file))

            async def next_piece() -> bytes | None:
                return next(pieces, None)

            return next_piece

        assert not await a.stream_snapshot(_msg(), pieces_of("first", file=True))
        assert reports == [False] and got == [] and not a.supports(2, gone)
        file = a.supports(2, wire.FEATURE_SNAPSHOT_FILE)  # (what the leader's sender decides by)
        assert file == (gone != wire.FEATURE_SNAPSHOT_FILE)
        assert await a.stream_snapshot(_msg(), pieces_of("again", file=file))
        for _ in range(200):
            if got:
                break
            await asyncio.sleep(0.02)
        assert got == [wire.SNAP_END] and reports == [False, True]
    finally:
        await a.close()
        await b.close()
        follower.close()

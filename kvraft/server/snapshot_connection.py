"""A snapshot sent on a connection of its own (the sending side; etcd's ``snapshotSender``).

To a peer whose listener announced ``snapshot-connection`` (``wire.FEATURE_SNAPSHOT_CONNECTION``),
``PeerTransport`` sends a snapshot on a connection dialed for it alone, with the same handshake
as its main one: the chunks as the leader reads them (``SNAP_CHUNK``), each written once the
socket has room (under ``WRITE_BUFFER`` waiting), then the MsgSnap as ``SNAP_END`` ``[stream,
message, True]``. The receiver answers ``SNAP_ACK`` ``[stream, taken]`` once the message went to
its member (``snapshot_inbound``), and only then is the snapshot reported sent
(by the caller, ``PeerTransport._snapshot_connection``),
so the appends the leader sends next, on the main connection, reach the member after it. The
main connections meanwhile carry heartbeats and appends both ways, however slowly the receiver
builds its store: it stops reading only the snapshot's connection while its build is behind.
etcd sends snapshots on a connection of their own too (an HTTP POST to ``/raft/snapshot``,
answered once the snapshot was handed to Raft).

What a peer announced is kept across its restarts, so the handshake this connection just had
is read again: a peer that no longer announces ``snapshot-connection``, or ``snapshot-file``
for a snapshot sent as the store's file, fails the send (an older kvraft could not install a
file it cannot read); the core sends again, and the snapshot goes as the peer takes it now.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgpack

from kvraft.apply.state_machine import is_file_snapshot
from kvraft.raft.types import Message
from kvraft.server import wire
from kvraft.server.transport_inbound import HANDSHAKE_TIMEOUT_S

if TYPE_CHECKING:
    from kvraft.server.transport import PeerTransport, _Peer

__all__ = ["ACK_TIMEOUT_S", "WRITE_BUFFER", "send_on_own_connection"]

log = logging.getLogger("kvraft.transport")

ACK_TIMEOUT_S = 60.0
"""How long the sender waits for ``SNAP_ACK`` after the last frame (the receiver finishes its
store's build, syncs it and names it first)."""
WRITE_BUFFER = 4 << 20
"""The connection's write buffer before ``drain`` waits: a few chunks in flight."""

class _SourceFailed(Exception):
    """Reading a snapshot's pieces failed (the caller's error, raised as it is)."""


def _check_still_announced(peer: _Peer, feature: str) -> None:
    if feature not in peer.features:
        raise ConnectionError(f"the peer no longer announces {feature}: sent again as it takes snapshots now")


async def send_on_own_connection(owner: PeerTransport, peer: _Peer, msg: Message,
                                 next_piece: Callable[[], Awaitable[bytes | memoryview | None]], stream: int) -> bool:
    """Send the MsgSnap ``msg`` to ``peer``, with the pieces ``next_piece`` gives as its data, on
    a connection of its own, as stream ``stream`` (module docstring). Whether the receiver took
    it; the caller reports it. A failure of the connection or the peer is logged and returns
    False; an error of ``next_piece`` is raised."""
    target, ok, writer = msg.to, False, None
    try:
        async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
            reader, writer = await owner._dial(peer)
        peer.snapshot_writers.add(writer)
        _check_still_announced(peer, wire.FEATURE_SNAPSHOT_CONNECTION)
        writer.transport.set_write_buffer_limits(high=WRITE_BUFFER)
        first = True
        while True:
            try:
                piece = await next_piece()
            except Exception as exc:
                raise _SourceFailed() from exc
            if writer.transport.is_closing():
                raise ConnectionError("the snapshot's connection closed (the peer was removed)")
            if piece is None:
                break
            if first and is_file_snapshot(piece):
                _check_still_announced(peer, wire.FEATURE_SNAPSHOT_FILE)
            first = False
            _write(owner, writer, target, [wire.SNAP_CHUNK, [stream, piece]])
            async with asyncio.timeout(owner.write_timeout_s):
                await writer.drain()
        _write(owner, writer, target, [wire.SNAP_END, [stream, wire.message_to_wire(msg, False), True]])
        async with asyncio.timeout(owner.write_timeout_s):
            await writer.drain()
        async with asyncio.timeout(ACK_TIMEOUT_S):
            (length,) = wire.FRAME_LEN.unpack(await reader.readexactly(wire.FRAME_LEN.size))
            if length > 1024:
                raise ValueError(f"an answer of {length} bytes to a snapshot")
            answer = msgpack.unpackb(await reader.readexactly(length), raw=False)
        ok = answer == [wire.SNAP_ACK, [stream, True]]
        if not ok:
            log.warning("peer %x: did not take the snapshot at %d: %r", target,
                        msg.snapshot.metadata.index if msg.snapshot else 0, answer)
    except _SourceFailed as exc:
        assert exc.__cause__ is not None
        raise exc.__cause__ from None
    except (TimeoutError, OSError, ConnectionError, asyncio.IncompleteReadError, ValueError, IndexError,
            TypeError, msgpack.UnpackException) as exc:
        log.warning("peer %x: sending a snapshot failed: %r", target, exc)
    finally:
        if writer is not None:
            writer.close()
            peer.snapshot_writers.discard(writer)
    return ok


def _write(owner: PeerTransport, writer: asyncio.StreamWriter, target: int, frame: list[Any]) -> None:
    data = wire.encode_frame(frame)
    writer.write(data)
    stats = owner.stats
    stats.frames_sent += 1
    stats.bytes_sent[target] = stats.bytes_sent.get(target, 0) + len(data)

"""A snapshot's frames as a member receives them (the transport's side; the store's is
``kvraft.server.snapshot_receive``).

``SNAP_CHUNK`` ``[stream, piece]`` frames feed the stream's ``Receipt`` (made at its first
frame by the transport's ``receive_snapshot``, a ``SnapshotReceiver.begin``); ``SNAP_END``
``[stream, message(, True)]`` ends it: the connection holds the frames after it
(``Inbound.hold``) until the receipt has checked and kept the data and the MsgSnap went to
the member, so the member steps them in the order they were sent. A snapshot that does not
check out is dropped (the leader, hearing nothing, sends again) and counted. On a connection
of its own (``True``, ``kvraft.server.snapshot_connection``) the sender is answered
``SNAP_ACK`` ``[stream, taken]`` either way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from kvraft.durations import ETCD_SNAPSHOT_BUCKETS_S, DurationHistogram
from kvraft.raft.types import Message
from kvraft.server import wire
from kvraft.server.snapshot_receive import Receipt

if TYPE_CHECKING:
    from kvraft.server.transport import PeerTransport
    from kvraft.server.transport_inbound import Inbound

__all__ = ["chunk", "end"]

log = logging.getLogger("kvraft.transport")


def chunk(owner: PeerTransport, source: int, body: Any, inbound: Inbound) -> None:
    """A ``SNAP_CHUNK`` frame's body from ``source``."""
    receipt = inbound.receipts.get(body[0])
    if receipt is None:
        receipt = inbound.receipts[body[0]] = _begin(owner, source, inbound)
    receipt.feed(bytes(body[1]))


def end(owner: PeerTransport, source: int, body: Any, inbound: Inbound) -> None:
    """A ``SNAP_END`` frame's body from ``source``: the receipt finishes in a task of its own
    while the connection holds the frames after it."""
    receipt = inbound.receipts.pop(body[0], None) or _begin(owner, source, inbound)
    receipt.end()
    inbound.hold()
    ack = body[0] if len(body) > 2 and body[2] is True else None  # (on a connection of its own)
    task = asyncio.get_running_loop().create_task(
        _finish(owner, receipt, wire.message_from_wire(body[1], b""), inbound, ack))
    owner._receiving.add(task)
    task.add_done_callback(owner._receiving.discard)


def _begin(owner: PeerTransport, source: int, inbound: Inbound) -> Receipt:
    stats = owner.stats
    stats.snapshot_receive_inflight[source] = stats.snapshot_receive_inflight.get(source, 0) + 1
    return owner._receive_snapshot(source, inbound.pause, inbound.resume)


async def _finish(owner: PeerTransport, receipt: Receipt, msg: Message, inbound: Inbound, ack: int | None) -> None:
    """The data checked and kept (``Receipt.finish``), then the MsgSnap to the member, then
    the frames after it (``Inbound.release``)."""
    taken = False
    try:
        _received(owner, receipt, await receipt.finish(msg))
        taken = not owner._closed
    except Exception as exc:
        failures = owner.stats.snapshot_receive_failures
        failures[receipt.source] = failures.get(receipt.source, 0) + 1
        log.warning("dropped the snapshot %x sent (%d bytes): %s", receipt.source, receipt.bytes, exc)
    finally:
        owner.stats.snapshot_receive_inflight[receipt.source] -= 1
        if ack is not None:
            inbound.answer([wire.SNAP_ACK, [ack, taken]])
        inbound.release()


def _received(owner: PeerTransport, receipt: Receipt, msg: Message) -> None:
    source, stats = receipt.source, owner.stats
    took = time.monotonic() - receipt.started
    stats.snapshot_receive_success[source] = stats.snapshot_receive_success.get(source, 0) + 1
    hist = stats.snapshot_receive_seconds.get(source)
    if hist is None:
        hist = stats.snapshot_receive_seconds[source] = DurationHistogram(ETCD_SNAPSHOT_BUCKETS_S)
    hist.observe(took)
    assert msg.snapshot is not None
    log.info("received a snapshot at %d (%d bytes) from %x in %.3f s", msg.snapshot.metadata.index,
             receipt.bytes, source, took)
    if not owner._closed:
        owner._on_frame(source, wire.SNAP_END, msg)

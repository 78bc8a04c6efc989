"""Raft messages as msgpack-ready arrays, and the peer frame format.

A frame on a peer connection is a 4-byte big-endian length followed by that many bytes of
msgpack. After the handshake every frame is ``[kind, body]``:

- ``RAFT``: body is a list of messages (each ``message_to_wire``), a batch for one peer;
- ``SNAP_CHUNK``: ``[stream_id, chunk]`` one piece of a snapshot's data, in order;
- ``SNAP_END``: ``[stream_id, message]`` the MsgSnap itself, its data = the chunks joined (a
  receiver that builds the store as it arrives hands Raft a reference to it instead:
  ``kvraft.server.snapshot_receive``);
- ``FORWARD``: ``[data, ...]`` proposals a follower forwards to the leader;
- ``READ``: ``[ctx]`` a ReadIndex request a follower forwards to the leader;
- ``READ_RESP``: ``[ctx, index]`` the leader's answer (index 0: could not confirm);
- ``FORWARD_CONF``: ``data`` an encoded ConfChange a follower forwards to the leader;
- ``LEASE_RENEW``: ``[request_id, [lease_id, ...]]`` keepalives a follower forwards to the
  leader (``kvraft.server.lease_renew``);
- ``LEASE_RENEW_RESP``: ``[request_id, [ttl, ...] | None, revision]`` the leader's answer
  (a TTL of 0: no such lease; None: not the primary lessor, ask again).
- ``HASH_KV``: ``[request_id, revision]`` a peer's hash of its key-value history at a
  revision, asked for by the corruption checks (``kvraft.server.corruption``);
- ``HASH_KV_RESP``: ``[request_id, revision, hash, compact_revision, error]`` the answer
  (``error`` "" or why there is no hash: a future or compacted revision).
- ``PING``: ``t`` a probe (the sender's monotonic clock, ns); ``PONG``: ``t`` its echo,
  for the round-trip histogram (``PeerTransport``; etcd's prober).
- ``LEARNER_READY``: ``[request_id, member_id]`` a follower asks the leader whether a learner
  is in sync before promoting it (``kvraft.server.learner_ready``);
- ``LEARNER_READY_RESP``: ``[request_id, ready]`` the answer (None: the one asked does not lead).
- ``FORWARD_TERM``: ``[term, [data, ...]]`` proposals forwarded to the leader of ``term``: a
  receiver that does not lead in exactly that term drops them (never appends them at
  another term, never passes them on), so the sender knows every copy is in logs at
  ``term`` only and may propose them again once an entry of a later term has committed
  (``kvraft.server.driver``). Sent only to a listener whose handshake answer names
  ``forward-term`` (``FEATURES``); to others, ``FORWARD``.
- ``FORWARD_CONF_TERM``: ``[term, data]`` the same for a ConfChange.
- ``SNAP_ACK``: ``[stream_id, ok]`` the one frame a listener writes after the handshake: on a
  connection of its own that carried a snapshot (``FEATURE_SNAPSHOT_CONNECTION``), whose
  ``SNAP_END`` was ``[stream_id, message, True]``, once the MsgSnap went to the member (ok) or
  was dropped. The sender reports the snapshot sent only then, so the appends that follow it
  on the main connection reach the member after it.

(``READ``/``READ_RESP`` are reserved: the core forwards a follower's ReadIndex itself.)
"""

from __future__ import annotations

import hashlib
import hmac
import mmap
import struct
import sys
from typing import Any

import msgpack

from kvraft.raft.types import (
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    Snapshot,
    SnapshotMetadata,
)

__all__ = [
    "FEATURES",
    "FEATURE_FORWARD_TERM",
    "FEATURE_REQUEST_IDS",
    "FEATURE_SNAPSHOT_CONNECTION",
    "FEATURE_SNAPSHOT_FILE",
    "FEATURE_SNAPSHOT_STREAM",
    "FORWARD",
    "FORWARD_CONF",
    "FORWARD_CONF_TERM",
    "FORWARD_TERM",
    "FRAME_LEN",
    "FRAME_MAX_BYTES",
    "HASH_KV",
    "HASH_KV_RESP",
    "LEARNER_READY",
    "LEARNER_READY_RESP",
    "LEASE_RENEW",
    "LEASE_RENEW_RESP",
    "PING",
    "PONG",
    "RAFT",
    "READ",
    "READ_RESP",
    "SNAP_ACK",
    "SNAP_CHUNK",
    "SNAP_END",
    "encode_frame",
    "handshake_mac",
    "message_from_wire",
    "message_to_wire",
    "snapshot_from_wire",
    "snapshot_to_wire",
]

RAFT, SNAP_CHUNK, SNAP_END, FORWARD, READ, READ_RESP, FORWARD_CONF = range(1, 8)
LEASE_RENEW, LEASE_RENEW_RESP = 8, 9
HASH_KV, HASH_KV_RESP = 10, 11
PING, PONG = 12, 13
LEARNER_READY, LEARNER_READY_RESP = 14, 15
FORWARD_TERM, FORWARD_CONF_TERM = 16, 17
SNAP_ACK = 18
FEATURE_FORWARD_TERM = "forward-term"
FEATURE_REQUEST_IDS = "request-ids"
"""Not a frame: this member applies ``SessionOp`` entries (``kvraft.apply.sessions``); a
member proposes them only while every member has announced it (``Node.request_ids_missing``)."""
FEATURE_SNAPSHOT_STREAM = "snapshot-stream"
"""Not a frame: this member installs a snapshot whose data is ``[2, members]`` followed by the
store's stream as it is (``kvraft.apply.state_machine.split_snapshot``), which a leader sends
while it builds it (``kvraft.server.snapshot_send``); to others it sends ``[1, members, bin]``,
whose bin header needs the whole length first."""
FEATURE_SNAPSHOT_FILE = f"snapshot-file/{sys.byteorder}/{struct.calcsize('P') * 8}/{mmap.PAGESIZE}"
"""Not a frame: this member takes a snapshot sent as the leader's store file (``[4, members]``
and the LMDB file, ``kvraft.storage.snapshot.SnapshotFile``), on this platform: LMDB files are
not portable across byte orders, word sizes or page sizes, so the name carries them, and a
leader sends the file only to a member announcing the very name it would announce itself."""
FEATURE_SNAPSHOT_CONNECTION = "snapshot-connection"
"""This member's listener takes a snapshot on a connection dialed for it alone and answers its
``SNAP_END`` with ``SNAP_ACK`` (``kvraft.server.snapshot_connection``): the main connection's heartbeats
and appends never wait behind a snapshot's chunks, nor behind a receiver slow to build its
store (etcd sends snapshots on a connection of their own too). To others a snapshot goes on
the main connection."""
FEATURES = (FEATURE_FORWARD_TERM, FEATURE_REQUEST_IDS, FEATURE_SNAPSHOT_STREAM, FEATURE_SNAPSHOT_CONNECTION,
            FEATURE_SNAPSHOT_FILE)
"""What this version's listener announces in its handshake answer (``kvraft.server.transport``):
frames a dialer may send only to a listener that understands them (an older one ignores
frame kinds it does not know)."""
FRAME_MAX_BYTES = 64 * 1024 * 1024

_ENTRY_TYPES = {t.value: t for t in EntryType}
_MESSAGE_TYPES = {t.value: t for t in MessageType}


def _conf_to_wire(conf: ConfState) -> list[Any]:
    return [
        sorted(conf.voters),
        sorted(conf.learners),
        sorted(conf.voters_outgoing),
        sorted(conf.learners_next),
        conf.auto_leave,
    ]


def _conf_from_wire(wire: list[Any]) -> ConfState:
    return ConfState(
        frozenset(wire[0]), frozenset(wire[1]), frozenset(wire[2]), frozenset(wire[3]), bool(wire[4])
    )


def snapshot_to_wire(snapshot: Snapshot, with_data: bool = True) -> list[Any]:
    meta = snapshot.metadata
    return [meta.index, meta.term, _conf_to_wire(meta.conf_state), snapshot.data if with_data else b""]


def snapshot_from_wire(wire: list[Any], data: bytes | None = None) -> Snapshot:
    meta = SnapshotMetadata(wire[0], wire[1], _conf_from_wire(wire[2]))
    return Snapshot(meta, wire[3] if data is None else data)


def message_to_wire(msg: Message, with_snapshot_data: bool = True) -> list[Any]:
    return [
        int(msg.type),
        msg.to,
        msg.from_,
        msg.term,
        msg.log_term,
        msg.index,
        [[e.term, e.index, int(e.type), e.data] for e in msg.entries],
        msg.commit,
        None if msg.snapshot is None else snapshot_to_wire(msg.snapshot, with_snapshot_data),
        msg.reject,
        msg.reject_hint,
        msg.context,
    ]


def message_from_wire(wire: list[Any], snapshot_data: bytes | None = None) -> Message:
    """Rebuild a message; raises (KeyError, TypeError, ValueError, IndexError) when malformed."""
    if not isinstance(wire, list) or len(wire) != 12:
        raise ValueError("malformed raft message")
    entries = tuple(Entry(e[0], e[1], _ENTRY_TYPES[e[2]], bytes(e[3])) for e in wire[6])
    snap = None if wire[8] is None else snapshot_from_wire(wire[8], snapshot_data)
    for index in (1, 2, 3, 4, 5, 7, 10):
        if not isinstance(wire[index], int):
            raise ValueError("malformed raft message")
    return Message(
        _MESSAGE_TYPES[wire[0]],
        wire[1],
        wire[2],
        wire[3],
        wire[4],
        wire[5],
        entries,
        wire[7],
        snap,
        bool(wire[9]),
        wire[10],
        bytes(wire[11]),
    )


FRAME_LEN = struct.Struct(">I")
"""A frame's length prefix (big-endian u32)."""


def encode_frame(obj: Any) -> bytes:
    """``obj`` as a frame: its length, then its msgpack."""
    body: bytes = msgpack.packb(obj, use_bin_type=True)  # msgpack has no type hints
    return FRAME_LEN.pack(len(body)) + body


def handshake_mac(key: bytes, role: bytes, nonce_d: bytes, nonce_l: bytes, source: int, target: int) -> bytes:
    """The handshake's proof of the cluster key, for one role (dialer, listener, removed)."""
    text = b"|".join([role, nonce_d, nonce_l, str(source).encode(), str(target).encode()])
    return hmac.new(key, text, hashlib.sha256).digest()

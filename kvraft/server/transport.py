"""The peer transport: authenticated, persistent TCP connections carrying msgpack frames.

Each member dials one connection to every peer and sends on it; it receives on the
connections its peers dialed (so each pair of members shares two connections, one per
direction, and a slow receiver never blocks the sender's own reads).

Handshake (before any frame is accepted), with ``key`` the cluster secret (from
``--peer-secret-file``, else derived from ``--initial-cluster-token``)::

    dialer   -> ["kvraft-peer", 1, from_id, to_id, nonce_d]
    listener -> [nonce_l, HMAC(key, "listener" | nonce_d | nonce_l | from | to), features]
    dialer   -> [HMAC(key, "dialer" | nonce_d | nonce_l | from | to)]

Both sides prove they hold the key; a peer that fails is dropped. ``features`` (a list of
names, ``wire.FEATURES``; absent in an answer from a version before it) says which frames
the listener understands beyond the first version's: the dialer sends those only where
announced (``supports``), so members of two versions keep working together while one is
upgraded after the other. A member joining an
existing cluster does not know its id yet: it says hello as ``0`` to ``0`` and, once both
sides are proven, the listener answers one frame, the cluster as it knows it (the
``describe`` callback: etcd's ``/members`` on the peer port), and closes
(``ask_cluster``; ``kvraft.server.join``). Mutual TLS can be layered
underneath (``ssl`` contexts), and the HMAC exchange then runs inside TLS. A dial refused (a
certificate this side does not accept, or a listener that closes before answering the hello,
as one that refuses our certificate does) is logged as a warning once per distinct error,
not once per redial.

Sending never blocks the driver: ``send`` appends to a bounded per-peer queue; when the queue
is full (the peer is slow or gone) the messages are dropped and the peer is reported
unreachable, and Raft retransmits. All frames queued while a write is in flight go out as
one batch. A broken connection is redialled with jittered exponential backoff.
A malformed frame, or a frame over ``FRAME_MAX_BYTES``, closes only that connection.

A snapshot goes on a connection dialed for it alone, to a peer whose listener announced
``snapshot-connection`` (``kvraft.server.snapshot_connection``): the main connections go on
carrying heartbeats and appends however slowly the receiver builds its store. To an older
peer a snapshot goes on the main connection, in order with the other frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import random
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import msgpack

from kvraft.durations import ETCD_PEER_RTT_BUCKETS_S, DurationHistogram
from kvraft.raft.types import Message
from kvraft.server import snapshot_inbound, wire
from kvraft.server.cert_names import CertRule
from kvraft.server.snapshot_connection import send_on_own_connection
from kvraft.server.snapshot_receive import Receipt
from kvraft.server.tls_accept import HandshakeFailures, accepting
from kvraft.server.transport_inbound import HANDSHAKE_TIMEOUT_S, Inbound

__all__ = ["NoAnswer", "PeerTransport", "TransportStats", "WrongKey", "ask_cluster", "cluster_key"]

log = logging.getLogger("kvraft.transport")

WRITE_TIMEOUT_S = 10.0
SNAPSHOT_CHUNK_BYTES = 1024 * 1024
STREAM_BACKLOG = 8
"""A streamed snapshot's pieces queued for a peer at most (``stream_snapshot``): ~8 MiB."""
STREAM_STALL_S = 30.0
STREAM_POLL_S = 0.005
BACKOFF_MIN_S = 0.05
BACKOFF_MAX_S = 1.0
PROBE_INTERVAL_S = 4.0
"""How often each connected peer is probed for its round trip (etcd's prober: every 4 s)."""

FrameHandler = Callable[[int, int, Any], None]

_QUEUED_KINDS = frozenset({wire.SNAP_CHUNK, wire.SNAP_END})
"""Always through the sender task (which reports a snapshot's delivery after the drain)."""

RETURNED_KINDS = frozenset({wire.FORWARD, wire.FORWARD_CONF, wire.FORWARD_TERM, wire.FORWARD_CONF_TERM})
"""Frames handed back (``on_unsent``, ``take_unsent``) when not a byte of them was written:
proposals forwarded to a leader that never got them may go to the next one."""


def cluster_key(token: str, secret_file: str = "") -> bytes:
    if secret_file:
        with open(secret_file, "rb") as handle:
            secret = handle.read().strip()
        if not secret:
            raise ValueError(f"{secret_file} is empty")
        return hashlib.sha256(b"kvraft-peer-secret|" + secret).digest()
    return hashlib.sha256(b"kvraft-peer-token|" + token.encode()).digest()


@dataclass
class TransportStats:
    frames_sent: int = 0
    frames_received: int = 0
    messages_dropped: int = 0
    connections_rejected: int = 0
    malformed_frames: int = 0
    silent_closed: int = 0
    """Accepted connections closed for saying nothing past ``--raft-read-timeout``."""
    bytes_sent: dict[int, int] = field(default_factory=dict)  # per peer: etcd_network_peer_sent_bytes_total
    bytes_received: dict[int, int] = field(default_factory=dict)  # per peer: ..._received_bytes_total
    round_trip_seconds: dict[int, DurationHistogram] = field(default_factory=dict)
    """Per peer: the probes' round trips (etcd_network_peer_round_trip_time_seconds)."""
    sent_failures: dict[int, int] = field(default_factory=dict)
    """Per peer: messages that could not be sent (dropped: the peer is unreachable or slow;
    lost with a broken connection): etcd_network_peer_sent_failures_total."""
    received_failures: dict[int, int] = field(default_factory=dict)
    """Per peer: malformed frames from it (the connection is closed)."""
    active: dict[int, bool] = field(default_factory=dict)
    """Per peer ever connected: whether the connection to it is up (etcd_network_active_peers)."""
    disconnects: dict[int, int] = field(default_factory=dict)
    """Per peer: connections to it lost (etcd_network_disconnected_peers_total)."""
    snapshot_receive_success: dict[int, int] = field(default_factory=dict)
    """Per peer: snapshots received and checked (etcd_network_snapshot_receive_success)."""
    snapshot_receive_failures: dict[int, int] = field(default_factory=dict)
    """Per peer: snapshots cut off or damaged (etcd_network_snapshot_receive_failures)."""
    snapshot_receive_seconds: dict[int, DurationHistogram] = field(default_factory=dict)
    """Per peer: from a snapshot's first frame to its data kept (..._receive_total_duration_seconds)."""
    snapshot_receive_inflight: dict[int, int] = field(default_factory=dict)
    """Per peer: snapshots being received now (etcd_network_snapshot_receive_inflights_total)."""


def _messages(kind: int, body: Any) -> int:
    """Raft messages in a frame (a RAFT frame batches them; any other frame is one)."""
    return len(body) if kind == wire.RAFT else 1


@dataclass
class _Peer:
    member_id: int
    host: str
    port: int
    queue: deque[tuple[int, Any]] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    connected: bool = False
    connected_at: float | None = None
    """``time.monotonic()`` when the current connection came up; None while down."""
    broken: bool = False
    writer: asyncio.StreamWriter | None = None
    """Set while connected: ``send_frame`` writes to it at once when nothing is queued."""
    dial_error: str = ""
    """The refusal last logged for a failed dial (each new one is logged once)."""
    features: frozenset[str] = frozenset()
    """What the peer's listener announced in its last handshake answer (kept while down)."""
    snapshot_writers: set[asyncio.StreamWriter] = field(default_factory=set)
    """The connections dialed for a snapshot each (``snapshot_connection``): cut with the peer."""
    redial: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the peer dialed this member while this member's dial to it was down: it is
    listening, so the backoff's wait ends and the dial is tried at once."""


class _Refused(ConnectionError):
    """The listener closed the connection without answering the dialer's hello."""


class NoAnswer(_Refused):
    """The listener closed the connection without answering the hello (a certificate it
    refuses; to a joining member's question: a member of a version before the question)."""


class _Removed(ConnectionError):
    """The listener answered the hello that the dialer was removed from the cluster
    (etcd's 410 Gone to a removed member's stream)."""


class WrongKey(ConnectionError):
    """The listener's answer to the hello does not prove it holds this member's key: the two
    have different ``--initial-cluster-token`` (or ``--peer-secret-file``) values."""


async def _handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: bytes, source: int,
                     target: int, where: str, tls: bool) -> frozenset[str]:
    """The dialer's side of the handshake (module docstring), on a connection just opened;
    returns the features the listener announced."""
    nonce_d = os.urandom(16)
    writer.write(wire.encode_frame(["kvraft-peer", 1, source, target, nonce_d]))
    async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
        try:
            reply = await _read_frame(reader)
        except (asyncio.IncompleteReadError, ConnectionResetError):
            # (a TLS listener refusing our certificate closes without an alert: asyncio)
            raise NoAnswer(f"{where} closed the connection without answering the hello"
                           + (" (does it refuse our certificate?)" if tls else "")) from None
    nonce_l, mac_l = bytes(reply[0]), bytes(reply[1])
    if hmac.compare_digest(wire.handshake_mac(key, b"removed", nonce_d, nonce_l, source, target), mac_l):
        raise _Removed(f"{where} says this member was removed from the cluster")
    if not hmac.compare_digest(wire.handshake_mac(key, b"listener", nonce_d, nonce_l, source, target), mac_l):
        raise WrongKey(f"{where} does not hold this member's cluster key")
    writer.write(wire.encode_frame([wire.handshake_mac(key, b"dialer", nonce_d, nonce_l, source, target)]))
    await writer.drain()
    announced = reply[2] if len(reply) > 2 and isinstance(reply[2], list) else []
    return frozenset(name for name in announced if isinstance(name, str))


async def ask_cluster(url: str, key: bytes, client_ssl: ssl.SSLContext | Callable[[], ssl.SSLContext] | None = None,
                      cert_rule: CertRule | None = None) -> Any:
    """The cluster as the member listening at peer URL ``url`` knows it (its ``describe``
    answer), asked as a member that has no id yet. Raises ``WrongKey``, ``OSError`` (not
    reachable, refused), ``TimeoutError``, ``ValueError`` (not a kvraft member's answer)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 2380
    context = client_ssl() if callable(client_ssl) else client_ssl  # (as a member's dial: TLS when configured)
    async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
        reader, writer = await asyncio.open_connection(host, port, ssl=context)
    try:
        why = (cert_rule or CertRule("peer")).refusal(writer.get_extra_info("peercert"))
        if why:
            raise _Refused(f"{host}:{port}: {why}")
        await _handshake(reader, writer, key, 0, 0, f"{host}:{port}", context is not None)
        async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
            try:
                return await _read_frame(reader)
            except asyncio.IncompleteReadError:
                raise NoAnswer(f"{host}:{port} closed the connection without describing the cluster") from None
    except (IndexError, TypeError, msgpack.UnpackException) as exc:
        raise ValueError(f"{host}:{port}: not a kvraft member's answer ({exc!r})") from None
    finally:
        writer.close()


async def _read_frame(reader: asyncio.StreamReader) -> Any:
    return (await _read_sized_frame(reader))[0]


async def _read_sized_frame(reader: asyncio.StreamReader) -> tuple[Any, int]:
    """A frame and its size on the wire."""
    (length,) = wire.FRAME_LEN.unpack(await reader.readexactly(4))
    if length > wire.FRAME_MAX_BYTES:
        raise ValueError(f"frame of {length} bytes is over the limit")
    return msgpack.unpackb(await reader.readexactly(length), raw=False), wire.FRAME_LEN.size + length


def _inactive(member_id: int, error: BaseException) -> None:
    log.warning("peer became inactive (message send to peer failed)",
                extra={"fields": {"peer-id": f"{member_id:x}", "error": repr(error)}})


class PeerTransport:
    def __init__(
        self,
        member_id: int,
        key: bytes,
        on_frame: FrameHandler,
        on_unreachable: Callable[[int], None] | None = None,
        on_snapshot_sent: Callable[[int, bool], None] | None = None,
        server_ssl: ssl.SSLContext | None = None,
        client_ssl: ssl.SSLContext | Callable[[], ssl.SSLContext] | None = None,
        queue_max: int = 8192,
        probe_interval_s: float = PROBE_INTERVAL_S,
        cert_rule: CertRule | None = None,
        handshake_failures: HandshakeFailures | None = None,
        is_removed: Callable[[int], bool] | None = None,
        on_removed: Callable[[int], None] | None = None,
        describe: Callable[[], Any] | None = None,
        on_unsent: FrameHandler | None = None,
        on_features: Callable[[int, frozenset[str]], None] | None = None,
        check_san: bool = True,
        write_timeout_s: float = WRITE_TIMEOUT_S,
        read_timeout_s: float = 0.0,
        local_address: str | None = None,
        receive_snapshot: Callable[[int, Callable[[], None], Callable[[], None]], Receipt] | None = None,
        features: tuple[str, ...] = wire.FEATURES,
    ) -> None:
        self.member_id = member_id
        self.features = features
        """What the listener announces in its handshake answers (an older version's, in tests)."""
        self._receive_snapshot = receive_snapshot or (lambda source, _pause, _resume: Receipt(None, source))
        """Makes the ``Receipt`` of a snapshot a peer starts sending (source, pause reading,
        resume reading): ``SnapshotReceiver.begin`` builds a streamed snapshot's store as it
        arrives; by default every snapshot is joined in memory."""
        self._receiving: set[asyncio.Task[None]] = set()
        self._snapshot_tasks: set[asyncio.Task[bool]] = set()
        """Snapshots sent on connections of their own (``send_snapshot``'s)."""
        self.local_address = local_address
        """The address peer connections leave from (etcd 3.6's SetMemberLocalAddr); None: the
        system's choice."""
        self.write_timeout_s = write_timeout_s
        """A peer that takes no bytes for this long is gone or wedged: redial (``--raft-write-timeout``)."""
        self.read_timeout_s = read_timeout_s
        """An accepted connection silent this long is closed (``--raft-read-timeout``; 0: never).
        With it the probes come at least three times as often, as etcd's link heartbeats."""
        if read_timeout_s > 0:
            probe_interval_s = min(probe_interval_s, read_timeout_s / 3)
        self.check_san = check_san
        """Whether an accepted peer's certificate must name the address it connects from
        (etcd's ``checkSAN``; off: ``--peer-skip-client-san-verification``)."""
        self._on_features = on_features or (lambda _id, _features: None)
        """Called with (peer, features) after each handshake answer (``peer_features``)."""
        self._on_unsent = on_unsent or (lambda _id, _kind, _body: None)
        """Called with (peer, kind, body) for a frame of ``RETURNED_KINDS`` dropped unwritten
        (its connection failed before the sender took it from the queue)."""
        self._describe = describe
        """The answer to a joining member (``ask_cluster``); None: such hellos are refused."""
        self._is_removed = is_removed or (lambda _id: False)
        """Whether a dialer's id was removed from the cluster: its hello is answered so."""
        self._on_removed = on_removed or (lambda _id: None)
        """Called with the peer that answered this member's hello that it was removed."""
        self._key = key
        self._on_frame = on_frame
        self._on_unreachable = on_unreachable or (lambda _id: None)
        self._on_snapshot_sent = on_snapshot_sent or (lambda _id, _ok: None)
        self._server_ssl = server_ssl
        self._client_ssl = client_ssl
        self._queue_max = queue_max
        self._peers: dict[int, _Peer] = {}
        self._servers: list[asyncio.base_events.Server] = []
        self._inbound: set[Inbound] = set()
        self._retiring: set[int] = set()  # removed members whose connections close soon (retire_peer)
        self._snap_seq = 0
        self._closed = False
        self._prober: asyncio.Task[None] | None = None
        self._probe_interval_s = probe_interval_s
        self.cert_rule = cert_rule or CertRule("peer")
        """--peer-cert-allowed-cn/-hostname: checked on the certificate of every peer connection,
        accepted or dialed (kvraft.server.cert_names)."""
        self.stats = TransportStats()
        self.handshake_failures = handshake_failures or HandshakeFailures()
        """Handshakes the peer listener refused (kvraft.server.tls_accept): logged and counted."""
        self.reuse_port = False
        """SO_REUSEPORT on the peer listeners (``--socket-reuse-port``)."""

    # -- lifecycle --------------------------------------------------------------------
    async def listen(self, urls: list[str]) -> None:
        for url in urls:
            parts = urlsplit(url)
            factory, context = accepting(lambda: Inbound(self), self._server_ssl, "peer", self.handshake_failures)
            server = await asyncio.get_running_loop().create_server(
                factory, parts.hostname, parts.port or 2380, ssl=context, reuse_address=True,
                reuse_port=self.reuse_port or None,
            )
            self._servers.append(server)
        if self._prober is None:
            self._prober = asyncio.get_running_loop().create_task(self._probe_loop(self._probe_interval_s))

    async def close(self) -> None:
        self._closed = True
        if self._prober is not None:
            self._prober.cancel()
        for server in self._servers:
            server.close()
        for peer in list(self._peers.values()):
            self.remove_peer(peer.member_id)
        for inbound in list(self._inbound):
            inbound.close()
        for task in list(self._receiving):  # (their builds end: each was told its stream ended)
            task.cancel()
        for sending in list(self._snapshot_tasks):
            sending.cancel()
        for server in self._servers:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await server.wait_closed()

    def set_peer(self, member_id: int, url: str) -> None:
        if member_id == self.member_id:
            return
        parts = urlsplit(url)
        old = self._peers.get(member_id)
        if old is not None and (old.host, old.port) == (parts.hostname, parts.port):
            return
        if old is not None:
            self.remove_peer(member_id)
        peer = _Peer(member_id, parts.hostname or "127.0.0.1", parts.port or 2380)
        peer.task = asyncio.get_running_loop().create_task(self._run_peer(peer))
        self._peers[member_id] = peer

    def remove_peer(self, member_id: int) -> None:
        peer = self._peers.pop(member_id, None)
        if peer is not None and peer.task is not None:
            peer.task.cancel()
        if peer is not None:
            for writer in peer.snapshot_writers:
                writer.transport.abort()

    def retire_peer(self, member_id: int, grace_s: float) -> None:
        """A member removed from the cluster: for ``grace_s`` what is queued or sent to it still
        goes (the leader's commit of its removal, sent in the Ready that applies it or held a
        moment for the next MsgApp: the member applies its own removal, answers a client that
        asked it, and stops), then its connection closes, and so do those it dialed here. It
        dials again and its hello is answered that it was removed (etcd's 410 Gone to a removed
        member's stream), so a member that missed its removal (cut off, or too slow for the
        grace) learns of it all the same. Before, it went on running without a leader, and a
        ``member remove`` sent to it waited out its 7 s deadline."""
        if member_id in self._retiring or member_id not in self._peers:
            return
        self._retiring.add(member_id)
        asyncio.get_running_loop().call_later(grace_s, self._retire, member_id)

    def _retire(self, member_id: int) -> None:
        self._retiring.discard(member_id)
        self.remove_peer(member_id)
        for inbound in list(self._inbound):
            if inbound.source == member_id:
                inbound.close()

    def peers(self) -> list[int]:
        return sorted(self._peers)

    def connected(self, member_id: int) -> bool:
        peer = self._peers.get(member_id)
        return peer is not None and peer.connected

    def supports(self, member_id: int, feature: str) -> bool:
        """Whether the peer's listener announced ``feature`` (``wire.FEATURES``) in its last
        handshake answer; False before the first one."""
        peer = self._peers.get(member_id)
        return peer is not None and feature in peer.features

    def active_since(self, member_id: int) -> float | None:
        """When the connection to the peer came up (``time.monotonic()``), None while it is
        down or the peer is unknown (etcd's ``ActiveSince``; ``--strict-reconfig-check``)."""
        peer = self._peers.get(member_id)
        return peer.connected_at if peer is not None else None

    # -- sending ----------------------------------------------------------------------
    def send(self, messages: tuple[Message, ...] | list[Message]) -> None:
        batches: dict[int, list[Any]] = {}
        for msg in messages:
            if msg.snapshot is not None and not msg.snapshot.is_empty():
                data = memoryview(msg.snapshot.data)  # (pieces of it, not copies)
                self.send_snapshot(msg, (data[i : i + SNAPSHOT_CHUNK_BYTES]
                                         for i in range(0, len(data), SNAPSHOT_CHUNK_BYTES)))
                continue
            batches.setdefault(msg.to, []).append(wire.message_to_wire(msg))
        for target, batch in batches.items():
            self.send_frame(target, wire.RAFT, batch)

    def send_frame(self, target: int, kind: int, body: Any) -> bool:
        peer = self._peers.get(target)
        if peer is None:
            return False
        writer = peer.writer
        if (
            writer is not None
            and not peer.queue
            and not peer.broken
            and kind not in _QUEUED_KINDS
            and writer.transport.get_write_buffer_size() == 0
            and not writer.transport.is_closing()
        ):
            # the connection is idle: write now (no wake-up of the peer's task between a
            # Ready and its messages; a leader's MsgApp is on the wire before its own
            # fsync starts). Order holds: the queue is empty and the sender task writes
            # what it pops without awaiting in between.
            frame = wire.encode_frame([kind, body])
            writer.write(frame)
            self.stats.frames_sent += 1
            sent = self.stats.bytes_sent
            sent[target] = sent.get(target, 0) + len(frame)
            return True
        if len(peer.queue) >= self._queue_max:
            self._failed(target, _messages(kind, body))
            self._on_unreachable(target)
            return False
        peer.queue.append((kind, body))
        peer.wake.set()
        return True

    def send_snapshot(self, msg: Message, pieces: Iterable[bytes | memoryview]) -> None:
        """Send the MsgSnap ``msg`` with ``pieces`` joined as its data (the message's own data
        is not sent): a ``SNAP_CHUNK`` frame per piece, then ``SNAP_END``. A leader's sender
        hands the pieces it built (``snapshot_send``), so the data is never joined on its side."""
        if self.supports(msg.to, wire.FEATURE_SNAPSHOT_CONNECTION):
            source = iter(pieces)

            async def next_piece() -> bytes | memoryview | None:
                return next(source, None)

            task = asyncio.get_running_loop().create_task(self._snapshot_connection(msg, next_piece))
            self._snapshot_tasks.add(task)
            task.add_done_callback(self._snapshot_tasks.discard)
            return
        self._snap_seq += 1
        stream = self._snap_seq
        for piece in pieces:
            if not self._snap_frame(msg.to, wire.SNAP_CHUNK, [stream, piece]):
                return
        self._snap_frame(msg.to, wire.SNAP_END, [stream, wire.message_to_wire(msg, False)])

    def _snap_frame(self, target: int, kind: int, body: Any) -> bool:
        """``send_frame`` for a snapshot's frame; a frame not queued fails the snapshot
        (reported to ``on_snapshot_sent``)."""
        if self.send_frame(target, kind, body):
            return True
        self._on_snapshot_sent(target, False)
        return False

    async def stream_snapshot(self, msg: Message, next_piece: Callable[[], Awaitable[bytes | None]]) -> bool:
        """``send_snapshot`` for pieces that come one at a time (a leader's build in a worker
        thread; ``next_piece`` gives None after the last): each is queued once the peer's queue
        is under ``STREAM_BACKLOG`` frames, so the leader holds a few pieces, not the snapshot.
        Whether every frame was queued; a failure (the peer gone, its connection down, or no
        room for ``STREAM_STALL_S``) is reported to ``on_snapshot_sent``, as ``send_snapshot``
        reports it. An error of ``next_piece`` is raised (the caller reports it). To a peer
        that takes snapshots on a connection of their own, the stream goes there, and this
        returns once the receiver answered (``_snapshot_connection``)."""
        if self.supports(msg.to, wire.FEATURE_SNAPSHOT_CONNECTION):
            return await self._snapshot_connection(msg, next_piece)
        self._snap_seq += 1
        stream = self._snap_seq
        while (piece := await next_piece()) is not None:
            stalled = time.monotonic() + STREAM_STALL_S
            while True:
                peer = self._peers.get(msg.to)
                if peer is None or peer.broken or peer.writer is None or time.monotonic() > stalled:
                    self._on_snapshot_sent(msg.to, False)
                    return False
                if len(peer.queue) < STREAM_BACKLOG:
                    break
                await asyncio.sleep(STREAM_POLL_S)
            if not self._snap_frame(msg.to, wire.SNAP_CHUNK, [stream, piece]):
                return False
        return self._snap_frame(msg.to, wire.SNAP_END, [stream, wire.message_to_wire(msg, False)])

    async def _snapshot_connection(self, msg: Message,
                                   next_piece: Callable[[], Awaitable[bytes | memoryview | None]]) -> bool:
        """Send the MsgSnap ``msg`` on a connection dialed for it alone
        (``kvraft.server.snapshot_connection``) and report the outcome to ``on_snapshot_sent``
        (not when cancelled: the member stops or the peer went; an error of ``next_piece`` is
        raised, for the caller to report)."""
        self._snap_seq += 1
        peer = self._peers.get(msg.to)
        ok = peer is not None and not self._closed and await send_on_own_connection(
            self, peer, msg, next_piece, self._snap_seq)
        if not self._closed:
            self._on_snapshot_sent(msg.to, ok)
        return ok

    async def _dial(self, peer: _Peer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Connect to the peer and pass the handshake (its announced features recorded)."""
        # (a callable: the context with the CRL in force, kvraft.server.crl.CRLContexts.current)
        context = self._client_ssl() if callable(self._client_ssl) else self._client_ssl
        local = (self.local_address, 0) if self.local_address else None
        reader, writer = await asyncio.open_connection(peer.host, peer.port, ssl=context, local_addr=local)
        try:
            why = self.cert_rule.refusal(writer.get_extra_info("peercert"))
            if why:
                raise _Refused(f"{peer.host}:{peer.port}: {why}")
            peer.features = await _handshake(reader, writer, self._key, self.member_id, peer.member_id,
                                             f"peer {peer.member_id:x} at {peer.host}:{peer.port}",
                                             context is not None)
            self._on_features(peer.member_id, peer.features)
        except BaseException:
            writer.close()
            raise
        return reader, writer

    @staticmethod
    async def _watch_eof(peer: _Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """The listener never writes after the handshake: any read completing means closed.
        The connection is aborted at once, so a sender blocked in ``drain`` (the peer had
        stopped reading before it went away) fails now instead of waiting on a dead socket."""
        with contextlib.suppress(Exception):
            await reader.read(1)
        peer.broken = True
        peer.wake.set()
        writer.transport.abort()

    async def _run_peer(self, peer: _Peer) -> None:
        backoff = BACKOFF_MIN_S
        while not self._closed:
            writer = None
            eof_task = None
            unsent = 0  # messages written but not drained when the connection breaks
            peer.redial.clear()  # (set while this dial fails: the wait after it ends at once)
            try:
                async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
                    reader, writer = await self._dial(peer)
                peer.connected, peer.broken, peer.dial_error = True, False, ""
                peer.connected_at = time.monotonic()
                self.stats.active[peer.member_id] = True
                # (etcd's rafthttp lines, which operators grep for; with the address dialled)
                log.info("peer became active", extra={"fields": {"peer-id": f"{peer.member_id:x}",
                                                                 "address": f"{peer.host}:{peer.port}"}})
                eof_task = asyncio.get_running_loop().create_task(self._watch_eof(peer, reader, writer))
                backoff = BACKOFF_MIN_S
                peer.writer = writer
                while True:
                    if not peer.queue:
                        peer.wake.clear()
                        await peer.wake.wait()
                    if peer.broken:
                        raise ConnectionError("closed by the peer")
                    frames = []
                    snapshot_ends = []
                    while peer.queue:
                        kind, body = peer.queue.popleft()
                        if kind == wire.SNAP_END:
                            snapshot_ends.append(body)
                        frames.append(wire.encode_frame([kind, body]))
                        unsent += _messages(kind, body)
                    writer.writelines(frames)
                    # a peer that takes no bytes for this long is gone or wedged: redial
                    async with asyncio.timeout(self.write_timeout_s):
                        await writer.drain()
                    unsent = 0
                    self.stats.frames_sent += len(frames)
                    sent = self.stats.bytes_sent
                    sent[peer.member_id] = sent.get(peer.member_id, 0) + sum(map(len, frames))
                    for _ in snapshot_ends:
                        self._on_snapshot_sent(peer.member_id, True)
            except asyncio.CancelledError:
                peer.writer = None
                if writer is not None:
                    writer.close()
                if eof_task is not None:
                    eof_task.cancel()
                raise
            except _Removed as exc:
                log.error("peer %x: %s", peer.member_id, exc)
                self._on_removed(peer.member_id)
            except (ssl.SSLError, _Refused) as exc:  # (an OSError) a certificate refused, here or there
                text = str(exc) if isinstance(exc, _Refused) else f"TLS with {peer.host}:{peer.port} failed: {exc}"
                if peer.connected:
                    _inactive(peer.member_id, exc)
                elif text != peer.dial_error:
                    peer.dial_error = text
                    log.warning("peer %x: %s", peer.member_id, text)
            except (TimeoutError, OSError, ConnectionError, asyncio.IncompleteReadError, ValueError, IndexError, TypeError, msgpack.UnpackException) as exc:
                if peer.connected:  # once per lost connection, not per failed redial
                    _inactive(peer.member_id, exc)
                else:
                    log.debug("peer %x: %s", peer.member_id, exc)
            except Exception as exc:  # never let the sender die: a dead task means a peer cut off for good
                log.warning("peer %x: sender failed, redialling: %r", peer.member_id, exc)
            peer.writer = None
            if writer is not None:
                writer.close()
            if eof_task is not None:
                eof_task.cancel()
            if peer.connected:  # a connection lost, whatever broke it
                self.stats.active[peer.member_id] = False
                disconnects = self.stats.disconnects
                disconnects[peer.member_id] = disconnects.get(peer.member_id, 0) + 1
            peer.connected, peer.connected_at = False, None
            if unsent:
                self._failed(peer.member_id, unsent)
            self._fail_queue(peer)
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # a cancel that reached ``wait_for`` as its dial failed comes out as the
                # dial's error (asyncio.wait_for in 3.11 may swallow it): stop anyway, or
                # this loop outlives the member and its shutdown waits for it for ever
                raise asyncio.CancelledError
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(backoff * random.uniform(0.5, 1.5)):
                    await peer.redial.wait()
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    def _dialed_by(self, member_id: int) -> None:
        """A peer's connection to this member is authenticated: if this member's own dial to
        it is down (it was not listening yet), try again now instead of after the backoff, so
        a cluster whose members start a moment apart is fully connected (and every peer's
        features known, the gate of numbered writes) as soon as the last one listens."""
        peer = self._peers.get(member_id)
        if peer is not None and not peer.connected:
            peer.redial.set()

    def _fail_queue(self, peer: _Peer) -> None:
        dropped = 0
        while peer.queue:
            kind, body = peer.queue.popleft()
            dropped += _messages(kind, body)
            if kind == wire.SNAP_END:
                self._on_snapshot_sent(peer.member_id, False)
            elif kind in RETURNED_KINDS:  # never written (the sender writes what it pops at once)
                self._on_unsent(peer.member_id, kind, body)
        if dropped:
            self._failed(peer.member_id, dropped)
        self._on_unreachable(peer.member_id)

    def take_unsent(self, member_id: int) -> list[tuple[int, Any]]:
        """Take back the frames of ``RETURNED_KINDS`` still queued for ``member_id`` (not a
        byte of them written; the others keep their order)."""
        peer = self._peers.get(member_id)
        if peer is None or not any(kind in RETURNED_KINDS for kind, _ in peer.queue):
            return []
        taken = [(kind, body) for kind, body in peer.queue if kind in RETURNED_KINDS]
        kept = [(kind, body) for kind, body in peer.queue if kind not in RETURNED_KINDS]
        peer.queue.clear()
        peer.queue.extend(kept)
        return taken

    def _failed(self, target: int, messages: int) -> None:
        self.stats.messages_dropped += messages
        failures = self.stats.sent_failures
        failures[target] = failures.get(target, 0) + messages

    # -- round trips ------------------------------------------------------------------
    async def _probe_loop(self, interval_s: float) -> None:
        """Send every connected peer a ``PING`` with the time; its ``PONG`` echoes it back.
        With a read timeout, also close the accepted connections silent past it."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval_s)
            for member_id, peer in list(self._peers.items()):
                if peer.connected:
                    self.send_frame(member_id, wire.PING, time.monotonic_ns())
            if self.read_timeout_s > 0:  # (silence measured at this loop's interval, a third of the timeout)
                now = loop.time()
                for inbound in list(self._inbound):
                    if inbound.heard:
                        inbound.heard, inbound.last_read = False, now
                    elif (inbound.state == "frames" and not inbound.paused
                          and now - inbound.last_read > self.read_timeout_s):  # (not one paused here)
                        log.warning("closing the connection from peer %x: nothing read for %.1f s "
                                    "(--raft-read-timeout %.1f s)", inbound.source, now - inbound.last_read,
                                    self.read_timeout_s)
                        self.stats.silent_closed += 1
                        inbound.close()

    def _ponged(self, source: int, sent_ns: Any) -> None:
        if not isinstance(sent_ns, int):
            raise ValueError("malformed pong")
        seconds = (time.monotonic_ns() - sent_ns) / 1e9
        if seconds < 0:
            raise ValueError("a pong from the future")
        hist = self.stats.round_trip_seconds.get(source)
        if hist is None:
            hist = self.stats.round_trip_seconds[source] = DurationHistogram(ETCD_PEER_RTT_BUCKETS_S)
        hist.observe(seconds)

    # -- receiving --------------------------------------------------------------------
    def _hello(self, hello: Any) -> tuple[int, int, bytes, bytes]:
        """Check a dialer's hello; (its id, the id it addressed, its nonce, this listener's
        nonce). ``0`` to ``0`` is a joining member asking for the cluster."""
        if not (isinstance(hello, list) and len(hello) == 5 and hello[0] == "kvraft-peer" and hello[1] == 1):
            raise ValueError("not a kvraft peer hello")
        source, target, nonce_d = int(hello[2]), int(hello[3]), bytes(hello[4])
        joining = source == target == 0 and self._describe is not None
        if target != self.member_id and not joining:
            raise ValueError(f"hello addressed to {target:x}, this member is {self.member_id:x}")
        return source, target, nonce_d, os.urandom(16)

    def _received(self, source: int, frame: Any, size: int, inbound: Inbound) -> None:
        """One frame from an authenticated peer, to the handler (raises when malformed)."""
        self.stats.frames_received += 1
        received = self.stats.bytes_received
        received[source] = received.get(source, 0) + size
        kind, body = frame[0], frame[1]
        if kind == wire.SNAP_CHUNK:
            snapshot_inbound.chunk(self, source, body, inbound)
            return
        if kind == wire.SNAP_END:
            snapshot_inbound.end(self, source, body, inbound)
            return
        elif kind == wire.RAFT:
            body = [wire.message_from_wire(m) for m in body]
        elif kind == wire.PING:  # answered here, at once: the round trip is the transport's
            self.send_frame(source, wire.PONG, body)
            return
        elif kind == wire.PONG:
            self._ponged(source, body)
            return
        self._on_frame(source, kind, body)

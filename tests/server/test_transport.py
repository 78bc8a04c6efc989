"""The peer transport over real loopback sockets: delivery, batching, snapshots, auth, bad frames."""

from __future__ import annotations

import asyncio
import socket
import struct

import msgpack

from kvraft.raft.types import ConfState, Entry, Message, MessageType, Snapshot, SnapshotMetadata
from kvraft.server import wire
from kvraft.server.transport import PeerTransport, cluster_key
from kvraft.testing.ports import free_port


class Inbox:
    def __init__(self) -> None:
        self.frames: list[tuple[int, int, object]] = []
        self.event = asyncio.Event()

    def __call__(self, source: int, kind: int, body: object) -> None:
        self.frames.append((source, kind, body))
        self.event.set()

    async def wait_for(self, count: int, timeout_s: float = 10.0) -> None:
        async def _wait() -> None:
            while sum(len(b) if k == wire.RAFT else 1 for _, k, b in self.frames) < count:
                self.event.clear()
                await self.event.wait()

        await asyncio.wait_for(_wait(), timeout_s)


async def make_pair(key_a: bytes, key_b: bytes):
    inbox_a, inbox_b = Inbox(), Inbox()
    port_a, port_b = free_port(), free_port()
    a = PeerTransport(1, key_a, inbox_a)
    b = PeerTransport(2, key_b, inbox_b)
    await a.listen([f"http://127.0.0.1:{port_a}"])
    await b.listen([f"http://127.0.0.1:{port_b}"])
    a.set_peer(2, f"http://127.0.0.1:{port_b}")
    b.set_peer(1, f"http://127.0.0.1:{port_a}")
    return a, b, inbox_a, inbox_b, port_b


def app(to: int, index: int) -> Message:
    entries = (Entry(2, index, data=b"x" * 100),)
    return Message(MessageType.APP, to=to, from_=1, term=2, log_term=2, index=index - 1, entries=entries, commit=index - 1)


async def test_messages_are_delivered_in_order_and_batched() -> None:
    key = cluster_key("tok")
    a, b, _, inbox_b, _ = await make_pair(key, key)
    try:
        a.send([app(2, i) for i in range(1, 201)])
        await inbox_b.wait_for(200)
        got = [m for _, kind, body in inbox_b.frames if kind == wire.RAFT for m in body]
        assert [m.index for m in got] == list(range(0, 200))
        assert got[5] == app(2, 6)
        assert all(source == 1 for source, _, _ in inbox_b.frames)
    finally:
        await a.close()
        await b.close()


async def test_snapshot_is_streamed_in_chunks_and_reported() -> None:
    key = cluster_key("tok")
    a, b, _, inbox_b, _ = await make_pair(key, key)
    reports: list[tuple[int, bool]] = []
    a._on_snapshot_sent = lambda target, ok: reports.append((target, ok))
    try:
        data = bytes(range(256)) * 20000  # ~5 MiB: several chunks
        snap = Snapshot(SnapshotMetadata(50, 3, ConfState(frozenset({1, 2, 3}))), data)
        a.send([Message(MessageType.SNAP, to=2, from_=1, term=3, snapshot=snap)])
        await inbox_b.wait_for(1)
        (_, kind, msg), = inbox_b.frames
        assert kind == wire.SNAP_END
        assert msg.snapshot == snap
        for _ in range(100):
            if reports:
                break
            await asyncio.sleep(0.05)
        assert reports == [(2, True)]
    finally:
        await a.close()
        await b.close()


async def test_a_snapshot_sent_as_pieces_arrives_joined() -> None:
    """``send_snapshot``: the leader's pieces (of any sizes) go as they are, the message's own
    data is not sent, and the follower gets one MsgSnap whose data is the pieces joined."""
    key = cluster_key("tok")
    a, b, _, inbox_b, _ = await make_pair(key, key)
    try:
        pieces = [b"head", bytes(range(256)) * 9000, b"", bytes(3 << 20)]
        meta = SnapshotMetadata(70, 4, ConfState(frozenset({1, 2})))
        a.send_snapshot(Message(MessageType.SNAP, to=2, from_=1, term=4, snapshot=Snapshot(meta, b"ignored")), pieces)
        await inbox_b.wait_for(1)
        (_, kind, msg), = inbox_b.frames
        assert kind == wire.SNAP_END and msg.snapshot == Snapshot(meta, b"".join(pieces))
    finally:
        await a.close()
        await b.close()


async def test_a_streamed_snapshot_arrives_joined_and_the_sender_holds_a_few_pieces() -> None:
    """``stream_snapshot``: pieces come one at a time (a leader's read of its store); each is
    queued once the peer's queue is short, so at most ``STREAM_BACKLOG`` wait at the sender;
    the follower gets one MsgSnap with the pieces joined, and the send is reported."""
    from kvraft.server.transport import STREAM_BACKLOG

    key = cluster_key("tok")
    a, b, _, inbox_b, _ = await make_pair(key, key)
    reports: list[tuple[int, bool]] = []
    a._on_snapshot_sent = lambda target, ok: reports.append((target, ok))
    try:
        a.send([app(2, 1)])  # (connected first: a stream needs the connection up)
        await inbox_b.wait_for(1)
        pieces = [bytes([i]) * (256 << 10) for i in range(40)]  # 10 MiB
        backlog: list[int] = []

        async def next_piece() -> bytes | None:
            backlog.append(len(a._peers[2].queue))
            return pieces[len(backlog) - 1] if len(backlog) <= len(pieces) else None

        meta = SnapshotMetadata(90, 5, ConfState(frozenset({1, 2})))
        assert await a.stream_snapshot(Message(MessageType.SNAP, to=2, from_=1, term=5, snapshot=Snapshot(meta)),
                                       next_piece)
        await inbox_b.wait_for(2)
        kind, msg = inbox_b.frames[-1][1:]
        assert kind == wire.SNAP_END and msg.snapshot == Snapshot(meta, b"".join(pieces))
        assert max(backlog) <= STREAM_BACKLOG
        for _ in range(100):
            if reports:
                break
            await asyncio.sleep(0.05)
        assert reports == [(2, True)]
        # a peer this member has no connection to: reported failed at once
        assert not await a.stream_snapshot(Message(MessageType.SNAP, to=7, from_=1, term=5, snapshot=Snapshot(meta)),
                                           next_piece)
        assert reports[-1] == (7, False)
    finally:
        await a.close()
        await b.close()


async def test_wrong_key_is_rejected_and_nothing_is_delivered() -> None:
    a, b, _, inbox_b, _ = await make_pair(cluster_key("tok"), cluster_key("other"))
    try:
        a.send([app(2, 1)])
        for _ in range(40):
            if b.stats.connections_rejected:
                break
            await asyncio.sleep(0.05)
        assert b.stats.connections_rejected >= 1
        assert inbox_b.frames == []
        assert not a.connected(2)
    finally:
        await a.close()
        await b.close()


async def test_the_listener_announces_what_it_understands() -> None:
    """The handshake answer names the frames beyond the first version's that the listener
    understands (``wire.FEATURES``); the dialer keeps them for ``supports``."""
    key = cluster_key("tok")
    a, b, _, inbox_b, _ = await make_pair(key, key)
    try:
        assert not a.supports(2, wire.FEATURE_FORWARD_TERM)  # (not dialed yet)
        a.send([app(2, 1)])
        await inbox_b.wait_for(1)
        assert a.supports(2, wire.FEATURE_FORWARD_TERM)
        assert not a.supports(2, "no-such-feature") and not a.supports(9, wire.FEATURE_FORWARD_TERM)
    finally:
        await a.close()
        await b.close()


async def test_a_listener_of_the_first_version_announces_nothing_and_still_gets_frames() -> None:
    """A member before ``features`` answers ``[nonce, mac]``: nothing is announced, so the
    dialer sends it only the first version's frames, and they are delivered."""
    key = cluster_key("tok")
    got: list[object] = []
    done = asyncio.Event()

    async def old_listener(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def frame() -> object:
            (length,) = struct.unpack(">I", await reader.readexactly(4))
            return msgpack.unpackb(await reader.readexactly(length), raw=False)

        def send(obj: object) -> None:
            payload = msgpack.packb(obj, use_bin_type=True)
            writer.write(struct.pack(">I", len(payload)) + payload)

        hello = await frame()
        nonce_d, nonce_l = bytes(hello[4]), b"n" * 16  # type: ignore[index]
        send([nonce_l, wire.handshake_mac(key, b"listener", nonce_d, nonce_l, 1, 2)])
        await frame()  # the dialer's proof
        got.append(await frame())
        done.set()

    port = free_port()
    server = await asyncio.start_server(old_listener, "127.0.0.1", port)
    a = PeerTransport(1, key, lambda *_: None)
    a.set_peer(2, f"http://127.0.0.1:{port}")
    try:
        a.send([app(2, 1)])
        await asyncio.wait_for(done.wait(), 10)
        assert got[0][0] == wire.RAFT  # type: ignore[index]
        assert a.connected(2) and not a.supports(2, wire.FEATURE_FORWARD_TERM)
    finally:
        await a.close()
        server.close()


async def test_malformed_frame_closes_only_that_connection() -> None:
    key = cluster_key("tok")
    a, b, _, inbox_b, port_b = await make_pair(key, key)
    try:
        # An unauthenticated stranger sending garbage is rejected.
        reader, writer = await asyncio.open_connection("127.0.0.1", port_b)
        writer.write(struct.pack(">I", 5) + b"\xc1\xc1\xc1\xc1\xc1")
        await writer.drain()
        assert await reader.read() == b""
        # A huge length prefix is rejected too.
        reader, writer = await asyncio.open_connection("127.0.0.1", port_b)
        writer.write(struct.pack(">I", 2**31))
        await writer.drain()
        assert await reader.read() == b""
        # An authenticated peer that sends a malformed raft message loses its connection,
        # redials, and later messages get through.
        a.send_frame(2, wire.RAFT, [[99, "nonsense"]])
        for _ in range(100):
            if b.stats.malformed_frames:
                break
            await asyncio.sleep(0.05)
        assert b.stats.malformed_frames == 1
        # Raft retransmits; a message written before the close was noticed may be lost.
        for _ in range(50):
            a.send([app(2, 7)])
            await asyncio.sleep(0.1)
            if inbox_b.frames:
                break
        assert inbox_b.frames[-1][2][0] == app(2, 7)
        assert b.stats.malformed_frames == 1
        assert b.stats.received_failures == {1: 1}  # etcd_network_peer_received_failures_total{From}
        assert msgpack  # the frame codec in use
    finally:
        await a.close()
        await b.close()


async def test_unreachable_peer_drops_and_reports() -> None:
    key = cluster_key("tok")
    unreachable: list[int] = []
    a = PeerTransport(1, key, lambda *_: None, on_unreachable=unreachable.append, queue_max=4)
    a.set_peer(2, f"http://127.0.0.1:{free_port()}")  # nobody listens there
    try:
        for i in range(10):
            a.send([app(2, i + 1)])
        for _ in range(100):
            if unreachable:
                break
            await asyncio.sleep(0.05)
        assert 2 in unreachable
        assert a.stats.messages_dropped >= 6
        assert a.stats.sent_failures == {2: a.stats.messages_dropped}
        assert a.stats.active == {} and a.stats.disconnects == {}  # never connected: no series
    finally:
        await a.close()


async def test_forwarded_proposals_that_were_never_written_are_handed_back() -> None:
    """FORWARD and FORWARD_CONF frames dropped from the queue of an unreachable peer go to
    ``on_unsent`` (the driver proposes them to the next leader); ``take_unsent`` takes the
    queued ones back and leaves the Raft frames, in their order."""
    key = cluster_key("tok")
    unsent: list[tuple[int, int, object]] = []
    a = PeerTransport(1, key, lambda *_: None, on_unsent=lambda *frame: unsent.append(frame))
    a.set_peer(2, f"http://127.0.0.1:{free_port()}")  # nobody listens there
    try:
        a.send_frame(2, wire.FORWARD, [b"p1", b"p2"])
        a.send([app(2, 1)])
        a.send_frame(2, wire.FORWARD_CONF, b"cc")
        a.send([app(2, 2)])
        taken = a.take_unsent(2)
        assert taken == [(wire.FORWARD, [b"p1", b"p2"]), (wire.FORWARD_CONF, b"cc")]
        assert a.take_unsent(2) == [] and a.take_unsent(9) == []
        a.send_frame(2, wire.FORWARD, [b"p3"])
        for _ in range(200):
            if unsent:
                break
            await asyncio.sleep(0.05)
        assert unsent == [(2, wire.FORWARD, [b"p3"])]  # the dial failed: dropped unwritten
    finally:
        await a.close()


async def test_a_peer_that_goes_away_counts_as_disconnected_and_each_message_to_it_as_a_send_failure() -> None:
    """What the etcd mixin's ``etcdMembersDown`` alert reads: while a peer is down, every
    message to it is a send failure (``etcd_network_peer_sent_failures_total{To}``); the
    connection shows in ``etcd_network_active_peers`` and ``_disconnected_peers_total``."""
    key = cluster_key("tok")
    a, b, _, inbox_b, port_b = await make_pair(key, key)
    try:
        a.send([app(2, 1)])
        await inbox_b.wait_for(1)
        assert a.stats.active == {2: True} and a.stats.sent_failures == {}
        await b.close()
        for _ in range(200):
            if a.stats.active[2] is False:
                break
            await asyncio.sleep(0.05)
        assert a.stats.active == {2: False} and a.stats.disconnects == {2: 1}
        sent = 0
        for i in range(40):  # heartbeats and appends go on while it is down
            a.send([app(2, i + 2), app(2, i + 2)])
            sent += 2
            await asyncio.sleep(0.05)
        for _ in range(200):  # the queue is failed when the next dial does
            if a.stats.sent_failures.get(2, 0) >= sent:
                break
            a.send([app(2, 1)])
            sent += 1
            await asyncio.sleep(0.05)
        # a few may still wait in the queue; a round-trip probe may be among those dropped
        assert sent - 8 <= a.stats.sent_failures[2] <= sent + 2
        b = PeerTransport(2, key, inbox_b)
        await b.listen([f"http://127.0.0.1:{port_b}"])
        for _ in range(200):
            a.send([app(2, 1)])
            await asyncio.sleep(0.05)
            if a.stats.active[2]:
                break
        assert a.stats.active == {2: True} and a.stats.disconnects == {2: 1}
    finally:
        await a.close()
        await b.close()


def _openssl(*args: str) -> None:
    import subprocess

    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _make_pki(tmp_path):
    """A CA and two leaf certificates signed by it, plus one self-signed stranger."""
    ca_key, ca_crt = tmp_path / "ca.key", tmp_path / "ca.crt"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca_crt),
             "-days", "1", "-subj", "/CN=kvraft-test-ca")
    leaves = {}
    for name in ("a", "b"):
        key, csr, crt = tmp_path / f"{name}.key", tmp_path / f"{name}.csr", tmp_path / f"{name}.crt"
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}")
        ext = tmp_path / f"{name}.ext"
        ext.write_text("subjectAltName=IP:127.0.0.1\n")  # the address the other member dials
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key), "-CAcreateserial",
                 "-out", str(crt), "-days", "1", "-extfile", str(ext))
        leaves[name] = (str(crt), str(key))
    key, crt = tmp_path / "x.key", tmp_path / "x.crt"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(crt), "-days", "1", "-subj", "/CN=x")
    leaves["stranger"] = (str(crt), str(key))
    return str(ca_crt), leaves


async def test_mutual_tls_delivers_between_members_and_rejects_strangers(tmp_path) -> None:
    import shutil
    from types import SimpleNamespace

    import pytest

    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    from kvraft.server.tls import peer_ssl_contexts

    ca, leaves = _make_pki(tmp_path)

    def contexts(name: str):
        cert, key = leaves[name]
        return peer_ssl_contexts(SimpleNamespace(
            peer_cert_file=cert, peer_key_file=key, peer_trusted_ca_file=ca, peer_client_cert_auth=True,
            peer_crl_file="", cipher_suites=[], tls_min_version="TLS1.2", tls_max_version="", peer_auto_tls=False,
            data_dir=str(tmp_path), discovery_srv="", peer_skip_client_san_verification=False,
            peer_client_cert_file="", peer_client_key_file=""))

    key = cluster_key("tok")
    inbox_b = Inbox()
    port_b = free_port()
    server_b, client_b = contexts("b")
    b = PeerTransport(2, key, inbox_b, server_ssl=server_b, client_ssl=client_b)
    await b.listen([f"http://127.0.0.1:{port_b}"])
    server_a, client_a = contexts("a")
    a = PeerTransport(1, key, Inbox(), server_ssl=server_a, client_ssl=client_a)
    _, client_x = contexts("stranger")
    x = PeerTransport(3, key, Inbox(), client_ssl=client_x)  # right key, untrusted certificate
    try:
        a.set_peer(2, f"http://127.0.0.1:{port_b}")
        a.send([app(2, 1)])
        await inbox_b.wait_for(1)
        assert inbox_b.frames[0][0] == 1
        x.set_peer(2, f"http://127.0.0.1:{port_b}")
        x.send([Message(MessageType.HEARTBEAT, to=2, from_=3, term=9)])
        await asyncio.sleep(1.5)  # several dial attempts, each refused in the TLS handshake
        assert not x.connected(2)
        assert all(source == 1 for source, _, _ in inbox_b.frames)
    finally:
        await a.close()
        await b.close()
        await x.close()


async def test_a_peer_that_stops_reading_is_redialled(monkeypatch) -> None:
    """A listener that completes the handshake and then never reads: the sender's buffers
    fill and ``drain`` waited for ever (one suspect for the robustness runs in which a
    restarted old leader never heard from the new one). The write deadline drops the
    connection and the sender dials again."""
    from kvraft.server import transport as tr

    monkeypatch.setattr(tr, "WRITE_TIMEOUT_S", 0.5)
    key = cluster_key("tok")
    dials = 0

    async def deaf(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal dials
        dials += 1
        hello = msgpack.unpackb(await reader.readexactly(struct.unpack(">I", await reader.readexactly(4))[0]))
        nonce_d, nonce_l = bytes(hello[4]), b"n" * 16
        body = msgpack.packb([nonce_l, tr._mac(key, b"listener", nonce_d, nonce_l, hello[2], hello[3])])
        writer.write(struct.pack(">I", len(body)) + body)
        await writer.drain()
        await asyncio.sleep(3600)  # never read again

    server = await asyncio.start_server(deaf, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.sockets[0].setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    a = PeerTransport(1, key, lambda *_: None, queue_max=1 << 20)
    a.set_peer(2, f"http://127.0.0.1:{port}")
    try:
        big = [Message(type=MessageType.APP, to=2, from_=1, term=1,
                       entries=(Entry(term=1, index=i, data=b"x" * 60_000),)) for i in range(1, 60)]  # fmt: skip
        for _ in range(200):
            if dials >= 2:
                break
            a.send(big)
            await asyncio.sleep(0.1)
        assert dials >= 2, "the sender never gave up on the peer that stopped reading"
    finally:
        await a.close()
        server.close()


async def test_an_idle_connection_is_written_at_once_and_order_holds_when_sends_queue() -> None:
    """Once connected, ``send`` writes to the socket itself (no wake-up of the peer's
    sender task); when the socket's buffer is not empty the frames queue for the task.
    Either way the receiver gets every message in the order sent."""
    key = cluster_key("tok")
    a, b, _, inbox_b, _ = await make_pair(key, key)
    try:
        a.send([app(2, 1)])
        await inbox_b.wait_for(1)
        for _ in range(100):  # the first frame may have gone through the task: wait for idle
            peer = a._peers[2]
            if peer.writer is not None and not peer.queue and peer.writer.transport.get_write_buffer_size() == 0:
                break
            await asyncio.sleep(0.01)
        sent = a.stats.frames_sent
        a.send([app(2, 2)])
        assert a.stats.frames_sent == sent + 1 and not a._peers[2].queue  # written, not queued
        big = b"y" * 200_000
        queued = 0
        for index in range(3, 203):  # large frames fill the socket buffer: later ones queue
            a.send([Message(MessageType.APP, to=2, from_=1, term=2, log_term=2, index=index - 1,
                            entries=(Entry(2, index, data=big if index % 2 else b"x"),), commit=index - 1)])  # fmt: skip
            queued += bool(a._peers[2].queue)
        assert queued, "no send found the connection busy (the test did not exercise the queue)"
        await inbox_b.wait_for(202, timeout_s=30)
        got = [m for _, kind, body in inbox_b.frames if kind == wire.RAFT for m in body]
        assert [m.index for m in got] == list(range(0, 202))
    finally:
        await a.close()
        await b.close()


async def test_peers_are_probed_for_their_round_trip() -> None:
    """Each member pings its connected peers; the echo gives the round trip, kept per peer
    for ``etcd_network_peer_round_trip_time_seconds``. Probes never reach the member."""
    key = cluster_key("tok")
    inbox_a, inbox_b = Inbox(), Inbox()
    port_a, port_b = free_port(), free_port()
    a = PeerTransport(1, key, inbox_a, probe_interval_s=0.05)
    b = PeerTransport(2, key, inbox_b, probe_interval_s=0.05)
    try:
        await a.listen([f"http://127.0.0.1:{port_a}"])
        await b.listen([f"http://127.0.0.1:{port_b}"])
        a.set_peer(2, f"http://127.0.0.1:{port_b}")
        b.set_peer(1, f"http://127.0.0.1:{port_a}")

        def probes(transport: PeerTransport, peer: int) -> int:
            hist = transport.stats.round_trip_seconds.get(peer)
            return 0 if hist is None else hist.count

        async def probed() -> None:
            while min(probes(a, 2), probes(b, 1)) < 3:
                await asyncio.sleep(0.05)

        await asyncio.wait_for(probed(), 10)
        hist = a.stats.round_trip_seconds[2]
        assert 0 < hist.sum < hist.count * 1.0  # loopback: well under a second each
        assert list(a.stats.round_trip_seconds) == [2] and list(b.stats.round_trip_seconds) == [1]
        assert inbox_a.frames == [] and inbox_b.frames == []
    finally:
        await a.close()
        await b.close()


async def test_a_peer_that_dials_in_is_dialed_back_at_once(monkeypatch) -> None:
    """A member whose dial failed (its peer not listening yet) waits out a backoff of up to
    a second before it tries again; meanwhile the peer, once up, dials it. That connection
    now ends the wait: the member dials back at once, so a cluster whose members start a
    moment apart is fully connected as soon as the last one listens (and every peer's
    features are known: the gate of numbered writes). A backoff of a minute here makes the
    old behaviour plain."""
    from kvraft.server import transport as transport_module

    monkeypatch.setattr(transport_module, "BACKOFF_MIN_S", 60.0)
    monkeypatch.setattr(transport_module, "BACKOFF_MAX_S", 60.0)
    key = cluster_key("tok")
    port_a, port_b = free_port(), free_port()
    a, b = PeerTransport(1, key, Inbox()), PeerTransport(2, key, Inbox())
    try:
        await a.listen([f"http://127.0.0.1:{port_a}"])
        a.set_peer(2, f"http://127.0.0.1:{port_b}")  # b is not listening: a's dial fails, a backs off
        await asyncio.sleep(0.3)  # (a's first dial has failed by now)
        assert not a.connected(2)
        await b.listen([f"http://127.0.0.1:{port_b}"])
        b.set_peer(1, f"http://127.0.0.1:{port_a}")  # b dials a; a dials b back

        async def connected() -> None:
            while not (a.connected(2) and b.connected(1)):
                await asyncio.sleep(0.02)

        await asyncio.wait_for(connected(), 10)
        assert a.supports(2, wire.FEATURE_REQUEST_IDS)
    finally:
        await a.close()
        await b.close()


async def test_a_silent_accepted_connection_is_closed_past_the_read_timeout() -> None:
    """``--raft-read-timeout``: b closes the connection a dialed once nothing came on it for
    the timeout (a's probes are off here, as a frozen dialer's would be); a's next send dials
    again and arrives. With probes at their interval (at most a third of the timeout) the
    connection stays."""
    key = cluster_key("tok")
    inbox_a, inbox_b = Inbox(), Inbox()
    port_a, port_b = free_port(), free_port()
    a = PeerTransport(1, key, inbox_a, probe_interval_s=3600)
    b = PeerTransport(2, key, inbox_b, read_timeout_s=0.3)
    c = PeerTransport(3, key, Inbox(), read_timeout_s=0.9)  # (probes every 0.3 s)
    try:
        assert c._probe_interval_s == 0.3
        await a.listen([f"http://127.0.0.1:{port_a}"])
        await b.listen([f"http://127.0.0.1:{port_b}"])
        a.set_peer(2, f"http://127.0.0.1:{port_b}")
        a.send([app(2, 1)])
        await inbox_b.wait_for(1)

        async def closed() -> None:
            while b.stats.silent_closed == 0:
                await asyncio.sleep(0.05)

        await asyncio.wait_for(closed(), 10)

        async def delivered_again() -> None:  # (a send racing the close is lost, as Raft allows: send again)
            while len(inbox_b.frames) < 2:
                a.send([app(2, 2)])
                await asyncio.sleep(0.05)

        await asyncio.wait_for(delivered_again(), 10)
    finally:
        await a.close()
        await b.close()
        await c.close()


async def test_probes_keep_a_connection_open_under_the_read_timeout() -> None:
    key = cluster_key("tok")
    inbox_b = Inbox()
    port_a, port_b = free_port(), free_port()
    a = PeerTransport(1, key, Inbox(), read_timeout_s=0.6)  # (probes every 0.2 s)
    b = PeerTransport(2, key, inbox_b, read_timeout_s=0.6)
    try:
        await a.listen([f"http://127.0.0.1:{port_a}"])
        await b.listen([f"http://127.0.0.1:{port_b}"])
        a.set_peer(2, f"http://127.0.0.1:{port_b}")
        a.send([app(2, 1)])
        await inbox_b.wait_for(1)
        await asyncio.sleep(2.0)
        assert b.stats.silent_closed == 0
    finally:
        await a.close()
        await b.close()


async def test_connections_leave_from_the_member_local_address() -> None:
    """etcd 3.6's SetMemberLocalAddr: the dialer binds the address it is given (127.0.0.2
    here: on loopback, the listener on 127.0.0.1 sees the connection come from it)."""
    key = cluster_key("tok")
    inbox_b = Inbox()
    port_b = free_port()
    a = PeerTransport(1, key, Inbox(), local_address="127.0.0.2")
    b = PeerTransport(2, key, inbox_b)
    await b.listen([f"http://127.0.0.1:{port_b}"])
    a.set_peer(2, f"http://127.0.0.1:{port_b}")
    try:
        a.send([app(2, 1)])
        await inbox_b.wait_for(1)
        assert {conn.transport.get_extra_info("peername")[0] for conn in b._inbound} == {"127.0.0.2"}
    finally:
        await a.close()
        await b.close()

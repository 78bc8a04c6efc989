"""The listening side of the peer transport: one ``Inbound`` protocol per connection a peer
dialed (``kvraft.server.transport.PeerTransport.listen``). It runs the handshake, then parses
every frame complete in a read and hands it to the transport (``PeerTransport._received``),
with no reader task. It also holds what the connection is receiving of snapshots
(``Receipt``s, ``kvraft.server.snapshot_receive``), and stops reading when one must wait
(``pause``, ``hold``)."""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import TYPE_CHECKING, Any

import msgpack

from kvraft.server import wire
from kvraft.server.cert_names import forward_lookup, reverse_lookup, san_quick, san_refusal
from kvraft.server.snapshot_receive import Receipt

if TYPE_CHECKING:
    from kvraft.server.transport import PeerTransport

__all__ = ["HANDSHAKE_TIMEOUT_S", "Inbound"]

log = logging.getLogger("kvraft.transport")

HANDSHAKE_TIMEOUT_S = 5.0


class Inbound(asyncio.Protocol):
    """A connection a peer dialed: the handshake, then its frames, each parsed and handed
    to the member in ``data_received`` (no reader task: a frame reaches the driver without
    a coroutine resuming, a future or a loop turn; every frame complete in one read is
    handled in it). Until the dialer has proven it holds the key nothing is delivered;
    any failure before that rejects the connection, a malformed frame after it closes
    the connection (counted), and the member keeps running."""

    def __init__(self, owner: PeerTransport) -> None:
        self.owner = owner
        self.transport: Any = None
        self.buffer = bytearray()
        self.source = 0
        self.target = 0
        """The id the dialer addressed: this member's, or 0 from a joining member."""
        self.state = "hello"  # -> "answer" -> "frames" | "closed"
        self.nonces = (b"", b"")
        self.receipts: dict[int, Receipt] = {}
        """The snapshots being received on this connection, by stream."""
        self.holding = False
        """Frames wait: a snapshot's MsgSnap is not yet handed on (``hold``)."""
        self.paused = False
        """Reading is stopped here (``pause``, ``hold``): silence then is not the peer's."""
        self.timer: asyncio.TimerHandle | None = None
        self.last_read = 0.0
        """When the prober last saw bytes read on it (``--raft-read-timeout``)."""
        self.heard = False
        """Bytes were read since the prober's last look (a flag: no clock read per read)."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.last_read = asyncio.get_running_loop().time()
        self.owner._inbound.add(self)
        self.timer = asyncio.get_running_loop().call_later(HANDSHAKE_TIMEOUT_S, self._reject, TimeoutError("handshake timed out"))
        cert = transport.get_extra_info("peercert")
        why = self.owner.cert_rule.refusal(cert)
        if why:
            self._reject(PermissionError(why))
        elif cert and self.owner.check_san:
            self._check_san(cert, transport.get_extra_info("peername"))

    def _check_san(self, cert: dict[str, Any], peername: Any) -> None:
        """etcd's ``checkSAN`` (kvraft.server.cert_names): decided at once when an IP SAN
        matches or none can; else reading waits while the DNS names are looked up off the loop."""
        host = str(peername[0]) if peername else ""
        why = san_quick(cert, host)
        if why:
            self._reject(PermissionError(why))
            return
        if why is None:
            self.transport.pause_reading()
            lookup = asyncio.get_running_loop().run_in_executor(None, san_refusal, cert, host, reverse_lookup,
                                                                forward_lookup)
            lookup.add_done_callback(self._san_checked)

    def _san_checked(self, lookup: asyncio.Future[str]) -> None:
        if self.state == "closed":
            return
        exc = lookup.exception()
        why = str(exc) if exc is not None else lookup.result()
        if why:
            self._reject(PermissionError(why))
        else:
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state in ("hello", "answer"):  # gone before proving it holds the key
            self._reject(exc or ConnectionError("closed during the handshake"))
        self.state = "closed"
        self.owner._inbound.discard(self)
        self._abandon()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def close(self) -> None:
        self.state = "closed"
        self._abandon()
        if self.transport is not None:
            self.transport.close()

    def _abandon(self) -> None:
        """The snapshots left unfinished: their builds fail and remove their files."""
        stats = self.owner.stats
        for receipt in self.receipts.values():
            receipt.abort()
            stats.snapshot_receive_inflight[self.source] -= 1
            stats.snapshot_receive_failures[self.source] = stats.snapshot_receive_failures.get(self.source, 0) + 1
        self.receipts.clear()

    def pause(self) -> None:
        """Stop reading (a snapshot's chunks wait for the thread that builds its store)."""
        if self.state != "closed" and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.state != "closed" and self.transport is not None and not self.holding:
            self.paused = False
            self.last_read = asyncio.get_running_loop().time()  # (the silence was ours)
            self.transport.resume_reading()

    def answer(self, frame: list[Any]) -> None:
        """Write ``frame`` back to the dialer (a snapshot connection's ``SNAP_ACK``)."""
        if self.state != "closed" and self.transport is not None:
            self.transport.write(wire.encode_frame(frame))

    def hold(self) -> None:
        """A snapshot's last frame came: nothing after it is read or handed on until its
        MsgSnap is (``release``), so the member steps them in the order they were sent (an
        append after the snapshot stepped before it would be refused, and the leader would
        send the whole snapshot again)."""
        self.holding = True
        self.pause()

    def release(self) -> None:
        self.holding = False
        self.resume()
        if self.buffer and self.state == "frames":
            self.data_received(b"")  # (the frames read before the hold)

    def _reject(self, exc: BaseException) -> None:
        if self.state == "closed":
            return
        self.owner.stats.connections_rejected += 1
        log.warning("rejected a peer connection: %r", exc)
        self.close()

    def data_received(self, data: bytes) -> None:
        self.heard = True
        buffer = self.buffer
        buffer += data
        start, end = 0, len(buffer)
        try:
            while end - start >= wire.FRAME_LEN.size and self.state != "closed" and not self.holding:
                (length,) = wire.FRAME_LEN.unpack_from(buffer, start)
                if length > wire.FRAME_MAX_BYTES:
                    raise ValueError(f"frame of {length} bytes is over the limit")
                if end - start - wire.FRAME_LEN.size < length:
                    break
                body = start + wire.FRAME_LEN.size
                frame = msgpack.unpackb(buffer[body : body + length], raw=False)
                start = body + length
                self._frame(frame, wire.FRAME_LEN.size + length)
        except Exception as exc:
            if self.state == "frames":  # malformed frame: close this connection, keep running
                self.owner.stats.malformed_frames += 1
                failures = self.owner.stats.received_failures
                failures[self.source] = failures.get(self.source, 0) + 1
                log.warning("closing connection from %x after a malformed frame: %s", self.source, exc)
                self.close()
            else:
                self._reject(exc)
            return
        finally:
            del buffer[:start]

    def _frame(self, frame: Any, size: int) -> None:
        owner = self.owner
        if self.state == "frames":
            owner._received(self.source, frame, size, self)
        elif self.state == "hello":
            self.source, self.target, nonce_d, nonce_l = owner._hello(frame)
            self.nonces = (nonce_d, nonce_l)
            if owner._is_removed(self.source):  # answered (with the key) and closed
                mac = wire.handshake_mac(owner._key, b"removed", nonce_d, nonce_l, self.source, self.target)
                self.transport.write(wire.encode_frame([nonce_l, mac]))
                log.warning("refused the connection of removed member %x", self.source)
                self.close()
                return
            mac = wire.handshake_mac(owner._key, b"listener", nonce_d, nonce_l, self.source, self.target)
            self.transport.write(wire.encode_frame([nonce_l, mac, list(owner.features)]))
            self.state = "answer"
        elif self.state == "answer":
            want = wire.handshake_mac(owner._key, b"dialer", *self.nonces, self.source, self.target)
            if not (isinstance(frame, list) and frame and hmac.compare_digest(want, bytes(frame[0]))):
                raise ValueError(f"member {self.source:x} failed authentication")
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            if self.target == 0 and owner._describe is not None:  # a joining member: one answer
                self.transport.write(wire.encode_frame(owner._describe()))
                log.info("described the cluster to a joining member at %s", self.transport.get_extra_info("peername"))
                self.close()
                return
            self.state = "frames"
            log.info("peer %x: accepted its connection", self.source)
            owner._dialed_by(self.source)

"""Failure detector: heartbeats over a star of TCP connections to rank 0.

Rank 0 runs the coordinator, every other rank a worker; each side has one thread. Frames are
``type (1 byte), rank (4), reason length (2), reason``.

* A **crashed** rank's kernel closes its sockets: the coordinator sees EOF at once and sends
  ``FAIL(rank, reason)`` to every other rank (milliseconds). If rank 0 crashes, every worker
  sees EOF on its own connection.
* A **hung** rank (SIGSTOP, a stuck process, a frozen container) stops sending heartbeats:
  after ``hang_timeout_s`` without a frame the coordinator declares it failed and tells the
  others; workers watch the coordinator's heartbeats the same way.
* A clean ``close()`` sends ``BYE`` first, so a rank that finished is never reported.
* An **absent** rank (alive, heartbeating, but never entering the collective the others
  wait in, e.g. a deadlocked training loop): heartbeats carry (collectives started, seconds
  waiting); with ``stall_timeout_s`` set the coordinator fails the laggards once a rank has
  waited that long (Horovod's stall inspector only warns).

Detection bounds: crash ~ RTT; hang <= hang_timeout_s + heartbeat_s (defaults 3.0 + 0.25 s).
The callback runs on the monitor thread; the communicator turns it into a ``PeerFailure``
on every survivor.
"""

from __future__ import annotations

import select
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable

from agent.collective.errors import CollectiveTimeout, PeerFailure

__all__ = ["Monitor"]

_FRAME = struct.Struct("!BiH")
HELLO, HEARTBEAT, FAIL, BYE = 1, 2, 3, 4


def _frame(kind: int, rank: int, reason: str = "") -> bytes:
    data = reason.encode()[:60000]
    return _FRAME.pack(kind, rank, len(data)) + data


class _Reader:
    """Incremental frame parser for one connection."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, int, str]]:
        self.buf += data
        out = []
        while len(self.buf) >= _FRAME.size:
            kind, rank, n = _FRAME.unpack_from(self.buf)
            if len(self.buf) < _FRAME.size + n:
                break
            reason = bytes(self.buf[_FRAME.size : _FRAME.size + n]).decode(errors="replace")
            del self.buf[: _FRAME.size + n]
            out.append((kind, rank, reason))
        return out


class Monitor:
    def __init__(
        self,
        rank: int,
        size: int,
        on_failure: Callable[[PeerFailure], None] | None = None,
        *,
        heartbeat_s: float = 0.25,
        hang_timeout_s: float = 3.0,
        host: str = "127.0.0.1",
        stall_timeout_s: float | None = None,
    ) -> None:
        self.rank = rank
        self.stall_timeout_s = stall_timeout_s
        #: returns (collectives started, currently inside one); set by the communicator
        self.progress: Callable[[], tuple[int, bool]] | None = None
        self._probe_last: tuple[int, bool] = (0, False)
        self._probe_since = time.monotonic()
        self.size = size
        self.on_failure = on_failure
        self.heartbeat_s = heartbeat_s
        self.hang_timeout_s = hang_timeout_s
        self.host = host
        self._stop = threading.Event()
        self._closing = False
        self._reported: set[int] = set()
        self._listener: socket.socket | None = None
        self._sock: socket.socket | None = None
        self._conns: dict[int, socket.socket] = {}
        self._thread: threading.Thread | None = None
        self.detections: list[tuple[float, PeerFailure]] = []
        self._cb_lock = threading.Lock()

    # -- setup -----------------------------------------------------------------------------
    def listen(self) -> str:
        """Coordinator (rank 0): open the port; returns ``host:port`` to publish."""
        self._listener = socket.create_server((self.host, 0), backlog=1024)
        return f"{self.host}:{self._listener.getsockname()[1]}"

    def start(self, address: str, timeout_s: float = 60.0) -> None:
        if self.rank == 0:
            assert self._listener is not None
            self._accept_all(timeout_s)
            target = self._coordinator_loop
        else:
            host, _, port = address.rpartition(":")
            self._sock = socket.create_connection((host, int(port)), timeout=timeout_s)
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock.sendall(_frame(HELLO, self.rank))
            self._sock.setblocking(False)
            target = self._worker_loop
        self._thread = threading.Thread(target=target, name=f"collective-monitor-{self.rank}", daemon=True)
        self._thread.start()

    def _accept_all(self, timeout_s: float) -> None:
        assert self._listener is not None
        deadline = time.monotonic() + timeout_s
        while len(self._conns) < self.size - 1:
            self._listener.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                conn, _ = self._listener.accept()
            except TimeoutError as exc:
                missing = sorted(set(range(1, self.size)) - set(self._conns))
                raise CollectiveTimeout(f"monitor: ranks {missing} did not connect within {timeout_s} s") from exc
            conn.settimeout(timeout_s)
            kind, who, _ = _FRAME.unpack(conn.recv(_FRAME.size, socket.MSG_WAITALL))
            if kind != HELLO:
                conn.close()
                continue
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.setblocking(False)
            self._conns[who] = conn
        self._listener.close()

    # -- failure reporting -----------------------------------------------------------------
    def _report(self, rank: int, reason: str) -> None:
        if rank in self._reported or self._closing:
            return
        self._reported.add(rank)
        exc = PeerFailure([rank], reason, self.rank)
        with self._cb_lock:
            self.detections.append((time.monotonic(), exc))
            callback = self.on_failure
        if callback is not None:
            callback(exc)

    def set_callback(self, on_failure: Callable[[PeerFailure], None]) -> None:
        """Install the callback; failures seen before it was installed are replayed."""
        with self._cb_lock:
            self.on_failure = on_failure
            missed = [exc for _, exc in self.detections]
        for exc in missed:
            on_failure(exc)

    @staticmethod
    def _send(sock: socket.socket, data: bytes) -> bool:
        try:
            sock.send(data)  # tiny frames; a full buffer means the peer stopped reading
            return True
        except (BlockingIOError, OSError):
            return False

    # -- progress (stall inspector) --------------------------------------------------------
    def _probe(self) -> tuple[int, float]:
        """(collectives started, seconds spent waiting inside the current one)."""
        if self.progress is None:
            return (0, 0.0)
        seq, busy = self.progress()
        now = time.monotonic()
        if (seq, busy) != self._probe_last:
            self._probe_last, self._probe_since = (seq, busy), now
        return (seq, now - self._probe_since if busy else 0.0)

    def _check_stall(self, progress: dict[int, tuple[int, float]], live: dict[int, socket.socket]) -> None:
        """A rank waiting in collective #k for stall_timeout_s while another rank has not
        started #k: that rank is alive (it heartbeats) but absent. Horovod warns after 60 s
        ("Missing ranks"); here it is an error, off unless a timeout is configured."""
        if self.stall_timeout_s is None or not progress:
            return
        waiting = [(seq, busy_for) for seq, busy_for in progress.values() if busy_for > self.stall_timeout_s]
        if not waiting:
            return
        k, busy_for = max(waiting)
        missing = sorted(r for r, (seq, _) in progress.items() if seq < k)
        for r in missing:
            if r == 0 or r in live:
                self._fail_and_tell(r, f"rank {r} did not join collective #{k} for {busy_for:.1f} s (alive, but absent)", live)

    # -- coordinator -----------------------------------------------------------------------
    def _coordinator_loop(self) -> None:
        sel = selectors.DefaultSelector()
        readers = {r: _Reader() for r in self._conns}
        now = time.monotonic()
        last_seen = dict.fromkeys(self._conns, now)
        live = dict(self._conns)
        for r, c in live.items():
            sel.register(c, selectors.EVENT_READ, r)
        next_beat = now
        progress: dict[int, tuple[int, float]] = {}
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_beat:
                for c in live.values():
                    self._send(c, _frame(HEARTBEAT, 0))
                next_beat = now + self.heartbeat_s
                progress[0] = self._probe()
                self._check_stall({r: p for r, p in progress.items() if r == 0 or r in live}, live)
            for key, _ in sel.select(timeout=max(0.0, next_beat - now)):
                r = key.data
                try:
                    data = live[r].recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                now = time.monotonic()
                if not data:
                    sel.unregister(live[r])
                    live.pop(r).close()
                    self._fail_and_tell(r, f"rank {r} exited or crashed (connection to the monitor closed)", live)
                    continue
                last_seen[r] = now
                for kind, _, payload in readers[r].feed(data):
                    if kind == HEARTBEAT and payload:
                        seq, busy_for = payload.split()
                        progress[r] = (int(seq), float(busy_for))
                    if kind == BYE:
                        sel.unregister(live[r])
                        live.pop(r).close()
                        break
            now = time.monotonic()
            for r in list(live):
                silent = now - last_seen[r]
                if silent > self.hang_timeout_s:
                    sel.unregister(live[r])
                    live.pop(r).close()
                    self._fail_and_tell(r, f"rank {r} is hung (no heartbeat for {silent:.1f} s)", live)
        for c in live.values():
            self._send(c, _frame(BYE, 0))
            c.close()
        sel.close()

    def _fail_and_tell(self, rank: int, reason: str, live: dict[int, socket.socket]) -> None:
        if self._closing:
            return
        for c in live.values():
            self._send(c, _frame(FAIL, rank, reason))
        self._report(rank, reason)

    # -- worker ----------------------------------------------------------------------------
    def _worker_loop(self) -> None:
        sock = self._sock
        assert sock is not None
        reader = _Reader()
        last_seen = time.monotonic()
        next_beat = last_seen
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_beat:
                seq, busy_for = self._probe()
                self._send(sock, _frame(HEARTBEAT, self.rank, f"{seq} {busy_for:.3f}"))
                next_beat = now + self.heartbeat_s
            ready = select.select([sock], [], [], max(0.0, next_beat - now))[0]
            now = time.monotonic()
            if ready:
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    data = None
                except OSError:
                    data = b""
                if data == b"":
                    self._report(0, "rank 0 exited or crashed (connection to the monitor closed)")
                    return
                if data:
                    last_seen = now
                    for kind, rank, reason in reader.feed(data):
                        if kind == FAIL:
                            self._report(rank, reason)
                        elif kind == BYE:
                            return
            elif now - last_seen > self.hang_timeout_s:
                self._report(0, f"rank 0 is hung (no heartbeat for {now - last_seen:.1f} s)")
                return

    # -- shutdown --------------------------------------------------------------------------
    def close(self) -> None:
        self._closing = True
        if self._sock is not None:
            try:
                self._sock.setblocking(True)
                self._sock.settimeout(1.0)
                self._sock.sendall(_frame(BYE, self.rank))
            except OSError:
                pass
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(2.0)
        if self._sock is not None:
            self._sock.close()
        if self._listener is not None:
            self._listener.close()

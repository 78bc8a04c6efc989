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

Detection bounds: crash ~ RTT; hang <= hang_timeout_s + heartbeat_s (defaults 3.0 + 0.25 s)
of the monitor's own on-schedule time. The callback runs on the monitor thread; the
communicator turns it into a ``PeerFailure`` on every survivor.

Oversubscribed hosts (``HangJudge``, PURE: the clock and the peers' process states are
inputs). A silence is evidence of a hang only while the watcher itself was running:

* **The watcher's own scheduling delay.** Each loop iteration credits the peers' silence
  with the time since the previous one, but at most ``2 * heartbeat_s``: when the monitor
  thread itself was not scheduled (a stalled vCPU, a starved process, the GIL held
  elsewhere), the peer's beats could not have been read either, so that stretch does not
  count. On schedule, every second counts: a stopped rank is still found within
  ``hang_timeout_s + heartbeat_s``.
* **A peer on the same host** (same boot id and pid namespace, exchanged in the HELLO frames)
  is looked at in ``/proc`` before it is declared hung: stopped (``T``, SIGSTOP), gone, or
  with no thread runnable and no CPU time used since the previous look means hung; a peer
  that is runnable or burning CPU is alive but starved (its heartbeat thread could not run)
  and gets up to ``starved_timeout_s`` (default 30 s) before it is declared hung anyway.
  Ranks on other hosts are judged by the credited silence alone.
"""

from __future__ import annotations

import os
import select
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from agent.collective.errors import CollectiveTimeout, PeerFailure

__all__ = ["HangJudge", "Monitor", "PeerState", "process_state"]

_FRAME = struct.Struct("!BiH")
HELLO, HEARTBEAT, FAIL, BYE = 1, 2, 3, 4


def _frame(kind: int, rank: int, reason: str = "") -> bytes:
    data = reason.encode()[:60000]
    return _FRAME.pack(kind, rank, len(data)) + data


# -- the hang judgement (PURE) ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PeerState:
    """What the kernel says about a peer process (``process_state``)."""

    state: str  # "gone", "stopped", "running" (some thread runnable) or "waiting"
    cpu_ticks: int  # user + system time of the whole process, in clock ticks


class HangJudge:
    """PURE: which peers are hung. The caller feeds it the clock (``tick``, once per loop
    iteration), the beats it read (``heard``), and a way to look at a peer's process
    (``verdicts(inspect)``; ``inspect`` returns None for a peer it cannot see)."""

    def __init__(
        self, peers: Iterable[int], now: float, *, heartbeat_s: float, hang_timeout_s: float, starved_timeout_s: float = 30.0
    ) -> None:
        self.hang_timeout_s = hang_timeout_s
        self.starved_timeout_s = max(starved_timeout_s, hang_timeout_s)
        #: most silence one iteration can add: the loop wakes every heartbeat_s; anything
        #: longer was this watcher's own scheduling delay
        self.max_credit_s = 2 * heartbeat_s
        self.silent: dict[int, float] = dict.fromkeys(peers, 0.0)
        self.own_delay_s = 0.0  # total time not credited (the watcher was late)
        self.max_own_delay_s = 0.0
        self._last = now
        self._cpu: dict[int, int] = {}

    def tick(self, now: float) -> None:
        elapsed = max(0.0, now - self._last)
        self._last = now
        credit = min(elapsed, self.max_credit_s)
        late = elapsed - credit
        self.own_delay_s += late
        self.max_own_delay_s = max(self.max_own_delay_s, late)
        for r in self.silent:
            self.silent[r] += credit

    def heard(self, rank: int) -> None:
        if rank in self.silent:
            self.silent[rank] = 0.0
            self._cpu.pop(rank, None)

    def forget(self, rank: int) -> None:
        self.silent.pop(rank, None)
        self._cpu.pop(rank, None)

    def verdicts(self, inspect: Callable[[int], PeerState | None]) -> list[tuple[int, str]]:
        """(rank, reason) for every peer judged hung now (the caller then forgets it)."""
        out = []
        for r, silent in self.silent.items():
            if silent <= self.hang_timeout_s / 2:
                continue
            st = inspect(r)
            before = self._cpu.get(r)
            if st is not None:
                self._cpu[r] = st.cpu_ticks
            if silent <= self.hang_timeout_s:
                continue  # looked at half-way, so CPU progress can be judged at the timeout
            if st is None:
                out.append((r, f"rank {r} is hung (no heartbeat for {silent:.1f} s)"))
            elif st.state == "gone":
                out.append((r, f"rank {r} is hung (no heartbeat for {silent:.1f} s; its process is gone)"))
            elif st.state == "stopped":
                out.append((r, f"rank {r} is hung (no heartbeat for {silent:.1f} s; its process is stopped)"))
            elif st.state == "running" or (before is not None and st.cpu_ticks > before):
                if silent > self.starved_timeout_s:
                    out.append((r, f"rank {r} is hung (no heartbeat for {silent:.1f} s although its process runs)"))
                # else: alive but starved (its heartbeat thread could not run): wait
            else:
                out.append((r, f"rank {r} is hung (no heartbeat for {silent:.1f} s; no CPU used, nothing runnable)"))
        return out


# -- looking at a peer process on this host ---------------------------------------------------
def _identity() -> str:
    """``pid boot-id pid-namespace``: lets a peer tell whether it can see us in its /proc."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        return f"{os.getpid()} {boot} {os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return ""


def _visible_pid(identity: str) -> int | None:
    """The peer's pid when it is in our kernel and pid namespace, else None."""
    mine, theirs = _identity().split(), identity.split()
    if len(mine) != 3 or len(theirs) != 3 or mine[1:] != theirs[1:]:
        return None
    return int(theirs[0])


def _stat_fields(path: str) -> list[str]:
    with open(path) as f:
        data = f.read()
    return data[data.rindex(")") + 2 :].split()  # after "pid (comm) "


def process_state(pid: int) -> PeerState | None:
    """The process's state from /proc (None when it cannot be read)."""
    try:
        fields = _stat_fields(f"/proc/{pid}/stat")
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return PeerState("gone", 0)
    except (OSError, ValueError):
        return None
    cpu = int(fields[11]) + int(fields[12])  # utime, stime (all threads)
    if fields[0] in "ZX":
        return PeerState("gone", cpu)
    states = set()
    for tid in tids:
        try:
            states.add(_stat_fields(f"/proc/{pid}/task/{tid}/stat")[0])
        except (OSError, ValueError, IndexError):
            continue
    if states and states <= {"T", "t"}:
        return PeerState("stopped", cpu)
    return PeerState("running" if "R" in states else "waiting", cpu)


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
        starved_timeout_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rank = rank
        self.starved_timeout_s = starved_timeout_s
        #: the time source (tests inject one); a judge per loop is built from it
        self.clock = clock
        self.judge: HangJudge | None = None
        self._pids: dict[int, int] = {}  # peers visible in our /proc
        self.stall_timeout_s = stall_timeout_s
        #: returns (collectives started, currently inside one); set by the communicator
        self.progress: Callable[[], tuple[int, bool]] | None = None
        self._probe_last: tuple[int, bool] = (0, False)
        self._probe_since = clock()
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
            self._sock.sendall(_frame(HELLO, self.rank, _identity()))
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
            conn.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                head = conn.recv(_FRAME.size, socket.MSG_WAITALL)
                kind, who, n = _FRAME.unpack(head) if len(head) == _FRAME.size else (-1, -1, 0)
                ident = conn.recv(n, socket.MSG_WAITALL).decode(errors="replace") if n else ""
            except OSError:  # a client that said nothing in time, or reset
                kind, who = -1, -1
            if kind != HELLO or not 0 < who < self.size or who in self._conns:
                conn.close()  # not a rank of this world (a stray client), or a rank twice
                continue
            pid = _visible_pid(ident)
            if pid is not None:
                self._pids[who] = pid
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.sendall(_frame(HELLO, 0, _identity()))  # so the worker can look at us too
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
            self.detections.append((self.clock(), exc))
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
        now = self.clock()
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
    def _inspect(self, rank: int) -> PeerState | None:
        pid = self._pids.get(rank)
        return process_state(pid) if pid is not None else None

    def _coordinator_loop(self) -> None:
        sel = selectors.DefaultSelector()
        readers = {r: _Reader() for r in self._conns}
        now = self.clock()
        live = dict(self._conns)
        judge = self.judge = HangJudge(
            live, now, heartbeat_s=self.heartbeat_s, hang_timeout_s=self.hang_timeout_s, starved_timeout_s=self.starved_timeout_s
        )
        for r, c in live.items():
            sel.register(c, selectors.EVENT_READ, r)
        next_beat = now
        progress: dict[int, tuple[int, float]] = {}
        while not self._stop.is_set():
            now = self.clock()
            if now >= next_beat:
                for c in live.values():
                    self._send(c, _frame(HEARTBEAT, 0))
                next_beat = now + self.heartbeat_s
                progress[0] = self._probe()
                self._check_stall({r: p for r, p in progress.items() if r == 0 or r in live}, live)
            events = sel.select(timeout=max(0.0, next_beat - now))
            judge.tick(self.clock())  # credits silence only for time this loop was running
            for key, _ in events:
                r = key.data
                if r not in live:
                    continue
                try:
                    data = live[r].recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(live[r])
                    live.pop(r).close()
                    judge.forget(r)
                    self._fail_and_tell(r, f"rank {r} exited or crashed (connection to the monitor closed)", live)
                    continue
                judge.heard(r)
                for kind, _, payload in readers[r].feed(data):
                    if kind == HEARTBEAT and payload:
                        seq, busy_for = payload.split()
                        progress[r] = (int(seq), float(busy_for))
                    if kind == BYE:
                        sel.unregister(live[r])
                        live.pop(r).close()
                        judge.forget(r)
                        break
            for r, reason in judge.verdicts(self._inspect):
                judge.forget(r)
                if r in live:
                    sel.unregister(live[r])
                    live.pop(r).close()
                self._fail_and_tell(r, reason, live)
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
        now = self.clock()
        judge = self.judge = HangJudge(
            [0], now, heartbeat_s=self.heartbeat_s, hang_timeout_s=self.hang_timeout_s, starved_timeout_s=self.starved_timeout_s
        )
        next_beat = now
        while not self._stop.is_set():
            now = self.clock()
            if now >= next_beat:
                seq, busy_for = self._probe()
                self._send(sock, _frame(HEARTBEAT, self.rank, f"{seq} {busy_for:.3f}"))
                next_beat = now + self.heartbeat_s
            ready = select.select([sock], [], [], max(0.0, next_beat - now))[0]
            judge.tick(self.clock())
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
                    judge.heard(0)
                    for kind, rank, reason in reader.feed(data):
                        if kind == FAIL:
                            self._report(rank, reason)
                        elif kind == BYE:
                            return
                        elif kind == HELLO:
                            pid = _visible_pid(reason)
                            if pid is not None:
                                self._pids[0] = pid
            for r, reason in judge.verdicts(self._inspect):
                self._report(r, reason)
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

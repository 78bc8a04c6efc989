"""TCP ring backend: the fallback for hosts without MPI.

Each rank listens on an ephemeral port, publishes ``host:port`` in the rendezvous, connects
to its right neighbour and accepts its left neighbour: one socket per direction, so with two
ranks there are two sockets, each used one way. Sends that fit into the kernel buffer go out
inline (non-blocking ``send``); the remainder is handed to one persistent sender thread per
link, so the caller keeps receiving and reducing while big segments drain (pipelining).
Sockets use ``TCP_NODELAY`` and 4 MiB buffers.

Links: for a neighbour on the same host (same kernel and pid namespace, checked by a probe,
see ``cma.py``) the socket becomes the control channel of a cross-memory-attach link: the
receiver copies straight out of the sender's buffer with ``process_vm_readv``, one copy
instead of two. ``links="socket"`` (``KVRAFT_COLLECTIVE_LINKS=socket``) forces the plain
socket link; ``backend.links`` says what each direction can use.

Data path per call size: a pull costs a syscall with page pinning and an acknowledgement, so
the attach link loses to in-cache socket copies for small calls and wins for big ones. Where
a connection has both, every collective picks one by its size in bytes (the same on every
rank, so both ends of a connection agree): below ``cma_min_bytes`` the plain socket link (the
very code of the socket ring), from it the attach link. The threshold is measured by
``probe.probe_links`` at the first call of at least ``LINK_LADDER[0]`` bytes (both paths
timed on a ladder of sizes, agreed over the ranks), unless ``cma_min_bytes`` /
``KVRAFT_COLLECTIVE_CMA_MIN_BYTES`` fixes it. Before that first collective, the ranks agree
(one small allgather at the first collective) on whether any link can attach and on a fixed
threshold, so a rank never probes alone.

``abort()`` shuts the sockets down, which makes a blocked ``recv`` or ``send`` return at once:
this backend is interruptible, so a failure detected by the monitor becomes an exception in
the blocked thread.
"""

from __future__ import annotations

import collections
import contextlib
import os
import socket
import struct
import threading
import time

import numpy as np

from agent.collective.cma import EAGER_MAX, CMARecvLink, CMASendLink, handshake_recv, handshake_send
from agent.collective.errors import CollectiveTimeout, DuplicateRank
from agent.collective.fusion import FusionPolicy
from agent.collective.interface import Link
from agent.collective.probe import LinkProbe, probe_links
from agent.collective.rendezvous import Rendezvous
from agent.collective.ring import RingBackend

__all__ = ["TCPBackend", "TCPFactory", "TCP_FUSION"]

#: measured on the 2-vCPU dev machine: ~0.3 ms per call, ~1.8 GB/s; fusing pays below ~4 MiB
TCP_FUSION = FusionPolicy(inplace_min_bytes=4 << 20, bucket_bytes=32 << 20)
SEGMENT_BYTES = int(os.environ.get("KVRAFT_COLLECTIVE_TCP_SEGMENT_BYTES", 256 << 10))
SOCK_BUF_BYTES = 4 << 20
DUPLICATE_CHECK_S = 1.0
"""While waiting for its left neighbour, a rank reads its own address back this often."""
#: "auto": cross-memory attach to same-host neighbours when the probe succeeds; "socket": never
LINK_MODES = ("auto", "socket")
#: call sizes the data-path probe times (bytes): from the eager size up (below it an attach
#: link sends inline anyway), x4 per step, up to 16 MiB (about 5 + 11 ms per call here)
LINK_LADDER = tuple(EAGER_MAX << (2 * i) for i in range(5))
_HELLO = struct.Struct("!8sI")
_MAGIC = b"kvrring1"


def _tune(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCK_BUF_BYTES)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCK_BUF_BYTES)


class SendLink:
    """Right-hand link: inline non-blocking send first, a sender thread for the rest."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._queue: collections.deque[memoryview] = collections.deque()
        self._cv = threading.Condition()
        self._busy = False  # the thread holds a view it is sending
        self._error: OSError | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="tcp-ring-send", daemon=True)
        self._thread.start()

    def post_send(self, data: memoryview) -> None:
        with self._cv:
            if self._error is not None:
                raise self._error
            idle = not self._queue and not self._busy
        if idle:
            try:
                sent = self.sock.send(data, socket.MSG_DONTWAIT)
            except BlockingIOError:
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
        with self._cv:
            self._queue.append(data)
            self._cv.notify_all()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._closed:
                    self._cv.wait()
                if self._closed and not self._queue:
                    return
                data = self._queue.popleft()
                self._busy = True
            try:
                self.sock.sendall(data)
            except OSError as exc:
                with self._cv:
                    self._error = exc
                    self._queue.clear()
                    self._busy = False
                    self._cv.notify_all()
                return
            with self._cv:
                self._busy = False
                self._cv.notify_all()

    def flush(self) -> None:
        with self._cv:
            while (self._queue or self._busy) and self._error is None:
                self._cv.wait(0.5)
            if self._error is not None:
                raise self._error

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()


class RecvLink:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def post_send(self, data: memoryview) -> None:  # pragma: no cover - receive-only link
        raise NotImplementedError

    def flush(self) -> None:  # pragma: no cover
        pass

    def recv_into(self, out: memoryview) -> None:
        got, n = 0, len(out)
        while got < n:
            k = self.sock.recv_into(out[got:], n - got, socket.MSG_WAITALL)
            if k == 0:
                raise ConnectionResetError("connection closed by peer")
            got += k


class _SendOnly:
    """Adapter so the ring sees one Link object per side."""

    def __init__(self, link: SendLink | CMASendLink) -> None:
        self.link = link

    def post_send(self, data: memoryview) -> None:
        self.link.post_send(data)

    def flush(self) -> None:
        self.link.flush()

    def recv_into(self, out: memoryview) -> None:  # pragma: no cover
        raise NotImplementedError


class TCPBackend(RingBackend):
    name = "tcp"
    interruptible = True

    def __init__(
        self,
        rank: int,
        size: int,
        rendezvous: Rendezvous,
        *,
        host: str = "127.0.0.1",
        prefix: str = "tcp",
        global_ranks: list[int] | None = None,
        timeout_s: float = 60.0,
        fusion: FusionPolicy = TCP_FUSION,
        segment_bytes: int = SEGMENT_BYTES,
        links: str = "auto",
        cma_min_bytes: int | None = None,
    ) -> None:
        super().__init__(rank, size, global_ranks or list(range(size)), fusion, segment_bytes)
        if links not in LINK_MODES:
            raise ValueError(f"links must be one of {', '.join(LINK_MODES)}, not {links!r}")
        if cma_min_bytes is not None and cma_min_bytes < 0:
            raise ValueError("cma_min_bytes must be >= 0 (None: measure it)")
        self.link_mode = links
        #: what each direction can use, to the right and from the left: "socket" or "cma"
        self.link_kinds: dict[str, str] = {}
        #: the fixed threshold asked for (None: probe); what is in force is ``cma_min_bytes``
        self.cma_min_bytes_asked = cma_min_bytes
        #: calls of at least this many bytes use the attach links (None: never, or not known yet)
        self.cma_min_bytes: int | None = None
        #: the data-path probe's measurements, when it ran
        self.link_probe: LinkProbe | None = None
        self._links_state = "new"  # -> "probe" (agreed, not measured yet) -> "done"
        self._force: str | None = None  # "socket" / "attach" while agreeing and probing
        self._socket_pair: tuple[Link, Link] | None = None
        self._attach_pair: tuple[Link, Link] | None = None
        self.rendezvous = rendezvous
        self.host = host
        self.prefix = prefix
        self.timeout_s = timeout_s
        self._socks: list[socket.socket] = []
        self._send_link: SendLink | None = None
        if size > 1:
            try:
                self._connect()
            except BaseException:
                self.close()  # the listener and any connection made: nothing is left open
                raise

    def _connect(self) -> None:
        listener = socket.create_server((self.host, 0), backlog=16)
        self._socks = [listener]
        _tune(listener)
        port = listener.getsockname()[1]
        own_key, mine = f"{self.prefix}/addr/{self.rank}", f"{self.host}:{port}".encode()
        before = self._peek(own_key)
        self.rendezvous.set(own_key, mine)
        right = (self.rank + 1) % self.size
        out = self._dial(right, time.monotonic() + self.timeout_s, (own_key, mine))
        self._socks.append(out)
        _tune(out)
        out.settimeout(None)
        out.sendall(_HELLO.pack(_MAGIC, self.rank))
        want_cma = self.link_mode == "auto"
        left = (self.rank - 1) % self.size
        deadline = time.monotonic() + self.timeout_s
        try:
            while True:
                listener.settimeout(min(DUPLICATE_CHECK_S, max(0.01, deadline - time.monotonic())))
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    if time.monotonic() >= deadline:
                        raise
                    self._check_still_mine(own_key, mine)  # else a second process runs as this rank
                    continue
                conn.settimeout(self.timeout_s)
                try:
                    hello = conn.recv(_HELLO.size, socket.MSG_WAITALL)
                except TimeoutError:
                    raise
                except OSError:
                    hello = b""
                if len(hello) == _HELLO.size and _HELLO.unpack(hello) == (_MAGIC, left):
                    break
                conn.close()  # not our left neighbour (an earlier run's rank, a stray client)
        except TimeoutError as exc:
            hint = ""
            if before and before != mine and _listening(before):
                hint = (f" (addr/{self.rank} held {before.decode(errors='replace')} before this process published its own, "
                        "and something listens there: a second process running as this rank?)")
            raise CollectiveTimeout(f"tcp ring: rank {left} did not connect within {self.timeout_s} s{hint}") from exc
        finally:
            listener.close()
        self._socks = [out, conn]
        try:  # link choice: offer on the right connection, answer on the left one
            out.settimeout(self.timeout_s)
            answer = handshake_send(out, want_cma)
            left_pid = handshake_recv(conn, want_cma)
            right_cma = answer()
        except (TimeoutError, OSError) as exc:
            raise CollectiveTimeout(f"tcp ring: link handshake with rank {left} / {right} failed: {exc}") from exc
        _tune(conn)
        conn.settimeout(None)
        out.settimeout(None)
        # the plain socket links always exist (small calls use them); the attach links beside
        # them where the probe allowed it. A connection switches between the two only between
        # collectives, when both ends have consumed everything (flush waited for every ack).
        socket_right = _SendOnly(self._start_sender(out))
        socket_left = RecvLink(conn)
        self._socket_pair = (socket_right, socket_left)
        if right_cma or left_pid is not None:
            attach_right: Link = socket_right
            attach_left: Link = socket_left
            if right_cma:
                # hold announcements back until this rank would block: only when every blocking
                # receive is on a CMA link that pushes them first (else they go out at once)
                sender = CMASendLink(out, coalesce=left_pid is not None)
                attach_right = _SendOnly(sender)
            if left_pid is not None:
                attach_left = CMARecvLink(conn, left_pid, before_block=sender.push if right_cma else None)
            self._attach_pair = (attach_right, attach_left)
        self.right, self.left = self._socket_pair
        self.link_kinds = {"right": "cma" if right_cma else "socket", "left": "cma" if left_pid is not None else "socket"}

    def _peek(self, key: str) -> bytes | None:
        """The rendezvous' value of ``key`` now, or None (not published)."""
        try:
            return self.rendezvous.get(key, 0.05)
        except CollectiveTimeout:
            return None

    def _check_still_mine(self, key: str, mine: bytes) -> None:
        """Another process published this rank's address since (two processes given the same
        rank: a launcher or KVRAFT_RANK mistake): say so, instead of timing out later on a left
        neighbour that connected to the other one."""
        now = self._peek(key)
        if now is not None and now != mine:
            raise DuplicateRank(
                f"tcp ring: rank {self.rank}: another process published this rank's address "
                f"({now[:100].decode(errors='replace')}, this one is {mine.decode()}): two processes run as rank "
                f"{self.rank} of {self.size} (check KVRAFT_RANK and the launcher)")

    def _dial(self, right: int, deadline: float, own: tuple[str, bytes] | None = None) -> socket.socket:
        """Connect to the address ``right`` published, read again before every attempt: a key
        left by an earlier run under the same run id (a file store, a crashed rank's lease not
        expired yet) names a dead port until the rank, starting later, overwrites it. While
        it cannot connect, this rank's own address (``own``: key, value) is read back every
        ``DUPLICATE_CHECK_S`` (``_check_still_mine``)."""
        key = f"{self.prefix}/addr/{right}"
        checked = time.monotonic()
        while True:
            try:
                raw = self.rendezvous.get(key, max(0.1, deadline - time.monotonic()))
            except CollectiveTimeout as exc:
                raise CollectiveTimeout(f"tcp ring: rank {right} did not publish its address ({key}) "
                                        f"within {self.timeout_s} s") from exc
            host, _, port = raw.decode(errors="replace").rpartition(":")
            try:
                if not host or not port.isdigit() or not 0 < int(port) < 65536:
                    raise OSError(f"{raw[:100]!r} is not host:port")
                return socket.create_connection((host, int(port)), timeout=max(0.1, deadline - time.monotonic()))
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise CollectiveTimeout(f"tcp ring: cannot connect to rank {right} at {raw[:100].decode(errors='replace')} "
                                            f"within {self.timeout_s} s: {exc}") from exc
                if own is not None and time.monotonic() - checked >= DUPLICATE_CHECK_S:
                    checked = time.monotonic()
                    self._check_still_mine(*own)
                time.sleep(0.05)

    # -- data path per call size -----------------------------------------------------------
    def _select_links(self, nbytes: int) -> None:
        if self._socket_pair is None:
            return
        kind = self._force
        if kind is None:
            if self._links_state == "new":
                self._agree_links()
            if self._links_state == "probe" and nbytes >= LINK_LADDER[0]:
                self._probe_links()
            kind = "attach" if self.cma_min_bytes is not None and nbytes >= self.cma_min_bytes else "socket"
        pair = self._attach_pair if kind == "attach" and self._attach_pair is not None else self._socket_pair
        self.right, self.left = pair

    def _agree_links(self) -> None:
        """Collective, at the first collective: can any link attach, is a threshold fixed?"""
        mine = np.array([self._attach_pair is not None, -1 if self.cma_min_bytes_asked is None else self.cma_min_bytes_asked], np.int64)
        every = np.zeros(2 * self.size, np.int64)
        self._force = "socket"
        try:
            self.allgather(mine, every)
        finally:
            self._force = None
        fixed = [int(x) for x in every[1::2] if x >= 0]
        if not every[0::2].any():
            self.cma_min_bytes, self._links_state = None, "done"
        elif fixed:  # set on some ranks: the largest, so every rank uses the same
            self.cma_min_bytes, self._links_state = max(fixed), "done"
        else:
            self._links_state = "probe"

    def _probe_links(self) -> None:
        """Collective: time both data paths on the ladder; every rank gets the same threshold."""

        def run(kind: str, buf: np.ndarray) -> None:
            self._force = kind
            self.allreduce(buf)

        def agree(times: np.ndarray) -> None:
            self._force = "socket"
            self.allreduce(times)

        try:
            self.link_probe = probe_links(run, agree, LINK_LADDER)
        finally:
            self._force = None
        self.cma_min_bytes, self._links_state = self.link_probe.threshold, "done"

    def links_for(self, nbytes: int) -> str:
        """What a collective of ``nbytes`` bytes uses now: ``socket``, ``cma`` or ``cma+socket``
        (``cma`` only once the threshold is known)."""
        if self.cma_min_bytes is None or nbytes < self.cma_min_bytes:
            return "socket" if self.link_kinds else "none"
        return self.links

    def _start_sender(self, sock: socket.socket) -> SendLink:
        self._send_link = SendLink(sock)
        return self._send_link

    @property
    def links(self) -> str:
        """``socket``, ``cma``, or ``cma+socket`` when the two directions differ."""
        kinds = sorted(set(self.link_kinds.values()))
        return "+".join(kinds) if kinds else "none"

    def _make_group(self, members: list[int], index: int, tag: str) -> TCPBackend:
        return TCPBackend(
            index,
            len(members),
            self.rendezvous,
            host=self.host,
            prefix=f"{self.prefix}/{tag}",
            global_ranks=[self.global_ranks[m] for m in members],
            timeout_s=self.timeout_s,
            fusion=self.fusion,
            segment_bytes=self.segment_bytes,
            links=self.link_mode,
            cma_min_bytes=self.cma_min_bytes_asked,
        )

    def abort(self) -> None:
        for s in self._socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        if self._send_link is not None:
            self._send_link.close()
        for s in self._socks:
            with contextlib.suppress(OSError):
                s.close()
        self._socks = []


class TCPFactory:
    name = "tcp"

    def enabled(self, env: dict[str, str]) -> bool:
        return bool(env.get("KVRAFT_RENDEZVOUS"))

    def create(self, rank: int, size: int, env: dict[str, str], rendezvous: object | None,
               timeout_s: float = 60.0) -> TCPBackend:
        if rendezvous is None:
            raise ValueError("the tcp backend needs a rendezvous (KVRAFT_RENDEZVOUS)")
        host = env.get("KVRAFT_COLLECTIVE_HOST") or "127.0.0.1"  # empty is unset: '' would listen on every interface
        links = env.get("KVRAFT_COLLECTIVE_LINKS") or "auto"
        fixed = env.get("KVRAFT_COLLECTIVE_CMA_MIN_BYTES", "probe")
        try:
            cma_min = None if fixed in ("", "probe") else int(fixed)
        except ValueError:
            raise ValueError(f"KVRAFT_COLLECTIVE_CMA_MIN_BYTES={fixed!r} is not a number of bytes (or 'probe')") from None
        return TCPBackend(rank, size, rendezvous, host=host, links=links, cma_min_bytes=cma_min,  # type: ignore[arg-type]
                          timeout_s=timeout_s)


def _listening(address: bytes) -> bool:
    """Whether something accepts connections at ``host:port`` (probed once, 0.5 s at most)."""
    host, _, port = address.decode(errors="replace").rpartition(":")
    if not host or not port.isdigit():
        return False
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


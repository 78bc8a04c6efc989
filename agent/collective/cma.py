"""Same-host ring link: the receiver copies straight out of the sender's memory (CMA).

Between two ranks on the same host, a loopback TCP socket copies every byte twice (user
buffer -> socket buffer -> user buffer). Open MPI's ``btl/sm`` avoids that for large messages
with *cross-memory attach*: ``process_vm_readv(2)`` lets the receiver copy directly from the
sender's address space, one copy in all. This module gives the ring (``ring.py``) a link with
that data path; the ring code is unchanged, it still calls ``post_send`` / ``recv_into`` /
``flush``.

Protocol, on the existing TCP connection of the pair (which stays the control channel):

* ``post_send(data)``: data of at least ``eager_max`` bytes is *announced*: a 17-byte header
  ``(kind=CMA, address, length)``; the sender copies nothing. Smaller data goes *eager*:
  header ``(kind=EAGER, 0, length)`` followed by the bytes, as on a plain socket (a pull costs
  a syscall and an acknowledgement, which is more than a small copy).
* ``recv_into(out)``: reads headers; eager bytes are received into ``out`` directly, announced
  ranges are pulled with ``process_vm_readv`` into ``out`` and acknowledged with one byte.
* ``flush()``: the sender waits until every announced range was acknowledged, so it may not
  reuse or free the memory before the receiver has read it (the Link contract already says a
  posted buffer stays untouched until ``flush``; the ring flushes before returning).

Why ring order makes this safe without more synchronisation: a rank overwrites a range it
announced earlier only when the fully reduced chunk comes back round the ring, which needs its
right neighbour to have pulled (and reduced) that range first.

Failure detection is that of the socket link: a crashed peer closes the connection (EOF), a
pull from a dead process fails with ``ESRCH``; a stopped peer is found by the monitor, whose
``abort()`` shuts the socket down so a blocked ``recv`` returns at once.

Choosing the link (``handshake_send`` / ``handshake_recv``, once per connection): the sender
offers ``(pid, boot id, pid namespace, address and value of a 16-byte random nonce)``. The
receiver accepts only when it is not forced to sockets, the boot id and pid namespace are its
own (same kernel, same pid numbering), and a ``process_vm_readv`` of the nonce returns it. So
ranks on other hosts, in other containers, or where ptrace access is denied (Yama
``ptrace_scope`` >= 1 for non-descendants, seccomp) keep the socket link; nothing is assumed
from host names.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct
import sys
from collections.abc import Callable

import numpy as np

__all__ = ["CMARecvLink", "CMASendLink", "EAGER_MAX", "available", "handshake_recv", "handshake_send"]

#: below this many bytes data travels inline on the socket (measured: a pull + ack costs more)
EAGER_MAX = int(os.environ.get("KVRAFT_COLLECTIVE_CMA_EAGER_BYTES", 64 << 10))

_HDR = struct.Struct("<BQQ")  # kind, address, length
_EAGER, _PULL = 0, 1
_OFFER = struct.Struct("<8sI16sQQ16s")  # magic, pid, boot id, pid-ns inode, nonce address, nonce
_MAGIC = b"kvrcma01"
_ACCEPT, _DECLINE = b"\x01", b"\x00"


class _IOVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


def _load() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.process_vm_readv
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.POINTER(_IOVec), ctypes.c_ulong, ctypes.POINTER(_IOVec), ctypes.c_ulong, ctypes.c_ulong]
    fn.restype = ctypes.c_ssize_t
    return fn


_readv = _load()


def available() -> bool:
    """process_vm_readv exists here (whether a given peer may be read is probed per link)."""
    return _readv is not None


def _identity() -> tuple[bytes, int] | None:
    try:
        with open("/proc/sys/kernel/random/boot_id", "rb") as f:
            boot = f.read().strip().replace(b"-", b"")
        return bytes.fromhex(boot.decode())[:16], os.stat("/proc/self/ns/pid").st_ino
    except (OSError, ValueError):
        return None


def _pull(pid: int, local: int, remote: int, n: int) -> None:
    """Copy ``n`` bytes at ``remote`` in process ``pid`` to ``local`` (raises OSError)."""
    assert _readv is not None
    while n > 0:
        liov = _IOVec(local, n)
        riov = _IOVec(remote, n)
        got = _readv(pid, ctypes.byref(liov), 1, ctypes.byref(riov), 1, 0)
        if got <= 0:
            err = ctypes.get_errno() if got < 0 else errno.EIO
            raise OSError(err, f"process_vm_readv from pid {pid}: {os.strerror(err)}")
        local += got
        remote += got
        n -= got


def _address(data: memoryview) -> int:
    return int(np.frombuffer(data, np.uint8).ctypes.data)


def _recv_exact(sock: socket.socket, out: memoryview) -> None:
    got, n = 0, len(out)
    while got < n:
        k = sock.recv_into(out[got:], n - got, socket.MSG_WAITALL)
        if k == 0:
            raise ConnectionResetError("connection closed by peer")
        got += k


# -- link selection ---------------------------------------------------------------------------
class _Nonce:
    """16 random bytes at a fixed address of this process, for the receiver to read back."""

    def __init__(self) -> None:
        self.value = os.urandom(16)
        self.buf = ctypes.create_string_buffer(self.value, 16)

    @property
    def address(self) -> int:
        return ctypes.addressof(self.buf)

    def release(self) -> None:
        ctypes.memset(self.buf, 0, 16)


def handshake_send(sock: socket.socket, want: bool) -> Callable[[], bool]:
    """Sender side of one connection: offer CMA (when ``want``) now; the returned function
    reads the answer (call it after answering the other connection's offer: no deadlock)."""
    ident = _identity() if want and available() else None
    nonce = _Nonce()
    if ident is None:
        sock.sendall(_OFFER.pack(_MAGIC, 0, b"\0" * 16, 0, 0, b"\0" * 16))
    else:
        sock.sendall(_OFFER.pack(_MAGIC, os.getpid(), ident[0], ident[1], nonce.address, nonce.value))

    def accepted() -> bool:
        reply = bytearray(1)
        _recv_exact(sock, memoryview(reply))
        nonce.release()  # only now: the receiver read it (or gave up) before answering
        return bytes(reply) == _ACCEPT

    return accepted


def handshake_recv(sock: socket.socket, want: bool) -> int | None:
    """Receiver side: read the offer, probe it, answer; the sender's pid when CMA is on."""
    raw = bytearray(_OFFER.size)
    _recv_exact(sock, memoryview(raw))
    magic, pid, boot, pidns, addr, value = _OFFER.unpack(bytes(raw))
    if magic != _MAGIC:
        raise ConnectionError("ring link: bad link offer from the left neighbour")
    ok = False
    ident = _identity() if want and available() and pid else None
    if ident is not None and ident == (boot, pidns):
        probe = ctypes.create_string_buffer(16)
        try:
            _pull(pid, ctypes.addressof(probe), addr, 16)
            ok = probe.raw == value
        except OSError:  # EPERM (ptrace policy), ESRCH, EFAULT: keep the socket
            ok = False
    sock.sendall(_ACCEPT if ok else _DECLINE)
    return pid if ok else None


# -- the links ------------------------------------------------------------------------------------
class CMASendLink:
    """Right-hand side: announce ranges (or send small ones inline); ``flush`` waits for acks.

    With ``coalesce``, announcements of contiguous ranges are merged and held back until the
    pending range reaches ``announce_max`` bytes, until ``push()`` or ``flush()``. The
    backend calls ``push()`` whenever this rank is about to block receiving (see
    ``CMARecvLink.before_block``), so a neighbour never waits for a range that is ready: a
    rank wakes its neighbour once per ring step instead of once per segment, which matters
    when the cores are oversubscribed and every wake-up waits for a scheduler slice.
    """

    links = "cma"

    def __init__(self, sock: socket.socket, eager_max: int = EAGER_MAX, *, coalesce: bool = False, announce_max: int = 8 << 20) -> None:
        self.sock = sock
        self.eager_max = eager_max
        self.coalesce = coalesce
        self.announce_max = announce_max
        self._unacked = 0
        self._acks = bytearray(4096)
        self._pending_addr = 0
        self._pending_len = 0

    def post_send(self, data: memoryview) -> None:
        n = len(data)
        if n == 0:
            return
        if n < self.eager_max:
            self.push()  # keep the stream in posting order
            hdr = _HDR.pack(_EAGER, 0, n)
            sent = self.sock.sendmsg([hdr, data])
            if sent < len(hdr) + n:
                rest = (hdr + bytes(data))[sent:]
                self.sock.sendall(rest)
            return
        addr = _address(data)
        if self._pending_len and addr != self._pending_addr + self._pending_len:
            self.push()
        if not self._pending_len:
            self._pending_addr = addr
        self._pending_len += n
        if not self.coalesce or self._pending_len >= self.announce_max:
            self.push()

    def push(self) -> None:
        """Announce the range held back, if any."""
        if self._pending_len:
            hdr = _HDR.pack(_PULL, self._pending_addr, self._pending_len)
            self._pending_len = 0
            self.sock.sendall(hdr)
            self._unacked += 1

    def flush(self) -> None:
        self.push()
        view = memoryview(self._acks)
        while self._unacked > 0:
            k = self.sock.recv_into(view, min(len(view), self._unacked))
            if k == 0:
                raise ConnectionResetError("connection closed by peer")
            self._unacked -= k

    def recv_into(self, out: memoryview) -> None:  # pragma: no cover - send-only link
        raise NotImplementedError


class CMARecvLink:
    """Left-hand side: receive eager bytes, pull announced ranges, acknowledge each pull."""

    links = "cma"

    def __init__(self, sock: socket.socket, pid: int, before_block: Callable[[], None] | None = None) -> None:
        self.sock = sock
        self.pid = pid
        #: called before this link blocks waiting for its neighbour (``CMASendLink.push``)
        self.before_block = before_block
        self._hdr = bytearray(_HDR.size)
        self._kind = _EAGER
        self._addr = 0
        self._left = 0  # bytes of the current message not consumed yet

    def post_send(self, data: memoryview) -> None:  # pragma: no cover - receive-only link
        raise NotImplementedError

    def flush(self) -> None:  # pragma: no cover
        pass

    def recv_into(self, out: memoryview) -> None:
        n = len(out)
        if n == 0:
            return
        base = _address(out)
        got = 0
        while got < n:
            if self._left == 0:
                self._read_header()
                if self._left == 0:
                    continue
            k = min(self._left, n - got)
            if self._kind == _EAGER:
                _recv_exact(self.sock, out[got : got + k])
            else:
                _pull(self.pid, base + got, self._addr, k)
                self._addr += k
            self._left -= k
            got += k
            if self._left == 0 and self._kind == _PULL:
                self.sock.sendall(b"\x01")

    def _read_header(self) -> None:
        hdr = memoryview(self._hdr)
        got = 0
        if self.before_block is not None:
            try:  # a header that is already there needs no push
                got = self.sock.recv_into(hdr, len(hdr), socket.MSG_DONTWAIT)
            except BlockingIOError:
                got = 0
            else:
                if got == 0:
                    raise ConnectionResetError("connection closed by peer")
            if got < len(hdr):
                self.before_block()
        _recv_exact(self.sock, hdr[got:])
        self._kind, self._addr, self._left = _HDR.unpack(self._hdr)

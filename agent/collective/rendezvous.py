"""Rendezvous: how ranks find each other before the first collective.

A ``Rendezvous`` is a tiny key-value store: ``set(key, value)`` and a blocking
``get(key, timeout_s)``. The TCP ring publishes its listening address under
``addr/<rank>`` and reads its right neighbour's. Keys are namespaced by the run id, so a
store that outlives one run (a shared directory, or kvraft) is not confused by the previous.

Implementations:

* ``TCPStoreRendezvous`` (``tcp://host:port``): rank 0 hosts a small threaded TCP server,
  every rank (rank 0 too) is a client. Good on one host and across hosts.
* ``FileRendezvous`` (``file:///path``): a directory every rank can see (one host, or NFS).
  ``set`` writes atomically (temp file + rename); ``get`` polls.
* later ``KvraftRendezvous``: ``set`` = put under ``/jobs/<job>/rdzv/``, ``get`` = get + watch,
  through ``kvraft.client`` only. Nothing else changes: the Protocol is all the exchange uses.

Thread safety: every method may be called from any thread (clients serialise internally).
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Protocol

from agent.collective.errors import CollectiveTimeout

__all__ = ["FileRendezvous", "Rendezvous", "TCPStoreRendezvous", "TCPStoreServer", "from_url"]

_HDR = struct.Struct("!BII")  # op, key length, value length
_OP_SET, _OP_GET, _OP_OK, _OP_MISSING = 1, 2, 3, 4


class Rendezvous(Protocol):
    def set(self, key: str, value: bytes) -> None: ...

    def get(self, key: str, timeout_s: float) -> bytes:
        """Value of ``key``, waiting up to ``timeout_s`` for some rank to set it;
        ``CollectiveTimeout`` otherwise."""

    def close(self) -> None: ...


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            raise ConnectionError("rendezvous connection closed")
        got += k
    return bytes(buf)


class TCPStoreServer:
    """The server rank 0 hosts; one thread per client connection (a job has few)."""

    def __init__(self, host: str, port: int) -> None:
        self._data: dict[str, bytes] = {}
        self._cv = threading.Condition()
        self._sock = socket.create_server((host, port), reuse_port=False, backlog=1024)
        self.address = self._sock.getsockname()[:2]
        self._closed = False
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept_loop, name="rdzv-server", daemon=True).start()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), name="rdzv-conn", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            while True:
                op, klen, vlen = _HDR.unpack(_recv_exact(conn, _HDR.size))
                key = _recv_exact(conn, klen).decode()
                payload = _recv_exact(conn, vlen) if vlen else b""
                if op == _OP_SET:
                    with self._cv:
                        self._data[key] = payload
                        self._cv.notify_all()
                    conn.sendall(_HDR.pack(_OP_OK, 0, 0))
                elif op == _OP_GET:
                    timeout_s = struct.unpack("!d", payload)[0]
                    deadline = time.monotonic() + timeout_s
                    with self._cv:
                        while key not in self._data and not self._closed:
                            left = deadline - time.monotonic()
                            if left <= 0:
                                break
                            self._cv.wait(left)
                        value = self._data.get(key)
                    if value is None:
                        conn.sendall(_HDR.pack(_OP_MISSING, 0, 0))
                    else:
                        conn.sendall(_HDR.pack(_OP_OK, 0, len(value)) + value)
        except (OSError, struct.error):
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self._closed = True
        with self._cv:
            self._cv.notify_all()
        with contextlib.suppress(OSError):
            self._sock.close()
        for c in self._conns:
            with contextlib.suppress(OSError):
                c.close()


class TCPStoreRendezvous:
    def __init__(self, host: str, port: int, rank: int, run_id: str = "", timeout_s: float = 60.0) -> None:
        self.server = TCPStoreServer(host, port) if rank == 0 else None
        self.prefix = f"{run_id}/" if run_id else ""
        deadline = time.monotonic() + timeout_s
        last: OSError | None = None
        while True:
            try:
                self._sock = socket.create_connection((host, port), timeout=max(0.1, deadline - time.monotonic()))
                break
            except OSError as exc:  # server not up yet
                last = exc
                if time.monotonic() > deadline:
                    raise CollectiveTimeout(f"rendezvous tcp://{host}:{port} unreachable for {timeout_s} s: {last}") from exc
                time.sleep(0.05)
        self._sock.settimeout(None)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._lock = threading.Lock()

    def _call(self, op: int, key: str, payload: bytes) -> tuple[int, bytes]:
        k = (self.prefix + key).encode()
        with self._lock:
            self._sock.sendall(_HDR.pack(op, len(k), len(payload)) + k + payload)
            rop, _, vlen = _HDR.unpack(_recv_exact(self._sock, _HDR.size))
            return rop, _recv_exact(self._sock, vlen) if vlen else b""

    def set(self, key: str, value: bytes) -> None:
        self._call(_OP_SET, key, value)

    def get(self, key: str, timeout_s: float) -> bytes:
        op, value = self._call(_OP_GET, key, struct.pack("!d", timeout_s))
        if op != _OP_OK:
            raise CollectiveTimeout(f"rendezvous: key {key!r} not published within {timeout_s} s")
        return value

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()
        if self.server is not None:
            self.server.close()


class FileRendezvous:
    def __init__(self, directory: str | Path, run_id: str = "") -> None:
        self.dir = Path(directory) / (run_id or "default")
        self.dir.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.dir / urllib.parse.quote(key, safe="")

    def set(self, key: str, value: bytes) -> None:
        path = self._path(key)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_bytes(value)
        os.replace(tmp, path)

    def get(self, key: str, timeout_s: float) -> bytes:
        deadline = time.monotonic() + timeout_s
        pause = 0.002
        path = self._path(key)
        while True:
            try:
                return path.read_bytes()
            except FileNotFoundError:
                if time.monotonic() > deadline:
                    raise CollectiveTimeout(f"rendezvous: {path} not written within {timeout_s} s") from None
                time.sleep(pause)
                pause = min(pause * 2, 0.05)

    def close(self) -> None:
        pass


def from_url(url: str, rank: int, run_id: str = "", timeout_s: float = 60.0) -> Rendezvous:
    """``tcp://host:port`` or ``file:///dir``."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "tcp":
        if not parsed.hostname or not parsed.port:
            raise ValueError(f"rendezvous url {url!r} needs host and port")
        return TCPStoreRendezvous(parsed.hostname, parsed.port, rank, run_id, timeout_s)
    if parsed.scheme == "file":
        return FileRendezvous(parsed.path, run_id)
    raise ValueError(f"unknown rendezvous url {url!r}; use tcp://host:port or file:///dir")

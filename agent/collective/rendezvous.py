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
* ``KvraftRendezvous`` (``kvraft://[ep1,ep2]/prefix``, endpoints default to
  ``KVRAFT_ENDPOINTS``, prefix to ``/jobs/<KVRAFT_JOB>/rendezvous``): ``set`` = put under
  ``<prefix>/<run id>/`` attached to a lease this rank keeps alive (the keys vanish with the
  rank), ``get`` = get, then a watch from the next revision. Through ``kvraft.client`` only.
  This is what a job the scheduler places uses: no rank has to host anything.

Thread safety: every method may be called from any thread (clients serialise internally).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any, Protocol

from agent.collective.errors import CollectiveTimeout, PeerFailure

__all__ = ["FileRendezvous", "KvraftRendezvous", "Rendezvous", "TCPStoreRendezvous", "TCPStoreServer", "client_options",
           "from_url", "kvraft_from_url"]

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
                    if value is None and self._closed:
                        return  # closing: not "not published within N s", the store is gone
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
        with contextlib.suppress(OSError):  # wakes the accept thread: a bare close leaves the
            self._sock.shutdown(socket.SHUT_RDWR)  # port bound while accept() still blocks on it
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
        self.rank = rank
        self.url = f"tcp://{host}:{port}"

    def _call(self, op: int, key: str, payload: bytes) -> tuple[int, bytes]:
        k = (self.prefix + key).encode()
        with self._lock:
            try:
                self._sock.sendall(_HDR.pack(op, len(k), len(payload)) + k + payload)
                rop, _, vlen = _HDR.unpack(_recv_exact(self._sock, _HDR.size))
                return rop, _recv_exact(self._sock, vlen) if vlen else b""
            except OSError as exc:  # ConnectionError included: the store went away with rank 0
                raise PeerFailure([0], f"the rendezvous {self.url} that rank 0 hosts is gone: {exc}", self.rank) from exc

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


class KvraftRendezvous:
    """Keys in kvraft under ``<prefix>/<run id>/``, written under a lease of ``lease_ttl_s``
    that a thread keeps alive while this object is open.

    ``kvraft.client`` is imported lazily: a training script that uses MPI or the TCP store
    pays nothing for it.
    """

    def __init__(self, endpoints: list[str], prefix: str, run_id: str = "", *, lease_ttl_s: int = 30,
                 timeout_s: float = 60.0, **client_options: Any) -> None:
        from kvraft.client import Client, EndpointError, UnavailableError

        self.prefix = prefix.rstrip("/") + "/" + (f"{run_id}/" if run_id else "")
        self.lease_ttl_s = lease_ttl_s
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="rdzv-kvraft", daemon=True)
        self._thread.start()
        client_options.setdefault("request_timeout_s", 10.0)
        self._client = Client(endpoints, **client_options)
        self._closed = threading.Event()
        self.lease_id = 0
        deadline = time.monotonic() + timeout_s
        try:
            while True:  # kvraft not up yet, or electing a leader: as the tcp:// store, wait
                try:
                    self._run(self._client.open(), max(0.1, deadline - time.monotonic()))
                    self.lease_id = self._run(self._client.lease_grant(lease_ttl_s),
                                              max(0.1, deadline - time.monotonic())).id
                    break
                except (EndpointError, UnavailableError, TimeoutError) as exc:
                    if isinstance(exc, EndpointError) and exc.tls:  # a certificate refused: no wait mends it
                        raise
                    if time.monotonic() >= deadline:
                        raise CollectiveTimeout(f"rendezvous kvraft {','.join(endpoints)}: unreachable for {timeout_s} s: "
                                                f"{exc or type(exc).__name__}") from exc
                    with contextlib.suppress(Exception):
                        self._run(self._client.close(), 5.0)
                    self._client = Client(endpoints, **client_options)
                    time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        except BaseException:
            self.close()
            raise
        self._keeper = threading.Thread(target=self._keep_alive, name="rdzv-lease", daemon=True)
        self._keeper.start()

    def _run(self, coro: Any, timeout_s: float | None = None) -> Any:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout_s)
        except TimeoutError:
            future.cancel()
            raise

    def _keep_alive(self) -> None:
        period = max(0.5, self.lease_ttl_s / 3)
        while not self._closed.wait(period):
            with contextlib.suppress(Exception):
                self._run(self._client.lease_keep_alive_once(self.lease_id), period * 2)

    def set(self, key: str, value: bytes) -> None:
        self._run(self._client.put(self.prefix + key, value, lease=self.lease_id), 30.0)

    def delete(self, key: str) -> None:
        self._run(self._client.delete(self.prefix + key), 30.0)

    def try_get(self, key: str) -> bytes | None:
        got = self._run(self._client.get(self.prefix + key), 30.0)
        return bytes(got.kvs[0].value) if got.kvs else None

    async def _get(self, key: str) -> bytes:
        full = self.prefix + key
        while True:
            got = await self._client.get(full)
            if got.kvs:
                return bytes(got.kvs[0].value)
            watcher = self._client.watch(full, start_revision=got.header.revision + 1)
            try:
                async for response in watcher:
                    for event in response.events:
                        if event.type == "PUT":
                            return bytes(event.kv.value)
            finally:
                await watcher.close()

    async def _get_within(self, key: str, timeout_s: float) -> bytes:
        async with asyncio.timeout(timeout_s):
            return await self._get(key)

    def get(self, key: str, timeout_s: float) -> bytes:
        try:
            return self._run(self._get_within(key, timeout_s))  # type: ignore[no-any-return]
        except TimeoutError:
            raise CollectiveTimeout(f"rendezvous: {self.prefix}{key} not published within {timeout_s} s") from None

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        with contextlib.suppress(Exception):
            if self.lease_id:
                self._run(self._client.lease_revoke(self.lease_id), 5.0)
        with contextlib.suppress(Exception):
            self._run(self._client.close(), 5.0)
        # the keeper saw _closed, or its keepalive failed with the client's close: it ends
        # now, before the loop it sends on stops (a close that returned with it still alive
        # left a thread behind; seen in the full run)
        keeper = getattr(self, "_keeper", None)
        if keeper is not None and keeper is not threading.current_thread():
            keeper.join(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)


def kvraft_from_url(url: str, run_id: str = "", timeout_s: float = 60.0,
                    env: dict[str, str] | None = None) -> KvraftRendezvous:
    """``kvraft://ep1,ep2/prefix``; empty parts come from ``KVRAFT_ENDPOINTS`` and ``KVRAFT_JOB``."""
    env = dict(os.environ if env is None else env)
    rest = url.split("://", 1)[1] if "://" in url else ""
    netloc, _, path = rest.partition("/")
    endpoints = [e for e in (netloc or env.get("KVRAFT_ENDPOINTS", "")).split(",") if e]
    if not endpoints:
        raise ValueError(f"rendezvous url {url!r}: no kvraft endpoints (in the url or KVRAFT_ENDPOINTS)")
    prefix = "/" + path.strip("/") if path.strip("/") else f"/jobs/{env.get('KVRAFT_JOB') or 'default'}/rendezvous"
    return KvraftRendezvous(endpoints, prefix, run_id, timeout_s=timeout_s, **client_options(env))


def client_options(env: dict[str, str]) -> dict[str, Any]:
    """``kvraft.client.Client`` options from a rank's environment (``agent.rankenv``):
    ``KVRAFT_USER``/``KVRAFT_PASSWORD`` (a job's own login wins), else ``KVRAFT_TOKEN`` (the
    scoped token the agent granted the attempt), and ``KVRAFT_CACERT``/``KVRAFT_CERT``/
    ``KVRAFT_KEY``/``KVRAFT_INSECURE_SKIP_TLS_VERIFY`` (etcdctl's ``--cacert --cert --key``)."""
    options: dict[str, Any] = {}
    if env.get("KVRAFT_USER"):
        options.update(user=env["KVRAFT_USER"], password=env.get("KVRAFT_PASSWORD", ""))
    elif env.get("KVRAFT_TOKEN"):
        options["token"] = env["KVRAFT_TOKEN"]
    insecure = env.get("KVRAFT_INSECURE_SKIP_TLS_VERIFY", "").lower() in ("1", "true", "yes")
    if env.get("KVRAFT_CACERT") or env.get("KVRAFT_CERT") or env.get("KVRAFT_KEY") or insecure:
        from kvraft.client import TLSConfig

        options["tls"] = TLSConfig.from_flags(env.get("KVRAFT_CACERT"), env.get("KVRAFT_CERT"), env.get("KVRAFT_KEY"),
                                              insecure)
    return options


def from_url(url: str, rank: int, run_id: str = "", timeout_s: float = 60.0,
             env: dict[str, str] | None = None) -> Rendezvous:
    """``tcp://host:port``, ``file:///dir`` or ``kvraft://[endpoints]/[prefix]`` (endpoints, job,
    login and TLS files of ``kvraft://`` from ``env``, default ``os.environ``)."""
    if url.startswith("kvraft:"):
        return kvraft_from_url(url, run_id, timeout_s, env)
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "tcp":
        if not parsed.hostname or not parsed.port:
            raise ValueError(f"rendezvous url {url!r} needs host and port")
        return TCPStoreRendezvous(parsed.hostname, parsed.port, rank, run_id, timeout_s)
    if parsed.scheme == "file":
        # file://dir/x would be /x (the "dir" is a host) and file:// the working directory
        if parsed.netloc not in ("", "localhost") or not parsed.path.startswith("/"):
            raise ValueError(f"rendezvous url {url!r} needs an absolute directory: file:///path/to/dir")
        return FileRendezvous(parsed.path, run_id)
    raise ValueError(f"unknown rendezvous url {url!r}; use tcp://host:port, file:///dir or kvraft://")

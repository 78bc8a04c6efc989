"""Accepting TLS connections so that a refused handshake is logged where it is refused.

``loop.create_server(factory, ssl=context)`` runs the handshake inside asyncio's (or
uvloop's) SSL protocol, which drops a failed handshake without a word unless the loop is in
debug mode: a client whose certificate is revoked (``--client-crl-file``), signed by another
CA, or offering no shared cipher is disconnected, and the member's log says nothing. etcd logs
each one ("rejected connection", with the remote address and the error), and an operator
chasing "why can this machine not connect" starts there.

So every TLS listener of a member (client, peer and metrics URLs) accepts plain TCP and
upgrades it itself::

    connect ──> _Upgrade.connection_made ──> loop.start_tls(transport, ..., context, server_side=True)
                  ok:     protocol = factory(); protocol.connection_made(tls transport)
                          (as create_server would; what arrived meanwhile is replayed: _Early)
                  failed: HandshakeFailures.refused(...) -> a log line and a counter; abort

The handshake itself is the same code path (the same SSL protocol, the same context with its
``sni_callback``), only its outcome becomes visible. Refusals by the TLS layer (a certificate
that does not verify, a revoked one, no shared cipher or version, plain HTTP sent to an https
port) are logged as warnings, at most one line per remote host, listener and reason every
``LOG_EVERY_S`` (with the count of those not logged since); a connection closed or timed
out mid-handshake (a TCP health check, a port scan) only counts, and is logged at debug.
``kvraft_server_tls_handshake_failures_total{listener,reason}`` counts them all.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

__all__ = ["AcceptingTCPSite", "HandshakeFailures", "LOG_EVERY_S", "accepting", "reason_of"]

log = logging.getLogger("kvraft.tls")

LOG_EVERY_S = 10.0
HANDSHAKE_TIMEOUT_S = 60.0  # asyncio's default for create_server(ssl=...)
_MAX_REMEMBERED = 4096


def reason_of(exc: BaseException) -> tuple[str, bool]:
    """``(reason, refused)``: a short, bounded label for the metric, and whether the TLS layer
    refused the peer (True) or the connection merely ended before the handshake did (False)."""
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or type(exc).__name__
        return reason.lower(), reason not in ("UNEXPECTED_EOF_WHILE_READING", "EOF")
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "timeout", False
    if isinstance(exc, ConnectionAbortedError) and "longer than" in str(exc):
        return "timeout", False  # asyncio's ssl_handshake_timeout
    return "connection_lost", False


def describe(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return exc.reason.lower().replace("_", " ") if exc.reason else str(exc)
    return str(exc) or type(exc).__name__


class HandshakeFailures:
    """Counts and logs the handshakes a member's listeners refused (one per member)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.counts: dict[tuple[str, str], int] = {}
        """``(listener, reason)`` -> handshakes that failed so."""
        self._clock = clock
        self._logged: dict[tuple[str, str, str], tuple[float, int]] = {}
        """``(listener, remote host, reason)`` -> (when last logged, failures not logged since)."""

    def refused(self, listener: str, peer: Any, exc: BaseException) -> None:
        reason, refused = reason_of(exc)
        key = (listener, reason)
        self.counts[key] = self.counts.get(key, 0) + 1
        host, port = (peer[0], peer[1]) if isinstance(peer, tuple) and len(peer) >= 2 else (str(peer), "")
        remote = f"{host}:{port}" if port != "" else host
        if not refused:
            log.debug("TLS handshake on the %s URL with %s ended: %s", listener, remote, describe(exc))
            return
        now = self._clock()
        last = self._logged.get((listener, host, reason))
        if last is not None and now - last[0] < LOG_EVERY_S:
            self._logged[(listener, host, reason)] = (last[0], last[1] + 1)
            return
        if len(self._logged) >= _MAX_REMEMBERED:
            self._logged.clear()
        self._logged[(listener, host, reason)] = (now, 0)
        more = f" ({last[1]} more from {host} since the last line)" if last is not None and last[1] else ""
        log.warning("rejected connection on the %s URL from %s: %s%s", listener, remote, describe(exc), more)


class _Upgrade(asyncio.Protocol):
    """The protocol of a just-accepted TCP connection: it hands the connection to ``start_tls``
    at once, and the outcome to ``HandshakeFailures`` or to the real protocol."""

    __slots__ = ("_factory", "_context", "_listener", "_failures", "_peer", "_early")

    def __init__(self, factory: Callable[[], asyncio.BaseProtocol], context: ssl.SSLContext, listener: str,
                 failures: HandshakeFailures) -> None:
        self._factory = factory
        self._context = context
        self._listener = listener
        self._failures = failures
        self._peer: Any = None
        self._early = _Early()

    def connection_made(self, transport: Any) -> None:  # (uvloop's transports are not asyncio's classes)
        self._peer = transport.get_extra_info("peername")
        upgrade = asyncio.get_running_loop().start_tls(
            transport, self._early, self._context, server_side=True, ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S)
        # start_tls's first step (pause reading, put its SSL protocol in place) must run now,
        # not in a task's first step one loop turn later: uvloop starts reading as soon as this
        # returns, and a ClientHello delivered to this protocol would be lost. So the coroutine
        # is driven here, step by step, as a task would drive it.
        self._step(upgrade, transport)

    def _step(self, upgrade: Any, transport: Any) -> None:
        try:
            awaited = upgrade.send(None)
        except StopIteration as done:
            tls = done.value
            if tls is None or tls.is_closing():
                # The connection went away before the handshake ended (uvloop then ends
                # start_tls without an error, with a closed transport): nothing to serve.
                self._failures.refused(self._listener, self._peer, ConnectionResetError("closed during the handshake"))
                transport.abort()
            else:
                self._early.hand_over(tls, self._factory())
            return
        except Exception as exc:  # noqa: BLE001 - every failed handshake is counted, none escapes
            self._failures.refused(self._listener, self._peer, exc)
            transport.abort()
            return
        if awaited is None:  # a bare yield: go on at the next turn
            asyncio.get_running_loop().call_soon(self._step, upgrade, transport)
        else:
            awaited.add_done_callback(lambda _done: self._step(upgrade, transport))

    def data_received(self, data: bytes) -> None:  # (start_tls replaced this protocol at once)
        raise AssertionError("data before the TLS protocol was in place")


class _Early(asyncio.Protocol):
    """The TLS transport's protocol from the end of the handshake until ``_Upgrade._step``
    hands it over (the waiter's callback, a loop turn later): the SSL protocol goes on reading
    at once, so a request sent right behind the client's last handshake message arrives
    first. Kept here, then replayed to the real protocol (a plain ``asyncio.Protocol``, as
    every kvraft listener's is) in order."""

    __slots__ = ("_data", "_eof")

    def __init__(self) -> None:
        self._data: list[bytes] = []
        self._eof = False

    def data_received(self, data: bytes) -> None:
        self._data.append(data)

    def eof_received(self) -> bool | None:
        self._eof = True
        return True  # (the real protocol decides, below)

    def connection_lost(self, exc: Exception | None) -> None:
        pass  # (the transport is closing then: _Upgrade hands nothing over)

    def hand_over(self, transport: Any, protocol: Any) -> None:
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        for data in self._data:
            if transport.is_closing():
                break
            protocol.data_received(data)
        self._data.clear()
        if self._eof and not transport.is_closing() and not protocol.eof_received():
            transport.close()


def accepting(factory: Callable[[], asyncio.BaseProtocol], context: ssl.SSLContext | None, listener: str,
              failures: HandshakeFailures) -> tuple[Callable[[], asyncio.BaseProtocol], ssl.SSLContext | None]:
    """``(factory, ssl)`` for ``loop.create_server``: with a context, a factory that does the
    handshake itself (and ``None`` for ``ssl``); without one, the arguments unchanged."""
    if context is None:
        return factory, None
    return (lambda: _Upgrade(factory, context, listener, failures)), None


class AcceptingTCPSite(web.TCPSite):
    """``web.TCPSite`` whose TLS handshakes go through ``accepting`` (the metrics URLs)."""

    def __init__(self, *args: Any, listener: str, failures: HandshakeFailures, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._listener = listener
        self._failures = failures

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        factory, context = accepting(server, self._ssl_context, self._listener, self._failures)
        self._server = await asyncio.get_running_loop().create_server(
            factory, self._host, self._port, ssl=context, backlog=self._backlog,
            reuse_address=self._reuse_address, reuse_port=self._reuse_port,
        )

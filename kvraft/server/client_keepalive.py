"""Client connections' keepalive: etcd's ``--grpc-keepalive-interval`` and
``--grpc-keepalive-timeout`` as TCP keepalive.

etcd pings each client connection (HTTP/2 PING) after ``interval`` without traffic and closes
it when the ping is not answered within ``timeout``, so the watches and streams of a client
whose host died (power, network: no FIN, no RST) are released. kvraft's clients speak
HTTP/1.1, which has no pings; the kernel's TCP keepalive does the same job: after ``interval``
with nothing received, probes every ``timeout / 3`` (at least 1 s), and the connection is
reset after three go unanswered. A live client's kernel answers the probes whatever its
process does, as a live gRPC client's transport answers pings. ``interval`` 0: no keepalive at
all; ``timeout`` 0: the kernel's own probe spacing and count. (Data the server sent and the peer
never acknowledged, e.g. a stream's heartbeats, is governed by TCP's retransmission timeout
instead, about 15 minutes by default.)
"""

from __future__ import annotations

import socket

__all__ = ["PROBES", "configure"]

PROBES = 3


def configure(sock: socket.socket | None, interval_s: float, timeout_s: float) -> None:
    """Set ``sock`` (an accepted client connection; None: not a socket, nothing to do)."""
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    if interval_s <= 0:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 0)
        return
    # (the times first: SO_KEEPALIVE arms the timer with the idle time then in force, so set
    # first it ran briefly on the kernel's 7200 s until TCP_KEEPIDLE re-armed it)
    if hasattr(socket, "TCP_KEEPIDLE"):  # (Linux; elsewhere the kernel's idle time)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, max(1, min(int(interval_s), 32767)))
    if timeout_s > 0 and hasattr(socket, "TCP_KEEPINTVL") and hasattr(socket, "TCP_KEEPCNT"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, max(1, min(round(timeout_s / PROBES), 32767)))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, PROBES)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)

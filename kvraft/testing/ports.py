"""Free TCP ports for servers started on this machine (tests, the local cluster launcher).

``free_port`` returns a port that nothing is bound to now, chosen *below* the kernel's
ephemeral range (``/proc/sys/net/ipv4/ip_local_port_range``, 32768-60999 by default). A port
from ``bind(0)`` comes from that range, which is also where every outgoing connection's local
port comes from, so between the probe and the server's own bind a client connection of any
process could take it (seen in a full test run: ``address already in use`` while many
clusters and load generators ran). Below the range only another ``free_port`` caller can,
and it draws at random from thousands of ports. When the range leaves no room below it, the
answer is ``bind(0)``'s, as before.

A port is never handed out twice by one process (the last ``_REMEMBERED`` answers are kept):
the callers bind their ports later, so two draws of the same free port before either binds
gave two members of one ``LocalCluster`` the same client URL. One of them then never served,
and the harness's checks, sent to that URL, reached the other (a full test run, session 31:
a 3-member cluster that was really two and could not elect a leader without the third).
"""

from __future__ import annotations

import random
import socket
from collections import deque
from pathlib import Path

__all__ = ["free_port"]

_LOWEST = 10000  # leave the well-known and registered low ports alone
_TRIES = 64
_REMEMBERED = 4096
_draw = random.Random()
_handed: set[int] = set()
_handed_order: deque[int] = deque()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _hand_out(port: int) -> int:
    _handed.add(port)
    _handed_order.append(port)
    if len(_handed_order) > _REMEMBERED:
        _handed.discard(_handed_order.popleft())
    return port


def free_port(host: str = "127.0.0.1") -> int:
    """A port on ``host`` that nothing is bound to now, outside the ephemeral range, and
    not handed out by this process before."""
    top = _ephemeral_low() - 1
    if top - _LOWEST >= 1000:
        for _ in range(_TRIES):
            port = _draw.randint(_LOWEST, top)
            if port not in _handed and _bindable(host, port):
                return _hand_out(port)
    for _ in range(_TRIES):
        with socket.socket() as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in _handed:
            return _hand_out(port)
    raise OSError(f"no free port on {host} that this process has not handed out already")

"""``kvraft.testing.ports.free_port``: below the ephemeral range, bindable, with a fallback."""

from __future__ import annotations

import socket

import pytest

from kvraft.testing import ports


def test_a_port_below_the_ephemeral_range_that_binds() -> None:
    low = ports._ephemeral_low()
    for _ in range(20):
        port = ports.free_port()
        if low - 1 - ports._LOWEST >= 1000:
            assert ports._LOWEST <= port < low, "outside the range outgoing connections draw from"
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_a_port_in_use_is_not_returned(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        busy = taken.getsockname()[1]
        # The first draw is the busy port; later draws are the real ones. (A fixed second
        # draw such as busy + 1 failed in CI: another test's server held that port.)
        real_randint = ports._draw.randint
        drawn: list[int] = []

        def draw(a: int, b: int) -> int:
            drawn.append(busy if not drawn else real_randint(a, b))
            return drawn[-1]

        monkeypatch.setattr(ports, "_ephemeral_low", lambda: 65535)
        monkeypatch.setattr(ports._draw, "randint", draw)
        assert ports.free_port() != busy
        assert drawn[0] == busy and len(drawn) >= 2, "the busy port was drawn and refused"


def test_no_room_below_the_range_falls_back_to_the_kernels_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ports, "_ephemeral_low", lambda: 1024)
    port = ports.free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_a_port_is_not_handed_out_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two draws of the same free port (nothing binds it in between) give two ports: the
    second is drawn again. Before, one LocalCluster got one client port for two members."""
    first = ports.free_port()
    real_randint = ports._draw.randint
    drawn: list[int] = []

    def draw(a: int, b: int) -> int:
        drawn.append(first if not drawn else real_randint(a, b))
        return drawn[-1]

    monkeypatch.setattr(ports._draw, "randint", draw)
    second = ports.free_port()
    assert second != first and drawn[0] == first


def test_many_ports_are_all_distinct() -> None:
    got = [ports.free_port() for _ in range(2000)]
    assert len(set(got)) == len(got)


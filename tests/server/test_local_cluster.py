"""LocalCluster, the harness of every multi-process test: a port taken between picking it and
binding it (by a parallel test) must not leave a cluster short of a member."""

from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import urlsplit

from kvraft.server.local import LocalCluster


def test_a_member_whose_port_was_taken_starts_again_on_fresh_ports(tmp_path: Path) -> None:
    # Found by the full suite: m1 exited with "address already in use", m0 and m2 elected a
    # leader, start() returned, and the test then killed the leader of a two-member cluster.
    cluster = LocalCluster(3, tmp_path)
    taken = cluster.members["m1"].peer_url
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", urlsplit(taken).port or 0))
    holder.listen()
    try:
        cluster.start(timeout_s=30)
        assert [m.name for m in cluster.running()] == ["m0", "m1", "m2"]
        assert cluster.members["m1"].peer_url != taken
        assert list(tmp_path.glob("m1.log.port-taken-*")), "the failed attempt's log is kept"
        assert cluster.leader() is not None
    finally:
        holder.close()
        cluster.stop()


def test_running_while_another_thread_adds_a_member(tmp_path: Path) -> None:
    """A Writer thread calls running() while the test adds a member (add_member under load):
    the iteration over the members dict raised 'dictionary changed size during iteration',
    the writer thread died and the test timed out waiting for acks (CI, stop 34)."""
    cluster = LocalCluster(2, tmp_path)
    first = cluster.members["m0"]

    class Racing:  # alive() of the first member runs while another thread adds m2
        def poll(self) -> None:
            if "m2" not in cluster.members:
                cluster._new_member("m2")

    first.process = Racing()  # type: ignore[assignment]
    assert [m.name for m in cluster.running()] == ["m0"]

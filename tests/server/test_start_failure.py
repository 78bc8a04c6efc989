"""A member that cannot listen on its client URL (the port is taken) exits with the error, as
etcd does, instead of running on without clients: the harness's port-taken retry and a
supervisor (systemd's Restart=) both rely on the exit. It used to hang: the peers it had
started dialling were left to asyncio.run's cancellation, and a dial failing at the moment of
the cancel swallowed it (asyncio.wait_for in 3.11), so the member ran on, dialling, without
clients and without taking part in Raft. In a full test run that made a 3-member cluster lose
its quorum when one other member was killed."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from kvraft.testing.ports import free_port


def test_a_member_whose_client_port_is_taken_exits(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        client = free_port()
        taken.bind(("127.0.0.1", client))
        taken.listen()
        peers = [free_port() for _ in range(3)]  # the other two members are not running
        cluster = ",".join(f"m{i}=http://127.0.0.1:{p}" for i, p in enumerate(peers))
        done = subprocess.run(
            [sys.executable, "-m", "kvraft.server.main", "--name", "m2", "--data-dir", str(tmp_path / "m2"),
             "--listen-client-urls", f"http://127.0.0.1:{client}", "--advertise-client-urls",
             f"http://127.0.0.1:{client}", "--listen-peer-urls", f"http://127.0.0.1:{peers[2]}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peers[2]}", "--initial-cluster", cluster],
            capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    assert "address already in use" in done.stderr + done.stdout
    assert "Traceback" not in done.stderr  # one line naming the address, as etcd's

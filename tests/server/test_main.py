"""The ``kvraft`` command itself: no flags = a single-member cluster on 127.0.0.1:2379/2380
in ./default.kvraft; a second start on the same data directory resumes it; SIGTERM stops
it cleanly."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

import pytest

from tests.server.helpers import get, put, wait_until

URL = "http://127.0.0.1:2379"


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _start(cwd) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "kvraft.server.main"], cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def _stop(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
            return -9
    return process.returncode


def test_no_flags_single_member_that_resumes(tmp_path) -> None:
    if not (_free(2379) and _free(2380)):
        pytest.skip("127.0.0.1:2379/2380 are in use on this machine")
    process = _start(tmp_path)
    try:
        wait_until(lambda: put(URL, "hello", "world")[0] == 200, 60, what="the member to serve")
        assert (tmp_path / "default.kvraft").is_dir()
    finally:
        assert _stop(process) == 0  # SIGTERM is a clean shutdown
    process = _start(tmp_path)
    try:
        wait_until(lambda: get(URL, "hello") == {"hello": "world"}, 60, what="the resumed member")
    finally:
        _stop(process)

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


@pytest.mark.parametrize("flag", ["--version", "-version", "--version=true"])
def test_version_prints_in_etcds_shape_and_exits(flag: str) -> None:
    """``etcd --version``: "etcd Version: 3.4.23", "Go Version: ...". kvraft refused the flag."""
    done = subprocess.run([sys.executable, "-m", "kvraft.server.main", flag, "--name", "ignored"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("kvraft Version: ") and lines[1] == "API Version: 3.4.0 (etcd's v3 API)"
    assert lines[2].startswith("Python Version: 3.") and lines[3].startswith("OS/Arch: ")


def test_version_false_is_no_request_to_print_it() -> None:
    from kvraft.server.main import _wants_version

    assert not _wants_version(["--version=false", "--name", "m0"])
    assert not _wants_version(["--name", "version"])

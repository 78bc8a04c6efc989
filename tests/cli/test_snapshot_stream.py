"""The member's snapshot stream failing part way: the handler (kvraft/server/api/
maintenance.py, served here by a real aiohttp app over a store that fails after two
frames) ends the stream with an in-band error; kvctl reports it, exits 1 and leaves no
file behind. And the stream is taken frame by frame, never as one blob."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web
from kvctl_harness import run_kvctl

from kvraft.server.api import maintenance
from kvraft.server.api.state import SERVER
from kvraft.testing.ports import free_port


class _FailingStream:
    revision = 42
    size_estimate = 10_000

    def __init__(self, fail_after: int | None) -> None:
        self.fail_after = fail_after
        self.taken = 0
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        for index in range(4):
            if self.fail_after is not None and index == self.fail_after:
                raise RuntimeError("disk read failed")
            self.taken += 1
            yield bytes([index]) * 1000

    def close(self) -> None:
        self.closed = True


def _serve(stream: _FailingStream) -> tuple[str, Any]:
    server = SimpleNamespace(config=SimpleNamespace(max_request_bytes=1 << 20), cluster_id=1, member_id=2,
                             raft_term=3, state=SimpleNamespace(commit=lambda: None,
                                                         store=SimpleNamespace(snapshot=lambda _chunk: stream)))

    async def version(_request: web.Request) -> web.Response:
        return web.json_response({"etcdserver": "3.4.0", "etcdcluster": "3.4.0"})

    app = web.Application()
    app[SERVER] = server
    app.router.add_get("/version", version)
    app.router.add_post("/v3/maintenance/snapshot", maintenance.ROUTES["/maintenance/snapshot"])
    port = free_port()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def stop() -> None:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)

    return f"127.0.0.1:{port}", stop


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
def test_a_stream_that_fails_midway_is_an_error_and_leaves_no_file(tmp_path: Path, encoding: str) -> None:
    stream = _FailingStream(fail_after=2)
    endpoint, stop = _serve(stream)
    try:
        target = tmp_path / "out.snap"
        result = run_kvctl([f"--endpoints={endpoint}", f"--encoding={encoding}", "snapshot", "save", str(target)])
        assert result.rc == 5, result  # etcdctl: ExitInterrupted for any failure of the save
        assert result.err.splitlines()[-1] == "Error: etcdserver: RuntimeError: disk read failed"
        assert not target.exists() and not Path(str(target) + ".part").exists()
        assert stream.taken == 2 and stream.closed
    finally:
        stop()


def test_frames_go_out_one_per_message_with_a_decreasing_estimate(tmp_path: Path) -> None:
    import urllib.request

    stream = _FailingStream(fail_after=None)
    endpoint, stop = _serve(stream)
    try:
        request = urllib.request.Request(f"http://{endpoint}/v3/maintenance/snapshot", data=b"{}", method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            messages = [json.loads(line)["result"] for line in response.read().splitlines() if line.strip()]
        assert len(messages) == 4 and stream.closed
        remaining = [int(m.get("remaining_bytes", 0)) for m in messages]
        assert remaining == [9000, 8000, 7000, 0]
        assert all(m["header"]["revision"] == "42" for m in messages)
    finally:
        stop()


def test_a_save_onto_a_directory_is_etcdctls_rename_error(tmp_path: Path) -> None:
    """The stream was saved, then os.replace onto the directory was an IsADirectoryError
    traceback and the whole snapshot stayed behind as ``<dir>.part``."""
    endpoint, stop = _serve(_FailingStream(fail_after=None))
    try:
        target = tmp_path / "dir"
        target.mkdir()
        result = run_kvctl([f"--endpoints={endpoint}", "snapshot", "save", str(target)])
        assert result.rc == 5, result
        part = f"{target}.part"
        assert result.err.splitlines()[-1] == (
            f"Error: could not rename {part} to {target} (rename {part} {target}: file exists)")
        assert not Path(part).exists()
    finally:
        stop()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (writes fail with ENOSPC)")
def test_a_save_onto_a_full_disk_is_etcdctls_write_error(tmp_path: Path) -> None:
    """A write failing with ENOSPC was an OSError traceback; etcdctl: 'write PATH: no space
    left on device', exit 5. (The .part file is made a link to /dev/full, a disk always full.)"""
    endpoint, stop = _serve(_FailingStream(fail_after=None))
    try:
        target = tmp_path / "out.snap"
        part = Path(f"{target}.part")
        part.symlink_to("/dev/full")
        result = run_kvctl([f"--endpoints={endpoint}", "snapshot", "save", str(target)])
        assert result.rc == 5, result
        assert result.err.splitlines()[-1] == f"Error: write {part}: no space left on device"
        assert not target.exists() and not part.is_symlink()
    finally:
        stop()

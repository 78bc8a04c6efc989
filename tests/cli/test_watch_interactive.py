"""``watch -i`` (several watches and ``progress`` requests on one stream) and
``watch --progress-notify``: the same input through etcdctl against etcd 3.4, through kvctl
against etcd 3.4 and through kvctl against kvraft; outputs compared with revisions made
relative to the start. Every step waits for the lines it expects (no sleeps)."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kvclusters import Runtime, etcdctl_path, start_runtime
from kvctl_harness import Identity

from kvraft.client import SyncClient

KVCTL = [sys.executable, "-m", "kvraft.cli"]


@pytest.fixture(scope="module")
def kvraft_runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    rt = start_runtime("kvraft", tmp_path_factory.mktemp("wi"))
    yield rt
    rt.stop()


class _Proc:
    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env={**os.environ, "ETCDCTL_API": "3"})
        self.buffer = b""

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def lines(self, count: int, timeout_s: float = 60.0) -> list[str]:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        while self.buffer.count(b"\n") < count:
            left = deadline - time.monotonic()
            assert left > 0, f"waited {timeout_s}s for {count} lines; have {self.buffer!r}"
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                assert chunk, f"stdout closed; have {self.buffer!r}"
                self.buffer += chunk
        out = self.buffer.split(b"\n")
        self.buffer = b"\n".join(out[count:])
        return [line.decode() for line in out[:count]]

    def finish(self) -> tuple[int, str, str]:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.stdin = None  # EOF: the command ends
        try:
            out, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        err_lines = [line for line in err.decode().splitlines() if not line.startswith('{"level"')]
        return self.proc.returncode, (self.buffer + out).decode(), "\n".join(err_lines)


def _relative(line: str, start: int) -> str:
    if line.startswith("progress notify: "):
        return f"progress notify: +{int(line.split(': ')[1]) - start}"
    return line


def _blocks(lines: list[str]) -> list[list[str]]:
    blocks: list[list[str]] = []
    for line in lines:
        if line in ("PUT", "DELETE"):
            blocks.append([])
        assert blocks, f"output does not start with an event: {lines}"
        blocks[-1].append(line)
    return blocks


def _session(command: list[str], endpoint: str, events: list[list[str]] | None = None) -> list[str]:
    """The transcript of an interactive watch session. The 8 lines that two watchers print
    for one put come sorted line by line: etcdctl prints each watcher's event from its own
    goroutine, a line at a time, so its two events may interleave (seen once in a full run). With
    ``events`` given, those lines are also split into whole events there, to check that
    kvctl's never interleave."""
    with SyncClient([endpoint]) as client:
        start = client.put("iw/seed", b"0").header.revision
        proc = _Proc([*command, f"--endpoints={endpoint}", "watch", "-i"])
        transcript: list[str] = []
        try:
            proc.send("progress")  # no watch yet: nothing to answer
            proc.send(f"watch iw/a --rev {start + 1}")
            client.put("iw/a", b"1")
            transcript += proc.lines(3)
            proc.send("progress")
            transcript += proc.lines(1)
            proc.send(f"watch --prefix iw/ --rev {start + 1} --prev-kv")
            transcript += proc.lines(3)
            client.put("iw/a", b"2")  # both watches see it: the second one with the previous value
            both = proc.lines(8)  # two watchers: either may print first
            transcript += sorted(both)
            if events is not None:
                events += _blocks(both)
            proc.send("bogus")
            proc.send("watch")
            proc.send("watch x y --prefix")
            proc.send("progress")  # answered once per open watch
            transcript += proc.lines(2)
        finally:
            rc, rest, err = proc.finish()
        transcript.append(f"rc={rc} rest={rest!r}")
        transcript += err.splitlines()
        return [_relative(line, start) for line in transcript]


def test_interactive_watch_matches_etcdctl(etcd_pair: tuple[Identity, Identity], kvraft_runtime: Runtime) -> None:
    if etcdctl_path() is None:
        pytest.skip("etcdctl not installed")
    golden = _session(["etcdctl"], etcd_pair[0].runtime.endpoints[0])
    assert golden[:4] == ["PUT", "iw/a", "1", "progress notify: +1"]
    assert golden[-4:] == ["Invalid command bogus (only support watch)",
                           "Invalid command watch (command type or key is not provided)",
                           "Invalid command watch x y --prefix (`range_end` and `--prefix` are mutually exclusive)",
                           "Error: Error reading watch request line: EOF"]
    assert golden[-5] == "rc=3 rest=''"
    for endpoint in (etcd_pair[1].runtime.endpoints[0], kvraft_runtime.endpoints[0]):
        events: list[list[str]] = []
        assert _session(KVCTL, endpoint, events) == golden
        assert sorted(events) == [["PUT", "iw/a", "1", "iw/a", "2"], ["PUT", "iw/a", "2"]], "whole events"


def test_progress_notify_flag_prints_progress_lines(tmp_path: Path) -> None:
    """``--progress-notify`` (etcdctl 3.5's flag): a member started with a short
    ``--experimental-watch-progress-notify-interval`` sends progress; kvctl prints it."""
    from kvraft.server.local import LocalCluster

    cluster = LocalCluster(1, tmp_path / "pn", binary="kvraft",
                           extra_args=["--experimental-watch-progress-notify-interval", "200ms"])
    try:
        cluster.start(timeout_s=90)
        endpoint = next(iter(cluster.members.values())).client_url
        with SyncClient([endpoint]) as client:
            revision = client.put("pn/k", b"v").header.revision
        proc = _Proc([*KVCTL, f"--endpoints={endpoint}", "watch", "pn/k", "--progress-notify"])
        try:
            assert proc.lines(1) == [f"progress notify: {revision}"]
        finally:
            proc.proc.kill()
            proc.proc.communicate(timeout=30)
    finally:
        cluster.stop()


def test_interactive_watches_survive_killing_their_member(tmp_path: Path) -> None:
    """The member serving the session is killed (3 members; stdin stays open): kvctl, like
    etcdctl, reconnects to another member and re-creates both watches from the revision
    each needs next: the events written meanwhile arrive once, and progress works again."""
    rt = start_runtime("kvraft", tmp_path, size=3)
    proc = None
    try:
        leader = rt.leader()
        victim = next(name for name in rt.cluster.members if name != leader)
        endpoints = [rt.cluster.url(victim)] + [rt.cluster.url(n) for n in rt.cluster.members if n != victim]
        others = endpoints[1:]
        with SyncClient(others) as client:
            start = client.put("sv/seed", b"0").header.revision
        proc = _Proc([*KVCTL, f"--endpoints={','.join(endpoints)}", "watch", "-i"])
        proc.send(f"watch sv/a --rev {start}")
        proc.send(f"watch --prefix sv/b --rev {start}")
        with SyncClient(others) as client:
            client.put("sv/a", b"1")
            client.put("sv/b", b"1")
            assert sorted(_blocks(proc.lines(6))) == [["PUT", "sv/a", "1"], ["PUT", "sv/b", "1"]]
            rt.kill(victim)  # mid-session
            client.put("sv/a", b"2")
            last = client.put("sv/b", b"2").header.revision
        assert sorted(proc.lines(6)) == sorted(["PUT", "sv/a", "2", "PUT", "sv/b", "2"])  # once each
        proc.send("progress")
        assert proc.lines(2) == [f"progress notify: {last}"] * 2
        rc, rest, err = proc.finish()
        assert (rc, rest) == (3, ""), err
        assert err.splitlines()[-1] == "Error: Error reading watch request line: EOF"
    finally:
        if proc is not None and proc.proc.poll() is None:
            proc.proc.kill()
            proc.proc.communicate(timeout=30)
        rt.stop()

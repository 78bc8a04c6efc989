"""etcd's ``--enable-pprof``: ``/debug/pprof/`` on a member's client URLs (kvraft/server/api/pprof.py).

Two one-member clusters side by side, one with the flag and one without, answer real GET
requests (the fast path hands them to aiohttp); the pure parts (folding a stack, the await
chain of a task, grouping stacks, the heap's rows) are tested on their own."""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import socket
import sys
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from types import FrameType, SimpleNamespace
from urllib.parse import urlsplit

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from kvraft.server.api import pprof
from kvraft.server.api.state import SERVER
from kvraft.server.local import LocalCluster
from tests.server.helpers import put, wait_until

PATHS = ["/debug/pprof", "/debug/pprof/", "/debug/pprof/goroutine", "/debug/pprof/goroutine?debug=2",
         "/debug/pprof/profile?seconds=1", "/debug/pprof/heap", "/debug/pprof/cmdline", "/debug/pprof/allocs"]
FOLDED = re.compile(r"[^;\n]+(;[^;\n]+)* (\d+)")


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    base = tmp_path_factory.mktemp("pprof")
    clusters = {"pprof": LocalCluster(1, base / "pprof", extra_args=["--enable-pprof"]),
                "plain": LocalCluster(1, base / "plain")}
    try:
        for cluster in clusters.values():
            cluster.start(timeout_s=60)
            cluster.wait_leader(60)
        yield {name: cluster.url("m0") for name, cluster in clusters.items()} | {
            "log": str(clusters["pprof"].members["m0"].log_path)}
    finally:
        for cluster in clusters.values():
            cluster.stop()


def _get(url: str, path: str, timeout_s: float = 60.0) -> tuple[int, dict[str, str], str]:
    parts = urlsplit(url)
    assert parts.hostname is not None
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read().decode()
    finally:
        conn.close()


def _ok(url: str, path: str) -> str:
    status, headers, text = _get(url, path)
    assert status == 200, (path, status, text)
    assert headers["Content-Type"] == "text/plain; charset=utf-8", headers
    return text


def _folded(text: str) -> list[tuple[list[str], int]]:
    lines = []
    for line in text.splitlines():
        assert FOLDED.fullmatch(line), line
        stack, count = line.rsplit(" ", 1)
        lines.append((stack.split(";"), int(count)))
    return lines


# -- through a member ------------------------------------------------------------------


def test_the_index_lists_the_profiles(members: dict[str, str]) -> None:
    text = _ok(members["pprof"], "/debug/pprof/")
    for name in ("goroutine", "profile", "heap", "cmdline"):
        assert re.search(rf"^/debug/pprof/{name} +\S", text, re.M), text
    status, headers, _ = _get(members["pprof"], "/debug/pprof")  # Go's mux: the subtree's slash
    assert status == 301 and headers["Location"] == "/debug/pprof/"
    status, _, text = _get(members["pprof"], "/debug/pprof/allocs")  # a Go profile kvraft has not
    assert (status, text) == (404, "Unknown profile\n")


def test_the_full_dump_names_the_members_threads_and_tasks(members: dict[str, str]) -> None:
    text = _ok(members["pprof"], "/debug/pprof/goroutine?debug=2")
    assert re.search(r'^thread \d+ "MainThread" \[running\]:$', text, re.M), text
    blocks = {block.splitlines()[0]: block.splitlines()[1:] for block in text.split("\n\n")[1:]}
    raft = [header for header in blocks if header.startswith('task "raft-ready" ')]
    assert len(raft) == 1, text
    assert any(line.startswith("kvraft.server.driver.NodeDriver.") for line in blocks[raft[0]]), blocks[raft[0]]
    assert any(header.startswith('task "raft-tick" ') for header in blocks), text
    # the loop's thread first, and the current request's own handler on top of its stack
    first = text.split("\n\n")[1].splitlines()
    assert first[0].endswith('"MainThread" [running]:') and first[1] == "kvraft.server.api.pprof._goroutine"


def test_identical_stacks_are_grouped_with_a_count(members: dict[str, str]) -> None:
    url = members["pprof"]
    parts = urlsplit(url)
    assert parts.hostname is not None
    idle = []
    try:  # three keep-alive connections that aiohttp serves: three identical waiting tasks
        for _ in range(3):
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
            conn.request("GET", "/version")
            assert conn.getresponse().read()
            idle.append(conn)
        text = _ok(url, "/debug/pprof/goroutine?debug=1")
        default = _ok(url, "/debug/pprof/goroutine")  # (debug=1 is the default)
    finally:
        for conn in idle:
            conn.close()
    head = re.match(r"goroutine profile: total (\d+) \((\d+) threads, (\d+) asyncio tasks\)\n", text)
    assert head is not None, text
    groups = re.findall(r"^(\d+) @ (thread|task)\b(.*): (.*)$", text, re.M)
    counts = [int(count) for count, *_ in groups]
    assert sum(counts) == int(head[1]) == int(head[2]) + int(head[3])
    assert counts == sorted(counts, reverse=True)
    assert any(int(count) >= 3 and "RequestHandler.start" in what for count, _kind, what, _names in groups), text
    assert any("raft-ready" in names.split(", ") for *_, names in groups), text
    assert re.search(r"^#\tkvraft\.server\.driver\.NodeDriver\.\w+\t/.*driver\.py:\d+$", text, re.M), text
    assert default.startswith("goroutine profile: total ") and "\n1 @ thread [running]: MainThread\n" in default


def test_a_profile_taken_while_a_client_writes(members: dict[str, str]) -> None:
    url = members["pprof"]
    summary = re.search(r"\((\d+) threads", _ok(url, "/debug/pprof/goroutine"))
    assert summary is not None
    threads = int(summary[1])
    written = [0]
    stop = threading.Event()

    def write() -> None:
        while not stop.is_set():
            assert put(url, f"profiled/{written[0]}", "v")[0] == 200
            written[0] += 1

    writer = threading.Thread(target=write)
    writer.start()
    try:
        wait_until(lambda: written[0] > 0, 30, 0.01, "a first write")
        before = written[0]
        text = _ok(url, "/debug/pprof/profile?seconds=1&hz=100")
        during = written[0] - before
    finally:
        stop.set()
        writer.join()
    lines = _folded(text)
    assert during > 0  # the loop served writes while the profile was taken
    assert lines[0][0][0] == "MainThread"  # the loop's thread first
    # every thread but the sampler, at every sample: a loose lower bound, not a timing
    assert sum(count for _stack, count in lines) >= threads * 100 // 4, text
    loop_frames = {frame for stack, _count in lines if stack[0] == "MainThread" for frame in stack[1:]}
    assert any("(kvraft/" in frame and "(kvraft/server/main.py:" not in frame for frame in loop_frames), loop_frames


def test_one_profile_at_a_time(members: dict[str, str]) -> None:
    url = members["pprof"]
    first: list[tuple[int, dict[str, str], str]] = []
    taking = threading.Thread(target=lambda: first.append(_get(url, "/debug/pprof/profile?seconds=3")))
    taking.start()
    try:
        wait_until(lambda: '"pprof-profile"' in _ok(url, "/debug/pprof/goroutine?debug=2"), 30, 0.05,
                   "the first profile's sampler")
        status, headers, text = _get(url, "/debug/pprof/profile?seconds=1")
    finally:
        taking.join()
    assert (status, text) == (500, "Could not enable CPU profiling: cpu profiling already in use\n")
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert first[0][0] == 200 and _folded(first[0][2])
    assert _folded(_ok(url, "/debug/pprof/profile?seconds=1"))  # free again


def test_a_profile_stops_when_its_client_leaves(members: dict[str, str]) -> None:
    url = members["pprof"]
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(b"GET /debug/pprof/profile?seconds=300 HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_until(lambda: '"pprof-profile"' in _ok(url, "/debug/pprof/goroutine?debug=2"), 30, 0.05,
                   "the sampler")
    wait_until(lambda: _get(url, "/debug/pprof/profile?seconds=1")[0] == 200, 60, 0.2, "the profiler free")
    assert not [line for line in Path(members["log"]).read_text().splitlines()
                if line.startswith("{") and json.loads(line)["level"] == "error"]


@pytest.mark.parametrize("path, name", [
    ("/debug/pprof/profile?seconds=0", "seconds"), ("/debug/pprof/profile?seconds=301", "seconds"),
    ("/debug/pprof/profile?seconds=1.5", "seconds"), ("/debug/pprof/profile?seconds=-1", "seconds"),
    ("/debug/pprof/profile?hz=0", "hz"), ("/debug/pprof/profile?seconds=1&hz=1001", "hz"),
    ("/debug/pprof/profile?hz=fast", "hz"), ("/debug/pprof/goroutine?debug=-1", "debug"),
    ("/debug/pprof/goroutine?debug=x", "debug"), ("/debug/pprof/heap?gc=yes", "gc"),
])
def test_bad_parameters_are_refused(members: dict[str, str], path: str, name: str) -> None:
    status, headers, text = _get(members["pprof"], path)
    assert status == 400 and headers["Content-Type"] == "text/plain; charset=utf-8"
    assert text.startswith(f"{name}: want an integer ") and text.count("\n") == 1, text


def test_the_heap_by_type(members: dict[str, str]) -> None:
    for path in ("/debug/pprof/heap", "/debug/pprof/heap?gc=1"):
        text = _ok(members["pprof"], path)
        assert re.match(r"heap profile: \d+ objects, \d+ bytes .*\d+ frozen at start not walked\); walked in \d+ ms",
                        text), text
        rows = {m[3]: (int(m[1]), int(m[2])) for m in re.finditer(r"^ +(\d+) +(\d+)  (.+)$", text, re.M)}
        assert rows["dict"][0] > 0 and rows["dict"][1] > 0, text
        assert text.splitlines()[-1].endswith("  total")
        assert rows["total"][0] >= sum(n for name, (n, _b) in rows.items() if name != "total") // 2


def test_cmdline_is_nul_separated(members: dict[str, str]) -> None:
    args = _ok(members["pprof"], "/debug/pprof/cmdline").split("\x00")
    assert "--enable-pprof" in args and "kvraft.server.main" in args


def test_without_the_flag_every_path_is_not_found(members: dict[str, str]) -> None:
    unknown = _get(members["plain"], "/debug/nothing")
    assert unknown[0] == 404 and unknown[2] == "404 page not found\n"
    for path in PATHS:
        status, _headers, text = _get(members["plain"], path)
        assert (status, text) == (unknown[0], unknown[2]), path
    assert _get(members["pprof"], "/debug/nothing")[2] == unknown[2]


# -- the pure parts --------------------------------------------------------------------


def _outer() -> FrameType:
    return _middle()


def _middle() -> FrameType:
    return sys._getframe()


def test_fold_labels_a_stack_outermost_first() -> None:
    labels = pprof.Labels([str(Path(__file__).resolve().parent.parent.parent)])
    frame = _outer()
    stack = pprof.fold(frame, labels)
    assert stack[-2:] == (f"_outer (tests/server/test_pprof.py:{_outer.__code__.co_firstlineno + 1})",
                          f"_middle (tests/server/test_pprof.py:{_middle.__code__.co_firstlineno + 1})")
    assert stack[-3].startswith("test_fold_labels_a_stack_outermost_first (tests/server/test_pprof.py:")
    assert pprof.fold(frame, labels)[-1] is stack[-1]  # (each label made once)
    assert labels.short("/elsewhere/x.py") == "/elsewhere/x.py"


def test_folded_lines_put_the_first_thread_first() -> None:
    counts = {("worker", ("a", "b")): 2, ("MainThread", ("x",)): 1, ("worker", ("a", "c")): 5, ("odd;name", ("z",)): 3}
    assert pprof.folded(counts, "MainThread") == "MainThread;x 1\nodd,name;z 3\nworker;a;c 5\nworker;a;b 2\n"


def test_sample_counts_every_other_thread() -> None:
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            sum(range(1000))

    spinner = threading.Thread(target=spin, name="spinner")
    spinner.start()
    try:
        profile = pprof.sample(0.3, 200)
    finally:
        stop.set()
        spinner.join()
    names = {name for name, _stack in profile.counts}
    assert "spinner" in names and threading.current_thread().name not in names
    assert sum(n for (name, _stack), n in profile.counts.items() if name == "spinner") == profile.samples
    assert any("spin (tests/server/test_pprof.py:" in frame for name, stack in profile.counts if name == "spinner"
               for frame in stack)
    assert stop.is_set()
    assert pprof.sample(60, 10, stop).samples == 1  # stopped: one sample, then done


async def _inner() -> None:
    await asyncio.sleep(3600)


async def _waiting() -> None:
    await _inner()


async def test_task_stacks_follow_the_await_chain_and_group() -> None:
    tasks = [asyncio.create_task(_waiting(), name=name) for name in ("w2", "w1")]
    fresh = asyncio.create_task(_inner(), name="fresh")
    unstarted = pprof.task_stacks([fresh])
    await asyncio.sleep(0)
    try:
        assert unstarted[0].state == "not started"
        frames, innermost = pprof.await_chain(tasks[0].get_coro())
        assert [f.f_code.co_name for f in frames] == ["_waiting", "_inner", "sleep"]
        assert innermost is not None
        stacks = pprof.task_stacks([*tasks, fresh], current=None)
        assert [s.name for s in stacks] == ["fresh", "w1", "w2"]
        assert stacks[1].state == "awaiting Future" and stacks[1].coroutine == "_waiting"
        assert [site.function for site in stacks[1].sites] == [
            "asyncio.tasks.sleep", "tests.server.test_pprof._inner", "tests.server.test_pprof._waiting"]
        groups = pprof.group(stacks)
        assert [[s.name for s in g] for g in groups] == [["w1", "w2"], ["fresh"]]
        text = pprof.render_grouped(stacks)
        assert text.startswith("goroutine profile: total 3 (0 threads, 3 asyncio tasks)\n\n"
                               "2 @ task _waiting [awaiting Future]: w1, w2\n#\tasyncio.tasks.sleep\t")
        full = pprof.render_full(stacks)
        assert '\ntask "w1" _waiting [awaiting Future]:\nasyncio.tasks.sleep\n\t' in full
    finally:
        for task in (*tasks, fresh):
            task.cancel()
        await asyncio.gather(*tasks, fresh, return_exceptions=True)


def test_groups_are_ordered_by_count_then_name() -> None:
    site = pprof.Site("m.f", "/m.py", 1)
    stacks = [pprof.Stack("thread", "b", "", (site,), 1), pprof.Stack("task", "z", "suspended", ()),
              pprof.Stack("thread", "a", "", (site,), 2), pprof.Stack("task", "c", "suspended", (site,))]
    assert [[s.name for s in g] for g in pprof.group(stacks)] == [["a", "b"], ["c"], ["z"]]
    many = [pprof.Stack("task", f"t{i:02d}", "", (site,)) for i in range(pprof.GROUP_NAMES + 2)]
    assert f"{pprof.GROUP_NAMES + 2} @ task: t00, " in pprof.render_grouped(many)
    assert pprof.render_grouped(many).splitlines()[2].endswith(", and 2 more")


def test_thread_stacks_put_the_current_thread_first() -> None:
    stacks = pprof.thread_stacks(sys._current_frames(), threading.enumerate(), threading.get_ident())
    assert stacks[0].name == threading.current_thread().name and stacks[0].state == "running"
    assert stacks[0].sites[0].function == "tests.server.test_pprof.test_thread_stacks_put_the_current_thread_first"


def test_heap_rows_and_their_rendering() -> None:
    objects: list[object] = [{}, {"a": 1}, [], pprof.Site("f", "x", 1)]
    rows = pprof.heap_rows(objects)
    by_name = {name: (n, size) for name, n, size in rows}
    assert by_name["dict"] == (2, sys.getsizeof({}) + sys.getsizeof({"a": 1}))
    assert by_name["kvraft.server.api.pprof.Site"][0] == 1
    assert [size for _name, _n, size in rows] == sorted((size for _name, _n, size in rows), reverse=True)
    text = pprof.render_heap(rows, frozen=7, took_s=0.0123, traced=["x.py:1: size=1 KiB"], top=1)
    lines = text.splitlines()
    assert lines[0].startswith("heap profile: 4 objects, ") and "7 frozen at start" in lines[0] and "12 ms" in lines[0]
    assert lines[3].endswith(f"  {rows[0][0]}") and lines[4].endswith("  (2 other types)")
    assert lines[5].split() == ["4", str(sum(r[2] for r in rows)), "total"]
    assert lines[-2:] == ["tracemalloc: the 1 largest source lines", "x.py:1: size=1 KiB"]


async def test_heap_lists_tracemalloc_lines_when_tracing() -> None:
    app = web.Application()
    app[SERVER] = SimpleNamespace(config=SimpleNamespace(name="t"))
    pprof.install(app)
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        async with TestClient(TestServer(app)) as client:
            keep = [bytearray(1024) for _ in range(200)]
            response = await client.get("/debug/pprof/heap")
            text = await response.text()
            del keep
    finally:
        if not was_tracing:
            tracemalloc.stop()
    assert response.status == 200
    assert re.search(r"\ntracemalloc: the \d+ largest source lines\n", text), text
    assert re.search(r"^.+:\d+: size=.+, count=\d+, average=", text, re.M), text


"""The agent's HTTP endpoint (health, metrics, tasks, logs with tail/follow across
rotation, exec, stats), runc end to end with a fake GPU inventory, and 100 concurrent tasks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from pathlib import Path

import aiohttp
import pytest

from kvraft.server.local import free_port
from tests.agent.conftest import assign, unassign, wait_for, wait_status
from tests.agent.runtime_helpers import RUNC_MISSING

DATA = Path(__file__).parent / "data"


async def test_health_metrics_logs_exec(agents, kv) -> None:
    a = agents("n-http", "process", "--log-max-bytes", "4096", "--log-max-files", "3").start()
    code = ("import sys,time\nfor i in range(400):\n    print(f'line {i:04d}', flush=True)\n"
            "    print(f'err {i:04d}', file=sys.stderr, flush=True)\n    time.sleep(0.005)\n")
    await assign(kv, "n-http", "jh", "t", {"command": ["/usr/bin/python3", "-c", code]})
    await assign(kv, "n-http", "jh", "sleeper", {"command": ["sleep", "300"], "env": {"MARK": "x1"}})
    await wait_status(kv, "jh", "sleeper", "Running", agent=a)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{a.url}/health") as r:
            assert r.status == 200 and (await r.json())["node"] == "n-http"
        # follow from the start while the task runs: every line, in order, across rotations
        async with http.get(f"{a.url}/logs/jh/t?follow=1&tail=0&stream=stdout", timeout=aiohttp.ClientTimeout(60)) as r:
            followed = (await r.text()).splitlines()
        await wait_status(kv, "jh", "t", "Succeeded", agent=a)
        async with http.get(f"{a.url}/logs/jh/t?tail=2") as r:
            tail = (await r.text()).splitlines()
        async with http.get(f"{a.url}/logs/jh/t?tail=1&timestamps=1") as r:
            stamped = (await r.text()).strip()
        async with http.post(f"{a.url}/exec/jh/sleeper", json={"argv": ["sh", "-c", "echo $MARK; exit 4"]}) as r:
            ex = await r.json()
        async with http.get(f"{a.url}/stats/jh/sleeper") as r:
            st = await r.json()
        async with http.get(f"{a.url}/metrics") as r:
            metrics = await r.text()
        async with http.get(f"{a.url}/logs/jh/nope") as r:
            assert r.status == 404
    assert followed, "follow returned nothing"
    nums = [int(x.split()[1]) for x in followed]
    assert nums == list(range(nums[0], 400)) and nums[0] < 100
    assert tail == ["line 0399", "err 0399"] or sorted(tail) == ["err 0399", "line 0399"]
    assert stamped.endswith("Z err 0399") or stamped.endswith("Z line 0399")
    assert (ex["exit_code"], ex["stdout"].strip()) == (4, "x1")
    assert st["attempt"] == 1 and "pids" in st
    assert 'kvraft_agent_actions_total{kind="Start"} 2' in metrics
    assert "kvraft_agent_registered 1" in metrics
    assert len(list((a.data_dir / "tasks/jh/t/1").glob("output.log*"))) == 3
    await unassign(kv, "n-http", "jh", "sleeper")


@pytest.mark.skipif(bool(RUNC_MISSING), reason=f"runc unavailable: {RUNC_MISSING}")
async def test_runc_agent_with_fake_gpu_inventory(agents, kv, tmp_path) -> None:
    inv = tmp_path / "gpus.yaml"
    inv.write_text((DATA / "fake_gpus.yaml").read_text().replace("TOPO", str(DATA / "topo_v100x8.txt")))
    rdma = tmp_path / "rdma.yaml"
    rdma.write_text("rdma:\n  - {name: mlx5_0, fabric: ib-a, link_layer: InfiniBand, numa: 0,\n"
                    "     devices: [{path: /dev/infiniband/uverbs0, major: 1, minor: 3}]}\n")
    a = agents("n-runc", "runc", "--gpu-inventory", str(inv), "--rdma-inventory", str(rdma),
               "--labels", "rack=r7,switch=s2").start()

    async def node():
        resp = await kv.get("/registry/nodes/n-runc")
        return json.loads(resp.kvs[0].value) if resp.kvs else None
    rec = await wait_for(node, 60, "node record", a)
    assert (rec["gpus"], rec["gpu_type"], rec["rack"], rec["labels"]) == (8, "V100-SXM2", "r7", {"rack": "r7", "switch": "s2"})
    assert rec["islands"] == [4, 4]  # V100 hybrid cube mesh: two all-to-all NVLink quads
    assert rec["gpu_links"]["0-1"] == "NV1" and rec["gpu_links"]["0-5"] == "SYS"
    assert rec["gpu_list"][4]["cpu_affinity"] == "12-23,36-47" and rec["rdma"][0]["fabric"] == "ib-a"
    assert rec["agent"]["runtime"] == "runc" and rec["agent"]["capabilities"]["devices"]
    script = "ls /dev/nvidia* /dev/infiniband; echo CUDA=$CUDA_VISIBLE_DEVICES; ulimit -l"
    await assign(kv, "n-runc", "jg", "t", {"command": ["sh", "-c", script],
                                           "resources": {"gpus": [2, 5], "rdma": True, "memory_mib": 128}})
    s = await wait_status(kv, "jg", "t", "Succeeded", agent=a)
    tail = s["log_tail"]
    assert "/dev/nvidia2" in tail and "/dev/nvidia5" in tail and "/dev/nvidia0" not in tail
    assert "CUDA=GPU-fake-v100-02,GPU-fake-v100-05" in tail and "uverbs0" in tail


async def test_hundred_concurrent_tasks(agents, kv) -> None:
    a = agents("n-100", "process").start()
    t0 = time.monotonic()
    for i in range(100):
        await assign(kv, "n-100", "j100", f"t{i:03d}", {"command": ["sh", "-c", f"sleep 4; exit {i % 3}"]})

    async def all_running():
        resp = await kv.get("/registry/tasks/j100/", prefix=True)
        phases = [json.loads(kv_.value)["phase"] for kv_ in resp.kvs]
        return len(phases) == 100 and all(p in ("Running", "Succeeded", "Failed") for p in phases)
    await wait_for(all_running, 120, "100 tasks running", a)

    async def all_done():
        resp = await kv.get("/registry/tasks/j100/", prefix=True)
        docs = [json.loads(kv_.value) for kv_ in resp.kvs]
        return docs if len(docs) == 100 and all(d["phase"] in ("Succeeded", "Failed") for d in docs) else None
    docs = await wait_for(all_done, 180, "100 tasks done", a)
    assert sorted((d["task"], d["exit_code"]) for d in docs) == [(f"t{i:03d}", i % 3) for i in range(100)]
    assert all(d["attempt"] == 1 for d in docs)
    print(f"100 tasks assigned, run and reported in {time.monotonic() - t0:.1f}s")
    for i in range(100):
        await unassign(kv, "n-100", "j100", f"t{i:03d}")


@pytest.fixture
async def endpoint(tmp_path: Path):
    """The endpoint of an agent that never reaches kvraft (none is needed to read logs), with
    tasks of the process runtime: one that ran, one that runs and writes, one that is quiet."""
    from agent.agent import Agent
    from agent.config import load_config
    from agent.endpoint import serve
    from agent.runtime.base import TaskRun
    from agent.runtime.process import ProcessRuntime
    from agent.spec import parse_spec
    from tests.agent.conftest import kill_task_processes, remove_node_cgroups

    data = tmp_path / "agent"
    config = load_config(["--name", f"ep-{os.getpid()}", "--data-dir", str(data), "--runtime", "process",
                          "--endpoints", "127.0.0.1:1"])
    runtime = ProcessRuntime(data, config.name)
    agent = Agent(config, runtime)
    await runtime.start(TaskRun("je/done", 1, 1, parse_spec({"command": ["sh", "-c", "echo one; echo two"]})))
    await runtime.start(TaskRun("je/runs", 1, 1, parse_spec({"command": ["sh", "-c", "while :; do echo tick; sleep 0.05; done"]})))
    await runtime.start(TaskRun("je/quiet", 1, 1, parse_spec({"command": ["sleep", "300"]})))
    while not any(o.key == "je/done" and not o.live for o in await runtime.observe()):
        await asyncio.sleep(0.05)
    url = f"http://127.0.0.1:{free_port()}"
    runner = await serve(agent, url)
    try:
        async with aiohttp.ClientSession(base_url=url) as http:
            http.agent_runtime = runtime  # type: ignore[attr-defined]  # tests that start attempts of their own
            yield http
    finally:
        await runner.cleanup()
        await runtime.close()
        kill_task_processes(data)
        remove_node_cgroups(config.name)


@pytest.mark.parametrize(("path", "status", "text"), [
    ("/logs/je/done?tail=abc", 400, "tail: must be an integer >= -1 (-1: all), not 'abc'"),
    ("/logs/je/done?tail=-2", 400, "tail: must be an integer >= -1 (-1: all), not '-2'"),
    ("/logs/je/done?attempt=x", 400, "attempt: must be an integer >= 1, not 'x'"),
    ("/logs/je/done?attempt=0", 400, "attempt: must be an integer >= 1, not '0'"),
    ("/logs/je/done?attempt=7", 404, "no attempt 7 of task je/done on node"),
    ("/logs/je/done?stream=stdin", 400, "stream: must be stdout or stderr, not 'stdin'"),
    ("/stats/je/done?attempt=-1", 400, "attempt: must be an integer >= 1, not '-1'"),
    ("/logs/je/done?follow=maybe", 400, "follow: must be true or false, not 'maybe'"),
    ("/logs/je/done?timestamps=2", 400, "timestamps: must be true or false, not '2'"),
    ("/logs/je/done?follow=True&timestamps=0", 200, "one\ntwo\n"),  # Go's ParseBool spellings, as kubelet
    ("/logs/je/done?tail=-1", 200, "one\ntwo\n"),
    ("/logs/je/done?tail=1&stream=stdout", 200, "two\n"),
    ("/logs/je/done?since_seconds=0", 400, "since_seconds: must be an integer >= 1, not '0'"),
    ("/logs/je/done?since_time=yesterday", 400, "since_time: must be an RFC 3339 time such as"),
    ("/logs/je/done?since_time=2026-12-05T10:00:00", 400, "since_time: must be an RFC 3339 time"),  # no zone
    ("/logs/je/done?since_seconds=5&since_time=2026-12-05T10:00:00Z", 400, "at most one of since_seconds or since_time"),
    ("/logs/je/done?previous=1", 404, "previous terminated attempt of task je/done on node"),
    ("/logs/je/done?previous=1&attempt=1", 400, "give attempt or previous, not both"),
    ("/logs/je/done?since_seconds=3600", 200, "one\ntwo\n"),
    ("/logs/je/done?since_time=2000-01-01T00:00:00%2B01:00", 200, "one\ntwo\n"),
])
async def test_bad_log_parameters_are_a_400_naming_them(endpoint, path: str, status: int, text: str) -> None:
    """A tail or attempt that was not an integer was a 500 with a traceback in the agent's log;
    an attempt the task never had was a 200 with nothing; a stream other than stdout and
    stderr was a 200 that filtered out every line; a follow or timestamps that was not a
    boolean was read as false. kubectl refuses --tail below -1."""
    r = await endpoint.get(path)
    assert (r.status, (await r.text()).startswith(text)) == (status, True), (r.status, await r.text())


@pytest.mark.parametrize(("body", "text"), [
    ([1], 'body must be JSON {"argv": [...]}'),
    ({"argv": ["true"], "timeout_s": "x"}, "timeout_s: must be a number > 0, not 'x'"),
    ({"argv": ["true"], "timeout_s": 0}, "timeout_s: must be a number > 0, not 0"),
    # no argv can carry these (exec refuses them): ValueError and UnicodeEncodeError were 500s
    ({"argv": ["echo", "a\u0000b"]}, "argv[1]: contains a NUL character"),
    ({"argv": ["echo", "\ud800"]}, "argv[1]: is not valid UTF-8 (a lone surrogate)"),
])
async def test_a_bad_exec_body_is_a_400_naming_it(endpoint, body: object, text: str) -> None:
    r = await endpoint.post("/exec/je/runs", data=json.dumps(body))
    assert (r.status, (await r.text()).strip()) == (400, text)


async def test_a_client_that_leaves_a_follow_is_no_error(endpoint, caplog: pytest.LogCaptureFixture) -> None:
    """Ending ``jobctl logs -f`` (Ctrl-C) is how a follow ends: each one logged an error with
    a traceback (ClientConnectionResetError out of the handler's write)."""
    r = await endpoint.get("/logs/je/runs?follow=1&tail=0")
    assert (await r.content.readline()).strip() == b"tick"
    r.close()  # the client goes away mid-follow
    await asyncio.sleep(0.5)  # the handler's next writes find the connection gone
    r = await endpoint.get("/logs/je/done")
    assert await r.text() == "one\ntwo\n"
    assert [rec.getMessage() for rec in caplog.records if rec.levelno >= logging.ERROR] == []


async def test_a_follow_of_a_quiet_task_ends_when_its_client_leaves(endpoint) -> None:
    """A follow noticed its client had gone only when it wrote: one of a task that prints
    nothing went on until the task ended (days, for a training run), holding the log file
    open and listing every attempt of the node five times a second."""
    def follows() -> list[str]:
        out = []
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/self/fd/{fd}").endswith("/je/quiet/1/output.log"):
                    out.append(fd)
        return out

    r = await endpoint.get("/logs/je/quiet?follow=1")
    assert r.status == 200
    deadline = time.monotonic() + 10
    while not follows():
        assert time.monotonic() < deadline, "the follow never opened the log"
        await asyncio.sleep(0.05)
    r.close()
    deadline = time.monotonic() + 10
    while follows():
        assert time.monotonic() < deadline, "the follow of a client that left goes on"
        await asyncio.sleep(0.1)


async def test_head_of_logs_is_405_not_a_body(endpoint) -> None:
    """HEAD /logs wrote the log after the headers of a HEAD answer, which has no body (with
    follow=1, until the task ended): a keep-alive client read it as its next response."""
    r = await endpoint.head("/logs/je/done")
    assert (r.status, r.headers["Allow"]) == (405, "GET")
    r = await endpoint.get("/logs/je/done")  # the same connection still answers
    assert await r.text() == "one\ntwo\n"


async def test_a_client_gone_before_the_log_headers_is_no_error(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """A client that closed right after its request: prepare() raised ClientConnectionResetError
    out of the handler (aiohttp logged 'Error handling request' with a traceback)."""
    from unittest import mock

    from aiohttp.http_writer import StreamWriter
    from aiohttp.test_utils import make_mocked_request

    from agent.agent import Agent
    from agent.config import load_config
    from agent.endpoint import logs, make_app
    from agent.runtime.base import TaskRun
    from agent.runtime.process import ProcessRuntime
    from agent.spec import parse_spec
    from tests.agent.conftest import kill_task_processes

    data = tmp_path / "agent"
    config = load_config(["--name", f"ep-{os.getpid()}", "--data-dir", str(data), "--runtime", "process",
                          "--endpoints", "127.0.0.1:1"])
    runtime = ProcessRuntime(data, config.name)
    try:
        await runtime.start(TaskRun("je/done", 1, 1, parse_spec({"command": ["sh", "-c", "echo one"]})))
        protocol = mock.Mock(transport=mock.Mock(is_closing=lambda: True))
        req = make_mocked_request("GET", "/logs/je/done", match_info={"job": "je", "task": "done"},
                                  app=make_app(Agent(config, runtime)), protocol=protocol, transport=protocol.transport,
                                  writer=StreamWriter(protocol, asyncio.get_running_loop()))
        resp = await logs(req)
        assert resp is not None
    finally:
        await runtime.close()
        kill_task_processes(data)


async def test_logs_of_a_task_still_starting_say_so(endpoint, tmp_path: Path) -> None:
    """An attempt still being prepared (a runc image unpacking, a start waiting on kvraft)
    has no log yet: the answer was an empty 200, and ``jobctl logs -f`` ended at once saying
    nothing. kubectl says the container is waiting to start; the agent answers 404 so, which
    jobctl turns into that sentence."""
    adir = tmp_path / "agent" / "tasks" / "je" / "starting" / "1"
    adir.mkdir(parents=True)
    (adir / "handle.json").write_text(json.dumps({"key": "je/starting", "attempt": 1, "revision": 1, "id": "c-starting",
                                                  "spec": {}, "created_at": time.time()}))  # no supervisor yet
    for query in ("", "?follow=1"):
        r = await endpoint.get(f"/logs/je/starting{query}")
        assert (r.status, await r.text()) == (404, "task je/starting attempt 1 is waiting to start: no output yet\n")


async def test_logs_never_leave_the_tasks_directory(endpoint, tmp_path: Path) -> None:
    """A job or task named '..' (percent-encoded, so that the URL is not normalized) named a
    directory outside <data-dir>/tasks: /logs/%2E%2E/x read <data-dir>/x/<n>/output.log, and
    /exec and /stats looked there for a task to run a command in. No task is called '..'
    (the agent refuses such assignment keys): 404."""
    outside = tmp_path / "agent" / "x" / "1"
    outside.mkdir(parents=True)
    (outside / "output.log").write_text("2026-01-01T00:00:00.000000000Z stdout F not a task's\n")
    import http.client

    def get_as_is(path: str) -> tuple[int, str]:  # aiohttp's client would normalize the path
        conn = http.client.HTTPConnection(endpoint._base_url.host, endpoint._base_url.port, timeout=30)
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            return r.status, r.read().decode()
        finally:
            conn.close()
    for path in ("/logs/%2E%2E/x", "/logs/%2e%2e/x", "/stats/%2E%2E/x", "/logs/je/%2E%2E", "/logs/%2E/x"):
        status, text = await asyncio.to_thread(get_as_is, path)
        assert status == 404 and "not a task's" not in text, (path, status, text)


async def test_a_follow_misses_nothing_written_after_the_first_read(endpoint, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A follow read the files, sent them, then opened the current file at its end: whatever
    the task wrote in between (a busy task: many lines) was never shown, and a line being
    written during the read came out cut in two. It now goes on from where the read ended."""
    import agent.endpoint as endpoint_module

    log = tmp_path / "agent" / "tasks" / "je" / "done" / "1" / "output.log"
    log.write_bytes(log.read_bytes() + b"2026-01-01T00:00:00.000000000Z stdout F thr")  # a line being written
    real_read = endpoint_module._read_lines

    def read_then_the_task_writes(files, need=None):
        out = real_read(files, need)
        with open(log, "ab") as f:
            f.write(b"ee\n2026-01-01T00:00:00.000000000Z stdout F four\n")
        return out

    monkeypatch.setattr(endpoint_module, "_read_lines", read_then_the_task_writes)
    r = await endpoint.get("/logs/je/done?follow=1")
    assert await r.text() == "one\ntwo\nthree\nfour\n"


async def test_logs_since_a_time_and_of_the_previous_attempt(endpoint) -> None:
    """kubectl logs --since/--since-time and --previous: the lines logged at or after a time
    (of the rotated files, then the follow), and the attempt before the latest."""
    from agent.runtime.base import TaskRun
    from agent.spec import parse_spec

    runtime = endpoint.agent_runtime
    await runtime.start(TaskRun("je/since", 1, 1, parse_spec({"command": ["sh", "-c", "echo early; sleep 0.3; echo late"]})))
    while not any(o.key == "je/since" and not o.live for o in await runtime.observe()):
        await asyncio.sleep(0.05)
    lines = [ln.split(" ", 1) for ln in (await (await endpoint.get("/logs/je/since?timestamps=1")).text()).splitlines()]
    assert [text for _, text in lines] == ["early", "late"]
    r = await endpoint.get("/logs/je/since", params={"since_time": lines[1][0]})
    assert await r.text() == "late\n"
    r = await endpoint.get("/logs/je/since", params={"since_time": "2999-01-01T00:00:00Z", "tail": "5"})
    assert (r.status, await r.text()) == (200, "")
    await runtime.start(TaskRun("je/done", 2, 1, parse_spec({"command": ["sh", "-c", "echo three"]})))
    while not any(o.key == "je/done" and o.attempt == 2 and not o.live for o in await runtime.observe()):
        await asyncio.sleep(0.05)
    assert await (await endpoint.get("/logs/je/done")).text() == "three\n"
    assert await (await endpoint.get("/logs/je/done?previous=true")).text() == "one\ntwo\n"


async def test_a_follow_that_falls_two_rotations_behind_reads_the_middle_file(endpoint, tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The task writes and its log rotates twice between the follow's first read and its next
    look: the follow reads the rest of the file it was in (now output.log.2), then output.log.1,
    then output.log. It opened output.log, the newest, and the middle file's lines were never
    shown (session 40's note)."""
    import agent.endpoint as endpoint_module

    adir = tmp_path / "agent" / "tasks" / "je" / "done" / "1"
    log = adir / "output.log"
    real_read = endpoint_module._read_lines

    def read_then_two_rotations(files, need=None):
        out = real_read(files, need)
        stamp = b"2026-01-01T00:00:00.000000000Z stdout F "
        with open(log, "ab") as f:
            f.write(stamp + b"four\n")
        for n, text in ((1, b"five"), (2, b"six")):
            for k in range(n, 0, -1):  # output.log.k -> .k+1, then output.log -> .1
                older = adir / f"output.log.{k}"
                if older.exists():
                    older.rename(adir / f"output.log.{k + 1}")
            log.rename(adir / "output.log.1")
            log.write_bytes(stamp + text + b"\n")
        return out

    monkeypatch.setattr(endpoint_module, "_read_lines", read_then_two_rotations)
    r = await endpoint.get("/logs/je/done?follow=1")
    assert await r.text() == "one\ntwo\nfour\nfive\nsix\n"


def test_a_tail_reads_only_the_newest_files_it_needs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """tail=N reads the files newest first and stops once N lines are in hand (it read every
    rotated file: 50 MiB for tail=10 at the default 5 x 10 MiB)."""
    import builtins

    import agent.endpoint as endpoint_module

    files = []
    for n in range(3):  # oldest first, 3 lines each
        p = tmp_path / f"f{n}"
        p.write_bytes(b"".join(f"2026-01-01T00:00:00Z stdout F {n}-{i}\n".encode() for i in range(3)))
        files.append(p)
    opened: list[str] = []

    def counting_open(path, *args, **kwargs):
        opened.append(Path(path).name)
        return builtins.open(path, *args, **kwargs)

    monkeypatch.setattr(endpoint_module, "open", counting_open, raising=False)
    lines, read_to = endpoint_module._read_lines(files, 2)
    assert (opened, [ln.rsplit(b" ", 1)[1] for ln in lines]) == (["f2"], [b"2-0", b"2-1", b"2-2"])
    assert read_to == (files[2].stat().st_ino, files[2].stat().st_size)
    opened.clear()
    assert len(endpoint_module._read_lines(files, 4)[0]) == 6 and opened == ["f2", "f1"]
    opened.clear()
    assert len(endpoint_module._read_lines(files)[0]) == 9 and opened == ["f2", "f1", "f0"]
    opened.clear()
    assert endpoint_module._read_lines(files, 0)[0][-1].endswith(b"2-2") and opened == ["f2"]

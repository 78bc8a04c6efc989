"""Driver tests against the real runtimes: ``process`` everywhere, ``runc`` where it works
(root, runc installed, writable cgroups; .ci/run installs runc). Scenarios from the
reference's section 6 (T1-T7, T10-T13)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from agent.reconcile import AttemptState
from agent.runtime.cgroups import CgroupLayout, read_cgroup_stats
from agent.runtime.process import ProcessRuntime
from agent.runtime.supervised import read_json
from tests.agent.conftest import kill_task_processes, remove_node_cgroups
from tests.agent.runtime_helpers import (
    CG_NODE,
    IGNORES_TERM,
    NO_CGROUPS,
    NODE,
    PY,
    log_lines,
    make_runtime,
    run,
    wait_exit,
    wait_log,
    wait_running,
)


async def test_exit_code_and_cri_logs(kind, data_dir) -> None:
    rt = make_runtime(kind, data_dir)
    await rt.start(run("j/t1", {"command": ["sh", "-c", "echo to-stdout; echo to-stderr >&2; printf partial; exit 3"]}))
    o = await wait_exit(rt, "j/t1")
    assert (o.exit.exit_code, o.exit.signal, o.exit.oom_killed, o.exit.reason) == (3, None, False, "")
    lines = log_lines(rt, "j/t1")
    streams = {ln.split(" ", 3)[1] + " " + ln.split(" ", 3)[2] + " " + ln.split(" ", 3)[3] for ln in lines}
    assert {"stdout F to-stdout", "stderr F to-stderr", "stdout P partial"} <= streams
    assert all(ln[:4].isdigit() and ln.split(" ", 1)[0].endswith("Z") for ln in lines)


async def test_stop_delivers_term_within_grace(kind, data_dir) -> None:
    rt = make_runtime(kind, data_dir)
    code = "import signal,sys,time\nsignal.signal(signal.SIGTERM, lambda *a: (print('got TERM', flush=True), sys.exit(0)))\nprint('ready', flush=True)\ntime.sleep(300)"
    await rt.start(run("j/t2", {"command": [PY, "-c", code]}))
    await wait_running(rt, "j/t2")
    deadline = time.monotonic() + 30
    while not any("ready" in ln for ln in log_lines(rt, "j/t2")):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    await rt.stop("j/t2", 1, 30.0)
    o = await wait_exit(rt, "j/t2")
    assert o.exit.exit_code == 0 and o.stop_requested
    assert any(ln.endswith("got TERM") for ln in log_lines(rt, "j/t2"))


async def test_task_gets_default_signal_dispositions(kind, data_dir) -> None:
    """The supervisor ignores SIGTERM/SIGHUP/SIGINT for itself; its tasks must not inherit
    that (an ignored disposition survives exec): a plain ``sleep`` ends on the stop's SIGTERM,
    long before its grace period would escalate to SIGKILL."""
    rt = make_runtime(kind, data_dir)
    await rt.start(run("j/ign", {"command": ["grep", "SigIgn", "/proc/self/status"]}))
    await wait_exit(rt, "j/ign")
    [line] = [ln for ln in log_lines(rt, "j/ign") if "SigIgn" in ln]
    ignored = int(line.rsplit(None, 1)[-1], 16)
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        assert not ignored & (1 << (sig - 1)), f"the task inherited {sig!r} ignored ({line})"
    await rt.start(run("j/sleep", {"command": ["sh", "-c", "echo up; exec sleep 300"], "grace_s": 300}))
    await wait_running(rt, "j/sleep")
    # under runc a TERM that reaches the container's init (tini) before it has set up its
    # signal handling is dropped by the kernel (a namespace init ignores default-handled
    # signals), and the stop then waits out the grace period: stop once the task is up
    await wait_log(rt, "j/sleep", "up")
    await rt.stop("j/sleep", 1, 300.0)
    o = await wait_exit(rt, "j/sleep", timeout_s=120)  # an ignored TERM would wait out the 300 s grace
    assert o.exit.exit_code == 143
    assert (o.exit.signal == signal.SIGTERM) if kind == "process" else True  # under runc, tini reports 128+15


async def test_ignored_term_escalates_to_kill_after_grace(kind, data_dir) -> None:
    rt = make_runtime(kind, data_dir)
    await rt.start(run("j/t3", {"command": ["sh", "-c", IGNORES_TERM], "grace_s": 1}))
    await wait_running(rt, "j/t3")
    await wait_log(rt, "j/t3", "trapped")  # a stop before the trap would simply end it
    t0 = time.monotonic()
    await rt.stop("j/t3", 1, 1.0)
    o = await wait_exit(rt, "j/t3")
    assert time.monotonic() - t0 >= 0.9  # not before the grace period
    assert o.exit.exit_code == 137
    assert (o.exit.signal == 9) if kind == "process" else True  # under runc, tini reports 128+9


@pytest.mark.skipif(bool(NO_CGROUPS), reason=NO_CGROUPS or "ok")
async def test_oom_is_reported_and_plain_kill_is_not(kind, data_dir) -> None:
    rt = make_runtime(kind, data_dir)
    await rt.start(run("j/oom", {"command": [PY, "-c", "b = bytearray(300 << 20); print(len(b))"],
                                 "resources": {"memory_mib": 32}}))
    await rt.start(run("j/kill", {"command": [PY, "-c", "import os; os.kill(os.getpid(), 9)"],
                                  "resources": {"memory_mib": 64}}))
    oom = await wait_exit(rt, "j/oom")
    kill = await wait_exit(rt, "j/kill")
    assert (oom.exit.exit_code, oom.exit.oom_killed) == (137, True)
    assert (kill.exit.exit_code, kill.exit.oom_killed) == (137, False)


def test_a_node_cgroup_is_removed_from_every_hierarchy_not_only_the_agents_controllers(tmp_path) -> None:
    """runc makes a container's cgroups in every hierarchy (blkio, devices, freezer, the named
    systemd one, the hybrid unified one); removing only the controllers the agent writes left
    ``kvraft-agent/<node>`` in the others, one set per node name."""
    from agent.runtime.cgroups import CgroupLayout

    root = tmp_path / "cgroup"
    for h in ("memory", "cpu,cpuacct", "pids", "blkio", "devices", "freezer", "systemd", "unified"):
        (root / h / "kvraft-agent" / "n1" / "c-1").mkdir(parents=True)
    (root / "cpu").symlink_to("cpu,cpuacct")
    (root / "cpuacct").symlink_to("cpu,cpuacct")
    layout = CgroupLayout(1, root)
    assert layout.kill_and_remove("kvraft-agent/n1")
    assert sorted(str(p.relative_to(root)) for p in root.glob("*/kvraft-agent/*")) == []
    (root / "blkio" / "kvraft-agent" / "n2" / "c-2").mkdir(parents=True)
    (root / "blkio" / "kvraft-agent" / "n2" / "c-3").mkdir()  # another task's, still there
    (root / "devices" / "kvraft-agent" / "n2" / "c-2").mkdir(parents=True)
    layout.remove_empty_parents("kvraft-agent/n2/c-2/leaf", "kvraft-agent/n2")  # what a task's cleanup does
    assert [str(p.relative_to(root)) for p in root.glob("*/kvraft-agent/n2")] == ["blkio/kvraft-agent/n2"]  # not empty


def test_a_cgroup_removed_while_it_is_killed_and_removed_is_no_error(tmp_path, monkeypatch) -> None:
    """A task's supervisor removes the task's cgroups once the task has ended, which can be
    while the agent's sweep (or a cleanup) kills and removes them: the cgroup went between
    the check that it exists and the listing of its children, and FileNotFoundError came out
    of sweep, so the agent did not start."""
    from agent.runtime.cgroups import CgroupLayout

    root = tmp_path / "cgroup"
    for h in ("memory", "pids"):
        (root / h / "kvraft-agent" / "n1" / "c-1" / "sub").mkdir(parents=True)
    real_scandir = os.scandir
    removed: list[str] = []

    def scandir_after_the_supervisor(path):  # the supervisor is quicker this time
        if str(path).endswith("/c-1") and not removed:
            removed.append(str(path))
            shutil.rmtree(path)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir_after_the_supervisor)
    CgroupLayout(1, root).kill_and_remove("kvraft-agent/n1/c-1")
    assert list(root.glob("*/kvraft-agent/n1/*")) == []


def test_a_task_that_already_ended_is_never_read_as_the_root_cgroup(tmp_path) -> None:
    """The kernel shows an exited task (a zombie) in the root cgroup. A runc init OOM-killed
    before ``runc run --detach`` returns is one when the supervisor looks for its cgroup:
    reading the root's counter reported the OOM kill as a plain SIGKILL (a flake of the test
    above under load). The task stats read the same way would be the whole machine's."""
    from agent.runtime.supervisor import Supervisor

    sup = Supervisor(str(tmp_path), {"mode": "runc", "id": "c1", "oom_file": "/configured/memory.oom_control"})
    child = os.fork()
    if child == 0:
        time.sleep(30)
        os._exit(0)
    try:
        sup.pid = child
        live = sup._runc_oom_file()
        alive_stats = read_cgroup_stats(child)
        mine = [ln.split(":", 2)[2] for ln in Path("/proc/self/cgroup").read_text().splitlines()
                if "memory" in ln.split(":")[1].split(",")]
        if mine and mine[0] != "/":
            assert live == f"/sys/fs/cgroup/memory{mine[0]}/memory.oom_control"
            assert alive_stats.get("memory_bytes", 0) > 0
        os.kill(child, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{child}/stat").read_text().split()[2] != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert sup._runc_oom_file() == ""
        assert read_cgroup_stats(child) == {}  # not the root cgroup's (the machine's) counters
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)


async def test_log_rotation_keeps_n_files_and_the_last_line(kind, data_dir) -> None:
    rt = make_runtime(kind, data_dir, log_max_bytes=200_000, log_max_files=3)
    code = "import sys\nfor i in range(20000):\n    print(f'line {i:06d} ' + 'x' * 20)\n    print(f'err {i:06d}', file=sys.stderr)"
    await rt.start(run("j/log", {"command": [PY, "-c", code]}))
    o = await wait_exit(rt, "j/log")
    assert o.exit.exit_code == 0
    files = rt.log_files("j/log", 1)
    assert [p.name for p in files] == ["output.log.2", "output.log.1", "output.log"]
    assert all(p.stat().st_size <= 200_000 for p in files)
    lines = log_lines(rt, "j/log")
    assert lines[-1].endswith("stderr F err 019999") or lines[-1].endswith("stdout F line 019999 " + "x" * 20)
    out_nums = [int(ln.split()[4]) for ln in lines if " stdout F " in ln]
    assert out_nums == list(range(out_nums[0], 20000))  # contiguous: nothing lost inside the kept window


async def test_missing_binary_is_a_start_error(kind, data_dir) -> None:
    rt = make_runtime(kind, data_dir)
    await rt.start(run("j/bad", {"command": ["no-such-binary-xyz", "--flag"]}))
    o = await wait_exit(rt, "j/bad")
    assert (o.exit.exit_code, o.exit.reason) == (127, "StartError")
    assert "no-such-binary-xyz" in o.exit.message


async def test_a_start_that_fails_on_the_disk_is_a_start_error(kind, data_dir, monkeypatch) -> None:
    """A start whose preparation fails on the disk (no space left for the bundle, the
    generated /etc, an unpacked image layer) raised OSError out of start after its handle was
    written: the attempt read as starting for 10 s, then as Lost, 'never started (agent died
    while starting)', and was restarted by its policy. It is a StartError naming the cause."""
    import errno

    rt = make_runtime(kind, data_dir)

    async def no_space(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(data_dir / "bundle"))

    monkeypatch.setattr(rt, "_prepare", no_space)
    await rt.start(run("j/full", {"command": ["true"]}))
    [o] = await rt.observe()
    assert (o.state, o.exit.exit_code, o.exit.reason) == (AttemptState.EXITED, 128, "StartError"), o
    assert "No space left on device" in o.exit.message


@pytest.mark.skipif(bool(NO_CGROUPS), reason=NO_CGROUPS or "ok")
async def test_impossible_cpuset_fails_with_a_reason(kind, data_dir) -> None:
    rt = make_runtime(kind, data_dir)
    await rt.start(run("j/cpus", {"command": ["true"], "resources": {"cpuset": "63"}}))
    o = await wait_exit(rt, "j/cpus")
    assert o.exit.reason == "StartError" and o.exit.message, o


async def test_supervisor_death_is_lost_and_the_task_killed(kind, data_dir) -> None:
    rt = make_runtime(kind, data_dir)
    await rt.start(run("j/sup", {"command": ["sleep", "300"]}))
    await wait_running(rt, "j/sup")
    adir = rt.attempt_dir("j/sup", 1)
    shim = read_json(adir / "shim.json")
    started = read_json(adir / "started.json")
    os.kill(shim["pid"], signal.SIGKILL)
    o = await wait_exit(rt, "j/sup")
    assert o.state is AttemptState.LOST and o.exit.exit_code is None
    deadline = time.monotonic() + 20
    while Path(f"/proc/{started['pid']}").exists() and "Z" not in Path(f"/proc/{started['pid']}/stat").read_text().split()[2]:
        assert time.monotonic() < deadline, "task survived its supervisor's death"
        await asyncio.sleep(0.1)
    if kind == "runc":
        assert await rt.list_containers() == []


def _task_gone(pid: int) -> bool:
    try:
        return "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return True


@pytest.mark.parametrize("text", ["", '{"key": "j/to', "[]", "{}", '{"key": "j/torn", "attempt": "x", "revision": 1, "id": "c"}',
                                  '{"key": "j/other", "attempt": 7, "revision": 1, "id": "c"}'],
                         ids=["empty", "torn", "list", "no-fields", "attempt-text", "another-attempt"])
async def test_an_unreadable_handle_is_a_lost_attempt_not_a_stalled_agent(kind, data_dir, text) -> None:
    """handle.json is not fsynced: a power loss can leave it empty, and anyone can edit it. A
    handle without its fields raised (KeyError, ValueError) out of observe -- every reconcile
    pass of the agent failed, for every task -- and out of sweep, so the agent did not start;
    an empty one hid the attempt, and the Start the reconcile then asked for at that attempt
    number did nothing (its handle existed): the task never ran again. Now the attempt is
    Lost under no placement (revision 0), what still ran of it is killed, and it is cleaned
    and removed like any attempt of a placement that went."""
    rt = make_runtime(kind, data_dir)
    await rt.start(run("j/torn", {"command": ["sleep", "300"]}))
    await wait_running(rt, "j/torn")
    adir = rt.attempt_dir("j/torn", 1)
    task, shim = read_json(adir / "started.json"), read_json(adir / "shim.json")
    (adir / "handle.json").write_text(text)
    rt2 = make_runtime(kind, data_dir)  # an agent restart
    await rt2.sweep()
    [o] = await rt2.observe()
    assert (o.key, o.attempt, o.revision, o.state, o.live) == ("j/torn", 1, 0, AttemptState.LOST, False)
    assert o.exit.reason == "Lost" and "handle.json" in o.exit.message, o.exit
    deadline = time.monotonic() + 20
    while not (_task_gone(task["pid"]) and _task_gone(shim["pid"])):
        assert time.monotonic() < deadline, "the task of an unreadable attempt runs on"
        await asyncio.sleep(0.1)
    await rt2.cleanup("j/torn", 1)
    assert [o.held for o in await rt2.observe()] == [False]
    await rt2.remove("j/torn", 1)
    assert await rt2.observe() == []
    await rt2.start(run("j/torn", {"command": ["true"]}))  # the task starts afresh
    assert (await wait_exit(rt2, "j/torn")).exit.exit_code == 0


@pytest.mark.parametrize(("name", "text"), [
    ("started.json", '{"pid": "x", "start_time": "y", "started_at": "abc"}'),
    ("exit.json", '{"exit_code": "3", "signal": [], "finished_at": "x", "started_at": {}, "reason": 5}'),
    ("shim.json", '{"pid": "x", "start_time": "y"}'),
    ("lost.json", '{"at": "x", "message": 5}'),
], ids=["started", "exit", "shim", "lost"])
async def test_malformed_state_files_never_raise_out_of_observe(data_dir, name, text) -> None:
    """A state file with fields of the wrong type (written by hand, or by a bug) raised
    ValueError out of observe, failing every reconcile pass of the agent."""
    rt = make_runtime("process", data_dir)
    await rt.start(run("j/odd", {"command": ["true"]}))
    await wait_exit(rt, "j/odd")
    adir = rt.attempt_dir("j/odd", 1)
    if name in ("shim.json", "lost.json", "started.json"):
        (adir / "exit.json").unlink()  # the supervisor's end was not recorded
    (adir / name).write_text(text)
    [o] = await make_runtime("process", data_dir).observe()
    assert o.state in (AttemptState.EXITED, AttemptState.LOST) and o.exit is not None
    assert isinstance(o.exit.finished_at_s, float) and isinstance(o.started_at_s, float)
    assert o.exit.exit_code is None or isinstance(o.exit.exit_code, int)
    assert isinstance(o.exit.reason, str) and isinstance(o.exit.message, str)


async def test_without_cgroups_the_remains_of_a_lost_task_are_killed_by_its_group(data_dir) -> None:
    """Where no cgroup is writable (an agent not run as root), a task's remains are found by
    its process group. They were killed only while the group's leader lived: a task whose
    leader had exited, its supervisor gone, left its children running for ever. A group
    outlives its leader, and its id is no other process's while it exists."""
    from agent.runtime.cgroups import CgroupLayout

    rt = ProcessRuntime(data_dir, NODE, cgroups=CgroupLayout(0, Path("/nonexistent")))
    await rt.start(run("j/bg", {"command": ["sh", "-c", "sleep 300 & echo $! > child; sleep 1"]}))
    await wait_running(rt, "j/bg")
    adir = rt.attempt_dir("j/bg", 1)
    os.kill(read_json(adir / "shim.json")["pid"], signal.SIGKILL)  # the supervisor goes first
    child_file = rt.workdir("j/bg") / "child"
    deadline = time.monotonic() + 20
    while not (child_file.exists() and child_file.read_text().strip()) or not _task_gone(read_json(adir / "started.json")["pid"]):
        assert time.monotonic() < deadline, "the task's leader did not end"
        await asyncio.sleep(0.05)
    child = int(child_file.read_text())
    try:
        o = await wait_exit(ProcessRuntime(data_dir, NODE, cgroups=CgroupLayout(0, Path("/nonexistent"))), "j/bg")
        assert o.state is AttemptState.LOST
        deadline = time.monotonic() + 20
        while not _task_gone(child):
            assert time.monotonic() < deadline, "the task's child runs on, an orphan"
            await asyncio.sleep(0.1)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)


@pytest.mark.parametrize("start_time", [0, None, 1], ids=["zero", "absent", "other"])
async def test_pids_now_used_by_other_processes_are_never_killed(data_dir, start_time) -> None:
    """PID reuse: the supervisor died unrecorded and the pids its files name now belong to
    other processes. started.json carries start_time 0 when the task was gone before its
    start time was read; a record without one (0, or absent: written by hand) matched any
    process with that pid: the attempt was Running for ever (holding its GPUs), and the
    remains' kill (killpg) took down whatever process group reused the task's pid."""
    import subprocess

    rt = make_runtime("process", data_dir)
    await rt.start(run("j/reuse", {"command": ["true"]}))
    await wait_exit(rt, "j/reuse")
    adir = rt.attempt_dir("j/reuse", 1)
    (adir / "exit.json").unlink()  # the supervisor's end was not recorded
    other = subprocess.Popen(["sleep", "300"], start_new_session=True)  # a group leader, like a task
    try:
        doc = {"pid": other.pid, "started_at": time.time()} | ({} if start_time is None else {"start_time": start_time})
        (adir / "started.json").write_text(json.dumps(doc))
        (adir / "shim.json").write_text(json.dumps({k: v for k, v in doc.items() if k != "started_at"}))
        [o] = await make_runtime("process", data_dir).observe()
        assert o.state is AttemptState.LOST
        await asyncio.sleep(0.2)
        assert other.poll() is None, "an unrelated process was killed"
    finally:
        other.kill()
        other.wait()


async def test_reattach_and_persisted_stop_deadline(kind, data_dir) -> None:
    """A new runtime object (an agent restart) finds the task, and a stop requested before
    the restart still ends in SIGKILL at its deadline (T4, T5)."""
    rt = make_runtime(kind, data_dir)
    await rt.start(run("j/re", {"command": ["sh", "-c", IGNORES_TERM], "grace_s": 2}))
    await wait_running(rt, "j/re")
    await wait_log(rt, "j/re", "trapped")
    await rt.stop("j/re", 1, 2.0)
    del rt
    rt2 = make_runtime(kind, data_dir)
    obs = [o for o in await rt2.observe() if o.key == "j/re"]
    assert obs and obs[0].stop_requested and obs[0].state is AttemptState.RUNNING
    o = await wait_exit(rt2, "j/re")
    assert o.exit.exit_code == 137


async def test_a_remove_cut_short_leaves_nothing_a_new_attempt_reads(data_dir) -> None:
    """An agent killed while it removed an attempt (rmtree deletes in directory order) left
    the directory with some files and no handle.json: invisible, until the task was assigned
    again and its first attempt started in that directory -- where the old exit.json made the
    new, running task read as exited with the old code."""
    rt = make_runtime("process", data_dir)
    await rt.start(run("j/again", {"command": ["sh", "-c", "exit 3"]}))
    await wait_exit(rt, "j/again")
    await rt.cleanup("j/again", 1)
    (rt.attempt_dir("j/again", 1) / "handle.json").unlink()  # the remove got this far
    rt2 = make_runtime("process", data_dir)
    assert await rt2.observe() == []
    await rt2.start(run("j/again", {"command": ["sleep", "300"]}, attempt=1))  # a new placement
    o = await wait_running(rt2, "j/again", timeout_s=20)
    assert (o.state, o.exit, o.held) == (AttemptState.RUNNING, None, True)


async def test_the_sweep_removes_what_an_interrupted_remove_left(kind, data_dir) -> None:
    """A remove deletes the attempt directory, then (for the last attempt) the task's, work
    dir included -- checkpoints, gigabytes. An agent killed in between, or while the work dir
    was being deleted, left a task directory no attempt owns, or an attempt directory without
    its handle: nothing ever looked at them again, and the disk filled with them. The start-up
    sweep removes them; a task with an attempt keeps its work dir."""
    rt = make_runtime(kind, data_dir)
    await rt.start(run("j/keep", {"command": ["sleep", "300"]}))
    await wait_running(rt, "j/keep")
    gone = rt.workdir("j/gone")
    gone.mkdir(parents=True)
    (gone / "ckpt").write_bytes(b"x" * 1000)
    cut = rt.attempt_dir("j/cut", 2)
    cut.mkdir(parents=True)
    (cut / "output.log").write_text("")
    rt.workdir("j/cut").mkdir()
    rt2 = make_runtime(kind, data_dir)
    await rt2.sweep()
    assert not rt2.task_dir("j/gone").exists() and not rt2.task_dir("j/cut").exists()
    assert [o.key for o in await rt2.observe()] == ["j/keep"] and rt2.workdir("j/keep").is_dir()


async def test_a_stop_whose_signal_was_lost_still_stops_the_task(kind, data_dir) -> None:
    """The agent writes stop.json and then signals the supervisor (SIGUSR1); an agent killed
    between the two left a stop the supervisor never read: the task ran on for ever, and a
    restarted agent, seeing the stop requested, asked for nothing more (a GPU never freed)."""
    from agent.runtime.supervised import write_json

    rt = make_runtime(kind, data_dir)
    await rt.start(run("j/lost-stop", {"command": ["sh", "-c", IGNORES_TERM]}))
    await wait_running(rt, "j/lost-stop")
    await wait_log(rt, "j/lost-stop", "trapped")
    adir = rt.attempt_dir("j/lost-stop", 1)
    write_json(adir / "stop.json", {"signal": int(signal.SIGTERM), "deadline": time.time() + 1.0,
                                    "requested_at": time.time()})  # ... and the agent died
    o = await wait_exit(make_runtime(kind, data_dir), "j/lost-stop", timeout_s=30)
    assert o.stop_requested and o.exit.exit_code == 137, o.exit


@pytest.mark.skipif(bool(NO_CGROUPS), reason=NO_CGROUPS or "ok")
async def test_process_task_in_its_cgroups_and_supervisor_not(data_dir) -> None:
    """The supervisor steps into the task's cgroups around the spawn and back out: the task
    (and what it forks) is in every one of them, the supervisor in none, with full affinity."""
    from agent.runtime.supervised import read_json

    rt = make_runtime("process", data_dir, node=CG_NODE)
    await rt.start(run("j/cg", {"command": ["sh", "-c", "sleep 300 & exec sleep 300"], "resources": {"cpuset": "0"}}))
    await wait_running(rt, "j/cg")
    adir = rt.attempt_dir("j/cg", 1)
    task, shim = read_json(adir / "started.json"), read_json(adir / "shim.json")
    rel = read_json(adir / "supervisor.json")["cgroup"]

    def cgroups(pid: int) -> list[str]:
        return [ln.split(":", 2)[2] for ln in Path(f"/proc/{pid}/cgroup").read_text().splitlines()]
    joined = [c for c in cgroups(task["pid"]) if c.endswith("/" + rel) or c == "/" + rel]
    assert len(joined) >= (1 if CgroupLayout.detect().version == 2 else 2), cgroups(task["pid"])  # v1: each hierarchy
    assert not any(rel in c for c in cgroups(shim["pid"])), cgroups(shim["pid"])
    assert len(os.sched_getaffinity(shim["pid"])) == len(os.sched_getaffinity(0))
    await rt.stop("j/cg", 1, 5.0)
    o = await wait_exit(rt, "j/cg")
    assert o.exit.signal == signal.SIGTERM


@pytest.mark.skipif(bool(NO_CGROUPS), reason=NO_CGROUPS or "ok")
async def test_cpuset_and_pids_limits(kind, data_dir) -> None:
    rt = make_runtime(kind, data_dir)
    code = ("import os\nprint('affinity', sorted(os.sched_getaffinity(0)), flush=True)\n"
            "ok = 0\nfor i in range(40):\n    try:\n        pid = os.fork()\n    except OSError as e:\n"
            "        print('fork failed', e.errno, flush=True); break\n    if pid == 0:\n        import time; time.sleep(2); os._exit(0)\n"
            "    ok += 1\nprint('forked', ok, flush=True)")
    await rt.start(run("j/lim", {"command": [PY, "-c", code], "resources": {"cpuset": "0", "pids": 10}}))
    o = await wait_exit(rt, "j/lim")
    text = "\n".join(log_lines(rt, "j/lim"))
    assert "affinity [0]" in text
    assert "fork failed 11" in text, text  # EAGAIN from the pids controller
    forked = int(text.split("forked ")[1].split()[0])
    assert forked < 10
    assert o.exit.exit_code == 0


@pytest.mark.skipif(bool(NO_CGROUPS), reason=NO_CGROUPS or "ok")
async def test_a_cpu_limit_below_the_kernels_least_quota_runs(kind, data_dir) -> None:
    """A job's ``cpu: 5m`` is 500 us of CPU per 100 ms period: below the 1 ms the kernel
    takes as a CFS quota, so the cgroup write failed and the task never started
    (StartError 'Invalid argument'). kubelet raises such a quota to 1 ms; so does the agent."""
    rt = make_runtime(kind, data_dir)
    await rt.start(run("j/tiny-cpu", {"command": ["sh", "-c", "echo ran"], "resources": {"cpu_milli": 5}}))
    o = await wait_exit(rt, "j/tiny-cpu")
    assert (o.exit.exit_code, o.exit.reason) == (0, ""), o.exit
    assert log_lines(rt, "j/tiny-cpu")[-1].endswith("ran")


async def test_exec_and_stats(kind, data_dir) -> None:
    rt = make_runtime(kind, data_dir)
    await rt.start(run("j/ex", {"command": ["sleep", "300"], "env": {"MARK": "m42"}}))
    await wait_running(rt, "j/ex")
    r = await rt.exec("j/ex", 1, ["sh", "-c", "echo $MARK"], 30)
    assert r.exit_code == 0 and r.stdout.strip() == b"m42"
    if not NO_CGROUPS:
        st = await rt.stats("j/ex", 1)
        assert st.get("memory_bytes", 0) > 0 and st.get("pids", 0) >= 1
    await rt.stop("j/ex", 1, 5)
    await wait_exit(rt, "j/ex")
    await rt.remove("j/ex", 1)
    assert not rt.task_dir("j/ex").exists()


async def test_an_exec_that_times_out_answers_with_what_it_wrote(kind, data_dir) -> None:
    """An exec past its timeout_s had its process killed and then waited for its output to
    end -- which a child it had started in the background still held open: the answer came
    only when that child ended (minutes; a hung /exec), and without what had been written.
    Now what the command started is killed with it (its process group), the wait for the
    rest of its output is bounded, and the answer has the output so far."""
    rt = make_runtime(kind, data_dir)
    await rt.start(run("j/ex-slow", {"command": ["sleep", "300"]}))
    await wait_running(rt, "j/ex-slow")
    async with asyncio.timeout(25):  # a hang fails here, not after the background child's 60 s
        r = await rt.exec("j/ex-slow", 1, ["sh", "-c", "sleep 60 & echo started; sleep 60"], 1.0)
    assert r.exit_code == 124 and r.stdout.strip() == b"started", r


async def test_orphan_sweep(kind, data_dir) -> None:
    rt = make_runtime(kind, data_dir)
    await rt.start(run("j/keep", {"command": ["sleep", "300"]}))
    await rt.start(run("j/orphan", {"command": ["sleep", "300"]}))
    await wait_running(rt, "j/keep")
    o = await wait_running(rt, "j/orphan")
    assert o
    adir = rt.attempt_dir("j/orphan", 1)
    shim = read_json(adir / "shim.json")
    started = read_json(adir / "started.json")
    os.kill(shim["pid"], signal.SIGKILL)  # no supervisor, and the state is gone: an orphan
    shutil.rmtree(rt.task_dir("j/orphan"))
    if kind == "process" and NO_CGROUPS:
        pytest.skip("process orphans are found through their cgroup")
    removed = await rt.sweep()
    assert len(removed) == 1 and "orphan" in removed[0]
    deadline = time.monotonic() + 20
    while Path(f"/proc/{started['pid']}/stat").exists() and "Z" not in Path(f"/proc/{started['pid']}/stat").read_text().split()[2]:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    assert [x.key for x in await rt.observe()] == ["j/keep"]
    if kind == "runc":
        assert [c["id"] for c in await rt.list_containers()] == [read_json(rt.attempt_dir("j/keep", 1) / "handle.json")["id"]]


@pytest.mark.skipif(os.geteuid() != 0, reason="running a task as another user needs root")
async def test_process_task_runs_as_its_user_and_owns_its_workdir(tmp_path_factory) -> None:
    """``spec.user`` was accepted and ignored by the process runtime: the task ran as root."""
    import shutil
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="kvraft-user-"))  # pytest's tmp dirs are 0700: no way in for uid 65534
    root.chmod(0o755)
    rt = make_runtime("process", root / "agent")
    try:
        # another task's files (here: the root task's spec and env, then its own attempt's) are
        # out of reach, and so is the list of tasks
        await rt.start(run("j/root", {"command": ["sleep", "300"], "env": {"SECRET": "s3"}}))
        await wait_running(rt, "j/root")
        tasks = rt.tasks_dir
        code = ('id -u; id -g; id -G; echo ckpt > "$KVRAFT_WORKDIR/ckpt" && echo wrote; '
                f'cat {rt.attempt_dir("j/root", 1)}/handle.json || echo no-other; '
                f'cat {rt.attempt_dir("j/user", 1)}/supervisor.json || echo no-own; ls {tasks} || echo no-list; sleep 300')
        await rt.start(run("j/user", {"command": ["sh", "-c", code], "user": [65534, 65534]}))
        await wait_log(rt, "j/user", "no-list")
        lines = log_lines(rt, "j/user")
        assert [ln.rsplit(" ", 1)[-1] for ln in lines[:3]] == ["65534", "65534", "65534"]
        tails = [ln.rsplit(" ", 1)[-1] for ln in lines]
        assert {"wrote", "no-other", "no-own", "no-list"} <= set(tails) and not any("s3" in ln for ln in lines)
        assert rt.workdir("j/user").stat().st_uid == 65534
        assert [oct(p.stat().st_mode & 0o777) for p in (tasks, rt.task_dir("j/user").parent, rt.task_dir("j/user"),
                                                         rt.attempt_dir("j/user", 1), rt.workdir("j/user"))] == \
            ["0o711", "0o711", "0o711", "0o700", "0o700"]
        r = await rt.exec("j/user", 1, ["id", "-u"], 30)  # an exec runs as the task does
        assert r.exit_code == 0 and r.stdout.strip() == b"65534"
        for key in ("j/user", "j/root"):
            await rt.stop(key, 1, 5)
            await wait_exit(rt, key)
    finally:
        kill_task_processes(root / "agent")
        remove_node_cgroups(NODE)
        shutil.rmtree(root, ignore_errors=True)


async def test_workdir_paths_name_the_tasks_work_dir_on_every_runtime(kind, data_dir) -> None:
    """runc and Docker mount the task's work dir at /workdir; the process runtime took
    ``workdir: /workdir`` as a host directory (InvalidSpec: does not exist) and a command
    /workdir/run.sh as a host program, so the job file of docs/jobs.md ran on container nodes
    only. Both name the work dir now, on every runtime."""
    rt = make_runtime(kind, data_dir)
    wd = rt.workdir("j/wdir")
    (wd / "sub").mkdir(parents=True)
    (wd / "run.sh").write_text("#!/bin/sh\necho in $(pwd)\n")
    (wd / "run.sh").chmod(0o755)
    await rt.start(run("j/wdir", {"command": ["/workdir/run.sh"], "workdir": "/workdir/sub"}))
    o = await wait_exit(rt, "j/wdir")
    assert (o.exit.exit_code, o.exit.reason) == (0, ""), o.exit
    inside = "/workdir/sub" if kind == "runc" else str(wd / "sub")
    assert log_lines(rt, "j/wdir")[-1].endswith(f"in {inside}")

"""The docker driver against a real dockerd (Debian docker.io), started here in a temp dir
with ``--bridge=none --iptables=false --live-restore`` as the reference shows; skipped with
the reason when dockerd is not installed or cannot start."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from agent.reconcile import AttemptState
from kvraft.testing.procs import stop_process
from tests.agent.runtime_helpers import PY, log_lines, run, wait_exit, wait_running


@pytest.fixture(scope="module")
def dockerd(tmp_path_factory):
    if shutil.which("dockerd") is None:
        pytest.skip("dockerd not installed (apt-get install docker.io)")
    if os.geteuid() != 0:
        pytest.skip("dockerd needs root")
    d = Path("/tmp") / f"kvraft-agent-dockerd-{os.getpid()}"  # short: the socket path limit is 108 bytes
    d.mkdir(exist_ok=True)
    log = open(tmp_path_factory.mktemp("dockerd") / "dockerd.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(["dockerd", "--bridge=none", "--iptables=false", "--ip-masq=false", "--live-restore",
                             "--data-root", str(d / "data"), "--exec-root", str(d / "exec"),
                             "--pidfile", str(d / "dockerd.pid"), "-H", f"unix://{d}/docker.sock"],
                            stdout=log, stderr=log, start_new_session=True)
    sock = d / "docker.sock"
    deadline = time.monotonic() + 60
    while not sock.exists() or subprocess.run(["docker", "-H", f"unix://{sock}", "version"], capture_output=True).returncode:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.skip(f"dockerd did not start (see {log.name})")
        time.sleep(0.3)
    yield str(sock)
    out = subprocess.run(["docker", "-H", f"unix://{sock}", "ps", "-aq"], capture_output=True, text=True).stdout.split()
    if out:
        subprocess.run(["docker", "-H", f"unix://{sock}", "rm", "-f", *out], capture_output=True)
    stop_process(proc, timeout_s=30)
    log.close()
    # dockerd leaves a bind of its data root and exec/netns/default mounted: unmount all under d
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()
              if line.split()[1].startswith(str(d) + "/")]
    for m in sorted(mounts, reverse=True):
        subprocess.run(["umount", m], capture_output=True)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
async def rt(dockerd, tmp_path):
    from agent.runtime.docker import DockerRuntime

    r = DockerRuntime(tmp_path / "agent", f"dk-{os.getpid()}-{tmp_path.name[-12:]}", socket_path=dockerd,
                      log_max_bytes=100_000, log_max_files=2)
    yield r
    for c in await r.list_containers():
        await r.api("DELETE", f"/containers/{c['Id']}", params={"force": "1"})
    await r.close()


async def test_docker_exit_code_logs_and_exec(rt) -> None:
    await rt.start(run("j/d1", {"command": ["sh", "-c", "echo out; echo err >&2; exit 5"]}))
    o = await wait_exit(rt, "j/d1")
    assert (o.exit.exit_code, o.exit.oom_killed) == (5, False)
    texts = [ln for ln in log_lines(rt, "j/d1")]
    assert any('"log":"out\\n"' in t and '"stream":"stdout"' in t for t in texts)
    assert any('"log":"err\\n"' in t and '"stream":"stderr"' in t for t in texts)
    await rt.start(run("j/d2", {"command": ["sleep", "300"], "env": {"MARK": "dk"}}))
    await wait_running(rt, "j/d2")
    r = await rt.exec("j/d2", 1, ["sh", "-c", "echo $MARK; exit 2"], 30)
    assert (r.exit_code, r.stdout.strip()) == (2, b"dk")
    await rt.cleanup("j/d1", 1)
    assert any("out" in ln for ln in log_lines(rt, "j/d1"))  # kept after the container is gone


async def test_docker_oom_and_grace_escalation(rt) -> None:
    await rt.start(run("j/oom", {"command": [PY, "-c", "b = bytearray(300 << 20)"], "resources": {"memory_mib": 32}}))
    await rt.start(run("j/term", {"command": ["sh", "-c", "trap '' TERM; echo trapped; while true; do sleep 1; done"], "grace_s": 1}))
    oom = await wait_exit(rt, "j/oom")
    assert (oom.exit.exit_code, oom.exit.oom_killed) == (137, True)
    await wait_running(rt, "j/term")
    deadline = time.monotonic() + 60
    while not any("trapped" in ln for ln in log_lines(rt, "j/term")):  # a stop before the trap would end it at once
        assert time.monotonic() < deadline, "the task never installed its trap"
        await asyncio.sleep(0.05)
    await rt.stop("j/term", 1, 1.0)
    t0 = time.monotonic()
    o = await wait_exit(rt, "j/term")
    assert o.exit.exit_code == 137 and o.stop_requested and time.monotonic() - t0 >= 0.5


async def test_docker_reattach_missing_image_and_sweep(rt, dockerd) -> None:
    from agent.runtime.docker import DockerRuntime

    await rt.start(run("j/long", {"command": ["sh", "-c", "sleep 2; exit 3"]}))
    await wait_running(rt, "j/long")
    again = DockerRuntime(rt.data_dir, rt.node, socket_path=dockerd)  # an agent restart
    try:
        o = await wait_exit(again, "j/long")
        assert o.exit.exit_code == 3
        await again.start(run("j/img", {"image": "no/such-image:1", "command": ["true"]}))
        bad = await wait_exit(again, "j/img")
        assert bad.exit.reason == "ImageError" and "never pulls" in bad.exit.message
        await again.start(run("j/orphan", {"command": ["sleep", "300"]}))
        await wait_running(again, "j/orphan")
        shutil.rmtree(again.task_dir("j/orphan"))
        removed = await again.sweep()
        assert len(removed) == 1 and "orphan" in removed[0]
        assert [x.key for x in await again.observe()] == ["j/long", "j/img"] or \
            sorted(x.key for x in await again.observe()) == ["j/img", "j/long"]
        states = {x.key: x.state for x in await again.observe()}
        assert states["j/long"] is AttemptState.EXITED
    finally:
        await again.close()
    await asyncio.sleep(0)


async def test_a_docker_daemon_that_does_not_answer_is_runtime_unavailable(tmp_path) -> None:
    """No dockerd behind its socket (stopped under the agent): the Engine API calls raised
    aiohttp's connection errors, each reconcile pass a traceback; now RuntimeUnavailable, and
    ping (the agent's runtime status check) says so."""
    import socket as socket_mod

    from agent.runtime.base import RuntimeUnavailable
    from agent.runtime.docker import DockerRuntime

    path = Path("/tmp") / f"kvraft-dead-docker-{os.getpid()}.sock"  # short: the socket path limit
    with socket_mod.socket(socket_mod.AF_UNIX) as s:
        s.bind(str(path))  # bound, not listening: connections refused
        r = DockerRuntime(tmp_path / "agent", f"dk-dead-{os.getpid()}", socket_path=str(path))
        try:
            with pytest.raises(RuntimeUnavailable, match=f"the Docker daemon at {path}: "):
                await r.ping()
            with pytest.raises(RuntimeUnavailable):
                await r.api("GET", "/containers/json")
        finally:
            await r.close()
            path.unlink()

"""``kvraft-local``'s verbs on a directory without a running cluster: what a crash leaves
(stale records whose PIDs now belong to other processes), bad flags and unusable ``--dir``s.
Each must end in one line and a non-zero exit, and no process the launcher did not start
may be killed. No cluster is started here; the running cluster is covered by
tests/deploy/test_local_tls.py and tests/e2e/."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvraft.local.cli import main
from kvraft.local.procs import pid_alive, proc_start_time


@pytest.fixture
def bystander() -> Iterator[subprocess.Popen[bytes]]:
    """A process that is not the launcher's, in a session of its own (as a task's would be)."""
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    try:
        yield p
    finally:
        p.kill()
        p.wait()


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def _crashed_cluster(d: Path, records: dict[str, dict[str, int]]) -> None:
    """cluster.json of a cluster whose agent is gone, and the agent's task and zygote records
    (``relative path: {pid, start_time}``) left in its data directory."""
    data = d / "agents" / "node-0" / "data"
    for rel, rec in records.items():
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        (data / rel).write_text(json.dumps(rec))
    agent = {"name": "node-0", "role": "agent", "pid": _dead_pid(), "start_time": 1, "url": "http://127.0.0.10:1",
             "log": str(d / "logs" / "node-0.log"), "rack": "rack-0", "data_dir": str(data), "extra": {}}
    (d / "cluster.json").write_text(json.dumps({"dir": str(d), "endpoints": [], "processes": [agent]}))


@pytest.mark.parametrize("verb", [["kill-node", "node-0"], ["down"]])
def test_a_stale_record_whose_pid_was_reused_kills_nothing(tmp_path: Path, verb: list[str],
                                                           bystander: subprocess.Popen[bytes]) -> None:
    """After a crash (or a reboot) the PIDs in the agent's records belong to other processes:
    a record names its process by PID *and* start time, and a PID whose start time differs
    is not the launcher's to kill, nor is its session."""
    start = proc_start_time(bystander.pid)
    assert start is not None
    stale = {"pid": bystander.pid, "start_time": start + 1}
    _crashed_cluster(tmp_path, {"tasks/j/t/0/shim.json": stale, "tasks/j/t/0/started.json": stale,
                                "zygote.pid": stale})
    assert main([*verb, "--dir", str(tmp_path)]) == 0
    assert pid_alive(bystander.pid, start), f"{verb[0]} killed a process it did not start"


def test_kill_node_kills_a_task_its_record_names(tmp_path: Path, bystander: subprocess.Popen[bytes]) -> None:
    """The same record with the right start time is the node's task: killed."""
    _crashed_cluster(tmp_path, {"tasks/j/t/0/shim.json": {"pid": bystander.pid,
                                                          "start_time": proc_start_time(bystander.pid) or 0}})
    assert main(["kill-node", "node-0", "--dir", str(tmp_path)]) == 0
    assert bystander.wait(timeout=10) == -9


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kvraft.local", *argv], capture_output=True, text=True, timeout=60)


def test_a_dir_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    for where in (tmp_path / "f", tmp_path / "f" / "sub"):
        r = _cli("up", "--dir", str(where), "--members", "1", "--schedulers", "0", "--agents", "1", "--racks", "1")
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.startswith("kvraft-local: --dir ") and len(r.stderr.splitlines()) == 1, r.stderr


@pytest.mark.parametrize("text", ["{bad", "[]", '{"processes": 3}', '{"processes": [{"name": "x"}]}', "{}",
                                  '{"dir": "/x", "processes": [], "endpoints": 5}'])
def test_a_damaged_cluster_json_is_one_line(tmp_path: Path, text: str) -> None:
    (tmp_path / "cluster.json").write_text(text)
    for verb in (["status"], ["down"], ["kill-node", "node-0"], ["up", "--members", "1"]):
        r = _cli(*verb, "--dir", str(tmp_path))
        assert r.returncode == 1 and "Traceback" not in r.stderr, (verb, r.stderr)
        assert "cluster.json" in r.stderr and len(r.stderr.splitlines()) == 1, (verb, r.stderr)


@pytest.mark.parametrize("flags", [["--members", "0"], ["--members", "-1"], ["--schedulers", "-1"], ["--agents", "0"],
                                   ["--agents", "300"], ["--racks", "0"], ["--gpus-per-agent", "-3"],
                                   ["--lease-ttl-s", "2"], ["--lease-ttl-s", "-5"], ["--node-prefix", "a/b"],
                                   ["--node-prefix", ""], ["--plugin-arg", "nonsense"]])
def test_a_bad_count_or_name_is_a_usage_error_naming_its_flag(tmp_path: Path, flags: list[str]) -> None:
    """Refused before anything is made or started (exit 2, argparse's usage line and the flag);
    before, --gpus-per-agent -3 and --lease-ttl-s 2 started members and failed at the agent
    ('see its log'), --schedulers -1 said 'need at least 1 member, 1 agent and 1 rack'."""
    d = tmp_path / "d"
    try:
        r = _cli("up", "--dir", str(d), "--network", "loopback", "--runtime", "fake", *flags)
    finally:
        if (d / "cluster.json").exists():
            main(["down", "--dir", str(d)])
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"argument {flags[0]}" in r.stderr.splitlines()[-1], r.stderr
    assert not d.exists()


def test_a_member_that_cannot_start_fails_up_at_once_naming_its_log(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A member's port taken by another process between the pick and the bind: the member
    exits, and up says so (and stops what it started) instead of waiting out its timeout
    for a member that is gone."""
    import socket

    from kvraft.local import cluster

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    picks = iter([taken.getsockname()[1]])
    real = cluster.free_port
    monkeypatch.setattr(cluster, "free_port", lambda *a: next(picks, None) or real(*a))
    spec = cluster.LocalSpec(members=1, schedulers=0, agents=1, racks=1, runtime="fake", dashboard=False)
    try:
        with pytest.raises(cluster.ClusterError, match=r"member m0 exited at start; see .*m0\.log: .*(in use|bind)"):
            cluster.up(tmp_path, spec, timeout_s=60.0, say=lambda m: None)
    finally:
        taken.close()
    assert not any(p.alive() for p in cluster._procs(cluster.load_state(tmp_path)))


def test_up_after_down_starts_the_same_members_again_with_their_data(tmp_path: Path) -> None:
    """down, then up on the same --dir (`make down`, `make demo`... or a reboot): the members'
    data dirs hold their cluster (member ids, peer URLs), so up starts them again on their
    recorded URLs and the data is still there; new ports left each member waiting for peers
    that were not there, and up failed after its timeout. A different --members is refused."""
    from kvraft.client import SyncClient
    from kvraft.local import cluster

    spec = cluster.LocalSpec(members=3, schedulers=0, agents=1, racks=1, runtime="fake", dashboard=False)
    try:
        doc = cluster.up(tmp_path, spec, timeout_s=60.0, say=lambda m: None)
        with SyncClient(doc["endpoints"]) as client:
            client.put("kept", b"yes")
        cluster.down(tmp_path)
        again = cluster.up(tmp_path, spec, timeout_s=60.0, say=lambda m: None)
        assert again["endpoints"] == doc["endpoints"]
        with SyncClient(again["endpoints"]) as client:
            assert client.get("kept").kvs[0].value == b"yes"
        cluster.down(tmp_path)
        r = _cli("up", "--dir", str(tmp_path), "--members", "1", "--schedulers", "0", "--agents", "1",
                 "--network", "loopback", "--runtime", "fake")
        assert r.returncode == 1 and "3 members" in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr
    finally:
        cluster.down(tmp_path)


@pytest.mark.parametrize(("sig", "code", "word"), [(2, 130, "interrupted"), (15, 143, "terminated")],
                         ids=["SIGINT", "SIGTERM"])
def test_ctrl_c_in_the_middle_of_up_stops_what_it_started_in_one_line(tmp_path: Path, sig: int, code: int,
                                                                       word: str) -> None:
    """SIGINT (or SIGTERM: a service manager, `timeout`) while up waits for its members: every
    process it started is stopped (each was recorded in cluster.json as it started), and it
    ends with one line and exit 130 (143), not a traceback. SIGTERM killed up outright and
    left the members running."""
    import time

    p = subprocess.Popen([sys.executable, "-m", "kvraft.local", "up", "--dir", str(tmp_path), "--members", "3",
                          "--schedulers", "1", "--agents", "1", "--racks", "1", "--network", "loopback",
                          "--runtime", "fake"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while p.poll() is None and '"member"' not in ((tmp_path / "cluster.json").exists()
                                                     and (tmp_path / "cluster.json").read_text() or ""):
            time.sleep(0.02)
        p.send_signal(sig)
        _, err = p.communicate(timeout=120)
        from kvraft.local import cluster

        assert not [q.name for q in cluster._procs(cluster.load_state(tmp_path)) if q.alive()]
    finally:
        if p.poll() is None:
            p.kill()
        main(["down", "--dir", str(tmp_path)])
    assert p.returncode == code and "Traceback" not in err, err
    assert err.splitlines()[-1].startswith(f"kvraft-local: {word}"), err


@pytest.mark.parametrize("job", ["missing.yaml", "bad.yaml", "noname.yaml", "list.yaml", "."])
def test_demo_with_a_job_file_it_cannot_use_is_one_line_before_anything_starts(tmp_path: Path, job: str) -> None:
    (tmp_path / "bad.yaml").write_text("a: [\n")
    (tmp_path / "noname.yaml").write_text("kind: x\n")
    (tmp_path / "list.yaml").write_text("- name: x\n")
    d = tmp_path / "d"
    r = _cli("demo", "--dir", str(d), "--job", str(tmp_path / job))
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("kvraft-local: --job ") and len(r.stderr.splitlines()) == 1, r.stderr
    assert not d.exists()


def test_start_node_of_a_cluster_whose_members_are_all_down_says_so_and_starts_nothing(tmp_path: Path) -> None:
    """After `down` (or with every member killed) the agent would only wait for kvraft: it was
    started anyway, up's wait ran out ('agent node-0 not ready after 120 s'), and the agent
    stayed running, so the next `up` refused ('a cluster is already running')."""
    from kvraft.local import cluster

    marker = tmp_path / "started"
    _crashed_cluster(tmp_path, {})
    doc = json.loads((tmp_path / "cluster.json").read_text())
    doc["processes"][0]["extra"] = {"argv": [sys.executable, "-c", f"open({str(marker)!r}, 'w')"]}
    doc["processes"].insert(0, {"name": "m0", "role": "member", "pid": _dead_pid(), "start_time": 1,
                                "url": "http://127.0.0.1:1", "log": str(tmp_path / "m0.log")})
    (tmp_path / "cluster.json").write_text(json.dumps(doc))
    with pytest.raises(cluster.ClusterError, match="no member of the cluster is running"):
        cluster.start_node(tmp_path, "node-0", timeout_s=5.0)
    assert not marker.exists()


def test_kill_node_spares_a_shell_in_the_node_dir_but_kills_a_task_there(tmp_path: Path) -> None:
    """A process is a task's by its working directory inside the node's data directory only
    when it carries the task environment the agent gives (KVRAFT_JOB): an operator's shell
    (or `tail -f` of a task's log) started in that directory was SIGKILLed by kill-node and down."""
    import os

    _crashed_cluster(tmp_path, {})
    workdir = tmp_path / "agents" / "node-0" / "data" / "tasks" / "j"
    workdir.mkdir(parents=True)
    sleep = [sys.executable, "-c", "import time; time.sleep(120)"]
    env = {k: v for k, v in os.environ.items() if k != "KVRAFT_JOB"}
    shell = subprocess.Popen(sleep, cwd=workdir, env=env, start_new_session=True)
    task = subprocess.Popen(sleep, cwd=workdir, env={**env, "KVRAFT_JOB": "j"}, start_new_session=True)
    try:
        start = proc_start_time(shell.pid)
        assert main(["kill-node", "node-0", "--dir", str(tmp_path)]) == 0
        assert task.wait(timeout=10) == -9
        assert pid_alive(shell.pid, start), "kill-node killed a process that is not a task"
    finally:
        for p in (shell, task):
            p.kill()
            p.wait()


def test_ctrl_c_just_after_a_process_started_leaves_it_recorded_and_stopped(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The worst moment for a Ctrl-C: the member has started and is not yet in cluster.json.
    It was left running with no record of it (up stopped only what it had recorded)."""
    import signal

    from kvraft.local import cluster

    started: list[subprocess.Popen[bytes]] = []
    real = cluster.spawn

    def spawn_then_ctrl_c(*args: object, **kwargs: object) -> subprocess.Popen[bytes]:
        p = real(*args, **kwargs)  # type: ignore[arg-type]
        started.append(p)
        signal.raise_signal(signal.SIGINT)
        return p

    monkeypatch.setattr(cluster, "spawn", spawn_then_ctrl_c)
    spec = cluster.LocalSpec(members=1, schedulers=0, agents=1, racks=1, runtime="fake", dashboard=False)
    try:
        with pytest.raises(KeyboardInterrupt):
            cluster.up(tmp_path, spec, timeout_s=60.0, say=lambda m: None)
        assert started and [p.pid for p in cluster._procs(cluster.load_state(tmp_path))] == [started[0].pid]
        assert started[0].wait(timeout=30) is not None
    finally:
        for p in started:
            p.kill()
            p.wait()


def test_a_second_kvraft_local_on_the_same_dir_while_one_works_there_is_refused(tmp_path: Path) -> None:
    """Two `up`s at once on one --dir both found no cluster running and started one each; the
    cluster.json of one overwrote the other's, whose processes were left with no record. Up,
    down and start-node hold <dir>/.lock while they work; another one is refused in one line."""
    import fcntl

    _crashed_cluster(tmp_path, {})
    try:
        with open(tmp_path / ".lock", "a") as held:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
            for verb in (["up", "--members", "1", "--schedulers", "0", "--agents", "1", "--racks", "1",
                          "--network", "loopback", "--runtime", "fake"], ["down"], ["start-node", "node-0"]):
                r = _cli(*verb, "--dir", str(tmp_path))
                assert r.returncode == 1 and "another kvraft-local" in r.stderr, (verb, r.stdout, r.stderr)
                assert len(r.stderr.splitlines()) == 1, r.stderr
        assert "member" not in (tmp_path / "cluster.json").read_text()
    finally:
        main(["down", "--dir", str(tmp_path)])


def test_agents_are_spread_over_exactly_the_racks_asked_for(tmp_path: Path) -> None:
    """--agents 4 --racks 3 made two racks of two (blocks of ceil(4/3) nodes); more racks than
    agents is a usage error."""
    from kvraft.local import cluster

    spec = cluster.LocalSpec(members=1, schedulers=0, agents=4, racks=3, runtime="fake", dashboard=False)
    try:
        doc = cluster.up(tmp_path, spec, timeout_s=60.0, say=lambda m: None)
        # and the agents' disk thresholds are the local ones (cluster.LOCAL_EVICTION_HARD), not
        # kubelet's 10% of a disk shared with other work
        from kvraft.client import SyncClient

        with SyncClient(doc["endpoints"]) as client:
            got = client.get("/registry/nodes/", prefix=True)
        machines = [json.loads(kv.value)["machine"]["eviction_hard"] for kv in got.kvs]
        assert len(machines) == 4 and {m["nodefs.available"] for m in machines} == {"1.0Gi"}, machines
    finally:
        cluster.down(tmp_path)
    racks = [p["rack"] for p in doc["processes"] if p["role"] == "agent"]
    assert racks == ["rack-0", "rack-0", "rack-1", "rack-2"]
    r = _cli("up", "--dir", str(tmp_path / "d"), "--agents", "2", "--racks", "3")
    assert r.returncode == 2 and "--racks" in r.stderr.splitlines()[-1], r.stderr
    assert not (tmp_path / "d").exists()


def test_up_fails_naming_why_when_an_agent_stays_not_ready(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An agent whose node is NotReady (here DiskPressure: thresholds no disk meets) fails up
    with its Ready message, as kind's --wait; up returned and the jobs of CI stop 34 then
    waited for ever on NotReady nodes. What up started is stopped."""
    from kvraft.local import cluster

    monkeypatch.setattr(cluster, "LOCAL_EVICTION_HARD", "nodefs.available<100%")
    monkeypatch.setattr(cluster, "NOT_READY_GRACE_S", 1.0)
    spec = cluster.LocalSpec(members=1, schedulers=0, agents=1, racks=1, runtime="fake", dashboard=False,
                             node_prefix="nr")
    with pytest.raises(cluster.ClusterError) as err:
        cluster.up(tmp_path, spec, timeout_s=60.0, say=lambda m: None)
    assert "agent nr-0 is not Ready: DiskPressure: nodefs.available < 100% (thresholds: kvraft-agent " \
           "--eviction-hard)" in str(err.value), err.value
    doc = json.loads((tmp_path / "cluster.json").read_text())
    assert doc["processes"] and not any(pid_alive(p["pid"]) for p in doc["processes"])

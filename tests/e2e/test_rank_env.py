"""The rank/placement environment the agent adds to a gang's tasks (agent.rankenv, PURE),
and the mpirun command line the job wrapper builds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.collective.jobrun import mpirun_argv, resolve_program, strip_daemonize
from agent.rankenv import NodeFacts, parse_peers, rank_env

PEERS = "worker-0@n1,worker-1@n1,worker-2@n2,worker-3@n2"
BINDING = {"tasks": [{"task": f"worker-{i}", "node": "n1" if i < 2 else "n2", "rack": "r0", "gpus": [0, 1]}
                     for i in range(4)]}


def env_of(rank: int, node: str, **extra: str) -> dict[str, str]:
    spec = {"KVRAFT_JOB": "digits", "KVRAFT_TASK": f"worker-{rank}", "KVRAFT_RANK": str(rank),
            "KVRAFT_WORLD_SIZE": "4", "KVRAFT_RESTARTS": "1", "KVRAFT_PEERS": PEERS, **extra}
    return spec | rank_env(spec, NodeFacts(node, "r0", ("http://127.0.0.1:2379",), "127.0.0.3"), BINDING, 42)


def test_every_rank_gets_local_and_node_rank() -> None:
    got = [env_of(r, "n1" if r < 2 else "n2") for r in range(4)]
    assert [g["KVRAFT_LOCAL_RANK"] for g in got] == ["0", "1", "0", "1"]
    assert [g["KVRAFT_LOCAL_SIZE"] for g in got] == ["2"] * 4
    assert [g["KVRAFT_NODE_RANK"] for g in got] == ["0", "0", "1", "1"]
    assert {g["KVRAFT_NUM_NODES"] for g in got} == {"2"}
    assert {g["KVRAFT_PLACEMENT"] for g in got} == {"n1,n1,n2,n2"}
    assert {g["KVRAFT_PLACEMENT_RACKS"] for g in got} == {"r0,r0,r0,r0"}
    assert {g["KVRAFT_RUN_ID"] for g in got} == {"digits-42-1"}  # one namespace per run, same on every rank
    assert got[2]["KVRAFT_NODE"] == "n2" and got[2]["KVRAFT_COLLECTIVE_HOST"] == "127.0.0.3"
    assert got[0]["KVRAFT_ENDPOINTS"] == "http://127.0.0.1:2379"


def test_job_env_wins_and_non_gang_tasks_get_only_node_facts() -> None:
    assert env_of(0, "n1", KVRAFT_PLACEMENT="x,y,z,w")["KVRAFT_PLACEMENT"] == "x,y,z,w"
    plain = rank_env({"FOO": "1"}, NodeFacts("n1", "r0", ("e",)))
    assert plain == {"KVRAFT_NODE": "n1", "KVRAFT_RACK": "r0", "KVRAFT_ENDPOINTS": "e"}


def test_bad_peers_are_ignored_not_fatal() -> None:
    spec = {"KVRAFT_JOB": "j", "KVRAFT_RANK": "0", "KVRAFT_PEERS": "nonsense"}
    assert "KVRAFT_PLACEMENT" not in rank_env(spec, NodeFacts("n1", "r0", ("e",)))
    with pytest.raises(ValueError):
        parse_peers("a@b,c")


def test_mpirun_hosts_are_ranks_and_daemon_stays_in_the_task() -> None:
    argv = mpirun_argv(3, "/tmp/rsh", ["python", "t.py"])
    assert argv[argv.index("-H") + 1] == "r0:1,r1:1,r2:1"
    assert argv[argv.index("plm_ssh_agent") + 1] == "/tmp/rsh"
    assert "^han,sm" in argv
    assert strip_daemonize("a/prted --daemonize --x 1") == "a/prted --x 1"
    prog = resolve_program(["python3", "examples/train_digits.py"], cwd=Path("/"))
    assert prog[1].endswith("/examples/train_digits.py") and prog[1].startswith("/")


def test_ranks_get_the_agents_tls_files_and_the_rendezvous_uses_them(tmp_path: Path) -> None:
    from agent.collective.rendezvous import client_options

    facts = NodeFacts("n1", "r0", ("https://127.0.0.1:2379",), cacert="/pki/ca.pem", cert="/pki/agent.pem",
                      key="/pki/agent-key.pem")
    env = rank_env({"KVRAFT_JOB": "j"}, facts)
    assert (env["KVRAFT_CACERT"], env["KVRAFT_CERT"], env["KVRAFT_KEY"]) == ("/pki/ca.pem", "/pki/agent.pem",
                                                                          "/pki/agent-key.pem")
    assert "KVRAFT_INSECURE_SKIP_TLS_VERIFY" not in env
    assert rank_env({}, NodeFacts("n1", "r0", ("e",), insecure_skip_tls_verify=True))[
        "KVRAFT_INSECURE_SKIP_TLS_VERIFY"] == "true"
    assert "KVRAFT_CERT" not in rank_env({}, NodeFacts("n1", "r0", ("e",)))  # no TLS: nothing added
    assert rank_env({"KVRAFT_CERT": "mine.pem"}, facts).get("KVRAFT_CERT") is None  # the job's env wins
    tls = client_options(env)["tls"]
    assert (tls.ca_file, tls.cert_file, tls.key_file, tls.insecure_skip_verify) == \
        ("/pki/ca.pem", "/pki/agent.pem", "/pki/agent-key.pem", False)
    assert client_options({"KVRAFT_USER": "u", "KVRAFT_PASSWORD": "p"}) == {"user": "u", "password": "p"}
    assert client_options({}) == {}
    with pytest.raises(ValueError, match="--cert and --key"):
        client_options({"KVRAFT_CERT": "a.pem"})


def test_with_a_scoped_token_ranks_get_the_ca_and_the_token_never_the_agents_key() -> None:
    from agent.collective.rendezvous import client_options

    facts = NodeFacts("n1", "r0", ("https://127.0.0.1:2379",), cacert="/pki/ca.pem", cert="/pki/agent.pem",
                      key="/pki/agent-key.pem", token="kvraft-scoped.ab.secret")
    env = rank_env({"KVRAFT_JOB": "j"}, facts)
    assert env["KVRAFT_TOKEN"] == "kvraft-scoped.ab.secret" and env["KVRAFT_CACERT"] == "/pki/ca.pem"
    assert "KVRAFT_CERT" not in env and "KVRAFT_KEY" not in env
    options = client_options(env)
    assert options["token"] == "kvraft-scoped.ab.secret"
    assert (options["tls"].ca_file, options["tls"].cert_file, options["tls"].key_file) == ("/pki/ca.pem", None, None)
    # a job's own login wins over the token; its own token over the agent's
    assert client_options({"KVRAFT_USER": "u", "KVRAFT_PASSWORD": "p", "KVRAFT_TOKEN": "t"}) == \
        {"user": "u", "password": "p"}
    assert rank_env({"KVRAFT_TOKEN": "mine"}, facts).get("KVRAFT_TOKEN") is None


def test_jobrun_names_the_first_error_a_rank_raised() -> None:
    from agent.collective.jobrun import first_error_line

    line = "agent.collective.errors.PeerFailure: peer failure: rank 2: rank 2 is hung (no heartbeat for 3.1 s)"
    assert first_error_line(line + "\n") == line
    assert first_error_line("[1,2]<stderr>: RuntimeError: boom") == "RuntimeError: boom"
    for other in ("Traceback (most recent call last):", '  File "t.py", line 3', "epoch 1 loss 0.3", "Error", ""):
        assert first_error_line(other) is None
    # a rank blocked inside MPI leaves without a traceback; its last words must name the cause
    # (a CI run's summary named rank 2's later "rank 0 exited" instead of "rank 2 is hung")
    from agent.collective.communicator import blocked_exit_line
    from agent.collective.errors import PeerFailure

    hung = PeerFailure([2], "rank 2 is hung (no heartbeat for 3.2 s; its process is stopped)", 0)
    said = first_error_line("[1,0]<stderr>: " + blocked_exit_line(hung, 0, "mpi"))
    assert said is not None and said.startswith("agent.collective.errors.PeerFailure: peer failure: rank 2: rank 2 is hung")


class _FakeRendezvous:
    """What ``relay_exec`` needs of a ``KvraftRendezvous``: rank 1's exec server answers at once."""

    def __init__(self) -> None:
        self.written: dict[str, bytes] = {}

    def set(self, key: str, value: bytes) -> None:
        self.written[key] = value

    def get(self, key: str, timeout_s: float) -> bytes:
        assert key == "started/1"
        return b'{"pid": 4242}'


def _rsh(tmp_path: Path, port: int) -> Any:
    import subprocess
    import sys

    from agent.collective.jobrun import RSH_SCRIPT

    script = tmp_path / "rsh"
    script.write_text(RSH_SCRIPT.format(python=sys.executable, port=port))
    script.chmod(0o700)
    return subprocess.Popen([str(script), "-x", "r1", "prted", "--daemonize", "--foo"], stderr=subprocess.PIPE,
                            text=True)


def test_rank0s_relay_holds_mpiruns_requests_until_its_rendezvous_is_there(tmp_path: Path) -> None:
    """Rank 0 starts mpirun before its kvraft client (its start overlaps the client's import
    and connection): a daemon request that comes first waits for ``attach``."""
    from agent.collective.jobrun import RshRelay

    relay = RshRelay(None, wait_s=60)
    proc = _rsh(tmp_path, relay.port)
    rdzv = _FakeRendezvous()
    relay.attach(rdzv)  # type: ignore[arg-type]
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert json.loads(rdzv.written["exec/1"]) == {"cmd": "prted --daemonize --foo"}
    # rank 0 could not reach kvraft: every request is answered with the reason, none hangs
    failed = RshRelay(None, wait_s=60)
    proc = _rsh(tmp_path, failed.port)
    failed.attach(None, "rank 0 could not reach kvraft: ClientError('no member')")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "could not reach kvraft" in err


def test_jobrun_tmpdirs_of_ended_processes_are_swept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A jobrun stopped by SIGKILL never removes its TMPDIR: the next one removes it (each
    run of the suite left a dozen in /tmp before)."""
    import os
    import subprocess
    import sys
    import tempfile

    from agent.collective.jobrun import fresh_tmpdir, sweep_tmpdirs

    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    dead = tmp_path / f"kvraft-mpi-{ended.pid}-abc"
    (dead / "prted.77").mkdir(parents=True)
    alive = tmp_path / f"kvraft-mpi-{os.getpid()}-def"
    alive.mkdir()
    legacy = tmp_path / "kvraft-mpi-q_7q7sjn"  # an older release's name: no PID, left alone
    legacy.mkdir()
    a_file = tmp_path / f"kvraft-mpi-{ended.pid}-file"
    a_file.write_text("x")
    other = tmp_path / f"other-{ended.pid}-x"
    other.mkdir()
    assert sweep_tmpdirs(str(tmp_path)) == [str(dead)]
    assert not dead.exists() and alive.is_dir() and legacy.is_dir() and a_file.exists() and other.is_dir()

    dead.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with fresh_tmpdir() as env:
        mine = Path(env["TMPDIR"])
        assert mine.parent == tmp_path and mine.name.startswith(f"kvraft-mpi-{os.getpid()}-") and mine.is_dir()
        assert not dead.exists()
    assert not mine.exists() and alive.is_dir()

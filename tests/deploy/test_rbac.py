"""``deploy/rbac.sh`` on a cluster with auth on: the scheduler and an agent run with the users
it makes, a job submitted by a person holding only ``kvraft-submitter`` runs to Succeeded, and
each identity is refused outside its rights: the submitter cannot write an assignment (what an
agent runs comes only from the scheduler), a node record or a tenant; the agent cannot write a
job spec or an assignment; nobody without a user reads anything. With ``TENANTS`` a tenant's
submitter writes only the jobs (and the eviction requests: ``jobctl requeue``) named with the
tenant's prefix, and the scheduler and jobctl hold each job to its name (scheduler/admission.py);
``kvraft-operator`` may cordon, and the scheduler's own user deletes the eviction requests it
acts on. The script runs verbatim, through kvctl, as an operator would run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvraft.local.cluster import LOCAL_EVICTION_HARD as TEST_EVICTION_HARD
from kvraft.server.local import LocalCluster, free_port
from kvraft.testing.procs import stop_process
from tests.agent.conftest import remove_node_cgroups
from tests.watch.cluster_helpers import b64, call

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
FLAGS = ["--heartbeat-interval", "50", "--election-timeout", "500", "--bcrypt-cost", "4"]
PASSWORDS = {"root": "rootpw", "kvraft-scheduler": "schedpw", "kvraft-agent": "agentpw", "alice": "alicepw",
             "bob": "bobpw", "carol": "carolpw"}
ENV = dict(os.environ, PYTHONPATH=str(ROOT))


def kvctl(endpoint: str, user: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    auth = ["--user", f"{user}:{PASSWORDS[user]}"] if user else []
    return subprocess.run([PY, "-m", "kvraft.cli.main", "--endpoints", endpoint, *auth, *args],
                          capture_output=True, text=True, timeout=60, env=ENV)


def jobctl(endpoint: str, user: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "scheduler.cli.main", "--endpoints", endpoint, "--user", user,
                           "--password", PASSWORDS[user], *args], input=stdin, capture_output=True, text=True,
                          timeout=120, env=ENV)


@pytest.fixture(params=["shared", "per-node"])
def secured(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(client URL, the agent's user): one agent user for every node, or one per node
    (``AGENT_NODES``)."""
    cluster = LocalCluster(1, tmp_path / "kv", extra_args=FLAGS)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        cluster.start(timeout_s=120)
        url = cluster.url("m0")
        for args in (["user", "add", "root:rootpw"], ["user", "grant-role", "root", "root"], ["auth", "enable"]):
            done = kvctl(url, None, *args)
            assert done.returncode == 0, done.stderr
        node = f"rbac{os.getpid()}"
        agent_user = "kvraft-agent" if request.param == "shared" else f"kvraft-agent-{node}"
        PASSWORDS[agent_user] = PASSWORDS["kvraft-agent"]
        kvctl_bin = tmp_path / "kvctl"  # the script calls `kvctl`: this interpreter's
        kvctl_bin.write_text(f"#!/bin/sh\nexec {PY} -m kvraft.cli.main \"$@\"\n")
        kvctl_bin.chmod(0o755)
        done = subprocess.run(["bash", str(ROOT / "deploy" / "rbac.sh")], capture_output=True, text=True, timeout=120,
                              env=dict(ENV, KVCTL=str(kvctl_bin), ETCDCTL_ENDPOINTS=url, KVCTL_FLAGS="--user root:rootpw",
                                       SCHEDULER_PASSWORD=PASSWORDS["kvraft-scheduler"],
                                       AGENT_PASSWORD=PASSWORDS["kvraft-agent"],
                                       AGENT_NODES="" if request.param == "shared" else f"{node} other-node",
                                       TENANTS="nlp vision=cv-"))
        assert done.returncode == 0, done.stdout + done.stderr
        for args in (["user", "add", "alice:alicepw"], ["user", "grant-role", "alice", "kvraft-submitter"],
                     ["user", "add", "bob:bobpw"], ["user", "grant-role", "bob", "kvraft-submitter-nlp"],
                     ["user", "add", "carol:carolpw"], ["user", "grant-role", "carol", "kvraft-operator"]):
            done = kvctl(url, "root", *args)
            assert done.returncode == 0, done.stderr
        logs = tmp_path / "logs"
        logs.mkdir()
        inventory = tmp_path / "gpus.yaml"
        inventory.write_text(f"count: 1\nmodel: FAKE-H100\nuuid_prefix: {node}\nmemory_mib: 81559\nislands: [1]\n")
        for name, argv in (
            ("scheduler", [PY, "-m", "scheduler.service", "--endpoints", url, "--name", "rbac-sched",
                           "--listen-url", f"http://127.0.0.1:{free_port()}", "--election-ttl-s", "3",
                           "--cycle-interval-s", "0.5", "--user", "kvraft-scheduler",
                           "--password", PASSWORDS["kvraft-scheduler"]]),
            ("agent", [PY, "-m", "agent", "--endpoints", url, "--name", node, "--data-dir", str(tmp_path / "agent"),
                       "--runtime", "process", "--gpu-inventory", str(inventory),
                       "--listen-url", f"http://127.0.0.1:{free_port()}", "--lease-ttl-s", "4", "--heartbeat-s", "1",
                       "--relist-s", "0.5", "--node-status-s", "1", "--user", agent_user,
                       "--password", PASSWORDS[agent_user], "--eviction-hard", TEST_EVICTION_HARD]),
        ):
            with open(logs / f"{name}.log", "wb") as log:
                procs.append(subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                              env=ENV))
        yield url, agent_user
    finally:
        for proc in procs:
            stop_process(proc)
        cluster.stop()
        remove_node_cgroups(f"rbac{os.getpid()}")  # the agent keeps its tasks' cgroups across a stop


def refused(done: subprocess.CompletedProcess[str]) -> bool:
    return done.returncode != 0 and "permission denied" in (done.stdout + done.stderr).lower()


RANK = """\
import os, sys
sys.path.insert(0, {root!r})
from agent.collective.rendezvous import client_options
from kvraft.client import PermissionDeniedError, SyncClient
env = dict(os.environ)
if not env.get("KVRAFT_TOKEN", "").startswith("kvraft-scoped.") or "KVRAFT_KEY" in env:
    sys.exit("no scoped token, or the agent's key: " + " ".join(sorted(env)))
with SyncClient(env["KVRAFT_ENDPOINTS"].split(","), **client_options(env)) as client:
    client.put("/jobs/rbac-job/progress", env["KVRAFT_TOKEN"])
    for key in ("/jobs/other-job/progress", "/registry/tasks/rbac-job/worker", "/registry/nodes/x"):
        try:
            client.put(key, "{{}}")
        except PermissionDeniedError:
            continue
        sys.exit("the job's token wrote " + key)
"""


def test_each_identity_does_its_part_and_nothing_else(secured: tuple[str, str], tmp_path: Path) -> None:
    """... and the job's task reaches kvraft with a token scoped to its job's keys (the agent's
    permissions narrowed to /jobs/rbac-job/), never with the agent's identity; the token ends
    with the attempt."""
    url, agent = secured
    rank = tmp_path / "rank.py"
    rank.write_text(RANK.format(root=str(ROOT)))
    spec = (f"name: rbac-job\ntasks:\n  - {{name: worker, replicas: 1, command: {json.dumps([PY, str(rank)])}, "
            "resources: {gpus: 1}}\n")
    deadline = time.monotonic() + 120
    while True:  # the agent registers, the scheduler leads: then the job is accepted and placed
        done = jobctl(url, "alice", "submit", "-f", "-", stdin=spec)
        if done.returncode == 0:
            break
        assert time.monotonic() < deadline, done.stdout + done.stderr
        time.sleep(1)
    phase = ""
    while time.monotonic() < deadline:
        done = jobctl(url, "alice", "get", "job", "rbac-job", "-o", "json")
        if done.returncode == 0:
            phase = json.loads(done.stdout).get("status", {}).get("phase", "")
            if phase in ("Succeeded", "Failed"):
                break
        time.sleep(1)
    assert phase == "Succeeded", (phase, done.stdout, done.stderr)
    done = kvctl(url, "root", "get", "/jobs/rbac-job/progress", "--print-value-only")
    token = done.stdout.strip()
    assert done.returncode == 0 and token.startswith("kvraft-scoped."), (done.stdout, done.stderr)
    while True:  # the attempt is cleaned up: its token is revoked
        status, body = call(url, "/v3/kv/range", {"key": b64("/jobs/rbac-job/progress")}, token)
        if status != 200:
            break
        assert time.monotonic() < deadline, "the finished attempt's token still works"
        time.sleep(0.5)
    assert body["message"] == "etcdserver: invalid auth token", body

    assignment = "/registry/assignments/any-node/evil/worker"
    for user, key in (("alice", assignment), ("alice", "/registry/nodes/any-node"),
                      ("alice", "/registry/tenants/mine"), ("alice", "/registry/bindings/rbac-job"),
                      (agent, "/registry/jobs/evil"), (agent, assignment), (agent, "/registry/alloc/any-node")):
        done = kvctl(url, user, "put", key, "{}")
        assert refused(done), (user, key, done.returncode, done.stdout, done.stderr)
    done = kvctl(url, None, "get", "/registry/", "--prefix")
    assert done.returncode != 0, "an anonymous read must be refused"
    assert kvctl(url, "alice", "get", "/registry/jobs/rbac-job").returncode == 0
    if agent != "kvraft-agent":  # a node's own user: nothing of another node
        for args in (["put", "/registry/nodes/other-node", "{}"], ["put", "/registry/leases/other-node", "{}"],
                     ["get", "/registry/assignments/other-node/", "--prefix"],
                     ["put", f"/registry/nodes/{agent.removeprefix('kvraft-agent-')}0", "{}"]):
            done = kvctl(url, agent, *args)
            assert refused(done), (args, done.returncode, done.stdout, done.stderr)


TENANTS = """\
kind: Tenant
name: nlp
nominal_gpus: 1
job_name_prefix: nlp-
max_priority: 100
---
kind: Tenant
name: vision
nominal_gpus: 1
job_name_prefix: cv-
---
kind: PriorityClass
name: urgent
value: 1000
"""


def one_job(name: str, tenant: str, command: str = "true", gpus: int = 1, **extra: str) -> str:
    lines = [f"name: {name}", f"tenant: {tenant}", "tasks:",
             f"  - {{name: worker, command: {json.dumps(command.split())}, resources: {{gpus: {gpus}}}}}"]
    return "\n".join(lines + [f"{k}: {v}" for k, v in extra.items()]) + "\n"


def job_status(url: str, name: str) -> dict[str, object]:
    done = jobctl(url, "root", "get", "job", name, "-o", "json")
    return json.loads(done.stdout).get("status", {}) if done.returncode == 0 else {}


def wait_status(url: str, name: str, check: object, what: str, timeout_s: float = 120.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout_s
    while True:
        status = job_status(url, name)
        if check(status):  # type: ignore[operator]
            return status
        assert time.monotonic() < deadline, f"{what}: {status}"
        time.sleep(0.5)


@pytest.mark.parametrize("secured", ["shared"], indirect=True)  # the agents' users do not matter here
def test_a_tenants_people_write_only_its_jobs(secured: tuple[str, str]) -> None:
    """bob holds kvraft-submitter-nlp (rbac.sh, TENANTS="nlp vision=cv-")."""
    url, _ = secured
    done = jobctl(url, "root", "apply", "-f", "-", stdin=TENANTS)
    assert done.returncode == 0, done.stderr
    # vision's long job, submitted by root
    deadline = time.monotonic() + 120
    while (done := jobctl(url, "root", "submit", "-f", "-", stdin=one_job("cv-run", "vision", "sleep 600", 0))).returncode:
        assert time.monotonic() < deadline, done.stderr  # the scheduler is not leading yet
        time.sleep(1)
    # bob's own job runs
    done = jobctl(url, "bob", "submit", "-f", "-", stdin=one_job("nlp-ok", "nlp"))
    assert done.returncode == 0, done.stderr
    wait_status(url, "nlp-ok", lambda s: s.get("phase") == "Succeeded", "nlp-ok ran")
    # kvraft refuses what is outside his prefix: another tenant's name, another tenant's job
    assert refused(jobctl(url, "bob", "submit", "-f", "-", stdin=one_job("cv-mine", "vision")))
    assert refused(jobctl(url, "bob", "cancel", "cv-run"))
    assert refused(jobctl(url, "bob", "requeue", "cv-run"))  # an eviction request, granted as the job is
    done = jobctl(url, "bob", "requeue", "nlp-ok")
    assert (done.returncode, done.stdout) == (0, "job/nlp-ok is not running (Succeeded): nothing to requeue\n"), done
    # requests that reach the scheduler are deleted with its own user: bob's for his finished
    # job, and one by an operator (who may also cordon, and nothing of root's)
    from scheduler.evictions import request_doc

    for user, name in (("bob", "nlp-ok"), ("carol", "nobody")):
        done = kvctl(url, user, "put", f"/registry/evictions/{name}", json.dumps(request_doc(name, "requeue", None, 1,
                                                                                             user, time.time())))
        assert done.returncode == 0, (user, done.stderr)
    assert kvctl(url, "carol", "put", "/registry/cordons/some-node", "{}").returncode == 0
    assert kvctl(url, "carol", "del", "/registry/cordons/some-node").returncode == 0
    assert refused(kvctl(url, "carol", "put", "/registry/tenants/mine", "{}"))
    assert refused(kvctl(url, "alice", "put", "/registry/cordons/some-node", "{}"))
    deadline = time.monotonic() + 60
    while (done := kvctl(url, "root", "get", "/registry/evictions/", "--prefix", "--keys-only")).stdout.strip():
        assert time.monotonic() < deadline, f"the scheduler did not drop the requests: {done.stdout}"
        time.sleep(0.5)
    assert done.returncode == 0, done.stderr
    # jobctl refuses what his prefix allows but his tenant does not admit
    done = jobctl(url, "bob", "submit", "-f", "-", stdin=one_job("nlp-charged-to-vision", "vision"))
    assert done.returncode != 0 and 'tenant vision admits only jobs whose names start with "cv-"' in done.stderr, done.stderr
    done = jobctl(url, "bob", "submit", "-f", "-", stdin=one_job("nlp-charged-to-default", "default"))
    assert done.returncode != 0 and "belongs to tenant nlp" in done.stderr, done.stderr
    done = jobctl(url, "bob", "submit", "-f", "-", stdin=one_job("nlp-urgent", "nlp", priority_class="urgent"))
    assert done.returncode != 0 and "tenant nlp allows priority up to 100; this job has 1000" in done.stderr, done.stderr
    # a spec written around jobctl is held to its name by the scheduler: it never runs (the
    # tenant "default" has no record: without the rule its job would borrow others' quota)
    from scheduler.jobs import normalize_job

    forged = normalize_job({"name": "nlp-forged", "tenant": "default",
                            "tasks": [{"name": "worker", "command": ["true"], "resources": {"gpus": 1}}]},
                           priority=None, submitted_at=time.time())
    done = kvctl(url, "bob", "put", "/registry/jobs/nlp-forged", json.dumps(forged))
    assert done.returncode == 0, done.stderr
    status = wait_status(url, "nlp-forged", lambda s: "belongs to tenant nlp" in str(s.get("message", "")),
                         "the forged job's pending reason")
    assert status["phase"] == "Pending", status
    assert job_status(url, "cv-run")["phase"] in ("Pending", "Running")  # bob's cancel did nothing
    # root's cancel works; the task stops (tasks outlive their agent, so it would outlive the test)
    done = jobctl(url, "root", "cancel", "cv-run")
    assert done.returncode == 0, done.stderr
    wait_status(url, "cv-run", lambda s: s.get("phase") == "Cancelled", "cv-run cancelled")


def _rbac_with_a_recording_kvctl(tmp_path: Path, cwd: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], str]:
    """rbac.sh with KVCTL a script that records its arguments (no cluster): what it would run."""
    fake = tmp_path / "kvctl"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/calls\n')
    fake.chmod(0o755)
    done = subprocess.run(["bash", str(ROOT / "deploy" / "rbac.sh")], capture_output=True, text=True, timeout=60, cwd=cwd,
                          env={**os.environ, "KVCTL": str(fake), "SCHEDULER_PASSWORD": "s", "AGENT_PASSWORD": "a",
                               **env})
    calls = tmp_path / "calls"
    return done, calls.read_text() if calls.exists() else ""


def test_agent_nodes_are_names_not_file_patterns(tmp_path: Path) -> None:
    """AGENT_NODES="gpu-*" was expanded against the files of the working directory: roles and
    users for whatever files were there (gpu-1.log), not for the nodes."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "gpu-1.log").write_text("")
    done, calls = _rbac_with_a_recording_kvctl(tmp_path, cwd, AGENT_NODES="gpu-* gpu-2")
    assert "gpu-1.log" not in calls
    assert done.returncode == 0 and "role add kvraft-agent-gpu-*" in calls and "role add kvraft-agent-gpu-2" in calls


@pytest.mark.parametrize("password", ["", "mpw"])
def test_the_monitoring_role_and_its_user(tmp_path: Path, password: str) -> None:
    """kvraft-monitoring, the role members with --metrics-auth ask of a /metrics scrape; its
    user only with MONITORING_PASSWORD."""
    from kvraft.server.api.metrics_auth import MONITORING_ROLE

    done, calls = _rbac_with_a_recording_kvctl(tmp_path, tmp_path, MONITORING_PASSWORD=password)
    assert done.returncode == 0 and f"role add {MONITORING_ROLE}" in calls, done
    assert f"grant-permission --prefix {MONITORING_ROLE}" not in calls  # holding it is the grant
    assert (f"user add {MONITORING_ROLE}:mpw" in calls) is bool(password)
    assert (f"user grant-role {MONITORING_ROLE} {MONITORING_ROLE}" in calls) is bool(password)


@pytest.mark.parametrize("env", [{"TENANTS": "=cv-"}, {"TENANTS": "nlp="}, {"AGENT_NODES": ".."},
                                 {"AGENT_NODES": "gpu-1 ."}])
def test_an_empty_tenant_or_a_dot_node_is_refused_before_anything_is_granted(tmp_path: Path,
                                                                            env: dict[str, str]) -> None:
    """TENANTS="=cv-" made a role named 'kvraft-submitter-' (no tenant); a node '..' made
    /registry/nodes/.. a key of its role."""
    done, calls = _rbac_with_a_recording_kvctl(tmp_path, tmp_path, **env)
    assert done.returncode == 2 and done.stderr.startswith("rbac.sh: ") and len(done.stderr.splitlines()) == 1, done
    assert calls == ""


@pytest.mark.parametrize("secured", ["shared"], indirect=True)
def test_the_agents_endpoint_asks_kvraft_who_may_read_and_exec(secured: tuple[str, str]) -> None:
    """With auth on, the agent's /logs, /stats, /exec and /tasks need a kvraft token that may
    read the job (write it, for exec): before, anyone who reached the agent read every job's
    output and ran commands in its tasks. jobctl logs sends a token scoped to the job."""
    import urllib.error
    import urllib.request

    from agent.endpoint_auth import caller_token
    from kvraft.client import PermissionDeniedError, SyncClient, prefix_range_end

    url, _ = secured
    spec = ("name: ep-job\ntasks:\n  - {name: worker, command: [sh, -c, 'echo hello-from-task; sleep 600'], "
            "resources: {gpus: 1}}\n")
    deadline = time.monotonic() + 120
    while jobctl(url, "alice", "submit", "-f", "-", stdin=spec).returncode != 0:
        assert time.monotonic() < deadline, "submit"
        time.sleep(1)
    running = wait_status(url, "ep-job", lambda s: s.get("phase") in ("Running", "Failed"), "ep-job running")
    assert running["phase"] == "Running", running
    task = running["placement"][0]["task"]  # type: ignore[index]
    node = f"rbac{os.getpid()}"
    record = json.loads(kvctl(url, "root", "get", f"/registry/nodes/{node}", "--print-value-only").stdout)
    agent_url = record["agent"]["url"].rstrip("/")

    def ask(path: str, token: str | None = None, body: dict[str, object] | None = None) -> tuple[int, str]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(agent_url + path, data=data, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def token_of(user: str, write: bool) -> str:
        with SyncClient([url], user=user, password=PASSWORDS[user]) as c:
            return c.call(lambda client: caller_token(client, "ep-job", write=write, name=f"t-{user}-{write}"))

    exec_body = {"argv": ["echo", "ran-inside"]}
    for path, body in ((f"/logs/ep-job/{task}", None), (f"/stats/ep-job/{task}", None), ("/tasks", None),
                       (f"/exec/ep-job/{task}", exec_body)):
        status, text = ask(path, body=body)
        assert status == 401 and "a kvraft token is required" in text, (path, status, text)
        assert ask(path, "not-a-token", body)[0] == 401, path
    assert ask("/health")[0] == 200
    reader = token_of("alice", write=False)
    status, text = ask(f"/logs/ep-job/{task}", reader)
    assert status == 200 and "hello-from-task" in text, (status, text)
    status, text = ask(f"/exec/ep-job/{task}", reader, exec_body)  # reading is not running
    assert status == 403 and "may not write job ep-job" in text, (status, text)
    status, text = ask(f"/exec/ep-job/{task}", token_of("alice", write=True), exec_body)
    assert status == 200 and json.loads(text)["stdout"] == "ran-inside\n", (status, text)
    for args in (["user", "add", "dave:davepw"], ["role", "add", "jobs-data"],
                 ["role", "grant-permission", "jobs-data", "readwrite", "/jobs/", "--prefix"],
                 ["user", "grant-role", "dave", "jobs-data"]):
        done = kvctl(url, "root", *args)
        assert done.returncode == 0, (args, done.stderr)
    PASSWORDS["dave"] = "davepw"
    with SyncClient([url], user="dave", password="davepw") as c:  # a valid token, of another range
        with pytest.raises(PermissionDeniedError):  # (nobody gets a token beyond their rights)
            c.call(lambda client: caller_token(client, "ep-job", write=False, name="t-dave"))
        lease = c.lease_grant(60)
        elsewhere = c.scoped_token_grant("t-dave-jobs", b"/jobs/", prefix_range_end(b"/jobs/"), lease=lease.id)
    status, text = ask(f"/logs/ep-job/{task}", elsewhere)
    assert status == 403 and "may not read job ep-job" in text, (status, text)
    done = jobctl(url, "alice", "logs", "ep-job")
    assert done.returncode == 0 and "hello-from-task" in done.stdout, (done.stdout, done.stderr)
    # jobctl exec: the command's output on stdout and stderr, and its exit code
    done = jobctl(url, "alice", "exec", "ep-job", "--", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (done.returncode, done.stdout, done.stderr) == (3, "out\n", "err\n"), done
    done = jobctl(url, "dave", "exec", "ep-job", "--", "true")  # dave may not even read the job
    assert done.returncode == 1 and "permission denied" in done.stderr.lower(), done
    assert jobctl(url, "alice", "cancel", "ep-job").returncode == 0

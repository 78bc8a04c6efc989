"""TLS with etcd's flags: a 3-member kvraft cluster with client and peer TLS (certificates
from deploy/make-certs.sh, client-certificate auth on both), reached by the client, kvctl,
jobctl and the scheduler daemon with --cacert/--cert/--key; a client without a certificate
is refused. Config rules and --auto-tls are checked too."""

from __future__ import annotations

import base64
import json
import os
import shutil
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvraft.client import (
    EndpointError,
    PermissionDeniedError,
    SyncClient,
    TLSConfig,
    UnauthenticatedError,
    UnavailableError,
)
from kvraft.local.cluster import LOCAL_EVICTION_HARD as TEST_EVICTION_HARD
from kvraft.server.config import ConfigError, parse_config
from kvraft.server.local import LocalCluster, free_port

ROOT = Path(__file__).resolve().parents[2]
MAKE_CERTS = ROOT / "deploy" / "make-certs.sh"
FAST_FLAGS = ["--heartbeat-interval", "50", "--election-timeout", "500"]
SNAPSHOT_FLAGS = ["--snapshot-count", "50", "--snapshot-catchup-entries", "5"]
"""(The shared cluster takes a snapshot every 50 entries: a member that joins needs one.)"""

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def make_certs(pki: Path, *members: str, clients: tuple[str, ...] = ("client",)) -> None:
    flags = [arg for c in clients for arg in ("-c", c)]
    subprocess.run(["bash", str(MAKE_CERTS), "-o", str(pki), "-d", "2", *flags, *members],
                   check=True, capture_output=True)


def wait_for(predicate, timeout_s: float = 90.0, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except (EndpointError, OSError) as exc:
            last = exc
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what} (last error: {last})")


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalCluster, Path]]:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    base = tmp_path_factory.mktemp("tls-cluster")
    pki = base / "pki"
    make_certs(pki, "m0=127.0.0.1", "m1=127.0.0.1", "m2=127.0.0.1", clients=("admin", "scheduler"))
    cluster = LocalCluster(3, base / "members", extra_args=FAST_FLAGS + SNAPSHOT_FLAGS)
    for name, member in cluster.members.items():
        member.client_url = member.client_url.replace("http://", "https://")
        member.peer_url = member.peer_url.replace("http://", "https://")
        member.extra = [
            "--cert-file", str(pki / f"{name}.crt"), "--key-file", str(pki / f"{name}.key"),
            "--trusted-ca-file", str(pki / "ca.crt"), "--client-cert-auth",
            "--peer-cert-file", str(pki / f"{name}-peer.crt"), "--peer-key-file", str(pki / f"{name}-peer.key"),
            "--peer-trusted-ca-file", str(pki / "ca.crt"), "--peer-client-cert-auth",
        ]  # fmt: skip
    try:
        initial = cluster.initial_cluster()
        for name in cluster.members:
            cluster.start_member(name, initial, "new")
        tls = TLSConfig(str(pki / "ca.crt"), str(pki / "admin.crt"), str(pki / "admin.key"))
        urls = [m.client_url for m in cluster.members.values()]
        for url in urls:  # every member answers a linearizable read: a leader was elected over peer TLS
            wait_for(lambda url=url: _read_ok(url, tls), what=f"{url} serving over TLS")
        yield cluster, pki
    finally:
        cluster.stop()


def _read_ok(url: str, tls: TLSConfig) -> bool:
    with SyncClient([url], tls=tls, request_timeout_s=5.0) as client:
        client.get("ready")
    return True


def _admin(pki: Path) -> TLSConfig:
    return TLSConfig(str(pki / "ca.crt"), str(pki / "admin.crt"), str(pki / "admin.key"))


def test_client_with_ca_and_certificate_writes_through_one_member_reads_through_another(tls_cluster) -> None:
    cluster, pki = tls_cluster
    urls = [m.client_url for m in cluster.members.values()]
    with SyncClient([urls[0]], tls=_admin(pki)) as client:
        client.put("tls/k", b"v1")
        members = client.member_list().members
    assert sorted(u for m in members for u in m.client_urls) == sorted(urls)
    assert all(u.startswith("https://") for m in members for u in m.peer_urls)
    # endpoints without a scheme mean https when TLS options are given
    with SyncClient([urls[2].removeprefix("https://")], tls=_admin(pki)) as client:
        assert client.get("tls/k").kvs[0].value == b"v1"


def test_a_member_joins_over_peer_tls(tls_cluster) -> None:
    """A joining member asks its peers for the cluster over the peer TLS (and the cluster
    key), then is removed again (the module's cluster is shared). The leader's log was
    compacted before it joined (a snapshot every 50 entries): it gets the store as a
    snapshot, on a TLS connection of the snapshot's own."""
    cluster, pki = tls_cluster
    with SyncClient([cluster.members["m0"].client_url], tls=_admin(pki)) as client:
        for i in range(120):
            client.put(f"join/{i:03d}", "x" * 100)
    make_certs(pki, "m3=127.0.0.1")
    member = cluster.add_process("m3")
    member.client_url = member.client_url.replace("http://", "https://")
    member.peer_url = member.peer_url.replace("http://", "https://")
    member.extra = [arg.replace(str(pki / "m0"), str(pki / "m3")) for arg in cluster.members["m0"].extra]

    def unless_unhealthy(call):  # type: ignore[no-untyped-def]  # (--strict-reconfig-check: peers just up)
        try:
            return call()
        except UnavailableError:
            return None

    with SyncClient([cluster.members["m0"].client_url], tls=_admin(pki)) as client:
        added = wait_for(lambda: unless_unhealthy(lambda: client.member_add([member.peer_url])), what="member add")
        try:
            cluster.start_member("m3", cluster.initial_cluster(), "existing")
            wait_for(lambda: _read_ok(member.client_url, _admin(pki)), what="m3 serving after joining over TLS")
            with SyncClient([member.client_url], tls=_admin(pki)) as joined:
                wait_for(lambda: joined.get("join/", prefix=True, serializable=True).count == 120,
                         what="m3 holding what was written before it joined")
            assert "received a snapshot at" in member.log_path.read_text()
        finally:
            wait_for(lambda: unless_unhealthy(lambda: client.member_remove(added.member.id)), what="member remove")
            cluster.stop_member("m3")
            del cluster.members["m3"]


def test_a_client_without_a_certificate_is_refused(tls_cluster) -> None:
    cluster, pki = tls_cluster
    url = cluster.members["m1"].client_url
    # the handshake lets it through (CERT_OPTIONAL), every request is refused: only a scoped
    # token gets a request without a certificate answered (test_a_rank_without_a_certificate...)
    with pytest.raises(UnauthenticatedError, match="a client certificate is required"), \
            SyncClient([url], tls=TLSConfig(str(pki / "ca.crt")), dial_timeout_s=2.0, request_timeout_s=3.0) as client:
        client.get("tls/k")
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    put = json.dumps({"key": "dGxzL2s=", "value": "c3RyYW5nZXI="}).encode()
    for path, body in (("/version", None), ("/health", None), ("/metrics", None), ("/v3/kv/put", put),
                       ("/v3/kv/range", b'{"key": "dGxzL2s="}')):
        # (the KV routes start on the fast path, which answered them unchecked: handed to
        # aiohttp's middleware now)
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(urllib.request.Request(url + path, data=body), timeout=5, context=context).read()
        assert info.value.code == 401 and json.loads(info.value.read())["code"] == 16, path
    stranger = pki.parent / "stranger"  # a certificate from another CA
    make_certs(stranger, "x=127.0.0.1")
    bad = TLSConfig(str(pki / "ca.crt"), str(stranger / "client.crt"), str(stranger / "client.key"))
    with pytest.raises(EndpointError), SyncClient([url], tls=bad, request_timeout_s=3.0) as client:
        client.get("tls/k")
    with pytest.raises(OSError):  # plain http on an https port: no answer
        urllib.request.urlopen(url.replace("https://", "http://") + "/version", timeout=5).read()


def _cli(module: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, PYTHONPATH=str(ROOT)))


def test_kvctl_and_jobctl_connect_with_certificates(tls_cluster) -> None:
    cluster, pki = tls_cluster
    endpoints = ",".join(m.client_url.removeprefix("https://") for m in cluster.members.values())
    tls = [f"--cacert={pki / 'ca.crt'}", f"--cert={pki / 'admin.crt'}", f"--key={pki / 'admin.key'}"]
    put = _cli("kvraft.cli.main", f"--endpoints={endpoints}", *tls, "put", "tls/kvctl", "hello")
    assert (put.returncode, put.stdout) == (0, "OK\n"), put.stderr
    got = _cli("kvraft.cli.main", f"--endpoints={endpoints}", *tls, "get", "tls/kvctl", "--print-value-only")
    assert (got.returncode, got.stdout) == (0, "hello\n"), got.stderr
    refused = _cli("kvraft.cli.main", f"--endpoints={endpoints}", f"--cacert={pki / 'ca.crt'}", "--dial-timeout=1s",
                   "--command-timeout=3s", "get", "tls/kvctl")
    assert refused.returncode == 1 and refused.stdout == ""

    jobs = _cli("scheduler.cli.main", "--endpoints", endpoints, *tls, "get", "jobs", "-o", "json")
    assert jobs.returncode == 0, jobs.stderr
    json.loads(jobs.stdout)
    no_cert = _cli("scheduler.cli.main", "--endpoints", endpoints, f"--cacert={pki / 'ca.crt'}",
                   "--request-timeout-s", "3", "get", "jobs")
    assert no_cert.returncode == 1 and "error: kvraft at" in no_cert.stderr


def test_scheduler_daemon_connects_with_certificates(tls_cluster, tmp_path) -> None:
    cluster, pki = tls_cluster
    endpoints = ",".join(m.client_url for m in cluster.members.values())
    port = free_port()
    log = open(tmp_path / "scheduler.log", "wb")  # noqa: SIM115 - handed to the child
    process = subprocess.Popen(
        [sys.executable, "-m", "scheduler.service", "--endpoints", endpoints, "--name", "sched-tls",
         "--listen-url", f"http://127.0.0.1:{port}", "--election-ttl-s", "3", "--cacert", str(pki / "ca.crt"),
         "--cert", str(pki / "scheduler.crt"), "--key", str(pki / "scheduler.key")],
        cwd=ROOT, stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    log.close()
    try:
        def leading() -> bool:
            assert process.poll() is None, (tmp_path / "scheduler.log").read_text()[-2000:]
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
                return bool(json.loads(response.read())["leader"])

        wait_for(leading, what="the scheduler to lead over TLS")
        with SyncClient([cluster.members["m0"].client_url], tls=_admin(pki)) as client:
            assert client.get("/registry/scheduler/leader/", prefix=True).kvs  # its election key, written over TLS
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(30)


def test_agent_registers_its_node_over_tls(tls_cluster, tmp_path) -> None:
    cluster, pki = tls_cluster
    endpoints = ",".join(m.client_url.removeprefix("https://") for m in cluster.members.values())
    log = open(tmp_path / "agent.log", "wb")  # noqa: SIM115 - handed to the child
    listen = f"https://127.0.0.1:{free_port()}"  # its own endpoint over TLS too (kubelet's --tls-cert-file)
    process = subprocess.Popen(
        [sys.executable, "-m", "agent", "--endpoints", endpoints, "--name", "tls-node", "--runtime", "fake",
         "--data-dir", str(tmp_path / "agent"), "--listen-url", listen,
         "--tls-cert-file", str(pki / "m0.crt"), "--tls-private-key-file", str(pki / "m0.key"),
         "--lease-ttl-s", "10", "--heartbeat-s", "2", "--cacert", str(pki / "ca.crt"),
         "--cert", str(pki / "admin.crt"), "--key", str(pki / "admin.key"), "--eviction-hard", TEST_EVICTION_HARD],
        cwd=ROOT, stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    log.close()
    try:
        def registered() -> bool:
            assert process.poll() is None, (tmp_path / "agent.log").read_text()[-2000:]
            with SyncClient([cluster.members["m2"].client_url], tls=_admin(pki)) as client:
                return bool(client.get("/registry/nodes/tls-node").kvs)

        wait_for(registered, what="the agent's node record written over TLS")
        with SyncClient([cluster.members["m2"].client_url], tls=_admin(pki)) as client:
            record = json.loads(client.get("/registry/nodes/tls-node").kvs[0].value)
        assert record["agent"]["url"] == listen
        from argparse import Namespace

        from scheduler.cli.agentcall import agent_tls  # what jobctl logs and exec dial it with

        context = agent_tls(Namespace(cacert=str(pki / "ca.crt"), cert=None, key=None, insecure_skip_tls_verify=False))
        with urllib.request.urlopen(listen + "/health", timeout=30, context=context) as r:
            assert json.loads(r.read())["node"] == "tls-node"
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):  # the system's CAs
            urllib.request.urlopen(listen + "/health", timeout=30, context=ssl.create_default_context())
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(30)


RANK_AS_NOBODY = r"""
id -u
if cat "$AGENT_KEY" >/dev/null 2>&1; then echo "read the agent's key"; exit 3; fi
if [ -n "$KVRAFT_KEY$KVRAFT_CERT" ]; then echo "was given the agent's key"; exit 4; fi
ep=${KVRAFT_ENDPOINTS%%,*}; ep=${ep#https://}
put() {  # put KEY_B64: the HTTP status of a put made with the token and the CA alone
  body="{\"key\":\"$1\",\"value\":\"b2s=\"}"
  printf 'POST /v3/kv/put HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nAuthorization: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s' \
    "$ep" "$KVRAFT_TOKEN" "${#body}" "$body" \
    | timeout 30 openssl s_client -quiet -verify_return_error -CAfile "$KVRAFT_CACERT" -connect "$ep" 2>/dev/null \
    | head -1 | cut -d' ' -f2
}
mine=$(put "$OWN_KEY"); other=$(put "$OTHER_KEY")
echo "own=$mine other=$other"
[ "$mine" = 200 ] && [ "$other" = 403 ]
"""


def test_a_rank_without_a_certificate_reaches_kvraft_with_a_scoped_token(tls_cluster) -> None:
    """The job's ranks run as a user who cannot read the agent's key: with auth on, the agent
    (certificate and password) grants them a token scoped to the job's keys; with it, and
    the CA alone, they are answered. First through the client; then for real: an agent with
    that user starts a task as uid 65534 (nobody), which cannot read the agent's key, is not
    given it, and writes its job's key over https with the token and the CA (openssl, as
    nobody cannot run this interpreter), and is refused elsewhere. Last in the module: it
    turns auth on, then off again."""
    cluster, pki = tls_cluster
    urls = [m.client_url for m in cluster.members.values()]
    with SyncClient(urls[:1], tls=_admin(pki)) as admin:
        admin.user_add("root", "rootpw")
        admin.user_grant_role("root", "root")
        admin.role_add("agent")
        for perm, prefix in (("READWRITE", "/jobs/"), ("READWRITE", "/registry/nodes/"),
                             ("READWRITE", "/registry/leases/"), ("READWRITE", "/registry/tasks/"),
                             ("READ", "/registry/assignments/"), ("READ", "/registry/bindings/"),
                             ("READ", "/registry/jobs/")):
            admin.role_grant_permission("agent", perm, prefix, prefix[:-1] + "0")
        admin.user_add("agent", "agentpw")
        admin.user_grant_role("agent", "agent")
        admin.auth_enable()
    try:
        if os.geteuid() == 0:
            _an_agents_task_as_nobody_uses_its_token(cluster, pki)
        with SyncClient(urls[:1], tls=_admin(pki), user="agent", password="agentpw") as agent:
            lease = agent.lease_grant(60).id
            token = agent.scoped_token_grant("n1/j/0", "/jobs/j/", "/jobs/j0", lease=lease)
            ca_only = TLSConfig(str(pki / "ca.crt"))
            with SyncClient(urls[1:2], tls=ca_only, token=token) as rank:
                rank.put("/jobs/j/progress", "1")
                assert rank.get("/jobs/j/progress").kvs[0].value == b"1"
                with pytest.raises(PermissionDeniedError):
                    rank.put("/jobs/other/progress", "1")
            agent.scoped_token_revoke("n1/j/0")
            with pytest.raises(UnauthenticatedError), SyncClient(urls[1:2], tls=ca_only, token=token,
                                                                 request_timeout_s=3.0) as rank:
                rank.get("/jobs/j/progress")
    finally:
        with SyncClient(urls[:1], tls=_admin(pki), user="root", password="rootpw") as root:
            root.auth_disable()


def _an_agents_task_as_nobody_uses_its_token(cluster: LocalCluster, pki: Path) -> None:
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="kvraft-rank-"))  # pytest's tmp dirs are 0700: nobody gets in
    root.chmod(0o755)
    shutil.copy(pki / "ca.crt", root / "ca.crt")  # the CA is public; the agent's key stays in pki/ (0600)
    (root / "ca.crt").chmod(0o644)
    endpoints = ",".join(m.client_url.removeprefix("https://") for m in cluster.members.values())
    log = open(root / "agent.log", "wb")  # noqa: SIM115 - handed to the child
    process = subprocess.Popen(
        [sys.executable, "-m", "agent", "--endpoints", endpoints, "--name", "rank-node", "--runtime", "process",
         "--data-dir", str(root / "agent"), "--listen-url", f"http://127.0.0.1:{free_port()}",
         "--lease-ttl-s", "10", "--heartbeat-s", "2", "--relist-s", "0.5", "--cacert", str(root / "ca.crt"),
         "--cert", str(pki / "admin.crt"), "--key", str(pki / "admin.key"), "--user", "agent", "--password", "agentpw",
         "--eviction-hard", TEST_EVICTION_HARD],
        cwd=ROOT, stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    log.close()
    b64 = lambda s: base64.b64encode(s.encode()).decode()  # noqa: E731
    spec = {"command": ["sh", "-c", RANK_AS_NOBODY], "user": [65534, 65534],
            "env": {"KVRAFT_JOB": "tls-job", "AGENT_KEY": str(pki / "admin.key"),
                    "OWN_KEY": b64("/jobs/tls-job/progress"), "OTHER_KEY": b64("/jobs/other-job/progress")}}
    try:
        with SyncClient([cluster.members["m0"].client_url], tls=_admin(pki), user="root", password="rootpw") as c:
            wait_for(lambda: c.get("/registry/nodes/rank-node").kvs, what="the agent registered with its user")
            c.put("/registry/assignments/rank-node/tls-job/worker", json.dumps({"spec": spec}))

            def finished() -> dict | None:
                got = c.get("/registry/tasks/tls-job/worker/status").kvs
                doc = json.loads(got[0].value) if got else {}
                return doc if doc.get("phase") in ("Succeeded", "Failed") else None

            try:
                status = wait_for(finished, what="the task to finish")
            except AssertionError as exc:
                logs = [f"{p}: {p.read_text(errors='replace')[-1500:]}" for p in (root / "agent").rglob("*")
                        if p.is_file() and "log" in p.name]
                raise AssertionError("\n".join([(root / "agent.log").read_text()[-2000:], *logs])) from exc
            assert status["phase"] == "Succeeded", (status, (root / "agent.log").read_text()[-3000:])
            assert "no scoped token" not in (root / "agent.log").read_text()  # the grant was not refused
            assert c.get("/jobs/tls-job/progress").kvs[0].value == b"ok"
            assert not c.get("/jobs/other-job/progress").kvs
            assert status["log_tail"].split("\n")[:2] == ["65534", "own=200 other=403"], status
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(30)
        shutil.rmtree(root, ignore_errors=True)


def test_auto_tls_serves_https_with_a_self_signed_certificate(tmp_path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    client_port, peer_port = free_port(), free_port()
    url, peer = f"https://127.0.0.1:{client_port}", f"https://127.0.0.1:{peer_port}"
    log = open(tmp_path / "member.log", "wb")  # noqa: SIM115 - handed to the child
    process = subprocess.Popen(
        [sys.executable, "-m", "kvraft.server.main", "--name", "auto", "--data-dir", str(tmp_path / "data"),
         "--listen-client-urls", url, "--advertise-client-urls", url, "--listen-peer-urls", peer,
         "--initial-advertise-peer-urls", peer, "--initial-cluster", f"auto={peer}", "--auto-tls", "--peer-auto-tls"],
        cwd=ROOT, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    log.close()
    try:
        cert = tmp_path / "data" / "fixtures" / "client" / "cert.pem"
        skip = TLSConfig(insecure_skip_verify=True)
        wait_for(lambda: process.poll() is None and _read_ok(url, skip), what="the auto-TLS member")
        assert (tmp_path / "data" / "fixtures" / "peer" / "cert.pem").is_file()
        with SyncClient([url], tls=TLSConfig(str(cert))) as client:  # the self-signed certificate as the CA
            client.put("auto", b"1")
            assert client.get("auto").kvs[0].value == b"1"
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(30)
        assert process.returncode == 0, (tmp_path / "member.log").read_text()[-2000:]


@needs_openssl
def test_three_members_form_a_cluster_over_peer_auto_tls(tmp_path) -> None:
    """--peer-auto-tls: each member makes its own self-signed peer certificate; the peers
    talk TLS without verifying each other (as etcd), authenticated by the cluster secret."""
    cluster = LocalCluster(3, tmp_path / "members", extra_args=[*FAST_FLAGS, "--peer-auto-tls"])
    for member in cluster.members.values():
        member.peer_url = member.peer_url.replace("http://", "https://")
    try:
        cluster.start(timeout_s=120)  # a leader and every member serving linearizable reads
        urls = [m.client_url for m in cluster.members.values()]
        with SyncClient([urls[0]]) as client:
            client.put("peer-auto", b"1")
        with SyncClient([urls[2]]) as client:
            assert client.get("peer-auto").kvs[0].value == b"1"
        for member in cluster.members.values():
            assert (member.data_dir / "fixtures" / "peer" / "cert.pem").is_file()
    finally:
        cluster.stop()


@needs_openssl
def test_metrics_urls_serve_health_and_metrics_without_a_client_certificate(tmp_path) -> None:
    """--listen-metrics-urls (etcd's flag): a plain listener with only /metrics and /health, so
    monitoring needs no certificate while the client URL requires one."""
    make_certs(tmp_path, "m0=127.0.0.1")
    client, peer, metrics, secure_metrics = (f"127.0.0.1:{free_port()}" for _ in range(4))
    log = open(tmp_path / "member.log", "wb")  # noqa: SIM115 - handed to the child
    process = subprocess.Popen(
        [sys.executable, "-m", "kvraft.server.main", "--name", "m0", "--data-dir", str(tmp_path / "data"),
         "--listen-client-urls", f"https://{client}", "--advertise-client-urls", f"https://{client}",
         "--listen-peer-urls", f"http://{peer}", "--initial-advertise-peer-urls", f"http://{peer}",
         "--initial-cluster", f"m0=http://{peer}", "--listen-metrics-urls", f"http://{metrics},https://{secure_metrics}",
         "--cert-file", str(tmp_path / "m0.crt"), "--key-file", str(tmp_path / "m0.key"),
         "--trusted-ca-file", str(tmp_path / "ca.crt"), "--client-cert-auth"],
        cwd=ROOT, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    log.close()
    try:
        def healthy() -> bool:
            assert process.poll() is None, (tmp_path / "member.log").read_text()[-2000:]
            with urllib.request.urlopen(f"http://{metrics}/health", timeout=5) as response:
                return json.loads(response.read())["health"] == "true"

        wait_for(healthy, what="/health on the metrics URL")
        with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=5) as response:
            assert b"process_resident_memory_bytes" in response.read()
        with pytest.raises(urllib.error.HTTPError) as missing:  # nothing else on the metrics URL
            urllib.request.urlopen(urllib.request.Request(f"http://{metrics}/v3/kv/range", data=b"{}"), timeout=5)
        assert missing.value.code in (404, 405)
        with pytest.raises(UnauthenticatedError, match="a client certificate is required"), \
                SyncClient([f"https://{client}"], tls=TLSConfig(str(tmp_path / "ca.crt")), request_timeout_s=3.0) as c:
            c.get("k")
        # an https metrics URL has the client URLs' TLS settings: no certificate, no metrics
        # (the handshake lets it through since the ranks' tokens; it was answered then)
        ca_only = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"https://{secure_metrics}/metrics", timeout=5, context=ca_only).read()
        assert refused.value.code == 401
        with_cert = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
        with_cert.load_cert_chain(str(tmp_path / "client.crt"), str(tmp_path / "client.key"))
        with urllib.request.urlopen(f"https://{secure_metrics}/metrics", timeout=5, context=with_cert) as response:
            assert b"process_resident_memory_bytes" in response.read()
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(30)


@needs_openssl
def test_tls_flags_are_checked(tmp_path) -> None:
    make_certs(tmp_path, "m0=127.0.0.1")
    cert, key, ca = str(tmp_path / "m0.crt"), str(tmp_path / "m0.key"), str(tmp_path / "ca.crt")
    https = ["--listen-client-urls", "https://127.0.0.1:2379", "--advertise-client-urls", "https://127.0.0.1:2379"]
    peer_https = ["--listen-peer-urls", "https://127.0.0.1:2380", "--initial-advertise-peer-urls",
                  "https://127.0.0.1:2380"]
    ok = parse_config([*https, "--cert-file", cert, "--key-file", key, "--trusted-ca-file", ca, "--client-cert-auth"])
    assert ok.client_cert_auth and ok.cert_file == cert
    assert parse_config([*peer_https, "--peer-auto-tls"]).peer_auto_tls
    bad = [
        [*https],  # https without a certificate
        [*https, "--cert-file", cert],  # a certificate without its key
        [*https, "--cert-file", cert, "--key-file", key, "--client-cert-auth"],  # no CA for client certificates
        ["--cert-file", cert, "--key-file", key],  # a certificate but only http URLs
        [*https, "--cert-file", cert, "--key-file", str(tmp_path / "missing.key")],
        [*peer_https],  # https peers without a peer certificate
        ["--listen-peer-urls", "https://127.0.0.1:2380", "--peer-auto-tls"],  # advertise stays http: mixed
        ["--peer-cert-file", cert, "--peer-key-file", key],  # peer certificate with http peers
        [*peer_https, "--peer-cert-file", cert, "--peer-key-file", key, "--peer-client-cert-auth"],
        ["--listen-metrics-urls", "https://127.0.0.1:2381"],  # https metrics without a certificate
        ["--listen-metrics-urls", "127.0.0.1:2381"],  # not a URL
    ]
    for argv in bad:
        with pytest.raises(ConfigError):
            parse_config(argv)
    nested = tmp_path / "etcd.yaml"  # etcd's YAML nests the TLS keys
    nested.write_text(f"listen-client-urls: https://127.0.0.1:2379\nadvertise-client-urls: https://127.0.0.1:2379\n"
                      f"client-transport-security:\n  cert-file: {cert}\n  key-file: {key}\n")
    assert parse_config(["--config-file", str(nested)]).cert_file == cert
    nested.write_text("client-transport-security:\n  allowed-cn: admin\n")
    with pytest.raises(ConfigError, match="allowed-cn is not supported"):
        parse_config(["--config-file", str(nested)])


@needs_openssl
def test_the_member_exits_with_a_message_on_a_key_that_does_not_match(tmp_path) -> None:
    make_certs(tmp_path, "m0=127.0.0.1", "m1=127.0.0.1")
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    result = subprocess.run(
        [sys.executable, "-m", "kvraft.server.main", "--data-dir", str(tmp_path / "data"), "--listen-client-urls", url,
         "--advertise-client-urls", url, "--listen-peer-urls", f"http://127.0.0.1:{free_port()}",
         "--cert-file", str(tmp_path / "m0.crt"), "--key-file", str(tmp_path / "m1.key")],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "kvraft: TLS:" in result.stderr, result.stderr


def test_a_server_certificate_not_verified_is_not_waited_out(tls_cluster) -> None:
    """A rank whose job dropped the CA (KVRAFT_CACERT="") met an https member it cannot verify:
    the kvraft:// rendezvous took that for a member not up yet and retried until its timeout
    (minutes) before the gang failed; the daemons' start did the same for ever. The client now
    says so (EndpointError.tls), and neither waits."""
    import asyncio

    from agent.collective.rendezvous import KvraftRendezvous
    from kvraft.client import Client

    cluster, _ = tls_cluster
    urls = [m.client_url for m in cluster.members.values()]

    async def open_unverified() -> EndpointError:
        retries: list[float] = []
        with pytest.raises(EndpointError) as info:
            await Client(urls, dial_timeout_s=2.0).open_when_reachable(asyncio.Event(), on_retry=lambda e, d: retries.append(d))
        assert retries == []
        return info.value

    err = asyncio.run(open_unverified())
    assert err.tls and "CERTIFICATE_VERIFY_FAILED" in str(err)
    t0 = time.monotonic()
    with pytest.raises(EndpointError, match="CERTIFICATE_VERIFY_FAILED") as info:
        KvraftRendezvous(urls, "/jobs/tls-unverified/rdzv", timeout_s=120.0, dial_timeout_s=2.0)
    assert info.value.tls and time.monotonic() - t0 < 60  # not the 120 s timeout

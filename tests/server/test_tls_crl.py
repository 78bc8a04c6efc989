"""``--client-crl-file`` and ``--peer-crl-file`` on real members (certificates and CRLs from
deploy/make-certs.sh): a revoked client certificate is refused on the client URL (an aiohttp
route and the fast path's KV routes) and on an https metrics URL while the others get in; a
revocation written while the member runs applies to the next connection, a resumed TLS
session included; a garbled CRL leaves the last one in force; a client without a
certificate still reaches the scoped-token path; a member whose peer certificate is revoked
is kept out of its cluster. Every refusal is logged and counted by the refusing member. In-process
checks of the same code: test_crl.py, test_tls_accept.py."""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from kvraft.client import PermissionDeniedError, SyncClient, TLSConfig, UnauthenticatedError
from kvraft.server.local import LocalCluster, free_port
from tests.server.test_tls import wait_for

ROOT = Path(__file__).resolve().parents[2]
MAKE_CERTS = ROOT / "deploy" / "make-certs.sh"
FAST_FLAGS = ["--heartbeat-interval", "50", "--election-timeout", "500"]
REVOKED = "certificate revoked"

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def make_certs(pki: Path, *args: str) -> None:
    subprocess.run(["bash", str(MAKE_CERTS), "-o", str(pki), "-d", "2", *args], check=True, capture_output=True)




def replace(path: Path, source: Path) -> None:
    """Put ``source``'s bytes at ``path`` as an operator's copy would (renamed over it)."""
    tmp = path.with_suffix(".tmp")
    shutil.copy(source, tmp)
    tmp.replace(path)


@dataclass
class Member:
    client: str  # host:port of the https client URL
    metrics: str  # host:port of the https metrics URL
    crl: Path  # its --client-crl-file
    pki: Path
    log: Path

    def context(self, who: str | None, version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        if version is not None:
            context.maximum_version = version
        if who is not None:
            context.load_cert_chain(str(self.pki / f"{who}.crt"), str(self.pki / f"{who}.key"))
        return context

    def status(self, address: str, who: str | None, path: str, body: bytes | None = None,
               version: ssl.TLSVersion | None = None) -> int:
        """The HTTP status of one request, on a new connection, as ``who``."""
        host, port = address.split(":")
        conn = http.client.HTTPSConnection(host, int(port), context=self.context(who, version), timeout=10)
        try:
            conn.request("POST" if body is not None else "GET", path, body=body)
            response = conn.getresponse()
            response.read()
            return response.status
        finally:
            conn.close()

    def metrics_text(self) -> str:
        """The member's /metrics page, read over its https metrics URL as bob."""
        host, port = self.metrics.split(":")
        conn = http.client.HTTPSConnection(host, int(port), context=self.context("bob"), timeout=10)
        try:
            conn.request("GET", "/metrics")
            return conn.getresponse().read().decode()
        finally:
            conn.close()

    def refused(self, address: str, who: str, path: str, body: bytes | None = None) -> bool:
        """Whether a request as ``who`` gets no answer because the TLS connection is cut
        (TLS 1.2 and 1.3). asyncio drops a connection whose handshake failed without sending
        the alert, so the client sees an EOF or a reset, not why; the reason OpenSSL gives
        is checked in test_crl.py with the same contexts. Here the cause is shown by the
        same client getting in with a list that does not name it."""
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            with pytest.raises((ssl.SSLError, ConnectionError)):  # (an EOF, a reset, a broken pipe)
                self.status(address, who, path, body, version)
        return True


PUT = json.dumps({"key": "Y3JsL2s=", "value": "dg=="}).encode()
ROUTES = (("client", "/version", None), ("client", "/v3/kv/put", PUT), ("client", "/v3/kv/range", b'{"key":"YQ=="}'),
          ("metrics", "/metrics", None))  # /version: aiohttp; /v3/kv/*: the fast path


@pytest.fixture(scope="module")
def member(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Member]:
    """One member: https client and metrics URLs, --client-cert-auth, --client-crl-file naming
    a copy of make-certs.sh's CRL with alice revoked. ``empty.crl`` and ``alice.crl`` in the
    pki are that CRL before and after."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    base = tmp_path_factory.mktemp("crl-member")
    pki = base / "pki"
    make_certs(pki, "-c", "alice", "-c", "bob", "-c", "carol", "-c", "admin", "m0=127.0.0.1")
    shutil.copy(pki / "ca.crl", pki / "empty.crl")
    make_certs(pki, "-r", "alice")
    shutil.copy(pki / "ca.crl", pki / "alice.crl")
    crl = base / "client.crl"
    shutil.copy(pki / "alice.crl", crl)
    client, peer, metrics = (f"127.0.0.1:{free_port()}" for _ in range(3))
    log_path = base / "member.log"
    log = open(log_path, "wb")  # noqa: SIM115 - handed to the child
    process = subprocess.Popen(
        [sys.executable, "-m", "kvraft.server.main", "--name", "m0", "--data-dir", str(base / "data"),
         "--listen-client-urls", f"https://{client}", "--advertise-client-urls", f"https://{client}",
         "--listen-peer-urls", f"http://{peer}", "--initial-advertise-peer-urls", f"http://{peer}",
         "--initial-cluster", f"m0=http://{peer}", "--listen-metrics-urls", f"https://{metrics}",
         "--cert-file", str(pki / "m0.crt"), "--key-file", str(pki / "m0.key"), "--trusted-ca-file",
         str(pki / "ca.crt"), "--client-cert-auth", "--client-crl-file", str(crl), "--logger", "capnslog",
         "--bcrypt-cost", "4", *FAST_FLAGS],
        cwd=ROOT, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    log.close()
    found = Member(client, metrics, crl, pki, log_path)
    try:
        def healthy() -> bool:
            assert process.poll() is None, log_path.read_text()[-2000:]
            return found.status(metrics, "bob", "/health") == 200

        wait_for(healthy, what="the member's /health")
        yield found
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(30)


def test_a_revoked_client_certificate_is_refused_on_the_client_and_metrics_urls(member: Member) -> None:
    """The list the member started with names alice: refused everywhere, bob served; with a
    list that does not name her, alice is served on the same routes."""
    assert "1 revoked certificate(s)" in member.log.read_text()  # (read at start)
    for listener, path, body in ROUTES:
        address = member.client if listener == "client" else member.metrics
        assert member.status(address, "bob", path, body) == 200, path
        assert member.refused(address, "alice", path, body), path
    # each refusal is logged by the member, with the listener, the address and OpenSSL's
    # reason, and counted on /metrics
    log = member.log.read_text()
    for listener in ("client", "metrics"):
        assert f"rejected connection on the {listener} URL from 127.0.0.1:" in log
    assert f"certificate verify failed: {REVOKED}" in log
    counted = {line.split("{")[1].split("}")[0]: float(line.split()[-1]) for line in member.metrics_text().splitlines()
               if line.startswith("kvraft_server_tls_handshake_failures_total{")}
    # (alice's 2 TLS versions x 3 client routes, and x 1 metrics route)
    assert counted['listener="client",reason="certificate_verify_failed"'] >= 6, counted
    assert counted['listener="metrics",reason="certificate_verify_failed"'] >= 2, counted
    # a client without a certificate is not checked against the CRL: it gets past the
    # handshake to the certificate-or-scoped-token check (a 401, not a TLS failure)
    assert member.status(member.client, None, "/v3/kv/range", b'{"key":"YQ=="}') == 401
    replace(member.crl, member.pki / "empty.crl")
    try:
        for listener, path, body in ROUTES:
            address = member.client if listener == "client" else member.metrics
            assert member.status(address, "alice", path, body) == 200, path
    finally:
        replace(member.crl, member.pki / "alice.crl")


def test_a_revocation_written_while_the_member_runs_refuses_the_next_connection(member: Member) -> None:
    replace(member.crl, member.pki / "alice.crl")
    bob = member.context("bob")
    host, port = member.client.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw, \
            bob.wrap_socket(raw, server_hostname=host) as tls:
        tls.sendall(f"GET /version HTTP/1.1\r\nHost: {member.client}\r\nConnection: close\r\n\r\n".encode())
        assert tls.recv(100).startswith(b"HTTP/1.1 200")  # (reading took the session tickets too)
        session = tls.session
    assert session is not None and session.has_ticket
    revoke = subprocess.run(["bash", str(MAKE_CERTS), "-o", str(member.pki), "-d", "2", "-r", "bob"],
                            capture_output=True, text=True, check=True)
    assert "revoked" in revoke.stdout
    replace(member.crl, member.pki / "ca.crl")  # the operator copies the new list: no restart
    for listener, path, body in ROUTES:
        address = member.client if listener == "client" else member.metrics
        assert member.refused(address, "bob", path, body), path
        assert member.status(address, "carol", path, body) == 200, path
    # bob's session from before would skip the certificate check: refused
    with socket.create_connection((host, int(port)), timeout=10) as raw, \
            pytest.raises((ssl.SSLError, ConnectionError)):
        bob.wrap_socket(raw, server_hostname=host, session=session)
    assert "reloaded for the client URLs: 2 revoked" in member.log.read_text()


def test_a_garbled_crl_leaves_the_last_one_in_force(member: Member) -> None:
    replace(member.crl, member.pki / "alice.crl")
    assert member.status(member.client, "bob", "/version") == 200  # (read: alice alone revoked)
    member.crl.write_text(member.crl.read_text()[:150])  # half written
    for listener, path, body in ROUTES:
        address = member.client if listener == "client" else member.metrics
        assert member.refused(address, "alice", path, body), path
        assert member.status(address, "bob", path, body) == 200, path
    assert "the list loaded before stays in force" in member.log.read_text()
    replace(member.crl, member.pki / "empty.crl")  # a good list again: alice is not on it
    assert member.status(member.client, "alice", "/version") == 200
    assert member.status(member.client, "alice", "/v3/kv/put", PUT) == 200


def test_the_crls_next_update_is_on_metrics_for_the_alert(member: Member) -> None:
    """deploy/prometheus's KvraftCRLExpiresSoon reads it; a garbled file has no sample."""
    from kvraft.server.crl import read_crl

    def gauge() -> list[str]:
        return [line for line in member.metrics_text().splitlines()
                if line.startswith("kvraft_server_crl_next_update_timestamp")]

    replace(member.crl, member.pki / "alice.crl")
    expected = read_crl(str(member.crl)).next_update
    assert expected is not None
    (line,) = gauge()
    assert line.startswith('kvraft_server_crl_next_update_timestamp_seconds{flag="client-crl-file"}')
    assert float(line.split()[-1]) == expected.timestamp()
    try:
        member.crl.write_text("garbled\n")
        assert gauge() == []
    finally:
        replace(member.crl, member.pki / "alice.crl")


def test_a_client_without_a_certificate_still_gets_in_with_a_scoped_token(member: Member) -> None:
    """The ranks of a job have no key; the CRL check must not close their way in (auth on, a
    scoped token, the CA alone). Turns auth on, then off."""
    replace(member.crl, member.pki / "alice.crl")
    url = f"https://{member.client}"
    admin = TLSConfig(str(member.pki / "ca.crt"), str(member.pki / "admin.crt"), str(member.pki / "admin.key"))
    with SyncClient([url], tls=admin) as client:
        client.user_add("root", "rootpw")
        client.user_grant_role("root", "root")
        client.role_add("agent")
        client.role_grant_permission("agent", "READWRITE", "/jobs/", "/jobs0")
        client.user_add("agent", "agentpw")
        client.user_grant_role("agent", "agent")
        client.auth_enable()
    try:
        with SyncClient([url], tls=admin, user="agent", password="agentpw") as agent:
            lease = agent.lease_grant(60).id
            token = agent.scoped_token_grant("n1/j/0", "/jobs/j/", "/jobs/j0", lease=lease)
        ca_only = TLSConfig(str(member.pki / "ca.crt"))
        with SyncClient([url], tls=ca_only, token=token) as rank:
            rank.put("/jobs/j/progress", "1")
            assert rank.get("/jobs/j/progress").kvs[0].value == b"1"
        with pytest.raises(UnauthenticatedError), SyncClient([url], tls=ca_only, request_timeout_s=3.0) as stranger:
            stranger.get("/jobs/j/progress")
    finally:
        with SyncClient([url], tls=admin, user="root", password="rootpw") as root:
            root.auth_disable()


def test_a_member_whose_peer_certificate_is_revoked_is_kept_out_of_the_cluster(tmp_path: Path) -> None:
    """Three members with --peer-crl-file; m2's peer certificate is on the list. m0 and m1
    elect a leader and serve; every connection between them and m2 is refused, in either
    direction (m2's dials by their listeners; their dials to m2 by their own dialers), so m2
    never gets the data."""
    pki = tmp_path / "pki"
    make_certs(pki, "m0=127.0.0.1", "m1=127.0.0.1", "m2=127.0.0.1")
    make_certs(pki, "-r", "m2-peer")
    cluster = LocalCluster(3, tmp_path / "members", extra_args=FAST_FLAGS)
    for name, each in cluster.members.items():
        each.peer_url = each.peer_url.replace("http://", "https://")
        each.extra = ["--peer-cert-file", str(pki / f"{name}-peer.crt"), "--peer-key-file", str(pki / f"{name}-peer.key"),
                      "--peer-trusted-ca-file", str(pki / "ca.crt"), "--peer-client-cert-auth",
                      "--peer-crl-file", str(pki / "ca.crl"), "--logger", "capnslog"]
    m0, m1, m2 = cluster.members.values()
    try:
        initial = cluster.initial_cluster()
        for name in cluster.members:
            cluster.start_member(name, initial, "new")

        def put() -> bool:
            with SyncClient([m0.client_url], request_timeout_s=3.0) as client:
                client.put("crl/peer", b"v")
            return True

        wait_for(put, what="a write through m0 (m0 and m1 are a quorum)")
        with SyncClient([m1.client_url]) as client:
            assert client.get("crl/peer").kvs[0].value == b"v"
        m2_port = str(urlsplit(m2.peer_url).port)

        def refused_both_ways() -> bool:
            logs = {each.name: each.log_path.read_text() for each in (m0, m1, m2)}
            dialed = all(f"TLS with 127.0.0.1:{m2_port} failed: [SSL: CERTIFICATE_VERIFY_FAILED] certificate "
                         f"verify failed: {REVOKED}" in logs[name] for name in ("m0", "m1"))
            # m2's dials, cut by m0's and m1's listeners (asyncio sends no alert: m2 sees an EOF)
            refused = logs["m2"].count("closed the connection without answering the hello (does it refuse "
                                       "our certificate?)")
            # ... and the listeners that cut them say so (kvraft.server.tls_accept)
            logged = all("rejected connection on the peer URL from 127.0.0.1:" in logs[name]
                         and f"certificate verify failed: {REVOKED}" in logs[name] for name in ("m0", "m1"))
            return dialed and refused >= 2 and logged

        wait_for(refused_both_ways, what="the refusals in the members' logs")
        with SyncClient([m2.client_url], request_timeout_s=3.0) as client:
            assert not client.get("crl/peer", serializable=True).kvs
        assert all(each.alive() for each in (m0, m1, m2))
    finally:
        cluster.stop()


def test_a_client_certificates_cn_is_its_user_when_it_sends_no_token(member: Member) -> None:
    """etcd's AuthInfoFromTLS (what ``etcdctl --cert bob.crt ...`` relies on with auth on): under
    --client-cert-auth a request without a token acts as the user its certificate's CN names,
    with that user's permissions; a CN that is no user gets nothing; a token wins over the
    certificate; a revoked certificate never gets that far. Turns auth on, then off."""
    replace(member.crl, member.pki / "alice.crl")
    url = f"https://{member.client}"

    def tls(who: str) -> TLSConfig:
        return TLSConfig(str(member.pki / "ca.crt"), str(member.pki / f"{who}.crt"), str(member.pki / f"{who}.key"))

    with SyncClient([url], tls=tls("admin")) as client:
        if "root" not in client.user_list().users:  # (the scoped-token test may have made it)
            client.user_add("root", "rootpw")
            client.user_grant_role("root", "root")
        client.role_add("cn")
        client.role_grant_permission("cn", "READWRITE", "/cn/", "/cn0")
        client.user_add("bob", "", no_password=True)
        client.user_grant_role("bob", "cn")
        client.auth_enable()
    try:
        with SyncClient([url], tls=tls("bob")) as bob:  # no --user: the certificate says bob
            bob.put("/cn/k", "v")
            assert bob.get("/cn/k").kvs[0].value == b"v"  # (a linearizable read: resolved again)
            with pytest.raises(PermissionDeniedError):
                bob.put("/elsewhere", "v")
            with pytest.raises(PermissionDeniedError):
                bob.user_list()  # not root
        with SyncClient([url], tls=tls("carol")) as carol, pytest.raises(PermissionDeniedError):
            carol.get("/cn/k")  # no user carol
        with SyncClient([url], tls=tls("bob"), user="root", password="rootpw") as root:
            assert "bob" in root.user_list().users  # the token's user, not the certificate's
    finally:
        with SyncClient([url], tls=tls("admin"), user="root", password="rootpw") as root:
            root.auth_disable()

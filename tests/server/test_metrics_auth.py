"""``--metrics-auth``: with auth on, ``/metrics`` (client and metrics URLs) answers only the root
and the ``kvraft-monitoring`` roles, given basic auth, a token or a client certificate;
etcd's ``/metrics`` is open to anyone who reaches the port."""

from __future__ import annotations

import base64
import json
import shutil
import ssl
import urllib.error
import urllib.request

import pytest

from kvraft.client import SyncClient, TLSConfig
from kvraft.server.api.metrics_auth import MONITORING_ROLE
from kvraft.server.local import LocalCluster
from kvraft.testing.ports import free_port
from tests.server.conftest import FAST_FLAGS, start_cluster


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, dict[str, str]]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    port = free_port()
    cluster = start_cluster(tmp_path_factory.mktemp("metrics-auth"), size=1,
                            extra=[*FAST_FLAGS, "--metrics-auth", "--listen-metrics-urls", f"http://127.0.0.1:{port}"])
    cluster.metrics_url = f"http://127.0.0.1:{port}/metrics"  # type: ignore[attr-defined]
    try:
        yield cluster
    finally:
        cluster.stop()


def test_metrics_auth(cluster) -> None:  # type: ignore[no-untyped-def]
    client_url = cluster.url("m0")
    urls = [client_url + "/metrics", cluster.metrics_url]
    for url in urls:  # auth off: nobody to check, open as etcd's
        assert get(url)[0] == 200
    with SyncClient([client_url]) as admin:
        admin.user_add("root", "rootpw")
        admin.user_grant_role("root", "root")
        admin.role_add(MONITORING_ROLE)
        admin.user_add("prom", "prompw")
        admin.user_grant_role("prom", MONITORING_ROLE)
        admin.user_add("alice", "alicepw")
        admin.auth_enable()
    try:
        for url in urls:
            status, body, headers = get(url)
            assert status == 401 and headers.get("WWW-Authenticate") == 'Basic realm="kvraft"', (url, body)
            assert "needs credentials" in body
            status, body, _ = get(url, basic("prom", "prompw"))
            assert status == 200 and "etcd_server_has_leader" in body
            assert get(url, basic("root", "rootpw"))[0] == 200
            assert get(url, basic("prom", "wrong"))[0] == 401
            assert get(url, basic("nobody", "x"))[0] == 401
            assert get(url, {"Authorization": "Basic !!!"})[0] == 401
            status, body, _ = get(url, basic("alice", "alicepw"))
            assert status == 403 and MONITORING_ROLE in body
            assert get(url.replace("/metrics", "/health"))[0] == 200  # probes stay open
            assert get(url, {"Authorization": "Bearer not-a-token"})[0] == 401
        request = urllib.request.Request(client_url + "/v3/auth/authenticate", method="POST",
                                         data=json.dumps({"name": "prom", "password": "prompw"}).encode())
        with urllib.request.urlopen(request, timeout=10) as response:
            token = json.loads(response.read())["token"]
        assert get(urls[0], {"Authorization": f"Bearer {token}"})[0] == 200
        assert get(urls[1], {"Authorization": token})[0] == 200  # etcd's raw token header

        with SyncClient([client_url], user="root", password="rootpw") as root:
            root.user_revoke_role("prom", MONITORING_ROLE)  # a remembered password does not outlive its role
            assert get(urls[0], basic("prom", "prompw"))[0] == 403
            root.user_grant_role("prom", MONITORING_ROLE)
            root.user_change_password("prom", "newpw")  # nor the password itself
            assert get(urls[0], basic("prom", "prompw"))[0] == 401
            assert get(urls[0], basic("prom", "newpw"))[0] == 200
    finally:
        with SyncClient([client_url], user="root", password="rootpw") as root:
            root.auth_disable()


def test_a_client_certificate_names_the_scraper(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Under --client-cert-auth the certificate's CN is the user (etcd's AuthInfoFromTLS), on
    the https client URL and the https metrics URL alike."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    from tests.server.test_tls import _read_ok, make_certs, wait_for

    pki = tmp_path / "pki"
    make_certs(pki, "m0=127.0.0.1", clients=("root", MONITORING_ROLE, "alice"))
    metrics = f"127.0.0.1:{free_port()}"
    cluster = LocalCluster(1, tmp_path / "members", extra_args=[*FAST_FLAGS, "--metrics-auth"])
    member = cluster.members["m0"]
    member.client_url = member.client_url.replace("http://", "https://")
    member.extra = ["--cert-file", str(pki / "m0.crt"), "--key-file", str(pki / "m0.key"),
                    "--trusted-ca-file", str(pki / "ca.crt"), "--client-cert-auth",
                    "--listen-metrics-urls", f"https://{metrics}"]

    def context(cn: str) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        ctx.load_cert_chain(str(pki / f"{cn}.crt"), str(pki / f"{cn}.key"))
        return ctx

    def status(url: str, cn: str) -> int:
        try:
            with urllib.request.urlopen(url, timeout=10, context=context(cn)) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    try:
        cluster.start_member("m0", cluster.initial_cluster(), "new")
        tls = TLSConfig(str(pki / "ca.crt"), str(pki / "root.crt"), str(pki / "root.key"))
        wait_for(lambda: _read_ok(member.client_url, tls), what="the member serving over TLS")
        with SyncClient([member.client_url], tls=tls, request_timeout_s=30.0) as admin:
            for user in ("root", MONITORING_ROLE, "alice"):
                admin.user_add(user, "pw")
            admin.user_grant_role("root", "root")
            admin.role_add(MONITORING_ROLE)
            admin.user_grant_role(MONITORING_ROLE, MONITORING_ROLE)
            admin.auth_enable()
        for url in (member.client_url + "/metrics", f"https://{metrics}/metrics"):
            assert status(url, MONITORING_ROLE) == 200
            assert status(url, "root") == 200
            assert status(url, "alice") == 403
    finally:
        cluster.stop()


def test_a_token_this_member_does_not_know_yet_is_looked_up_again_after_catching_up() -> None:
    """A simple token assigned through another member moments ago (replicated through Raft)
    may not be applied here yet: as the gateway, catch up with a read barrier and look again."""
    import asyncio
    from types import SimpleNamespace

    from aiohttp.test_utils import make_mocked_request

    from kvraft.apply.errors import error_from_code
    from kvraft.server.api.metrics_auth import MetricsAuth

    known: set[str] = set()

    def resolve(header: str | None, _cert: str | None) -> object:
        if header not in known:
            raise error_from_code(16, "etcdserver: invalid auth token")
        return SimpleNamespace(user="prom", revision=0)

    async def read_barrier() -> None:
        known.add("tok")  # the assign entry applied meanwhile

    state = SimpleNamespace(enabled=True, check_user=lambda *_: False,
                            users={"prom": SimpleNamespace(roles=[MONITORING_ROLE])})
    features = SimpleNamespace(auth=state, resolve=resolve, checked=lambda fn, *a: fn(*a),
                               node=SimpleNamespace(driver=SimpleNamespace(read_barrier=read_barrier)))
    gate = MetricsAuth(features, lambda _request: None)
    request = make_mocked_request("GET", "/metrics", headers={"Authorization": "tok"})
    assert asyncio.run(gate.refusal(request)) is None
    refused = asyncio.run(gate.refusal(make_mocked_request("GET", "/metrics", headers={"Authorization": "bad"})))
    assert refused is not None and refused.status == 401

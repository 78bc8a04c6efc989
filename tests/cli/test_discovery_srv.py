"""kvctl's DNS discovery (etcdctl's ``-d/--discovery-srv``, ``--discovery-srv-name``,
``--insecure-discovery``): the endpoints come from a DNS server on 127.0.0.1
(``KVRAFT_DNS_SERVER``), and with secure discovery each member's certificate is checked
against the domain (TLSConfig.server_name)."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from kvctl_harness import run_kvctl

from kvraft.client import TLSConfig
from kvraft.server.local import LocalCluster
from kvraft.testing.dns import FakeDNS

DOMAIN = "kvraft.test"


@pytest.fixture(scope="module")
def member(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    cluster = LocalCluster(1, tmp_path_factory.mktemp("srv-member"),
                           extra_args=["--heartbeat-interval", "50", "--election-timeout", "500"])
    try:
        cluster.start()
        yield cluster.members["m0"].client_url
    finally:
        cluster.stop()


@pytest.fixture
def dns() -> Iterator[FakeDNS]:
    with FakeDNS() as server:
        server.add_address("localhost", "127.0.0.1")
        yield server


def port_of(url: str) -> int:
    return int(url.rpartition(":")[2])


def test_endpoints_come_from_the_client_srv_records(member: str, dns: FakeDNS) -> None:
    dns.add_srv(f"_etcd-client._tcp.{DOMAIN}", "localhost", port_of(member))
    env = {"KVRAFT_DNS_SERVER": dns.address}
    assert run_kvctl(["-d", DOMAIN, "put", "srv-key", "found"], env=env).out == "OK\n"
    result = run_kvctl(["--discovery-srv", DOMAIN, "get", "srv-key", "--print-value-only"], env=env)
    assert (result.rc, result.out) == (0, "found\n")
    status = run_kvctl(["-d", DOMAIN, "endpoint", "health"], env=env)
    assert status.rc == 0 and status.err.startswith(f"http://localhost:{port_of(member)} is healthy"), status
    asked = [name for name, kind in dns.questions if kind == "SRV"]
    assert asked[:2] == [f"_etcd-client-ssl._tcp.{DOMAIN}.", f"_etcd-client._tcp.{DOMAIN}."]
    # the environment, as etcdctl's ETCDCTL_DISCOVERY_SRV
    result = run_kvctl(["get", "srv-key", "--print-value-only"], env={**env, "ETCDCTL_DISCOVERY_SRV": DOMAIN,
                                                                      "ETCDCTL_ENDPOINTS": "127.0.0.1:9"})
    assert (result.rc, result.out) == (0, "found\n")


def test_the_service_name_suffix(member: str, dns: FakeDNS) -> None:
    dns.add_srv(f"_etcd-client-blue._tcp.{DOMAIN}", "localhost", port_of(member))
    result = run_kvctl(["-d", DOMAIN, "--discovery-srv-name", "blue", "endpoint", "health"],
                       env={"KVRAFT_DNS_SERVER": dns.address})
    assert result.rc == 0 and f"http://localhost:{port_of(member)} is healthy" in result.err, result


def test_secure_discovery_drops_http_endpoints_and_falls_back_to_the_flag(member: str, dns: FakeDNS) -> None:
    dns.add_srv(f"_etcd-client._tcp.{DOMAIN}", "localhost", port_of(member))
    result = run_kvctl(["-d", DOMAIN, "--insecure-discovery=false", "--endpoints", member, "endpoint", "health"],
                       env={"KVRAFT_DNS_SERVER": dns.address})
    assert result.err.startswith(f'ignoring discovered insecure endpoint "http://localhost:{port_of(member)}"\n')
    assert result.rc == 0 and f"{member} is healthy" in result.err, result
    # and the default is to accept them
    result = run_kvctl(["-d", DOMAIN, "--insecure-discovery=true", "endpoint", "health"],
                       env={"KVRAFT_DNS_SERVER": dns.address})
    assert result.rc == 0 and "ignoring" not in result.err


def test_no_records_is_etcdctls_error(dns: FakeDNS) -> None:
    result = run_kvctl(["-d", DOMAIN, "get", "k"], env={"KVRAFT_DNS_SERVER": dns.address})
    where = f"127.0.0.1:{dns.address.rpartition(':')[2]}"
    assert result.rc == 1
    assert result.err == (f"Error: dns lookup errors: lookup _etcd-client-ssl._tcp.{DOMAIN} on {where}: no such host "
                          f"and lookup _etcd-client._tcp.{DOMAIN} on {where}: no such host\n")


# -- secure discovery checks certificates against the domain --------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_a_server_name_checks_the_certificate_against_the_domain_not_the_host(tmp_path: Path) -> None:
    """A certificate for ``kvraft.test`` alone, served on 127.0.0.1: verified with
    ``server_name`` kvraft.test (etcdctl's secure discovery), refused as 127.0.0.1 or another
    name."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=srv-ca",
             cwd=tmp_path)
    _openssl("req", *ec, "-keyout", "m.key", "-out", "m.csr", "-subj", "/CN=m", cwd=tmp_path)
    (tmp_path / "m.ext").write_text(f"subjectAltName=DNS:{DOMAIN}\nextendedKeyUsage=serverAuth\n")
    _openssl("x509", "-req", "-in", "m.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", "m.crt",
             "-days", "2", "-extfile", "m.ext", cwd=tmp_path)

    async def main() -> list[str]:
        async def version(_: web.Request) -> web.Response:
            return web.json_response({"etcdserver": "3.4.23"})

        app = web.Application()
        app.router.add_get("/version", version)
        runner = web.AppRunner(app)
        await runner.setup()
        served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        served.load_cert_chain(tmp_path / "m.crt", tmp_path / "m.key")
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=served)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        outcomes = []
        try:
            for name in (DOMAIN, None, "other.test"):
                tls = TLSConfig(str(tmp_path / "ca.crt"), server_name=name)
                async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls.context())) as session:
                    try:
                        async with session.get(f"https://127.0.0.1:{port}/version") as response:
                            outcomes.append(str(response.status))
                    except aiohttp.ClientConnectorCertificateError as exc:
                        outcomes.append(type(exc.certificate_error).__name__)
        finally:
            await runner.cleanup()
        return outcomes

    assert asyncio.run(main()) == ["200", "SSLCertVerificationError", "SSLCertVerificationError"]


# -- the same domain for jobctl, the agent and the scheduler ---------------------------------------


def test_jobctl_finds_the_cluster_in_dns(member: str, dns: FakeDNS, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    from scheduler.cli.main import main as jobctl

    dns.add_srv(f"_etcd-client._tcp.{DOMAIN}", "localhost", port_of(member))
    monkeypatch.setenv("KVRAFT_DNS_SERVER", dns.address)
    assert jobctl(["-d", DOMAIN, "--endpoints", "127.0.0.1:9", "get", "jobs"]) == 0
    monkeypatch.setenv("JOBCTL_DISCOVERY_SRV", "nothing.test")
    assert jobctl(["get", "jobs"]) == 1
    assert "error: --discovery-srv nothing.test: dns lookup errors: lookup _etcd-client-ssl._tcp.nothing.test" in \
        capsys.readouterr().err


def test_the_agent_and_the_scheduler_take_their_endpoints_from_dns(dns: FakeDNS, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.config import load_config as agent_config
    from scheduler.service_config import load_config as scheduler_config

    dns.add_srv(f"_etcd-client-ssl-blue._tcp.{DOMAIN}", "localhost", 2379, priority=1)
    dns.add_srv(f"_etcd-client-blue._tcp.{DOMAIN}", "localhost", 22379)
    monkeypatch.setenv("KVRAFT_DNS_SERVER", dns.address)
    want = ["https://localhost:2379", "http://localhost:22379"]
    flags = ["--discovery-srv", DOMAIN, "--discovery-srv-name", "blue"]
    assert agent_config([*flags, "--name", "n1", "--data-dir", str(tmp_path)]).endpoints == want
    assert scheduler_config(flags).endpoints == want
    config_file = tmp_path / "scheduler.yaml"
    config_file.write_text(f"discovery-srv: {DOMAIN}\ndiscovery-srv-name: blue\n")
    assert scheduler_config(["--config-file", str(config_file)]).endpoints == want
    with pytest.raises(ValueError, match="^--discovery-srv other.test: dns lookup errors: "):
        scheduler_config(["--discovery-srv", "other.test"])
    with pytest.raises(ValueError, match="^--discovery-srv-name needs --discovery-srv"):
        agent_config(["--discovery-srv-name", "blue", "--name", "n1", "--data-dir", str(tmp_path)])
    assert scheduler_config(["--endpoints", "10.0.0.1:2379"]).endpoints == ["10.0.0.1:2379"]  # (no lookup)

"""Member processes bootstrapped from DNS SRV records (``--discovery-srv``) served by a DNS
server on 127.0.0.1 (``KVRAFT_DNS_SERVER``): no member is told of another on its command line."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from kvraft.cli.main import run as kvctl_run
from kvraft.server.local import b64, free_port, post
from kvraft.testing.dns import FakeDNS
from tests.server.helpers import wait_until

DOMAIN = "kvraft.test"


def run_kvctl(argv: list[str], env: dict[str, str]) -> Result:
    out, err = io.StringIO(), io.StringIO()
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        rc = kvctl_run(argv, io.StringIO(), out, err)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return Result(rc, out.getvalue(), err.getvalue())


@dataclass(frozen=True)
class Result:
    rc: int
    out: str
    err: str


def start(tmp_path: Path, dns: FakeDNS, name: str, client: int, peer: int, *extra: str) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "kvraft.server.main", "--name", name, "--data-dir", str(tmp_path / f"{name}.data"),
            "--listen-client-urls", f"http://127.0.0.1:{client}", "--advertise-client-urls", f"http://127.0.0.1:{client}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster-token", "srv-test", "--discovery-srv", DOMAIN, *extra]
    env = dict(os.environ, KVRAFT_DNS_SERVER=dns.address, PYTHONUNBUFFERED="1")
    with (tmp_path / f"{name}.log").open("ab") as log:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(20)


def test_three_members_found_in_srv_records_form_one_cluster(tmp_path: Path) -> None:
    ports = [(free_port(), free_port()) for _ in range(3)]
    with FakeDNS() as dns:
        dns.add_address("localhost", "127.0.0.1")  # the records' target (peers dial it; /etc/hosts has it too)
        for _, peer in ports:
            dns.add_srv(f"_etcd-server._tcp.{DOMAIN}", "localhost", peer)
        processes = {f"m{i}": start(tmp_path, dns, f"m{i}", client, peer) for i, (client, peer) in enumerate(ports)}
        try:
            urls = [f"http://127.0.0.1:{client}" for client, _ in ports]

            def written() -> bool:
                for name, process in processes.items():
                    assert process.poll() is None, (tmp_path / f"{name}.log").read_text()
                code, _ = post(urls[0], "/v3/kv/put", {"key": b64("k"), "value": b64("v")}, timeout_s=2.0)
                return code == 200

            wait_until(written, 90, what="a write through the cluster found in DNS")

            def listed() -> list[dict]:
                code, body = post(urls[2], "/v3/cluster/member/list", {}, timeout_s=5.0)
                members = body.get("members", []) if code == 200 else []
                # (until a member publishes its name, the others know it by the name their own
                # lookup gave it: "0" or "1", as etcd's)
                return members if sorted(m.get("name", "") for m in members) == ["m0", "m1", "m2"] else []

            members = wait_until(listed, 30, what="three published members")
            assert sorted(m["name"] for m in members) == ["m0", "m1", "m2"]
            assert sorted(m["peerURLs"][0] for m in members) == sorted(f"http://localhost:{p}" for _, p in ports)
            ids = {m["name"]: m["ID"] for m in members}
            for index, url in enumerate(urls):  # each member's id is the one the others computed
                code, body = post(url, "/v3/maintenance/status", {}, timeout_s=5.0)
                assert code == 200 and body["header"]["member_id"] == ids[f"m{index}"]
            asked = [q for q in dns.questions if q[1] == "SRV"]
            assert (f"_etcd-server-ssl._tcp.{DOMAIN}.", "SRV") in asked

            # a restarted member has its cluster in its data dir: it does not look again
            stop(processes["m1"])
            dns.clear(f"_etcd-server._tcp.{DOMAIN}")
            before = len(dns.questions)
            processes["m1"] = start(tmp_path, dns, "m1", *ports[1])

            def served_again() -> bool:
                assert processes["m1"].poll() is None, (tmp_path / "m1.log").read_text()
                code, _ = post(urls[1], "/v3/kv/range", {"key": b64("k")}, timeout_s=2.0)
                return code == 200

            wait_until(served_again, 60, what="the restarted member to serve")
            assert not [q for q in dns.questions[before:] if q[1] == "SRV"]
            log = (tmp_path / "m1.log").read_text()
            assert "not looked up: the data dir holds the cluster's members" in log
            assert "are not member" not in log  # (registered by name, advertised by address: alike)

            # scale out: a member added with member add and published in DNS joins as etcd's do
            # (--initial-cluster-state existing: the records are the cluster it asks to join)
            client4, peer4 = free_port(), free_port()

            def added() -> bool:  # (--strict-reconfig-check: "unhealthy cluster" until m1 is connected again)
                code, body = post(urls[0], "/v3/cluster/member/add", {"peerURLs": [f"http://localhost:{peer4}"]})
                assert code in (200, 503), body
                return code == 200

            wait_until(added, 30, what="member add")
            for _, peer in [*ports, (client4, peer4)]:
                dns.add_srv(f"_etcd-server._tcp.{DOMAIN}", "localhost", peer)
            processes["m3"] = start(tmp_path, dns, "m3", client4, peer4, "--initial-cluster-state", "existing")

            def joined() -> bool:
                assert processes["m3"].poll() is None, (tmp_path / "m3.log").read_text()
                code, body = post(f"http://127.0.0.1:{client4}", "/v3/kv/range", {"key": b64("k")}, timeout_s=2.0)
                return code == 200 and body.get("count") == "1"

            wait_until(joined, 60, what="the fourth member to join and serve")
            assert "m3" in [m.get("name") for m in wait_until(lambda: listed4(urls[0]), 30, what="m3 published")]
        finally:
            for process in processes.values():
                stop(process)


def listed4(url: str) -> list[dict]:
    code, body = post(url, "/v3/cluster/member/list", {}, timeout_s=5.0)
    members = body.get("members", []) if code == 200 else []
    return members if len(members) == 4 and all(m.get("name") for m in members) else []


@pytest.mark.parametrize(("records", "message"), [
    (False, "error setting up initial cluster: error querying DNS SRV records for _etcd-server-ssl lookup "
            f"_etcd-server-ssl._tcp.{DOMAIN} on 127.0.0.1:PORT: no such host"),
    (True, 'cannot find local etcd member "m0" in SRV records'),
])
def test_a_member_the_records_do_not_describe_exits_with_etcds_error(tmp_path: Path, records: bool,
                                                                    message: str) -> None:
    with FakeDNS() as dns:
        dns_port = dns.address.rpartition(":")[2]
        if records:
            dns.add_address("localhost", "127.0.0.1")
            dns.add_srv(f"_etcd-server._tcp.{DOMAIN}", "localhost", free_port())  # (someone else's port)
        process = start(tmp_path, dns, "m0", free_port(), free_port())
        try:
            assert process.wait(60) == 1
        finally:
            with contextlib.suppress(Exception):
                stop(process)
    log = (tmp_path / "m0.log").read_text()
    assert f"kvraft: {message.replace('PORT', dns_port)}" in log, log
    assert not (tmp_path / "m0.data" / "members.json").exists()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_https_members_from_ssl_records_and_kvctl_with_secure_discovery(tmp_path: Path) -> None:
    """``_etcd-server-ssl._tcp``: https peers with peer client-certificate auth (the listener's
    SAN check included); ``kvctl -d --insecure-discovery=false`` finds the https client records
    and checks each member's certificate against the domain, which the certificates name."""
    from tests.server.test_tls import make_certs

    pki = tmp_path / "pki"
    make_certs(pki, *(f"m{i}=127.0.0.1,{DOMAIN}" for i in range(3)), clients=("admin",))
    ports = [(free_port(), free_port()) for _ in range(3)]
    with FakeDNS() as dns:
        dns.add_address("localhost", "127.0.0.1")
        for client, peer in ports:
            dns.add_srv(f"_etcd-server-ssl._tcp.{DOMAIN}", "localhost", peer)
            dns.add_srv(f"_etcd-client-ssl._tcp.{DOMAIN}", "localhost", client)
        processes = {}
        for i, (client, peer) in enumerate(ports):
            name = f"m{i}"
            processes[name] = start_https(tmp_path, dns, pki, name, client, peer)
        try:
            env = {"KVRAFT_DNS_SERVER": dns.address}
            tls = ["--cacert", str(pki / "ca.crt"), "--cert", str(pki / "admin.crt"), "--key", str(pki / "admin.key")]

            def written() -> bool:
                for name, process in processes.items():
                    assert process.poll() is None, (tmp_path / f"{name}.log").read_text()
                result = run_kvctl(["-d", DOMAIN, "--insecure-discovery=false", *tls, "--command-timeout", "3s",
                                    "put", "k", "over-tls"], env=env)
                return result.rc == 0

            wait_until(written, 90, what="a write through the https cluster found in DNS")
            def published() -> bool:  # every member's peer and client URLs (a member publishes its own)
                result = run_kvctl(["-d", DOMAIN, "--insecure-discovery=false", *tls, "member", "list"], env=env)
                assert result.rc == 0, result
                return result.out.count("https://localhost:") == 6

            wait_until(published, 30, what="the three members published")
        finally:
            for process in processes.values():
                stop(process)


def start_https(tmp_path: Path, dns: FakeDNS, pki: Path, name: str, client: int, peer: int) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "kvraft.server.main", "--name", name, "--data-dir", str(tmp_path / f"{name}.data"),
            "--listen-client-urls", f"https://127.0.0.1:{client}",
            "--advertise-client-urls", f"https://localhost:{client}",
            "--listen-peer-urls", f"https://127.0.0.1:{peer}", "--initial-advertise-peer-urls", f"https://127.0.0.1:{peer}",
            "--initial-cluster-token", "srv-tls", "--discovery-srv", DOMAIN,
            "--heartbeat-interval", "50", "--election-timeout", "500",
            "--cert-file", str(pki / f"{name}.crt"), "--key-file", str(pki / f"{name}.key"),
            "--trusted-ca-file", str(pki / "ca.crt"), "--client-cert-auth",
            "--peer-cert-file", str(pki / f"{name}-peer.crt"), "--peer-key-file", str(pki / f"{name}-peer.key"),
            "--peer-trusted-ca-file", str(pki / "ca.crt"), "--peer-client-cert-auth"]
    env = dict(os.environ, KVRAFT_DNS_SERVER=dns.address, PYTHONUNBUFFERED="1")
    with (tmp_path / f"{name}.log").open("ab") as log:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)

"""v3 discovery (``--discovery-token``, ``--discovery-endpoints``, etcd 3.6's): member processes
that know only a token and a discovery service (a real etcd 3.4 or a kvraft member, both on
127.0.0.1) form one cluster; a member too many, a token without a size and a restart; and the
registry's rules without processes."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from kvraft.client import Client, WatchCompactedError
from kvraft.server.config import ConfigError, member_id_for, parse_config
from kvraft.server.local import b64, free_port, post
from kvraft.server.v3discovery import Registry, join_cluster
from tests.client.kvclusters import Runtime, start_runtime
from tests.server.helpers import wait_until
from tests.server.test_discovery_srv import stop

TOKEN = "disc-test"
PREFIX = f"/_etcd/registry/{TOKEN}"


def start(tmp_path: Path, discovery: list[str], name: str, client: int, peer: int,
          token: str = TOKEN, extra: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "kvraft.server.main", "--name", name, "--data-dir", str(tmp_path / f"{name}.data"),
            "--listen-client-urls", f"http://127.0.0.1:{client}", "--advertise-client-urls", f"http://127.0.0.1:{client}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--heartbeat-interval", "50", "--election-timeout", "500",
            "--discovery-token", token, "--discovery-endpoints", ",".join(discovery), *extra]
    with (tmp_path / f"{name}.log").open("ab") as log:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def put(runtime: Runtime, key: str, value: str) -> None:
    code, body = post(runtime.endpoints[0], "/v3/kv/put", {"key": b64(key), "value": b64(value)}, timeout_s=5.0)
    assert code == 200, body


@pytest.mark.parametrize("service", ["kvraft", "etcd"])
def test_three_members_that_know_only_a_token_form_one_cluster(tmp_path: Path, service: str) -> None:
    discovery = start_runtime(service, tmp_path / "discovery")
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        put(discovery, f"{PREFIX}/_config/size", "3")
        ports = {f"m{i}": (free_port(), free_port()) for i in range(4)}
        for name in ("m0", "m1", "m2"):
            processes[name] = start(tmp_path, discovery.endpoints, name, *ports[name])
        urls = [f"http://127.0.0.1:{ports[n][0]}" for n in ("m0", "m1", "m2")]

        def members() -> list[dict[str, object]]:
            for name, process in processes.items():
                assert process.poll() is None, (tmp_path / f"{name}.log").read_text()
            code, body = post(urls[2], "/v3/cluster/member/list", {}, timeout_s=2.0)
            return body.get("members", []) if code == 200 else []

        assert len(wait_until(lambda: len(members()) == 3 and members(), 90, what="the cluster of three")) == 3
        # (the member list answers from the start; a write waits for the first election)
        wait_until(lambda: post(urls[0], "/v3/kv/put", {"key": b64("k"), "value": b64("v")}, timeout_s=5.0)[0] == 200,
                   90, what="a write through the cluster")
        ids = {int(m["ID"]) for m in members()}
        assert ids == {member_id_for([f"http://127.0.0.1:{ports[n][1]}"], TOKEN) for n in ("m0", "m1", "m2")}

        # a fourth member with the same token: the cluster is full, it exits before writing anything
        fourth = start(tmp_path, discovery.endpoints, "m3", *ports["m3"])
        assert fourth.wait(60) == 1
        log = (tmp_path / "m3.log").read_text()
        assert "failed to join discovery cluster (discovery: cluster is full)" in log, log
        assert not (tmp_path / "m3.data" / "members.json").exists()

        # a restart does not ask the discovery service (it is gone) and rejoins its cluster
        discovery.stop()
        stop(processes["m1"])
        processes["m1"] = start(tmp_path, discovery.endpoints, "m1", *ports["m1"])
        wait_until(lambda: post(urls[1], "/v3/kv/range", {"key": b64("k")}, timeout_s=2.0)[0] == 200, 60,
                   what="m1 back without the discovery service")
        assert "--discovery-endpoints not asked" in (tmp_path / "m1.log").read_text()
    finally:
        for process in processes.values():
            stop(process)
        discovery.stop()


def test_a_token_without_a_size_fails_at_once(tmp_path: Path) -> None:
    discovery = start_runtime("kvraft", tmp_path / "discovery")
    try:
        process = start(tmp_path, discovery.endpoints, "m0", free_port(), free_port(), token="no-size")
        try:
            assert process.wait(60) == 1
        finally:
            stop(process)
        assert "failed to join discovery cluster (discovery: size key not found)" in (tmp_path / "m0.log").read_text()
    finally:
        discovery.stop()


@pytest.mark.parametrize(("argv", "message"), [
    (["--discovery-token", "t"], "both --discovery-token and --discovery-endpoints must be set"),
    (["--discovery-endpoints", "http://127.0.0.1:1"], "both --discovery-token and --discovery-endpoints must be set"),
    (["--discovery-token", "t", "--discovery-endpoints", "http://127.0.0.1:1", "--initial-cluster",
      "default=http://localhost:2380"], 'Choose one of "initial-cluster", "discovery", "discovery-endpoints"'),
    (["--discovery-token", "t", "--discovery-endpoints", "http://127.0.0.1:1", "--discovery-request-timeout", "5"],
     "--discovery-request-timeout"),
    (["--discovery-token", "t", "--discovery-endpoints", "http://127.0.0.1:1", "--discovery-cert", "c.pem"],
     "--discovery-cert and --discovery-key go together"),
])  # fmt: skip
def test_flags_are_checked(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        parse_config(argv, {})


def test_the_first_registered_make_the_cluster_and_a_late_one_finds_it_full() -> None:
    registry = Registry(TOKEN)
    for rev, name in ((7, "c"), (3, "a"), (5, "b"), (9, "d")):
        registry.add(f"{PREFIX}/members/{name}", f"{name}=http://{name}:2380", rev)
    registry.add(f"{PREFIX}/members/a", "a=http://elsewhere:2380", 11)  # (a key seen again: kept as first seen)
    registry.add(f"{PREFIX}/members/e", "", 12)  # a deleted key's event: no peer info
    registry.add("/_etcd/registry/other/members/f", "f=http://f:2380", 2)  # another token's key
    assert registry.initial_cluster(3) == "a=http://a:2380,b=http://b:2380,c=http://c:2380"
    assert not registry.full_without(f"{PREFIX}/members/b", 3)
    assert registry.full_without(f"{PREFIX}/members/d", 3)
    assert registry.full_without(f"{PREFIX}/members/z", 3)
    assert not registry.full_without(f"{PREFIX}/members/z", 5)


def test_connection_failures_are_retried_with_etcds_backoff(tmp_path: Path) -> None:
    """No discovery service yet: the member waits 2, 4, 8 ... s (here recorded, not slept)
    and goes on once the service answers on the endpoint it was given."""
    client_port, peer_port = free_port(), free_port()
    service: list[subprocess.Popen[bytes]] = []
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 2:  # the service comes up during the second wait
            service.append(subprocess.Popen(
                [sys.executable, "-m", "kvraft.server.main", "--name", "d", "--data-dir", str(tmp_path / "d.data"),
                 "--listen-client-urls", f"http://127.0.0.1:{client_port}",
                 "--advertise-client-urls", f"http://127.0.0.1:{client_port}",
                 "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
                 "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL))
            url = f"http://127.0.0.1:{client_port}"
            wait_until(lambda: post(url, "/v3/kv/put", {"key": b64(f"{PREFIX}/_config/size"), "value": b64("1")},
                                    timeout_s=2.0)[0] == 200, 60, what="the discovery service")

    async def scenario() -> str:
        client = Client([f"http://127.0.0.1:{client_port}"], dial_timeout_s=0.5, request_timeout_s=1.0)
        try:
            return await join_cluster(client, TOKEN, 0xABC, "m0=http://127.0.0.1:2380", sleep=sleep)
        finally:
            await client.close()

    try:
        assert asyncio.run(scenario()) == "m0=http://127.0.0.1:2380"
    finally:
        for process in service:
            stop(process)
    assert waits == [2.0, 4.0]


class _Service:
    """The discovery service in memory: a key space with revisions, whose first watch fails
    as compacted (the service compacted past the member's listing) and whose second sees
    another member register."""

    def __init__(self) -> None:
        self.revision = 1
        self.kvs: dict[str, tuple[str, int, int]] = {f"{PREFIX}/_config/size": ("2", 1, 1)}
        self.is_open = False
        self.watches = 0

    async def open(self) -> None:
        self.is_open = True

    def _put(self, key: str, value: str) -> None:
        self.revision += 1
        created = self.kvs[key][1] if key in self.kvs else self.revision
        self.kvs[key] = (value, created, self.revision)

    def _kv(self, key: str) -> SimpleNamespace:
        value, created, modified = self.kvs[key]
        return SimpleNamespace(key=key.encode(), value=value.encode(), create_revision=created, mod_revision=modified)

    async def get(self, key: str, prefix: bool = False) -> SimpleNamespace:
        keys = sorted(k for k in self.kvs if (k.startswith(key) if prefix else k == key))
        return SimpleNamespace(kvs=[self._kv(k) for k in keys], header=SimpleNamespace(revision=self.revision))

    async def put(self, key: str, value: str) -> None:
        self._put(key, value)

    def watch(self, key: str, prefix: bool, start_revision: int) -> _Watch:
        self.watches += 1
        if self.watches == 1:
            return _Watch(WatchCompactedError(start_revision + 5, start_revision))
        self._put(f"{PREFIX}/members/b2", "m1=http://127.0.0.1:2381")
        return _Watch([SimpleNamespace(events=[SimpleNamespace(kv=self._kv(f"{PREFIX}/members/b2"))])])


class _Watch:
    def __init__(self, answer: Exception | list[SimpleNamespace]) -> None:
        self.answer = answer

    def __aiter__(self) -> _Watch:
        return self

    async def __anext__(self) -> SimpleNamespace:
        if isinstance(self.answer, Exception):
            raise self.answer
        if not self.answer:
            raise StopAsyncIteration
        return self.answer.pop(0)

    async def close(self) -> None:
        return None


def test_a_compacted_watch_lists_again() -> None:
    service = _Service()
    cluster = asyncio.run(join_cluster(service, TOKEN, 0xA1, "m0=http://127.0.0.1:2380"))  # type: ignore[arg-type]
    assert cluster == "m0=http://127.0.0.1:2380,m1=http://127.0.0.1:2381"
    assert service.watches == 2


def test_the_discovery_client_takes_etcds_client_flags(tmp_path: Path) -> None:
    from kvraft.server.v3discovery import discovery_client

    base = ["--data-dir", str(tmp_path / "d"), "--discovery-token", "t"]
    plain = discovery_client(parse_config([*base, "--discovery-endpoints", "10.0.0.1:2379,http://10.0.0.2:2379"], {}))
    transport = plain._transport
    assert transport.endpoints == ["http://10.0.0.1:2379", "http://10.0.0.2:2379"] and transport.tls is None
    assert (transport.dial_timeout_s, transport.request_timeout_s) == (2.0, 5.0)  # etcd's defaults
    secure = discovery_client(parse_config([
        *base, "--discovery-endpoints", "10.0.0.1:2379", "--discovery-insecure-transport=false",
        "--discovery-cacert", "ca.crt", "--discovery-cert", "c.crt", "--discovery-key", "c.key",
        "--discovery-user", "root:pw", "--discovery-request-timeout", "10s", "--discovery-dial-timeout", "500ms",
    ], {}))._transport
    assert secure.endpoints == ["https://10.0.0.1:2379"]
    assert secure.tls is not None and (secure.tls.ca_file, secure.tls.cert_file, secure.tls.key_file) == \
        ("ca.crt", "c.crt", "c.key")
    assert (secure.user, secure.password, secure.request_timeout_s, secure.dial_timeout_s) == ("root", "pw", 10.0, 0.5)
    with_password = discovery_client(parse_config([*base, "--discovery-endpoints", "10.0.0.1:2379",
                                                   "--discovery-user", "root", "--discovery-password", "s3"], {}))
    assert (with_password._transport.user, with_password._transport.password) == ("root", "s3")
    with pytest.raises(ConfigError, match="--discovery-user root: no password"):
        discovery_client(parse_config([*base, "--discovery-endpoints", "10.0.0.1:2379", "--discovery-user", "root"],
                                      {}))


def test_members_register_with_a_tls_discovery_service_that_wants_a_user(tmp_path: Path) -> None:
    """The discovery client's TLS and auth flags against a service that asks for both: a
    client certificate from its CA (``--client-cert-auth``) and a user (auth enabled; the
    certificate's CN, ``joiner``, is no user, so only ``--discovery-user`` gets in). A member
    that does not trust the service's CA keeps retrying and says why."""
    from kvraft.client import SyncClient, TLSConfig
    from kvraft.server.local import LocalCluster
    from tests.server.test_tls import FAST_FLAGS, make_certs, wait_for

    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    pki = tmp_path / "pki"
    make_certs(pki, "m0=127.0.0.1", clients=("joiner",))
    service = LocalCluster(1, tmp_path / "service", extra_args=FAST_FLAGS)
    host = service.members["m0"]
    host.client_url = host.client_url.replace("http://", "https://")
    host.extra = ["--cert-file", str(pki / "m0.crt"), "--key-file", str(pki / "m0.key"),
                  "--trusted-ca-file", str(pki / "ca.crt"), "--client-cert-auth"]
    processes: dict[str, subprocess.Popen[bytes]] = {}
    tls = TLSConfig(str(pki / "ca.crt"), str(pki / "joiner.crt"), str(pki / "joiner.key"))
    try:
        service.start_member("m0", service.initial_cluster(), "new")

        def ready() -> bool:
            with SyncClient([host.client_url], tls=tls, request_timeout_s=5.0) as client:
                client.put(f"{PREFIX}/_config/size", "3")
            return True

        wait_for(ready, what="the discovery service over TLS")
        with SyncClient([host.client_url], tls=tls, request_timeout_s=10.0) as client:
            client.user_add("root", "pw")
            client.user_grant_role("root", "root")
            client.auth_enable()
        flags = ("--discovery-insecure-transport=false", "--discovery-cacert", str(pki / "ca.crt"),
                 "--discovery-cert", str(pki / "joiner.crt"), "--discovery-key", str(pki / "joiner.key"),
                 "--discovery-user", "root:pw")
        ports = {f"m{i}": (free_port(), free_port()) for i in range(4)}
        for name in ("m0", "m1", "m2"):
            processes[name] = start(tmp_path, [host.client_url], name, *ports[name], extra=flags)
        untrusting = tuple(f for f in flags if f not in ("--discovery-cacert", str(pki / "ca.crt")))
        processes["m3"] = start(tmp_path, [host.client_url], "m3", *ports["m3"], token="other", extra=untrusting)
        url = f"http://127.0.0.1:{ports['m2'][0]}"

        def members() -> list[dict[str, object]]:
            for name, process in processes.items():
                assert process.poll() is None, (tmp_path / f"{name}.log").read_text()
            code, body = post(url, "/v3/cluster/member/list", {}, timeout_s=2.0)
            return body.get("members", []) if code == 200 else []

        wait_until(lambda: len(members()) == 3, 90, what="the cluster of three, registered over TLS as root")
        log = (tmp_path / "m3.log").read_text()
        assert "retry connecting to discovery service" in log and "certificate verify failed" in log, log[-2000:]
        assert not (tmp_path / "m3.data" / "members.json").exists()
    finally:
        for process in processes.values():
            stop(process)
        service.stop()

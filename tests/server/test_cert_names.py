"""--peer-cert-allowed-cn, --peer-cert-allowed-hostname and --client-cert-allowed-hostname
(kvraft/server/cert_names.py): the name rules alone, then real members: a member whose peer
certificate has another CN is kept out of the cluster by both ends, and a client certificate
not valid for the allowed hostname is refused on the client and https metrics URLs."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from kvraft.client import EndpointError, SyncClient, TLSConfig
from kvraft.server.cert_names import CertRule, common_name, san_quick, san_refusal, valid_for
from kvraft.server.config import ConfigError, parse_config
from kvraft.server.local import LocalCluster, free_port
from tests.server.test_tls import FAST_FLAGS, make_certs, wait_for

CERT = {"subject": ((("organizationName", "kvraft"),), (("commonName", "m1"),)),
        "subjectAltName": (("DNS", "m1"), ("DNS", "*.kv.example"), ("IP Address", "10.0.0.1"),
                           ("IP Address", "2001:DB8:0:0:0:0:0:1\n"))}


@pytest.mark.parametrize("host, ok", [
    ("m1", True), ("M1", True), ("a.kv.example", True), ("kv.example", False), ("a.b.kv.example", False),
    ("10.0.0.1", True), ("10.0.0.2", False), ("2001:db8::1", True), ("[2001:db8::1]", True), ("m2", False),
])
def test_valid_for_follows_gos_rules(host: str, ok: bool) -> None:
    assert valid_for(CERT, host) is ok


def test_the_cn_is_not_a_hostname_and_rules_judge_only_certificates() -> None:
    assert common_name(CERT) == "m1"
    assert not valid_for({"subject": ((("commonName", "m1"),),)}, "m1")  # Go >= 1.15: SANs only
    assert CertRule("peer", allowed_cn="m1").refusal(CERT) == ""
    assert "CN 'm1' is not the allowed CN 'etcd-peer'" in CertRule("peer", allowed_cn="etcd-peer").refusal(CERT)
    assert "not valid for the allowed hostname 'm2'" in CertRule("client", allowed_hostname="m2").refusal(CERT)
    assert CertRule("client", allowed_hostname="m2").refusal(None) == ""  # no certificate: not this rule's
    assert CertRule("peer").refusal(CERT) == "" and not CertRule("peer")


@pytest.mark.parametrize("argv, message", [
    (["--peer-cert-allowed-cn", "a", "--peer-cert-allowed-hostname", "b"], "mutually exclusive"),
    (["--peer-cert-allowed-cn", "a"], "need --peer-trusted-ca-file"),
    (["--client-cert-allowed-hostname", "a"], "needs --trusted-ca-file"),
])
def test_flags_are_checked(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config([*argv, "--data-dir", "/nonexistent/d"])


needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def _https(cluster: LocalCluster, peers: bool = True) -> None:
    for member in cluster.members.values():
        member.client_url = member.client_url.replace("http://", "https://")
        if peers:
            member.peer_url = member.peer_url.replace("http://", "https://")


def _reads(url: str, tls: TLSConfig) -> bool:
    try:
        with SyncClient([url], tls=tls, request_timeout_s=3.0) as client:
            client.get("x")
        return True
    except (EndpointError, OSError):
        return False


@needs_openssl
def test_a_member_with_another_peer_cn_is_kept_out(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    # "peer" is the CN the cluster allows; m0 and m1 both present that certificate, m2 its own
    make_certs(pki, "peer=127.0.0.1", "m2=127.0.0.1", clients=("admin",))
    cluster = LocalCluster(3, tmp_path / "members", extra_args=FAST_FLAGS)
    _https(cluster)
    for name, member in cluster.members.items():
        cert = "m2" if name == "m2" else "peer"
        member.extra = [
            "--cert-file", str(pki / f"{cert}.crt"), "--key-file", str(pki / f"{cert}.key"),
            "--trusted-ca-file", str(pki / "ca.crt"),
            "--peer-cert-file", str(pki / f"{cert}-peer.crt"), "--peer-key-file", str(pki / f"{cert}-peer.key"),
            "--peer-trusted-ca-file", str(pki / "ca.crt"), "--peer-client-cert-auth", "--peer-cert-allowed-cn", "peer",
        ]  # fmt: skip
    tls = TLSConfig(str(pki / "ca.crt"), str(pki / "admin.crt"), str(pki / "admin.key"))
    try:
        initial = cluster.initial_cluster()
        for name in cluster.members:
            cluster.start_member(name, initial, "new")
        for name in ("m0", "m1"):
            wait_for(lambda name=name: _reads(cluster.url(name), tls), what=f"{name} serving")
        assert not _reads(cluster.url("m2"), tls)  # no leader ever reaches it
        refused = "peer: certificate CN 'm2' is not the allowed CN 'peer'"

        def both_ends_refused() -> bool:
            log = cluster.members["m0"].log_path.read_text()
            listener = any("rejected a peer connection" in line and refused in line for line in log.splitlines())
            dialer = any("rejected a peer connection" not in line and refused in line for line in log.splitlines())
            return listener and dialer

        wait_for(both_ends_refused, 30, what="m0's listener and dialer to refuse m2's certificate")
        assert "closed the connection without answering the hello" in cluster.members["m2"].log_path.read_text()
    finally:
        cluster.stop()


@needs_openssl
def test_a_client_certificate_not_valid_for_the_allowed_hostname_is_refused(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    make_certs(pki, "m0=127.0.0.1", "ops=127.0.0.1", clients=("admin",))
    metrics = f"https://127.0.0.1:{free_port()}"
    cluster = LocalCluster(1, tmp_path / "members", extra_args=FAST_FLAGS)
    _https(cluster, peers=False)
    cluster.members["m0"].extra = [
        "--cert-file", str(pki / "m0.crt"), "--key-file", str(pki / "m0.key"), "--trusted-ca-file", str(pki / "ca.crt"),
        "--client-cert-auth", "--client-cert-allowed-hostname", "ops", "--listen-metrics-urls", metrics,
    ]  # fmt: skip
    ops = TLSConfig(str(pki / "ca.crt"), str(pki / "ops.crt"), str(pki / "ops.key"))  # SAN DNS:ops
    admin = TLSConfig(str(pki / "ca.crt"), str(pki / "admin.crt"), str(pki / "admin.key"))  # no SAN
    try:
        cluster.start_member("m0", cluster.initial_cluster(), "new")
        url = cluster.url("m0")
        wait_for(lambda: _reads(url, ops), what="m0 serving the allowed certificate")
        assert not _reads(url, admin)
        assert "is not valid for the allowed hostname 'ops'" in cluster.members["m0"].log_path.read_text()

        def metrics_status(cert: str) -> int:
            context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
            context.load_cert_chain(str(pki / f"{cert}.crt"), str(pki / f"{cert}.key"))
            try:
                with urllib.request.urlopen(metrics + "/health", context=context, timeout=10) as r:
                    return int(r.status)
            except urllib.error.HTTPError as exc:
                return exc.code

        assert metrics_status("ops") == 200
        assert metrics_status("admin") == 401
    finally:
        cluster.stop()


def _cert(*sans: tuple[str, str]) -> dict:  # type: ignore[type-arg]
    return {"subject": ((("commonName", "m2"),),), "subjectAltName": sans}


def _no_lookups(_name: str) -> list[str]:
    raise AssertionError("looked up a name it did not need")


def _failing(_name: str) -> list[str]:
    raise OSError("no such host")


@pytest.mark.parametrize("cert, host, want", [
    (_cert(), "10.0.0.9", ""),  # no SANs at all: nothing to compare (etcd)
    (_cert(("IP Address", "10.0.0.9")), "10.0.0.9", ""),
    (_cert(("IP Address", "10.0.0.9")), "::ffff:10.0.0.9", ""),  # a dual-stack listener's view of IPv4
    (_cert(("IP Address", "2001:DB8:0:0:0:0:0:1\n")), "2001:db8::1", ""),
    (_cert(("IP Address", "10.0.0.9"), ("IP Address", "10.0.0.8")), "127.0.0.1",
     "x509: certificate is valid for 10.0.0.9, 10.0.0.8, not 127.0.0.1"),
    (_cert(("IP Address", "10.0.0.9"), ("DNS", "m2")), "127.0.0.1", None),  # the names decide
    (_cert(("DNS", "m2")), "127.0.0.1", None),
])
def test_san_quick_decides_without_a_lookup_when_it_can(cert, host: str, want: str | None) -> None:
    assert san_quick(cert, host) == want
    if want is not None:
        assert san_refusal(cert, host, _no_lookups, _no_lookups) == want


def test_san_refusal_looks_the_address_up_and_the_names_down() -> None:
    cert = _cert(("DNS", "m2.kv.example"), ("DNS", "*.peers.example"))
    assert san_refusal(cert, "10.0.0.9", lambda _h: ["m2.kv.example."], _no_lookups) == ""  # PTR, trailing dot
    assert san_refusal(cert, "10.0.0.9", lambda _h: ["x.peers.example"], _no_lookups) == ""  # a wildcard's suffix
    assert san_refusal(cert, "10.0.0.9", _failing, lambda name: ["10.0.0.7", "10.0.0.9"]) == ""  # forward
    why = san_refusal(cert, "10.0.0.9", lambda _h: ["elsewhere.example"], lambda name: ["10.0.0.7"])
    assert why == 'tls: "10.0.0.9" does not match any of DNSNames ["m2.kv.example" "*.peers.example"]'
    why = san_refusal(cert, "10.0.0.9", _failing, _failing)
    assert why.endswith("(no such host)")


def _peer_cert_for(pki: Path, base: str, cn: str, san: str) -> None:
    """``base``.crt/.key signed by the test CA with exactly ``san`` (make-certs.sh always adds
    localhost and 127.0.0.1)."""
    ext = pki / f"{base}.ext"
    ext.write_text("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                   f"extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName={san}\n")
    subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(pki / f"{base}.key"), "-out", str(pki / f"{base}.csr"), "-subj", f"/O=kvraft/CN={cn}"],
                   check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", str(pki / f"{base}.csr"), "-CA", str(pki / "ca.crt"),
                    "-CAkey", str(pki / "ca.key"), "-CAcreateserial", "-out", str(pki / f"{base}.crt"), "-days", "2",
                    "-extfile", str(ext)], check=True, capture_output=True)


def _san_cluster(tmp_path: Path, skip: bool) -> LocalCluster:
    pki = tmp_path / "pki"
    make_certs(pki, "m0=127.0.0.1", "m1=127.0.0.1", "m2=127.0.0.1", clients=("admin",))
    _peer_cert_for(pki, "m2-elsewhere", "m2", "IP:10.9.9.9")  # valid, but for another address
    cluster = LocalCluster(3, tmp_path / "members", extra_args=FAST_FLAGS)
    _https(cluster)
    for name, member in cluster.members.items():
        peer = "m2-elsewhere" if name == "m2" else f"{name}-peer"
        member.extra = [
            "--cert-file", str(pki / f"{name}.crt"), "--key-file", str(pki / f"{name}.key"),
            "--trusted-ca-file", str(pki / "ca.crt"),
            "--peer-cert-file", str(pki / f"{peer}.crt"), "--peer-key-file", str(pki / f"{peer}.key"),
            "--peer-trusted-ca-file", str(pki / "ca.crt"), "--peer-client-cert-auth",
            *(["--experimental-peer-skip-client-san-verification"] if skip else []),
        ]  # fmt: skip
    initial = cluster.initial_cluster()
    for name in cluster.members:
        cluster.start_member(name, initial, "new")
    return cluster


@needs_openssl
def test_a_peer_certificate_for_another_address_is_refused_where_it_connects(tmp_path: Path) -> None:
    """m2's peer certificate is signed by the cluster's CA but names 10.9.9.9, and m2 connects
    from 127.0.0.1: m0 and m1 refuse its connections, as etcd does."""
    cluster = _san_cluster(tmp_path, skip=False)
    try:
        refused = "x509: certificate is valid for 10.9.9.9, not 127.0.0.1"
        for name in ("m0", "m1"):
            wait_for(lambda name=name: any("rejected a peer connection" in line and refused in line
                                           for line in cluster.members[name].log_path.read_text().splitlines()),
                     30, what=f"{name} to refuse m2's certificate")
    finally:
        cluster.stop()


@needs_openssl
def test_skip_client_san_verification_lets_that_peer_in(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    cluster = _san_cluster(tmp_path, skip=True)
    tls = TLSConfig(str(pki / "ca.crt"), str(pki / "admin.crt"), str(pki / "admin.key"))
    try:
        for name in cluster.members:
            wait_for(lambda name=name: _reads(cluster.url(name), tls), what=f"{name} serving")
        assert not [line for m in cluster.members.values() for line in m.log_path.read_text().splitlines()
                    if "rejected a peer connection" in line]
    finally:
        cluster.stop()

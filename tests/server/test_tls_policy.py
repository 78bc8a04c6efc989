"""--cipher-suites, --tls-min-version and --tls-max-version (kvraft/server/tls_policy.py):
checked at start, and honoured by the client-URL and peer contexts, shown with in-memory
handshakes against clients that offer one suite or one version."""

from __future__ import annotations

import shutil
import ssl
from pathlib import Path

import pytest

from kvraft.server.config import ConfigError, parse_config
from kvraft.server.tls import client_ssl_context, peer_ssl_contexts
from tests.server.test_crl import handshake, make_certs

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")

AES128 = "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pki = tmp_path_factory.mktemp("pki")
    make_certs(pki, "-c", "alice", "m0=127.0.0.1")
    return pki


def _argv(pki: Path, *extra: str) -> list[str]:
    return ["--listen-client-urls", "https://127.0.0.1:2379", "--advertise-client-urls", "https://127.0.0.1:2379",
            "--cert-file", str(pki / "m0.crt"), "--key-file", str(pki / "m0.key"),
            "--trusted-ca-file", str(pki / "ca.crt"), "--client-cert-auth",
            "--listen-peer-urls", "https://127.0.0.1:2380", "--initial-advertise-peer-urls", "https://127.0.0.1:2380",
            "--initial-cluster", "default=https://127.0.0.1:2380",
            "--peer-cert-file", str(pki / "m0-peer.crt"), "--peer-key-file", str(pki / "m0-peer.key"),
            "--peer-trusted-ca-file", str(pki / "ca.crt"), "--peer-client-cert-auth", *extra]


def _client(pki: Path, cipher: str | None = None, version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    context.load_cert_chain(str(pki / "alice.crt"), str(pki / "alice.key"))
    if cipher is not None:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers(cipher)
    if version is not None:
        context.minimum_version = context.maximum_version = version
    return context


def _server(pki: Path, *extra: str) -> ssl.SSLContext:
    context = client_ssl_context(parse_config(_argv(pki, *extra)))
    assert context is not None
    return context


def test_a_cipher_suite_list_admits_only_its_suites_over_tls_12(pki: Path) -> None:
    server = _server(pki, "--cipher-suites", AES128)
    assert handshake(server, _client(pki, "ECDHE-ECDSA-AES128-GCM-SHA256"))[0] is None
    refused, _ = handshake(server, _client(pki, "ECDHE-ECDSA-AES256-GCM-SHA384"))
    assert refused is not None and "cipher" in refused.lower()
    # without the flag the same client gets in
    assert handshake(_server(pki), _client(pki, "ECDHE-ECDSA-AES256-GCM-SHA384"))[0] is None
    # TLS 1.3's suites are not governed by the list (as in Go)
    assert handshake(server, _client(pki, version=ssl.TLSVersion.TLSv1_3))[0] is None


def test_the_peer_contexts_take_the_list_too(pki: Path) -> None:
    listener, dialer = peer_ssl_contexts(parse_config(_argv(pki, "--cipher-suites", AES128,
                                                            "--tls-max-version", "TLS1.2")))
    assert isinstance(listener, ssl.SSLContext) and isinstance(dialer, ssl.SSLContext)
    names = {c["name"] for c in dialer.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert names == {"ECDHE-ECDSA-AES128-GCM-SHA256"}
    assert listener.maximum_version == dialer.maximum_version == ssl.TLSVersion.TLSv1_2


def test_versions_bound_the_handshake(pki: Path) -> None:
    only13 = _server(pki, "--tls-min-version", "TLS1.3")
    assert handshake(only13, _client(pki, version=ssl.TLSVersion.TLSv1_3))[0] is None
    assert handshake(only13, _client(pki, version=ssl.TLSVersion.TLSv1_2))[0] is not None
    only12 = _server(pki, "--tls-max-version", "TLS1.2")
    assert handshake(only12, _client(pki, version=ssl.TLSVersion.TLSv1_2))[0] is None
    assert handshake(only12, _client(pki, version=ssl.TLSVersion.TLSv1_3))[0] is not None


@pytest.mark.parametrize("extra, message", [
    (["--cipher-suites", "TLS_BOGUS"], "not a TLS 1.2 cipher suite name"),
    (["--cipher-suites", "TLS_RSA_WITH_RC4_128_SHA"], "RC4 is not available"),
    (["--cipher-suites", AES128, "--tls-min-version", "TLS1.3"], "cannot be configured when only TLS1.3"),
    (["--tls-min-version", "TLS1.1"], "is not TLS1.2 or TLS1.3"),
    (["--tls-min-version", "TLS1.3", "--tls-max-version", "TLS1.2"], "is below --tls-min-version"),
])
def test_bad_policies_are_refused_at_start(pki: Path, extra: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(_argv(pki, *extra))


def test_the_yaml_form_takes_a_list(pki: Path, tmp_path: Path) -> None:
    path = tmp_path / "kvraft.yaml"
    path.write_text(f"cipher-suites: [{AES128}, TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384]\n")
    config = parse_config(["--config-file", str(path), *_argv(pki)])
    assert config.cipher_suites == [AES128, "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"]

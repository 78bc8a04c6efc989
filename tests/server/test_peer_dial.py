"""What the peer dialer accepts of the listener it dials (kvraft.server.tls.peer_ssl_contexts),
as etcd's peer transport: the chain against ``--peer-trusted-ca-file`` (the system's CAs
without one), the certificate against the host dialed (or the ``--discovery-srv`` domain, etcd's
``ServerName``), nothing with ``--peer-auto-tls``'s self-signed certificate. Handshakes in
memory (tests/server/test_crl.py's ``handshake``)."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from kvraft.server.tls import peer_ssl_contexts, self_signed
from tests.server.test_cert_names import _peer_cert_for
from tests.server.test_crl import handshake, make_certs

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")

DOMAIN = "kv.example"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """m0 and m1 for 127.0.0.1; m2 for 127.0.0.1 and the domain; ``elsewhere`` for 10.9.9.9."""
    pki = tmp_path_factory.mktemp("pki")
    make_certs(pki, "m0=127.0.0.1", "m1=127.0.0.1", f"m2=127.0.0.1,{DOMAIN}")
    _peer_cert_for(pki, "elsewhere", "m9", "IP:10.9.9.9")
    return pki


def config(pki: Path, cert: str, **flags: Any) -> SimpleNamespace:
    values = {
        "peer_cert_file": str(pki / f"{cert}.crt"), "peer_key_file": str(pki / f"{cert}.key"),
        "peer_trusted_ca_file": str(pki / "ca.crt"), "peer_client_cert_auth": False, "peer_crl_file": "",
        "peer_auto_tls": False, "data_dir": str(pki / "unused.data"), "discovery_srv": "",
        "peer_skip_client_san_verification": False, "peer_client_cert_file": "",
        "peer_client_key_file": "",
        "cipher_suites": [], "tls_min_version": "TLS1.2", "tls_max_version": "",
    }  # fmt: skip
    values.update(flags)
    return SimpleNamespace(**values)


def dial(listener: SimpleNamespace, dialer: SimpleNamespace, host: str = "127.0.0.1") -> str | None:
    """None when ``dialer``'s member dials ``listener``'s at ``host`` and both ends agree."""
    server, _ = peer_ssl_contexts(listener)
    _, client = peer_ssl_contexts(dialer)
    assert server is not None and client is not None and not callable(client)
    return handshake(server, client, hostname=host)[0]


def test_the_dialer_checks_the_listener_names_the_host_it_dials(pki: Path) -> None:
    """etcd's dialer verifies the certificate for the URL's host (Go's default): a certificate
    of the cluster's CA made for another address is refused. kvraft did not check the name."""
    assert dial(config(pki, "m1-peer"), config(pki, "m0-peer")) is None
    refused = dial(config(pki, "elsewhere"), config(pki, "m0-peer"))
    assert refused is not None and refused.startswith("client: IP address mismatch")
    assert dial(config(pki, "m1-peer"), config(pki, "m0-peer"), host="10.9.9.9") is not None


def test_skip_client_san_verification_skips_the_dialers_name_check_too(pki: Path) -> None:
    """kvraft sends to a peer only on connections it dials: the flag that lets a peer whose
    certificate does not name its address in must let it be reached as well."""
    skip = {"peer_skip_client_san_verification": True}
    assert dial(config(pki, "elsewhere", **skip), config(pki, "m0-peer", **skip)) is None


def test_without_a_peer_ca_the_system_cas_verify(pki: Path) -> None:
    """No ``--peer-trusted-ca-file``: etcd verifies with the system's CAs, which do not know a
    lab's own CA. kvraft accepted any certificate."""
    refused = dial(config(pki, "m1-peer"), config(pki, "m0-peer", peer_trusted_ca_file=""))
    assert refused == "client: unable to get local issuer certificate"


def test_auto_tls_peers_do_not_verify_each_other(tmp_path: Path) -> None:
    """``--peer-auto-tls``: self-signed, no CA: the cluster secret alone authenticates peers."""
    members = []
    for name in ("a", "b"):
        data = tmp_path / f"{name}.data"
        cert, key = self_signed(data / "fixtures" / "peer", ["127.0.0.1"])
        members.append(SimpleNamespace(**{
            **vars(config(tmp_path, "x", peer_trusted_ca_file="", peer_auto_tls=True, data_dir=str(data))),
            "peer_cert_file": cert, "peer_key_file": key}))
    assert dial(members[1], members[0]) is None
    given = SimpleNamespace(**{**vars(members[0]), "data_dir": str(tmp_path / "other.data")})
    assert dial(members[1], given) == "client: self-signed certificate"  # a certificate given, not made


def test_members_found_through_srv_records_check_the_domain(pki: Path) -> None:
    """``--discovery-srv``: the certificate must name the domain (etcd sets the peer TLS
    ``ServerName`` to it), whatever host the record's target is."""
    srv = {"discovery_srv": DOMAIN}
    assert dial(config(pki, "m2-peer"), config(pki, "m0-peer", **srv)) is None
    refused = dial(config(pki, "m1-peer"), config(pki, "m0-peer", **srv))
    assert refused is not None and refused.startswith("client: Hostname mismatch")

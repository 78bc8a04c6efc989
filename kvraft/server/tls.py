"""TLS for the client listener and the peer transport, from etcd's flags.

Client side (``--cert-file``, ``--key-file``, ``--trusted-ca-file``, ``--client-cert-auth``):
every ``https://`` URL in ``--listen-client-urls`` serves TLS with that certificate; with
``--client-cert-auth`` a client must present a certificate signed by ``--trusted-ca-file``
(the handshake fails otherwise). ``http://`` URLs in the same list stay plain, as in etcd.

Peer side (the ``--peer-`` forms): see ``peer_ssl_contexts``. The HMAC handshake of the peer
transport runs inside TLS, so a peer needs both the cluster secret and a trusted certificate.
The dialer checks the listener as etcd's peer transport does (Go's TLS client): the chain
against ``--peer-trusted-ca-file`` or, without one, the system's CAs; the certificate for the
host dialed, or for the ``--discovery-srv`` domain (etcd's ``ServerName``).

``--client-crl-file`` / ``--peer-crl-file``: certificates a CRL lists are refused, on the client
and metrics URLs, the peer listener and (unlike etcd, which checks only what it accepts) the
peer dialer too; the file is read again when it changes (kvraft.server.crl).

``--auto-tls`` / ``--peer-auto-tls``: when no certificate is given, a self-signed one is
made once (with the ``openssl`` command) under ``<data-dir>/fixtures/client`` or
``.../peer`` and reused on restart. As in etcd, peers using auto TLS do not verify each
other's certificate (there is no CA), and ``--client-cert-auth`` needs a real CA.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kvraft.server.crl import CRLContexts
from kvraft.server.tls_policy import new_context
from kvraft.tlsname import NamedContext

__all__ = ["AutoTLSError", "DialContext", "apply_auto_tls", "client_ssl_context", "peer_ssl_contexts", "self_signed"]

DialContext = ssl.SSLContext | Callable[[], ssl.SSLContext]
"""A dialer's context, or (with a CRL) what to ask for the current one before each dial."""

log = logging.getLogger("kvraft.tls")


class AutoTLSError(RuntimeError):
    """The self-signed certificate for ``--auto-tls`` could not be made."""


def client_ssl_context(config: Any) -> ssl.SSLContext | None:
    """The server context for ``https://`` client URLs, or None when no certificate is set."""
    if not config.cert_file:
        return None

    def build(crl: str) -> ssl.SSLContext:
        context = new_context(ssl.PROTOCOL_TLS_SERVER, config)
        context.load_cert_chain(config.cert_file, config.key_file or None)
        if config.client_cert_auth:
            # A certificate offered must verify; a client without one is let through the
            # handshake and then refused unless its request carries a scoped token
            # (kvraft.server.api.gate.client_cert_middleware): the ranks of a job have no key.
            context.load_verify_locations(config.trusted_ca_file)
            context.verify_mode = ssl.CERT_OPTIONAL
        elif config.trusted_ca_file:
            # etcd: a CA without --client-cert-auth verifies a certificate a client offers
            context.load_verify_locations(config.trusted_ca_file)
            context.verify_mode = ssl.CERT_OPTIONAL
        _load_crl(context, crl)
        return context

    if not config.client_crl_file:
        return build("")
    return CRLContexts("--client-crl-file", config.client_crl_file, "client URLs", build).serving()


def peer_ssl_contexts(config: Any) -> tuple[ssl.SSLContext | None, DialContext | None]:
    """``(server, client)`` contexts, or ``(None, None)`` when no peer certificate is set.
    With ``--peer-client-cert-auth`` the listener requires a certificate signed by
    ``--peer-trusted-ca-file``. The dialer verifies the listener's chain against that CA (the
    system's CAs without one) and its name (above); with ``--peer-auto-tls``'s own certificate
    it verifies nothing. With ``--peer-crl-file`` both check the CRL, and the client is a
    callable giving the context for the next dial."""
    if not config.peer_cert_file:
        return None, None

    def build_server(crl: str) -> ssl.SSLContext:
        server = new_context(ssl.PROTOCOL_TLS_SERVER, config)
        server.load_cert_chain(config.peer_cert_file, config.peer_key_file or None)
        if config.peer_trusted_ca_file and config.peer_client_cert_auth:
            server.load_verify_locations(config.peer_trusted_ca_file)
            server.verify_mode = ssl.CERT_REQUIRED
            _load_crl(server, crl)
        return server

    def build_client(crl: str) -> ssl.SSLContext:
        client = new_context(ssl.PROTOCOL_TLS_CLIENT, config, NamedContext)
        assert isinstance(client, NamedContext)
        if config.peer_client_cert_file:  # (etcd 3.5: a client certificate of its own)
            client.load_cert_chain(config.peer_client_cert_file, config.peer_client_key_file or None)
        else:
            client.load_cert_chain(config.peer_cert_file, config.peer_key_file or None)
        if _made_by_auto_tls(config):  # no CA to verify with: the cluster secret alone (etcd: InsecureSkipVerify)
            client.check_hostname = False
            client.verify_mode = ssl.CERT_NONE
            return client
        if config.peer_trusted_ca_file:
            client.load_verify_locations(config.peer_trusted_ca_file)
        else:
            client.load_default_certs(ssl.Purpose.SERVER_AUTH)  # etcd: the system's CAs
        client.verify_mode = ssl.CERT_REQUIRED
        # the peer's certificate must name the host dialed, or the --discovery-srv domain as
        # etcd's ServerName; with --experimental-peer-skip-client-san-verification neither
        # (kvraft sends to a peer only on connections it dials, so a peer whose certificate
        # does not name its address would be cut off, where etcd still reaches it through
        # the streams the peer dials)
        client.check_hostname = not config.peer_skip_client_san_verification
        client.server_name = config.discovery_srv or ""
        _load_crl(client, crl)
        return client

    path = config.peer_crl_file
    if not path:
        return build_server(""), build_client("")
    server = CRLContexts("--peer-crl-file", path, "peer listener", build_server).serving()
    return server, CRLContexts("--peer-crl-file", path, "peer dialer", build_client).current


def _fixtures(config: Any, kind: str) -> Path:
    """Where ``--auto-tls`` (``client``) or ``--peer-auto-tls`` (``peer``) keeps its certificate."""
    return Path(config.data_dir) / "fixtures" / kind


def _made_by_auto_tls(config: Any) -> bool:
    """Whether the peer certificate is the one ``--peer-auto-tls`` made (self-signed)."""
    return bool(config.peer_auto_tls) and Path(config.peer_cert_file) == _fixtures(config, "peer") / "cert.pem"


def _load_crl(context: ssl.SSLContext, crl: str) -> None:
    """Check the certificate the peer presents against ``crl`` (its issuer's CRL must be there)."""
    if crl:
        context.load_verify_locations(cafile=crl)
        context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF


def apply_auto_tls(config: Any) -> None:
    """Fill ``cert_file``/``key_file`` (and the peer pair) with self-signed certificates when
    ``--auto-tls`` (``--peer-auto-tls``) is on and no certificate was given."""
    if config.auto_tls and not config.cert_file:
        hosts = [urlsplit(u).hostname or "" for u in (*config.listen_client_urls, *config.listen_client_http_urls,
                                                        *config.advertise_client_urls)]
        config.cert_file, config.key_file = self_signed(_fixtures(config, "client"), hosts, config.self_signed_cert_validity)
    if config.peer_auto_tls and not config.peer_cert_file:
        hosts = [urlsplit(u).hostname or "" for u in (*config.listen_peer_urls, *config.initial_advertise_peer_urls)]
        config.peer_cert_file, config.peer_key_file = self_signed(_fixtures(config, "peer"), hosts,
                                                                  config.self_signed_cert_validity)


def self_signed(directory: Path, hosts: list[str], years: int = 1) -> tuple[str, str]:
    """``(cert.pem, key.pem)`` in ``directory``: made once (EC P-256, valid ``years``
    (``--self-signed-cert-validity``), the hosts as subject alternative names), reused as long
    as both files exist."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    if cert.exists() and key.exists():
        return str(cert), str(key)
    openssl = shutil.which("openssl")
    if openssl is None:
        raise AutoTLSError("--auto-tls/--peer-auto-tls need the openssl command; give --cert-file/--key-file instead")
    directory.mkdir(parents=True, exist_ok=True)
    names = sorted({h for h in hosts if h} | {"localhost"})
    san = ",".join(("IP:" if _is_ip(h) else "DNS:") + h for h in names)
    tmp_cert, tmp_key = directory / "cert.pem.tmp", directory / "key.pem.tmp"
    command = [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
               "-keyout", str(tmp_key), "-out", str(tmp_cert), "-days", str(365 * years), "-subj", "/O=kvraft autogenerated",
               "-addext", f"subjectAltName={san}", "-addext", "extendedKeyUsage=serverAuth,clientAuth"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise AutoTLSError(f"openssl could not make a self-signed certificate: {result.stderr.strip()[-300:]}")
    os.chmod(tmp_key, 0o600)
    os.replace(tmp_key, key)
    os.replace(tmp_cert, cert)
    log.info("made a self-signed certificate for %s in %s", ",".join(names), directory)
    return str(cert), str(key)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True

"""Mutual TLS for the peer transport, from etcd's ``--peer-*`` flags."""

from __future__ import annotations

import ssl
from typing import Any

__all__ = ["peer_ssl_contexts"]


def peer_ssl_contexts(config: Any) -> tuple[ssl.SSLContext | None, ssl.SSLContext | None]:
    """``(server, client)`` contexts, or ``(None, None)`` when no peer certificate is set.
    With ``--peer-client-cert-auth`` the listener requires a certificate signed by
    ``--peer-trusted-ca-file``; the dialer always verifies the listener against that CA."""
    if not config.peer_cert_file:
        return None, None
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(config.peer_cert_file, config.peer_key_file or None)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_cert_chain(config.peer_cert_file, config.peer_key_file or None)
    client.check_hostname = False  # peers are addressed by IP in --initial-cluster
    if config.peer_trusted_ca_file:
        client.load_verify_locations(config.peer_trusted_ca_file)
        client.verify_mode = ssl.CERT_REQUIRED
        if config.peer_client_cert_auth:
            server.load_verify_locations(config.peer_trusted_ca_file)
            server.verify_mode = ssl.CERT_REQUIRED
    else:
        client.verify_mode = ssl.CERT_NONE
    return server, client

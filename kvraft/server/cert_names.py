"""Which verified certificates may connect, by name: etcd's ``--peer-cert-allowed-cn``,
``--peer-cert-allowed-hostname`` and ``--client-cert-allowed-hostname``.

One CA usually signs every machine's certificate (deploy/make-certs.sh: members, agents,
schedulers, admins), so "signed by the CA" alone lets an agent's client certificate through
the peer URLs' TLS. These flags narrow that, as etcd does after the chain verifies:

- allowed CN: the certificate's subject common name must be exactly that;
- allowed hostname: the certificate must be valid for that name, as Go's ``VerifyHostname``
  decides: an IP address matches an ``IP Address`` subject alternative name, a DNS name a
  ``DNS`` one (``*.`` matching one leftmost label); the CN is not consulted (Go >= 1.15).

For the peers, both ends check (etcd sets the rule on its listener's and its dialer's TLS
configuration); for the client URLs, only a client that offers a certificate is checked (a
client without one reaches the scoped-token path of ``--client-cert-auth``, or none at all).
A connection refused here is closed before a byte of it is read, and logged. CN and hostname
are exclusive for one side, as etcd's flags are.

``cert`` is the dict ``SSLObject.getpeercert()`` returns for a verified certificate; the
rules are pure and tested without a handshake.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

__all__ = ["CertRule", "common_name", "valid_for"]


def common_name(cert: dict[str, Any]) -> str:
    """The subject's last commonName ("" when there is none)."""
    found = ""
    for rdn in cert.get("subject", ()):
        for attr, value in rdn:
            if attr == "commonName":
                found = str(value)
    return found


def _dns_match(pattern: str, host: str) -> bool:
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern == host:
        return True
    if pattern.startswith("*.") and "." in host:
        return host.split(".", 1)[1] == pattern[2:] and bool(host.split(".", 1)[0])
    return False


def valid_for(cert: dict[str, Any], host: str) -> bool:
    """Whether ``cert`` names ``host`` in its subject alternative names (Go's rules)."""
    sans = cert.get("subjectAltName", ())
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return any(kind == "DNS" and _dns_match(str(value), host) for kind, value in sans)
    for kind, value in sans:
        if kind == "IP Address":
            try:
                if ipaddress.ip_address(str(value).strip()) == ip:
                    return True
            except ValueError:
                continue
    return False


@dataclass(frozen=True)
class CertRule:
    """``allowed_cn`` or ``allowed_hostname`` (at most one), for the side named ``what``."""

    what: str
    allowed_cn: str = ""
    allowed_hostname: str = ""

    def __bool__(self) -> bool:
        return bool(self.allowed_cn or self.allowed_hostname)

    def refusal(self, cert: dict[str, Any] | None) -> str:
        """Why ``cert`` may not connect ("" when it may, or when there is no rule). A
        connection without a certificate is not this rule's to judge: ""."""
        if not self or not cert:
            return ""
        if self.allowed_cn:
            cn = common_name(cert)
            return "" if cn == self.allowed_cn else \
                f"{self.what}: certificate CN {cn!r} is not the allowed CN {self.allowed_cn!r}"
        if valid_for(cert, self.allowed_hostname):
            return ""
        names = ", ".join(f"{k} {v}" for k, v in cert.get("subjectAltName", ())) or "no subject alternative names"
        return f"{self.what}: certificate is not valid for the allowed hostname {self.allowed_hostname!r} ({names})"

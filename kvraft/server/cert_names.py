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

The peer listener also checks where a certificate comes from (etcd's ``checkSAN``, on unless
``--experimental-peer-skip-client-san-verification``): a peer certificate that names addresses
or DNS names in its subject alternative names must name the address it connects from. An IP
SAN matches directly (``san_quick``, no lookup); otherwise a DNS SAN must match the address's
reverse lookup (``*.`` as a suffix) or resolve to it (``san_refusal``, with the lookups passed
in, so the rule is tested without a resolver and the member runs it off its loop). A
certificate with no SANs passes, as in etcd.

``cert`` is the dict ``SSLObject.getpeercert()`` returns for a verified certificate; the
rules are pure and tested without a handshake.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["CertRule", "common_name", "forward_lookup", "reverse_lookup", "san_quick", "san_refusal", "valid_for"]


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


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(str(text).strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # (a dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d)
    return ip


def _sans(cert: dict[str, Any], kind: str) -> list[str]:
    return [str(value).strip() for k, value in cert.get("subjectAltName", ()) if k == kind]


def san_quick(cert: dict[str, Any], host: str) -> str | None:
    """etcd's ``checkSAN`` as far as it goes without a lookup: "" when ``cert`` may connect
    from ``host`` (no SANs at all, or an IP SAN equal to it), Go's refusal when it names
    addresses only and not this one, None when its DNS names must be looked up."""
    ips, names = _sans(cert, "IP Address"), _sans(cert, "DNS")
    if not ips and not names:
        return ""
    if ips:
        remote = _ip(host)
        if remote is not None and any(_ip(ip) == remote for ip in ips):
            return ""
        if not names:
            return f"x509: certificate is valid for {', '.join(ips)}, not {host}"
    return None


def san_refusal(cert: dict[str, Any], host: str, reverse: Callable[[str], list[str]],
                forward: Callable[[str], list[str]]) -> str:
    """Why ``cert`` may not connect from ``host`` ("" when it may): ``san_quick``, then its
    DNS names against ``reverse(host)`` (names for an address) and ``forward(name)``
    (addresses for a name), as etcd's ``isHostInDNS``. A failed lookup is an ``OSError``; the
    last one is named in the refusal."""
    quick = san_quick(cert, host)
    if quick is not None:
        return quick
    dns = _sans(cert, "DNS")
    wildcards = [name[1:].lower() for name in dns if name.startswith("*.")]
    names = [name for name in dns if not name.startswith("*.")]
    error = ""
    try:
        for found in reverse(host):
            found = found.rstrip(".").lower()
            if any(found.endswith(suffix) for suffix in wildcards) or found in (n.lower() for n in names):
                return ""
    except OSError as exc:
        error = str(exc)
    remote = _ip(host)
    for name in names:
        try:
            addresses = forward(name)
        except OSError as exc:
            error = str(exc)
            continue
        if remote is not None and any(_ip(address) == remote for address in addresses):
            return ""
    quoted = " ".join(json.dumps(name) for name in dns)  # Go's %q of a []string
    return f"tls: {json.dumps(host)} does not match any of DNSNames [{quoted}]" + (f" ({error})" if error else "")


def reverse_lookup(host: str) -> list[str]:
    """The names the resolver has for an address (blocking: run it off the loop)."""
    name, aliases, _addresses = socket.gethostbyaddr(host)
    return [name, *aliases]


def forward_lookup(name: str) -> list[str]:
    """The addresses a name resolves to (blocking: run it off the loop)."""
    return [str(info[4][0]) for info in socket.getaddrinfo(name, None)]

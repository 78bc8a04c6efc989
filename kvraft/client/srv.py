"""DNS SRV discovery as etcd does it (its ``client/pkg/srv``), for the member and for kvctl.

A new member started with ``--discovery-srv DOMAIN`` takes its initial cluster from the SRV
records ``_etcd-server-ssl._tcp.DOMAIN`` (https peers) and ``_etcd-server._tcp.DOMAIN`` (http
peers); ``--discovery-srv-name NAME`` looks up ``_etcd-server-ssl-NAME._tcp`` and
``_etcd-server-NAME._tcp`` instead. Each record is a member; the one whose target and port
resolve to the address of one of this member's ``--initial-advertise-peer-urls`` is this
member (its ``--name``), the others are named ``0``, ``1``, ... (names do not matter: a new
member learns its peers' names when they publish them). ``kvctl -d DOMAIN`` takes its
endpoints from ``_etcd-client-ssl._tcp.DOMAIN`` and ``_etcd-client._tcp.DOMAIN`` the same way.

Lookups go to the system's resolver (``/etc/resolv.conf``; targets also through
``/etc/hosts``), or, when ``KVRAFT_DNS_SERVER`` names one (``IP[:port]``), to that DNS server
alone, targets' addresses included: a lab's own DNS, or the tests' (``kvraft.testing.dns``). The lookups are plain functions of a
``Resolver`` so that tests can give one that answers from a table.
"""

from __future__ import annotations

import ipaddress
import os
import random
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

if TYPE_CHECKING:  # (dnspython is imported when a lookup is made: 40 ms off every member's start)
    import dns.resolver

__all__ = [
    "DNS_SERVER_ENV",
    "DiscoveryError",
    "DNSResolver",
    "Resolver",
    "SRVRecord",
    "client_endpoints",
    "cluster_from_srv",
    "discover",
    "dns_cluster",
    "order_by_priority",
    "srv_service",
    "system_address",
]

DNS_SERVER_ENV = "KVRAFT_DNS_SERVER"
LOOKUP_TIMEOUT_S = 5.0
"""How long one lookup may take in all (Go's resolver: 5 s per try)."""


class DiscoveryError(Exception):
    """A lookup failed, or the records do not describe a cluster this member is in."""


@dataclass(frozen=True)
class SRVRecord:
    target: str
    """The host name as DNS gives it, with its trailing dot."""
    port: int
    priority: int = 0
    weight: int = 0


class Resolver(Protocol):
    def srv(self, name: str) -> list[SRVRecord]:
        """The SRV records of ``name`` (``_service._tcp.domain``) in the order to use them;
        ``DiscoveryError`` when there are none or the lookup failed."""
        ...

    def address(self, host: str) -> str:
        """One IP address of ``host`` (an IPv4 one when it has one, as Go's resolver picks);
        ``DiscoveryError`` when it has none."""
        ...


def srv_service(service: str, service_name: str, scheme: str) -> str:
    """etcd's ``GetSRVService``: ``etcd-server`` -> ``etcd-server-ssl`` for https, then
    ``-NAME`` for ``--discovery-srv-name NAME``."""
    if scheme == "https":
        service += "-ssl"
    return f"{service}-{service_name}" if service_name else service


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def cluster_from_srv(resolver: Resolver, scheme: str, service: str, name: str, domain: str,
                     advertise_peer_urls: Sequence[str]) -> list[str]:
    """etcd's ``GetCluster``: ``name=scheme://target:port`` per record of
    ``_service._tcp.domain``; the record at one of ``advertise_peer_urls``' addresses is named
    ``name``, the others ``0``, ``1``, ... A record whose target does not resolve is skipped;
    ``DiscoveryError`` when none is left, or the lookup failed."""
    mine: dict[tuple[str, int], str] = {}
    for url in advertise_peer_urls:
        parts = urlsplit(url)
        if parts.hostname is None or parts.port is None:
            raise DiscoveryError(f"--initial-advertise-peer-urls: {url!r} has no host:port")
        mine[resolver.address(parts.hostname), parts.port] = url
    srv_name = f"_{service}._tcp.{domain}"
    try:
        records = resolver.srv(srv_name)
    except DiscoveryError as exc:
        raise DiscoveryError(f"error querying DNS SRV records for _{service} {exc}") from None
    entries: list[str] = []
    last_error = ""
    temp_name = 0
    for record in records:
        try:
            key = resolver.address(record.target), record.port
        except DiscoveryError as exc:
            last_error = str(exc)
            continue
        own = mine.get(key)
        if own is not None:
            member = name
        else:
            member = str(temp_name)
            temp_name += 1
        url = f"{scheme}://{_host_port(record.target.rstrip('.'), record.port)}"
        if own is not None and urlsplit(own).scheme != scheme:
            last_error = (f"bootstrap at {url} from DNS for {service} has scheme mismatch with expected "
                          f"peer {own}")
            continue
        entries.append(f"{member}={url}")
    if not entries:
        raise DiscoveryError(f"error querying DNS SRV records for _{service} {last_error or 'no usable record'}")
    return entries


def dns_cluster(resolver: Resolver, name: str, domain: str, service_name: str,
                advertise_peer_urls: Sequence[str]) -> tuple[list[str], list[str]]:
    """etcd's ``GetDNSClusterNames``: the https records' members, then the http ones', and the
    errors of either lookup. Discovery failed only when no member came back."""
    entries: list[str] = []
    errors: list[str] = []
    for scheme in ("https", "http"):
        service = srv_service("etcd-server", service_name, scheme)
        try:
            entries += cluster_from_srv(resolver, scheme, service, name, domain, advertise_peer_urls)
        except DiscoveryError as exc:
            errors.append(str(exc))
    return entries, errors


def client_endpoints(resolver: Resolver, domain: str, service_name: str = "",
                     service: str = "etcd-client") -> list[str]:
    """etcd's ``GetClient``: ``https://target:port`` per ``_etcd-client-ssl._tcp`` record,
    then ``http://target:port`` per ``_etcd-client._tcp`` record (targets without their
    trailing dot); ``DiscoveryError`` only when both lookups fail."""
    endpoints: list[str] = []
    errors: list[str] = []
    for scheme in ("https", "http"):
        srv_name = f"_{srv_service(service, service_name, scheme)}._tcp.{domain}"
        try:
            records = resolver.srv(srv_name)
        except DiscoveryError as exc:
            errors.append(str(exc))
            continue
        endpoints += [f"{scheme}://{_host_port(r.target.rstrip('.'), r.port)}" for r in records]
    if len(errors) == 2:
        raise DiscoveryError(f"dns lookup errors: {errors[0]} and {errors[1]}")
    return endpoints


def discover(domain: str, service_name: str = "", *, insecure: bool = True,
             warn: Callable[[str], object] | None = None, resolver: Resolver | None = None) -> list[str]:
    """The client endpoints of ``domain`` as etcdctl finds them for ``-d`` (``GetClient``
    through the system's or ``$KVRAFT_DNS_SERVER``'s DNS). ``insecure=False`` (etcdctl's
    ``--insecure-discovery=false``) drops the http ones, telling ``warn``. An empty list means
    none was usable: use the configured endpoints. ``DiscoveryError`` when both lookups fail."""
    found = client_endpoints(resolver or DNSResolver(), domain, service_name)
    if insecure:
        return found
    kept = []
    for endpoint in found:
        if endpoint.startswith("http://"):
            if warn is not None:
                warn(f'ignoring discovered insecure endpoint "{endpoint}"')
            continue
        kept.append(endpoint)
    return kept


def system_address(host: str) -> str:
    """``host``'s address through the resolver configured now (``$KVRAFT_DNS_SERVER`` or the
    system's): for the rare comparison that needs one, without keeping a resolver."""
    return DNSResolver().address(host)


def order_by_priority(records: Sequence[SRVRecord], rng: random.Random) -> list[SRVRecord]:
    """RFC 2782's order, as Go's ``LookupSRV`` returns records: by priority, and within one
    priority a weighted random order (a record of weight 0 is picked least often)."""
    out: list[SRVRecord] = []
    for priority in sorted({r.priority for r in records}):
        group = sorted((r for r in records if r.priority == priority), key=lambda r: r.weight)
        while group:
            total = sum(r.weight for r in group)
            if total == 0:
                rng.shuffle(group)
                out += group
                break
            pick = rng.randint(0, total)
            running = 0
            for index, record in enumerate(group):
                running += record.weight
                if running >= pick:
                    out.append(group.pop(index))
                    break
    return out


def _ip_literal(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


class DNSResolver:
    """Lookups through dnspython: the system's configuration, or the DNS server ``server``
    (``host[:port]``; default ``$KVRAFT_DNS_SERVER``). Addresses come from that DNS server
    alone when one is named, else from the system's ``getaddrinfo`` (``/etc/hosts``, DNS)."""

    def __init__(self, server: str | None = None, rng: random.Random | None = None,
                 getaddrinfo: Callable[..., Any] = socket.getaddrinfo) -> None:
        import dns.resolver

        server = os.environ.get(DNS_SERVER_ENV, "") if server is None else server
        self.server = server
        self._rng = rng or random.Random()
        self._getaddrinfo = getaddrinfo
        if server:
            try:
                parts = urlsplit("//" + server)
                ip, port = _ip_literal(parts.hostname or ""), parts.port
            except ValueError:
                ip, port = None, None
            if ip is None:
                raise DiscoveryError(f"${DNS_SERVER_ENV}: {server!r} is not an IP address with an optional :port")
            self._dns: dns.resolver.Resolver | None = dns.resolver.Resolver(configure=False)
            self._dns.nameservers = [ip]
            self._dns.port = port or 53
        else:
            try:
                self._dns = dns.resolver.Resolver()
            except dns.resolver.NoResolverConfiguration:
                self._dns = None
        if self._dns is not None:
            self._dns.lifetime = LOOKUP_TIMEOUT_S

    def _where(self) -> str:
        if self._dns is None:
            return "no DNS server (no /etc/resolv.conf)"
        port = self._dns.port
        return ",".join(f"[{n}]:{port}" if ":" in str(n) else f"{n}:{port}" for n in self._dns.nameservers)

    def srv(self, name: str) -> list[SRVRecord]:
        import dns.exception
        import dns.resolver

        if self._dns is None:
            raise DiscoveryError(f"lookup {name}: {self._where()}")
        try:
            answer = self._dns.resolve(name, "SRV", search=False)
        except dns.resolver.NXDOMAIN:
            raise DiscoveryError(f"lookup {name} on {self._where()}: no such host") from None
        except dns.resolver.NoAnswer:
            raise DiscoveryError(f"lookup {name} on {self._where()}: no SRV records") from None
        except dns.exception.Timeout:
            raise DiscoveryError(f"lookup {name} on {self._where()}: i/o timeout") from None
        except dns.exception.DNSException as exc:
            raise DiscoveryError(f"lookup {name} on {self._where()}: {exc}") from None
        records = [SRVRecord(r.target.to_text(), r.port, r.priority, r.weight) for r in answer]
        return order_by_priority(records, self._rng)

    def address(self, host: str) -> str:
        import dns.exception

        literal = _ip_literal(host)
        if literal is not None:
            return literal
        if self.server and self._dns is not None:  # (only there: a test never asks the system's DNS)
            for rdtype in ("A", "AAAA"):
                try:
                    answer = self._dns.resolve(host if host.endswith(".") else host + ".", rdtype, search=False)
                except dns.exception.Timeout:
                    raise DiscoveryError(f"lookup {host.rstrip('.')} on {self._where()}: i/o timeout") from None
                except dns.exception.DNSException:
                    continue
                for rdata in answer:
                    return str(ipaddress.ip_address(rdata.to_text()))
            raise DiscoveryError(f"lookup {host.rstrip('.')} on {self._where()}: no such host")
        try:
            infos = self._getaddrinfo(host.rstrip(".") or host, None, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise DiscoveryError(f"lookup {host.rstrip('.')}: {getattr(exc, 'strerror', None) or exc}") from None
        addresses = [str(info[4][0]) for info in infos]
        if not addresses:
            raise DiscoveryError(f"lookup {host.rstrip('.')}: no address")
        v4 = [a for a in addresses if ":" not in a]
        return str(ipaddress.ip_address((v4 or addresses)[0].split("%")[0]))

"""``--discovery-srv``: a new member's initial cluster from DNS SRV records (kvraft/client/srv.py).

As etcd's ``PeerURLsMapAndToken``: only a member whose data dir does not hold its cluster yet
looks the records up (a restarted member knows its cluster; the records may have changed
since); the members found become ``--initial-cluster``, and this member must be among them
(its ``--initial-advertise-peer-urls`` resolve to one record's address). Every member that
reads the same records computes the same member ids from the same URLs, so they form one
cluster without any member naming another.
"""

from __future__ import annotations

import logging
from pathlib import Path

from kvraft.client.srv import DiscoveryError, DNSResolver, Resolver, dns_cluster
from kvraft.server.config import Config, ConfigError
from kvraft.urls import go_quote

__all__ = ["bootstrap_from_srv"]

log = logging.getLogger("kvraft.main")


def bootstrap_from_srv(config: Config, resolver: Resolver | None = None) -> list[str]:
    """Fill ``config.initial_cluster`` from the SRV records of ``config.discovery_srv`` and
    return its entries (none when there is nothing to look up). ``DiscoveryError`` when no
    record describes a member, or none is this one; ``ConfigError`` when the members found
    do not fit the other flags (their schemes, this member's advertised URLs)."""
    if not config.discovery_srv:
        return []
    if (Path(config.data_dir) / "members.json").exists():
        log.info("--discovery-srv %s not looked up: the data dir holds the cluster's members", config.discovery_srv)
        return []
    resolver = resolver or DNSResolver()
    entries, errors = dns_cluster(resolver, config.name, config.discovery_srv, config.discovery_srv_name,
                                  config.initial_advertise_peer_urls)
    for error in errors:
        log.warning("failed to resolve during SRV discovery: %s", error)
    if not entries:
        raise DiscoveryError(f"error setting up initial cluster: {errors[0] if errors else 'no SRV records'}")
    for entry in entries:
        log.info("got bootstrap from DNS for etcd-server: %s", entry)
    if not any(entry.partition("=")[0] == config.name for entry in entries):
        raise DiscoveryError(f"cannot find local etcd member {go_quote(config.name)} in SRV records "
                             f"({','.join(entries)}; --initial-advertise-peer-urls "
                             f"{','.join(config.initial_advertise_peer_urls)} resolve to none of them)")
    config.initial_cluster = ",".join(entries)
    try:
        config.check_advertise_matches_cluster(resolver.address)
        config.validate_peer_schemes()
    except ConfigError as exc:
        raise ConfigError(f"--discovery-srv {config.discovery_srv}: {exc}") from None
    return entries

"""``--discovery-token`` and ``--discovery-endpoints``: etcd 3.6's v3 discovery.

A cluster that already runs (etcd or kvraft: only its v3 KV API and watch are used) helps the
members of a new one find each other. The operator writes the new cluster's size once::

    kvctl --endpoints http://disc:2379 put /_etcd/registry/TOKEN/_config/size 3

and starts every member with ``--discovery-token TOKEN --discovery-endpoints http://disc:2379``
and no ``--initial-cluster``. A new member (nothing in its data dir yet), as etcd's
``v3discovery.JoinCluster``:

1. reads the size; none, or not a positive integer, is an error at once;
2. lists ``/_etcd/registry/TOKEN/members/``: when ``size`` members are there already and this
   member is not one of them, the cluster is full;
3. puts its own key, ``members/<member id in hex>``, with its value ``name=peerURL,...``;
4. lists again and watches the prefix until ``size`` members are registered. The members are
   ordered by their keys' create revisions, and the first ``size`` make ``--initial-cluster``.
   A member that is not among them (it registered too late) fails: the cluster is full.

Member ids are hashed from the peer URLs with the discovery token (etcd bootstraps with the
token as the cluster token), so every member computes the same ids from what it read. A
restarted member has its cluster in its data dir and does not look again; one that crashed
after registering finds its own key and goes on. Connection failures are retried for ever,
after 2, 4, 8 ... 256 s, as etcd does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from kvraft.client import Client, EndpointError, TLSConfig, UnavailableError, WatchCompactedError
from kvraft.client.srv import DiscoveryError
from kvraft.durations import parse_go_duration_s
from kvraft.server.config import Config, ConfigError, member_id_for

__all__ = ["DISCOVERY_PREFIX", "Registry", "bootstrap_from_discovery", "discovery_client", "join_cluster"]

log = logging.getLogger("kvraft.main")

DISCOVERY_PREFIX = "/_etcd/registry"
MAX_BACKOFF_EXPONENT = 8
"""Retries wait 2^n s, n at most this (256 s), as etcd's ``maxExponentialRetries``."""


class Registry:
    """The members registered under one token: key -> (create revision, ``name=url,...``)."""

    def __init__(self, token: str) -> None:
        self.prefix = f"{DISCOVERY_PREFIX}/{token}/members/"
        self.members: dict[str, tuple[int, str]] = {}

    def add(self, key: str, value: str, create_revision: int) -> None:
        key, value = key.strip(), value.strip()
        if not key.startswith(self.prefix):
            log.warning("discovery: invalid peer registry key %s", key)
        elif "=" not in value:  # (a deleted key's event has no value)
            log.warning("discovery: invalid peer info %r under %s", value, key)
        elif key not in self.members:
            self.members[key] = (create_revision, value)
            log.info("discovery: found peer %s: %s", key, value)

    def ordered(self) -> list[str]:
        return [key for key, _ in sorted(self.members.items(), key=lambda item: item[1][0])]

    def full_without(self, own_key: str, size: int) -> bool:
        """etcd's ``checkCluster``: ``size`` members come before this one (or it is absent)."""
        ordered = self.ordered()
        return own_key not in ordered[:size] and len(ordered) >= size

    def initial_cluster(self, size: int) -> str:
        return ",".join(self.members[key][1] for key in self.ordered()[:size])


async def _size(client: Client, token: str) -> int:
    got = await client.get(f"{DISCOVERY_PREFIX}/{token}/_config/size")
    if not got.kvs:
        raise DiscoveryError("failed to join discovery cluster (discovery: size key not found)")
    try:
        size = int(bytes(got.kvs[0].value).decode().strip())
    except ValueError:
        size = 0
    if size <= 0:
        raise DiscoveryError("failed to join discovery cluster (discovery: size key is bad)")
    return size


async def _check(client: Client, registry: Registry, token: str, own_key: str) -> tuple[int, int]:
    """(size, revision of the listing); ``DiscoveryError`` when the cluster is full."""
    if not client.is_open:  # (the service may not be up yet: reaching it is retried as the rest)
        await client.open()
    size = await _size(client, token)
    got = await client.get(registry.prefix, prefix=True)
    for kv in got.kvs:
        registry.add(bytes(kv.key).decode(errors="replace"), bytes(kv.value).decode(errors="replace"),
                     kv.create_revision)
    if registry.full_without(own_key, size):
        raise DiscoveryError("failed to join discovery cluster (discovery: cluster is full)")
    return size, got.header.revision


async def join_cluster(client: Client, token: str, member_id: int, own: str,
                       sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> str:
    """This member registered as ``own`` (``name=url,...``) under ``token``; the initial
    cluster (``--initial-cluster``'s format) once ``size`` members are registered."""
    registry = Registry(token)
    own_key = f"{registry.prefix}{member_id:x}"
    retries = 0

    async def retrying(step: str, action: Callable[[], Awaitable[Any]]) -> Any:
        nonlocal retries
        while True:
            try:
                result = await action()
            except (EndpointError, UnavailableError, TimeoutError, OSError) as exc:
                retries += 1
                backoff = float(2 ** min(retries, MAX_BACKOFF_EXPONENT))
                log.warning("retry connecting to discovery service (%s: %s); backoff %.0fs", step, exc, backoff)
                await sleep(backoff)
                continue
            retries = 0
            return result

    await retrying("cluster status check", lambda: _check(client, registry, token, own_key))
    await retrying("register member itself", lambda: client.put(own_key, own))
    log.info("discovery: registered %s as %s", own_key, own)
    size, revision = await retrying("cluster status check", lambda: _check(client, registry, token, own_key))
    while len(registry.members) < size:
        log.info("discovery: waiting for peers (%d of %d registered)", len(registry.members), size)
        try:
            watcher = client.watch(registry.prefix, prefix=True, start_revision=revision + 1)
            try:
                async for response in watcher:
                    for event in response.events:
                        registry.add(bytes(event.kv.key).decode(errors="replace"),
                                     bytes(event.kv.value).decode(errors="replace"), event.kv.create_revision)
                        revision = max(revision, event.kv.mod_revision)
                    if len(registry.members) >= size:
                        break
            finally:
                await watcher.close()
        except (EndpointError, UnavailableError, WatchCompactedError, TimeoutError, OSError) as exc:
            # (compacted: the service compacted past the listing; a new listing has a new revision)
            log.warning("discovery: the watch on %s failed (%s); listing again", registry.prefix, exc)
            size, revision = await retrying("cluster status check", lambda: _check(client, registry, token, own_key))
    if registry.full_without(own_key, size):  # (registered after the first `size`)
        raise DiscoveryError("failed to join discovery cluster (discovery: cluster is full)")
    return registry.initial_cluster(size)


def discovery_client(config: Config) -> Client:
    """The client of the discovery service, from the ``--discovery-*`` flags (etcd 3.6's)."""
    secure = not config.discovery_insecure_transport
    scheme = "https" if secure else "http"
    endpoints = [e if "://" in e else f"{scheme}://{e}" for e in config.discovery_endpoints]
    tls = None
    if secure or config.discovery_cacert or config.discovery_cert or config.discovery_insecure_skip_tls_verify:
        tls = TLSConfig(config.discovery_cacert or None, config.discovery_cert or None, config.discovery_key or None,
                        config.discovery_insecure_skip_tls_verify)
    user, password = None, None
    if config.discovery_user:
        user, sep, password = config.discovery_user.partition(":")
        if not sep:
            if not config.discovery_password:
                raise ConfigError(f"--discovery-user {user}: no password (give USER:PASSWORD or --discovery-password)")
            password = config.discovery_password
    return Client(endpoints, user=user, password=password, tls=tls,
                  dial_timeout_s=parse_go_duration_s(config.discovery_dial_timeout),
                  request_timeout_s=parse_go_duration_s(config.discovery_request_timeout),
                  keepalive_time_s=parse_go_duration_s(config.discovery_keepalive_time) or None,
                  keepalive_timeout_s=parse_go_duration_s(config.discovery_keepalive_timeout) or 6.0)


async def bootstrap_from_discovery(config: Config) -> str:
    """Fill ``config.initial_cluster`` through the discovery service and return it ("" when
    the data dir already holds the cluster: a restart does not look again)."""
    if not config.discovery_endpoints:
        return ""
    if (Path(config.data_dir) / "members.json").exists():
        log.info("--discovery-endpoints not asked: the data dir holds the cluster's members")
        return ""
    if config.initial_cluster_state != "new":
        raise ConfigError("--discovery-token bootstraps a new cluster: a member joining a running one takes "
                          "--initial-cluster and --initial-cluster-state existing")
    urls = sorted(config.initial_advertise_peer_urls)
    own = ",".join(f"{config.name}={url}" for url in urls)
    member_id = member_id_for(urls, config.discovery_token)
    log.info("bootstrapping through v3 discovery: token %s, endpoints %s, member %x",
             config.discovery_token, ",".join(config.discovery_endpoints), member_id)
    client = discovery_client(config)
    try:
        cluster = await join_cluster(client, config.discovery_token, member_id, own)
    finally:
        await client.close()
    log.info("discovery joined cluster successfully: %s", cluster)
    config.initial_cluster = cluster
    try:
        config.initial_members()
        config.check_advertise_matches_cluster()
        config.validate_peer_schemes()
    except ConfigError as exc:
        raise ConfigError(f"--discovery-token {config.discovery_token}: {exc}") from None
    return cluster

"""Joining an existing cluster: the members and this member's id, asked of the peers.

etcd's ``GetClusterFromRemotePeers`` and ``ValidateClusterAndAssignIDs``: a member started
with ``--initial-cluster-state existing`` on an empty data dir asks the members named in its
``--initial-cluster`` for the cluster (``transport.ask_cluster``: the peer handshake with no
id, so only a holder of the cluster key gets an answer) and takes its own id from the member
whose peer URLs are its ``--initial-advertise-peer-urls``. ``member add`` chose that id (a
hash of the URLs, the token and the time, as etcd's), so a member removed and added back at
the same URL is a new member with a new id, as in etcd's replace procedure.

It refuses to start, naming why, when the peers do not hold its cluster key (another
``--initial-cluster-token`` or ``--peer-secret-file``: before, it retried for ever), when no
member has its URLs (``member add`` was not run), and when ``--initial-cluster`` does not
list the cluster's members (etcd: "member count is unequal"; before, a founder left out was
never dialled until the log named it).

The answer's shape (``describe``): ``[cluster_id, applied_index, members, removed]`` with
``members`` as ``Member.to_wire`` and ``removed`` the ids removed. Of several answers the one
applied furthest wins (a follower may not have applied the ``member add`` yet).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from dataclasses import dataclass
from typing import Any

from kvraft.server.cert_names import CertRule
from kvraft.server.membership import Member
from kvraft.server.tls import DialContext
from kvraft.server.transport import NoAnswer, WrongKey, ask_cluster
from kvraft.urls import parse_peer_urls

__all__ = ["JoinError", "Joined", "RemoteCluster", "describe", "fetch_cluster", "match_members"]

log = logging.getLogger("kvraft.join")

JOIN_TIMEOUT_S = 30.0
"""How long the peers may stay unreachable before the member gives up (etcd asks once)."""
UNLISTED_GRACE_S = 3.0
"""How long answers without this member are waited past (the add still applying on the
members asked; the one that answered ``member add`` has applied it)."""
RETRY_S = 0.5


class JoinError(Exception):
    """The member cannot join: the message says why and what to do."""


@dataclass
class RemoteCluster:
    cluster_id: int
    applied_index: int
    members: list[Member]
    removed: set[int]
    source: str
    """The peer URL that answered."""

    @classmethod
    def from_wire(cls, body: Any, source: str) -> RemoteCluster:
        try:
            cluster_id, applied, members, removed = body
            return cls(int(cluster_id), int(applied), [Member.from_wire(m) for m in members],
                       {int(r) for r in removed}, source)
        except (TypeError, ValueError, IndexError) as exc:
            raise ValueError(f"{source}: not a kvraft member's description of the cluster ({exc!r})") from None

    def member_at(self, peer_urls: list[str]) -> Member | None:
        want = parse_peer_urls(peer_urls)
        return next((m for m in self.members if parse_peer_urls(m.peer_urls) == want), None)


@dataclass
class Joined:
    """What a joining member found: the cluster and its own id in it."""

    cluster: RemoteCluster
    member_id: int


def describe(cluster_id: int, applied_index: int, members: list[Member], removed: set[int]) -> list[Any]:
    """The answer a member gives a joining one (the module docstring's shape)."""
    return [cluster_id, applied_index, [m.to_wire() for m in members], sorted(removed)]


def match_members(initial: dict[str, list[str]], name: str, remote: RemoteCluster) -> dict[str, int]:
    """``--initial-cluster`` (name -> peer URLs) matched to the cluster's members by URL:
    name -> id. Raises ``JoinError`` naming what does not match (etcd's "member count is
    unequal", "unmatched member while checking PeerURLs")."""
    if remote.member_at(initial[name]) is None:
        raise _not_added(name, initial[name], remote)
    ids: dict[str, int] = {}
    unmatched = []
    for member_name, urls in initial.items():
        member = remote.member_at(urls)
        if member is None:
            unmatched.append(f"{member_name}={','.join(urls)}")
        else:
            ids[member_name] = member.member_id
    missing = [m for m in remote.members if m.member_id not in ids.values()]
    if unmatched or missing:
        parts = []
        if len(initial) != len(remote.members):
            parts.append(f"member count is unequal (--initial-cluster has {len(initial)}, the cluster {len(remote.members)})")
        if unmatched:
            parts.append(f"not members of the cluster: {', '.join(unmatched)}")
        if missing:
            listed = ", ".join(f"{m.name or '(unstarted)'}={','.join(m.peer_urls)}" for m in missing)
            parts.append(f"members missing from --initial-cluster: {listed}")
        raise JoinError(
            f"--initial-cluster does not match the cluster's members (as told by {remote.source}): {'; '.join(parts)}; "
            "use the --initial-cluster that 'kvctl member add' printed")
    return ids


def _not_added(name: str, urls: list[str], remote: RemoteCluster) -> JoinError:
    return JoinError(
        f"no member of the cluster has the peer URLs {','.join(urls)} (as told by {remote.source}): "
        f"add it first (kvctl member add {name} --peer-urls={','.join(urls)}) and start it with "
        "the --initial-cluster that command prints")


async def fetch_cluster(urls: list[str], name: str, own_urls: list[str], key: bytes, client_ssl: DialContext | None = None,
                        cert_rule: CertRule | None = None, timeout_s: float = JOIN_TIMEOUT_S,
                        grace_s: float = UNLISTED_GRACE_S) -> RemoteCluster | None:
    """Ask every peer URL at once, again every ``RETRY_S``, until one answer has a member
    at ``own_urls`` (the one applied furthest of those); ``JoinError`` when every peer
    answered with another key, when for ``grace_s`` every answer lacked this member, or when
    none answered in ``timeout_s``. None when the peers close without an answer (members of
    an older version: the caller computes the ids from the flags, as they do): every one, or
    for ``grace_s`` those reached while the others cannot be."""
    if not urls:
        raise JoinError("--initial-cluster names no other member to join through")
    start = time.monotonic()
    unlisted_since: float | None = None
    old_since: float | None = None
    errors: dict[str, str] = {}
    while True:
        answers = await asyncio.gather(*(_ask(url, key, client_ssl, cert_rule) for url in urls))
        remotes = [a for a in answers if isinstance(a, RemoteCluster)]
        listing = [r for r in remotes if r.member_at(own_urls) is not None]
        if listing:
            return max(listing, key=lambda r: r.applied_index)
        for url, answer in zip(urls, answers, strict=True):
            if not isinstance(answer, RemoteCluster):
                if errors.get(url) != str(answer):
                    log.warning("asking %s for the cluster to join: %s", url, answer)
                errors[url] = str(answer)
        now = time.monotonic()
        old = [a for a in answers if isinstance(a, NoAnswer)]
        if old and not remotes and not any(isinstance(a, WrongKey) for a in answers):
            # members of a version before the question (a rolling upgrade), the others not
            # reachable: that version's ``member add`` gave the id the old way, which the
            # caller falls back to (at once when all answered so; after the grace when some
            # are down, as one of a newer version might yet answer)
            old_since = now if old_since is None else old_since
            if len(old) == len(answers) or now - old_since >= grace_s:
                log.warning("the peers (%s) do not describe the cluster (a version before 2026-12-06?): taking the "
                            "ids from --initial-cluster, as that version did", ", ".join(urls))
                return None
        if all(isinstance(a, WrongKey) for a in answers):
            raise JoinError(
                f"the peers ({', '.join(urls)}) do not hold this member's cluster key: --initial-cluster-token "
                "(or --peer-secret-file) differs from the cluster's")
        if remotes:
            unlisted_since = now if unlisted_since is None else unlisted_since
            if now - unlisted_since >= grace_s:
                raise _not_added(name, own_urls, max(remotes, key=lambda r: r.applied_index))
        if now - start >= timeout_s:
            told = "; ".join(f"{url}: {why}" for url, why in errors.items())
            raise JoinError(f"cannot fetch the cluster from its peers in {timeout_s:g} s ({told})")
        await asyncio.sleep(RETRY_S)


async def _ask(url: str, key: bytes, client_ssl: DialContext | None,
               cert_rule: CertRule | None) -> RemoteCluster | WrongKey | NoAnswer | str:
    """The answer of one peer; a ``WrongKey`` or ``NoAnswer``, or any other failure as text."""
    try:
        return RemoteCluster.from_wire(await ask_cluster(url, key, client_ssl, cert_rule), url)
    except (WrongKey, NoAnswer) as exc:
        return exc
    except (OSError, TimeoutError, ValueError, ssl.SSLError) as exc:
        return str(exc) or repr(exc)

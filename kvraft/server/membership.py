"""The member registry: who is in the cluster, with names and URLs, as etcd reports it.

Raft knows only ids (voters and learners); this registry adds the names, peer URLs and
client URLs that ``cluster/member/*`` return and that the transport dials. It changes only
when an entry is applied (a conf change's context, or a ``publish`` entry in which a member
announces its name and client URLs), so every member holds the same registry at the same
applied index. It is saved atomically in the data directory and travels in snapshots.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kvraft.apply.errors import FailedPrecondition, InvalidArgument, NotFound
from kvraft.apply.ops import MemberOp
from kvraft.server.api.codec import Out
from kvraft.server.wal_dir import DataDirError
from kvraft.urls import parse_peer_urls

__all__ = ["Member", "Membership"]

log = logging.getLogger("kvraft.membership")


@dataclass
class Member:
    member_id: int
    name: str = ""
    peer_urls: list[str] = field(default_factory=list)
    client_urls: list[str] = field(default_factory=list)
    is_learner: bool = False

    def to_wire(self) -> list[Any]:
        return [self.member_id, self.name, self.peer_urls, self.client_urls, self.is_learner]

    @classmethod
    def from_wire(cls, wire: list[Any]) -> Member:
        return cls(int(wire[0]), str(wire[1]), list(wire[2]), list(wire[3]), bool(wire[4]))

    def encode(self, out: Out) -> dict[str, Any]:
        doc: dict[str, Any] = {"ID": out.i(self.member_id)}
        if self.name:
            doc["name"] = self.name
        if self.peer_urls:
            doc["peerURLs"] = list(self.peer_urls)
        if self.client_urls:
            doc["clientURLs"] = list(self.client_urls)
        if self.is_learner:
            doc["isLearner"] = True
        return doc


def check_peer_urls(urls: list[str]) -> list[str]:
    """The URLs trimmed and sorted, as etcd stores them (``kvraft.urls``); kvraft's transport
    dials only http and https peers with a host and a port in range."""
    try:
        clean = parse_peer_urls(urls)
        for url in clean:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.port is None:
                raise ValueError(url)
    except ValueError:
        raise InvalidArgument("etcdserver: given member URLs are invalid") from None
    return clean


class Membership:
    def __init__(self, path: Path | None = None) -> None:
        self.members: dict[int, Member] = {}
        self.removed: set[int] = set()
        self.guessed: set[int] = set()
        """Ids a member started with ``--initial-cluster-state existing`` took from its
        --initial-cluster (``guess_from_flags``: only when its peers do not describe the
        cluster, ``kvraft.server.join``) and its log has not yet named."""
        self.own_id = 0
        self.cluster_id = 0  # (for the log lines of ``apply``)
        self._path = path

    # -- queries --------------------------------------------------------------------------
    def get(self, member_id: int) -> Member | None:
        return self.members.get(member_id)

    def sorted_members(self) -> list[Member]:
        return [self.members[m] for m in sorted(self.members)]

    def learners(self) -> list[Member]:
        return [m for m in self.members.values() if m.is_learner]

    # -- validation before proposing (the leader re-checks at apply) ------------------------
    def check_add(self, peer_urls: list[str], is_learner: bool, max_learners: int) -> list[str]:
        """The URLs as they will be stored (``check_peer_urls``), or the error etcd answers."""
        peer_urls = check_peer_urls(peer_urls)
        taken = {u for m in self.members.values() for u in m.peer_urls}
        if taken & set(peer_urls):
            raise FailedPrecondition("etcdserver: Peer URLs already exists")
        if is_learner and len(self.learners()) >= max_learners:
            raise FailedPrecondition("etcdserver: too many learner members in cluster")
        return peer_urls

    def check_exists(self, member_id: int) -> Member:
        member = self.members.get(member_id)
        if member is None:
            if member_id in self.removed:
                raise NotFound("etcdserver: member not found")
            raise NotFound("etcdserver: member not found")
        return member

    def check_update(self, member_id: int, peer_urls: list[str]) -> list[str]:
        """The URLs as they will be stored (``check_peer_urls``), or the error etcd answers."""
        self.check_exists(member_id)
        peer_urls = check_peer_urls(peer_urls)
        taken = {u for m in self.members.values() if m.member_id != member_id for u in m.peer_urls}
        if taken & set(peer_urls):
            raise FailedPrecondition("etcdserver: Peer URLs already exists")
        return peer_urls

    def check_promote(self, member_id: int) -> Member:
        member = self.check_exists(member_id)
        if not member.is_learner:
            raise FailedPrecondition("etcdserver: can only promote a learner member")
        return member

    # -- changes (at apply time) ------------------------------------------------------------
    def guess_from_flags(self, own_id: int) -> None:
        """This registry was seeded from --initial-cluster on a member joining through peers
        that do not describe the cluster (a version before 2026-12-06, whose ``member add``
        hashes the URLs and the token, as the flags' ids are): the others' ids are guesses
        until the log names them. A founder's entry (``found``) or an ``add`` confirms one;
        when the entry adding this member applies, a guess still unconfirmed is no member
        (its URLs belong to a founder since moved)."""
        self.guessed = {m for m in self.members if m != own_id}
        self.save()

    def apply(self, op: MemberOp) -> None:
        member = self.members.get(op.member_id)
        if op.action == "found":  # a founder's bootstrap entry
            self.guessed.discard(op.member_id)
            if member is None and op.member_id not in self.removed:
                self.members[op.member_id] = member = Member(op.member_id, is_learner=op.is_learner)
            if member is not None:  # (etcd logs its bootstrap's conf changes the same way)
                self._log_added(member)
        elif op.action == "add":
            if op.member_id in self.removed:
                return
            self.guessed.discard(op.member_id)
            if op.member_id == self.own_id and self.guessed:
                for guess in self.guessed:
                    self.members.pop(guess, None)
                self.guessed = set()
            self.members[op.member_id] = member = Member(
                op.member_id, op.name, list(op.peer_urls), list(op.client_urls), op.is_learner
            )
            self._log_added(member)
        elif op.action == "remove":
            gone = self.members.pop(op.member_id, None)
            self.removed.add(op.member_id)
            self._log("removed member", {"removed-remote-peer-id": f"{op.member_id:x}",
                                         "removed-remote-peer-urls": gone.peer_urls if gone else [],
                                         "removed-remote-peer-is-learner": bool(gone and gone.is_learner)})
        elif op.action == "promote" and member is not None:
            member.is_learner = False
            self._log("promote member", {"promoted-member-id": f"{op.member_id:x}"})
        elif op.action == "update" and member is not None:
            member.peer_urls = list(op.peer_urls)
            self._log("updated member", {"updated-remote-peer-id": f"{op.member_id:x}",
                                         "updated-remote-peer-urls": list(op.peer_urls),
                                         "updated-remote-peer-is-learner": member.is_learner})
        elif op.action == "publish" and member is not None:
            member.name = op.name
            member.client_urls = list(op.client_urls)
        self.save()

    def _log_added(self, member: Member) -> None:
        self._log("added member", {"added-peer-id": f"{member.member_id:x}", "added-peer-peer-urls": member.peer_urls,
                                   "added-peer-is-learner": member.is_learner})

    def _log(self, msg: str, fields: dict[str, Any]) -> None:
        """etcd's line for an applied membership change (its ``RaftCluster``: "added member",
        "removed member", "promote member", "updated member"), on every member, at every
        replay of the entry too, as etcd's."""
        ids = {"cluster-id": f"{self.cluster_id:x}", "local-member-id": f"{self.own_id:x}"}
        log.info(msg, extra={"fields": {**ids, **fields}})

    # -- persistence ------------------------------------------------------------------------
    def to_wire(self) -> list[Any]:
        return [[m.to_wire() for m in self.sorted_members()], sorted(self.removed)]

    def restore(self, wire: list[Any]) -> None:
        self.members = {m.member_id: m for m in (Member.from_wire(w) for w in wire[0])}
        self.removed = set(wire[1])
        self.guessed = set()  # (a snapshot's registry is the cluster's)
        self.save()

    def save(self) -> None:
        if self._path is None:
            return
        tmp = self._path.with_suffix(".tmp")
        with open(tmp, "w") as handle:
            wire = self.to_wire()
            json.dump([*wire, sorted(self.guessed)] if self.guessed else wire, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self._path)

    def load(self) -> bool:
        if self._path is None or not self._path.exists():
            return False
        try:
            wire = json.loads(self._path.read_text())
            members = {m.member_id: m for m in (Member.from_wire(w) for w in wire[0])}
            removed = {int(r) for r in wire[1]}
            guessed = {int(g) for g in wire[2]} if len(wire) > 2 else set()
        except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
            raise DataDirError(
                f"{self._path}: unreadable ({exc!r}); it holds the cluster's members as the log last applied them: "
                "restore it, or restore this member from a snapshot (or remove it from the cluster and add it "
                "again with an empty data dir)") from None
        self.members, self.removed, self.guessed = members, removed, guessed
        return True

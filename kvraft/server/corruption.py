"""Corruption checks: members compare the hashes of their key-value history
(``hash_kv``, etcd's ``HashKV``) and refuse to go on with data that diverged.

Raft keeps every member's log the same; what it cannot see is a member whose store then
differs (a disk that flipped a bit under a valid checksum, a restore of the wrong backup,
an apply bug). Two checks catch it, as etcd's flags of the same names do:

- ``--experimental-initial-corrupt-check``: at start, before this member joins Raft or
  serves clients, it hashes its own store at its revision and asks every peer for the hash
  at that revision. A peer with the same compaction point and another hash is a
  divergence: the member refuses to start (``CorruptionError``, exit status 1) rather than
  serve data no other member has. Peers that are down, behind (not yet at the revision)
  or compacted past it are reported and skipped: the check can only compare what exists.
- ``--experimental-corrupt-check-time D``: every ``D`` the leader hashes its store, asks
  every peer for the hash at the same revision, confirms its own state with a ReadIndex
  round and hashes again. What etcd's leader checks, ``judge_round`` checks: a peer ahead
  of the leader (revision or compaction point), a peer with the leader's compaction point
  and another hash, the leader's own hash changing under it. Unlike etcd, which blames
  the first peer that differs, the members are grouped by hash: when a majority of the
  voters agree, everyone outside that group is named, the leader included; only when no
  hash has a majority is every peer that differs from the leader named. Each one named
  gets a CORRUPT alarm, replicated through Raft: from then on the cluster refuses every
  write with DataLoss "etcdserver: corrupt cluster" (``kvraft.apply.chain.CorruptApplier``)
  while reads go on, until an operator replaces the member and disarms the alarm
  (``kvctl alarm disarm``).

- ``--feature-gates=CompactHashCheck=true`` (etcd 3.5: ``--experimental-compact-hash-check-enabled``):
  every ``--compact-hash-check-time`` the leader takes the hashes its store recorded at its
  last compactions (``MVCCStore.compaction_hashes``: the hash at the compaction revision as
  the previous compaction point left it), newest first, skipping those already checked, and
  asks every peer for its hash at that revision; a peer answers with its own recorded hash,
  or hashes the revision if it has not compacted there yet. Peers with another previous
  compaction point (restarted since, so nothing recorded) or no answer are skipped. What
  ``judge_compact`` decides is etcd's: all equal on every peer ends the round (that revision
  and older ones count as checked); all equal on fewer moves on to the next older hash; a
  mismatch raises CORRUPT for every member outside the hash a majority shares, or, when no
  majority shares one, for member 0 (the whole cluster). Unlike the periodic check, it
  compares revisions the members have all passed, so a write load does not stop it.

The hashes travel on the peer connections (``wire.HASH_KV`` / ``HASH_KV_RESP``), so they
carry the peer transport's authentication and TLS. A peer hashes on a worker thread.
``judge_initial`` and ``judge_round`` are pure and tested on their own.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from kvraft.apply.chain import ACTIVATE, CORRUPT
from kvraft.apply.errors import EtcdError
from kvraft.apply.ops import AlarmOp
from kvraft.raft.types import StateRole
from kvraft.server import wire
from kvraft.storage.mvcc.errors import CompactedRevisionError, FutureRevisionError

__all__ = [
    "COMPACTED",
    "FUTURE",
    "UNREACHABLE",
    "CorruptionChecker",
    "CorruptionError",
    "LocalHash",
    "PeerHash",
    "judge_compact",
    "judge_initial",
    "judge_round",
]

log = logging.getLogger("kvraft.corruption")

FUTURE = "future revision"
"""A peer's answer: it has not reached the revision asked for yet (etcd's ErrFutureRev)."""
COMPACTED = "compacted"
"""A peer's answer: it compacted past the revision asked for (etcd's ErrCompacted)."""
UNREACHABLE = "no answer"
PEER_TIMEOUT_S = 5.0


class CorruptionError(RuntimeError):
    """This member's data differs from its peers' at the same revision."""


@dataclass(frozen=True, slots=True)
class LocalHash:
    hash: int
    revision: int
    compact_revision: int


@dataclass(frozen=True, slots=True)
class PeerHash:
    """A peer's answer for one revision: its current revision, its hash at the revision
    asked for and its compaction point, or ``error`` (``FUTURE``, ``COMPACTED``,
    ``UNREACHABLE`` or another error's text) and nothing else."""

    member_id: int
    revision: int = 0
    hash: int = 0
    compact_revision: int = 0
    error: str = ""


def judge_initial(local: LocalHash, peers: Iterable[PeerHash]) -> tuple[list[int], list[str]]:
    """The start-up check (etcd's ``CheckInitialHashKV``): the peers whose hash differs at
    the same compaction point (any one: do not start), and what could not be compared."""
    mismatched: list[int] = []
    notes: list[str] = []
    for peer in peers:
        name = f"{peer.member_id:x}"
        if peer.error == FUTURE:
            notes.append(f"peer {name} has not reached revision {local.revision}: cannot compare")
        elif peer.error == COMPACTED:
            notes.append(f"peer {name} compacted past revision {local.revision}: this member is behind")
        elif peer.error:
            notes.append(f"peer {name}: {peer.error}")
        elif peer.hash != local.hash:
            if peer.compact_revision == local.compact_revision:
                mismatched.append(peer.member_id)
            else:
                notes.append(
                    f"peer {name} compacted at {peer.compact_revision}, this member at {local.compact_revision}: "
                    "hashes not comparable"
                )
    return mismatched, notes


def judge_round(
    leader_id: int, before: LocalHash, after: LocalHash, applied: int, peers: Iterable[PeerHash], members: int
) -> list[tuple[int, str]]:
    """One periodic round on the leader: ``(member, reason)`` for every member to raise a
    CORRUPT alarm for. ``before`` is the leader's hash the peers were asked about,
    ``after`` its hash again once a ReadIndex round confirmed its state, ``applied`` its
    applied revision then (no peer may be past it), ``members`` the membership's size."""
    found: dict[int, str] = {}
    if (after.revision, after.compact_revision) == (before.revision, before.compact_revision) and (
        after.hash != before.hash
    ):
        found[leader_id] = f"the leader's hash at revision {before.revision} changed from {before.hash} to {after.hash}"
    newest = max(applied, after.revision)
    same: dict[int, int] = {leader_id: before.hash}
    for peer in peers:
        if peer.error:
            continue
        name = f"{peer.member_id:x}"
        if peer.revision > newest:
            found.setdefault(peer.member_id, f"peer {name} is at revision {peer.revision}, past the leader's {newest}")
        elif peer.compact_revision > after.compact_revision:
            found.setdefault(
                peer.member_id,
                f"peer {name} compacted at {peer.compact_revision}, past the leader's {after.compact_revision}",
            )
        elif peer.compact_revision == before.compact_revision:
            same[peer.member_id] = peer.hash
    top, top_count = Counter(same.values()).most_common(1)[0]
    majority = top_count * 2 > members
    for member_id, value in same.items():
        if majority and value != top:
            reason = f"hash {value} at revision {before.revision}; {top_count} of {members} members agree on {top}"
        elif not majority and value != before.hash:
            reason = f"hash {value} at revision {before.revision}, the leader's is {before.hash} (no majority agrees)"
        else:
            continue
        found.setdefault(member_id, reason)
    return sorted(found.items())


def judge_compact(leader_id: int, leader: LocalHash, peers: list[PeerHash]) -> tuple[bool, list[int], list[str]]:
    """One compaction hash compared (etcd's ``checkPeerHashes``): ``(done, alarms, notes)``.
    ``done``: every peer compared equal, or a mismatch found (then ``alarms`` names the
    members to raise CORRUPT for, ``[0]`` when no majority agrees); not done: some peers
    could not be compared, so the round goes on to the next older hash."""
    groups: dict[int, list[int]] = {leader.hash: [leader_id]}
    notes: list[str] = []
    compared = 0
    for peer in peers:
        name = f"{peer.member_id:x}"
        if peer.error:
            notes.append(f"peer {name}: {peer.error}")
        elif peer.compact_revision != leader.compact_revision:
            notes.append(f"the peer's CompactRevision {peer.compact_revision} doesn't match leader's "
                         f"CompactRevision {leader.compact_revision} (peer {name})")
        else:
            compared += 1
            groups.setdefault(peer.hash, []).append(peer.member_id)
    if len(groups) == 1:
        return compared == len(peers), [], notes
    quorum = (len(peers) + 1) // 2 + 1
    majority = next((value for value, members in groups.items() if len(members) >= quorum), None)
    if majority is None:
        return True, [0], notes
    return True, sorted(m for value, members in groups.items() if value != majority for m in members), notes


class CorruptionChecker:
    """A member's side of both checks: answers its peers' hash requests, asks its own."""

    def __init__(self, node: Any, timeout_s: float = PEER_TIMEOUT_S) -> None:
        self.node = node
        self.timeout_s = timeout_s
        self.rounds = 0
        self.alarms_raised = 0
        self.compact_rounds = 0
        self.compaction_hashes_checked = 0
        self.compaction_checked = 0
        """The newest compaction revision every member's hash agreed on (etcd's
        ``latestRevisionChecked``): the compact hash check starts above it."""
        self._next_id = 0
        self._waiting: dict[int, tuple[int, asyncio.Future[PeerHash]]] = {}
        self._serving: set[asyncio.Task[None]] = set()
        driver = node.driver
        inner = driver.on_frame

        def on_frame(source: int, kind: int, body: Any) -> None:
            if kind == wire.HASH_KV:
                self._serve(source, body)
            elif kind == wire.HASH_KV_RESP:
                self._answered(source, body)
            else:
                inner(source, kind, body)

        driver.on_frame = on_frame

    # -- a peer asked ---------------------------------------------------------------------
    def _serve(self, source: int, body: Any) -> None:
        request_id, revision = int(body[0]), int(body[1])  # (malformed: raises, the transport closes)
        task = asyncio.get_running_loop().create_task(self._answer(source, request_id, revision))
        self._serving.add(task)
        task.add_done_callback(self._serving.discard)

    async def _answer(self, source: int, request_id: int, revision: int) -> None:
        try:
            result = await self.node.hash_kv_result(revision)
            answer = [request_id, result.revision, result.hash, result.compact_revision, ""]
        except EtcdError as exc:
            text = str(exc)
            error = {CompactedRevisionError.message: COMPACTED, FutureRevisionError.message: FUTURE}.get(text, text)
            answer = [request_id, self.node.state.revision(), 0, 0, error]
        self.node.transport.send_frame(source, wire.HASH_KV_RESP, answer)

    def _answered(self, source: int, body: Any) -> None:
        request_id = int(body[0])
        waiting = self._waiting.get(request_id)
        if waiting is None or waiting[0] != source or waiting[1].done():
            return  # answered after we gave up, or not by whom we asked
        waiting[1].set_result(PeerHash(source, int(body[1]), int(body[2]), int(body[3]), str(body[4])))

    # -- asking ---------------------------------------------------------------------------
    async def peer_hashes(self, revision: int) -> list[PeerHash]:
        """Every other member's answer for ``revision`` (``UNREACHABLE`` after the timeout)."""
        loop = asyncio.get_running_loop()
        asked: list[tuple[int, int, asyncio.Future[PeerHash]]] = []
        for member_id in sorted(self.node.membership.members):
            if member_id == self.node.member_id:
                continue
            self._next_id += 1
            future: asyncio.Future[PeerHash] = loop.create_future()
            self._waiting[self._next_id] = (member_id, future)
            asked.append((self._next_id, member_id, future))
            self.node.transport.send_frame(member_id, wire.HASH_KV, [self._next_id, revision])
        try:
            if asked:
                await asyncio.wait([f for _, _, f in asked], timeout=self.timeout_s)
        finally:
            for request_id, _, _ in asked:
                self._waiting.pop(request_id, None)
        return [f.result() if f.done() else PeerHash(m, error=UNREACHABLE) for _, m, f in asked]

    async def own_hash(self) -> LocalHash:
        result = await self.node.hash_kv_result(0)
        return LocalHash(result.hash, result.hash_revision, result.compact_revision)

    async def initial_check(self) -> None:
        """etcd's ``--experimental-initial-corrupt-check``: raise ``CorruptionError`` if a
        peer at the same compaction point hashes this member's revision differently."""
        local = await self.own_hash()
        log.info("initial corruption check: revision %d, hash %d", local.revision, local.hash)
        peers = await self.peer_hashes(local.revision)
        mismatched, notes = judge_initial(local, peers)
        for note in notes:
            log.warning("initial corruption check: %s", note)
        if mismatched:
            names = ", ".join(f"{m:x}" for m in mismatched)
            raise CorruptionError(
                f"{self.node.member_id:x} found data inconsistency with peers ({names}) at revision {local.revision}: "
                "refusing to start (replace this member's data: remove it, wipe its data dir, add it again)"
            )
        log.info("initial corruption check passed: %d of %d peers compared", len(peers) - len(notes), len(peers))

    async def check_round(self) -> list[tuple[int, str]]:
        """One leader round; raises the CORRUPT alarms it finds (and returns them)."""
        self.rounds += 1
        before = await self.own_hash()
        peers = await self.peer_hashes(before.revision)
        await self.node.driver.read_barrier()
        after = await self.own_hash()
        members = len(self.node.membership.members)
        found = judge_round(self.node.member_id, before, after, self.node.state.revision(), peers, members)
        for member_id, reason in found:
            log.error("corruption check: member %x: %s; raising the CORRUPT alarm", member_id, reason)
            self.alarms_raised += 1
            await self.node.driver.propose(AlarmOp(ACTIVATE, member_id, CORRUPT))
        return found

    async def run(self, interval_s: float) -> None:
        """etcd's ``--corrupt-check-time``: a round every ``interval_s`` while this member
        leads."""
        await self._while_leading(interval_s, self.check_round, "corruption check")

    async def _while_leading(self, interval_s: float, round_: Callable[[], Awaitable[object]], what: str) -> None:
        log.info("%s every %.1f s while leading", what, interval_s)
        while True:
            await asyncio.sleep(interval_s)
            if self.node.driver.role != StateRole.LEADER:
                continue
            try:
                await round_()
            except (TimeoutError, EtcdError) as exc:
                log.warning("%s round failed: %r", what, exc)

    async def compact_hash_round(self) -> list[int]:
        """One compact hash check on the leader (etcd's ``CompactHashCheck``); raises the
        CORRUPT alarms it finds (and returns the members, 0 for the whole cluster)."""
        self.compact_rounds += 1
        recorded = [h for h in self.node.state.store.compaction_hashes() if h.hash_revision > self.compaction_checked]
        for index, mine in enumerate(reversed(recorded)):
            peers = await self.peer_hashes(mine.hash_revision)
            if not peers:
                continue
            leader = LocalHash(mine.hash, mine.hash_revision, mine.compact_revision)
            done, alarms, notes = judge_compact(self.node.member_id, leader, peers)
            for note in notes:
                log.warning("compaction hash check at revision %d: skipped %s", mine.hash_revision, note)
            if not done:
                log.warning("skipped revision %d in compaction hash check; was not able to check all peers",
                            mine.hash_revision)
                continue
            if not alarms:
                self.compaction_checked = max(self.compaction_checked, mine.hash_revision)
                self.compaction_hashes_checked += 1
                log.info("successfully checked hash on whole cluster: revision %d (compact revision %d), %d peers, "
                         "%d of %d hashes checked", mine.hash_revision, mine.compact_revision, len(peers),
                         index + 1, len(recorded))
            for member_id in alarms:
                log.error("detected compaction hash mismatch at revision %d (leader's hash %d): %s; raising the "
                          "CORRUPT alarm", mine.hash_revision, mine.hash,
                          "no majority agrees, so for the whole cluster (member 0)" if member_id == 0
                          else f"member {member_id:x} differs from the majority")
                self.alarms_raised += 1
                await self.node.driver.propose(AlarmOp(ACTIVATE, member_id, CORRUPT))
            return alarms
        return []

    async def run_compact(self, interval_s: float) -> None:
        """etcd's compact hash monitor: ``compact_hash_round`` every ``interval_s`` while
        this member leads."""
        await self._while_leading(interval_s, self.compact_hash_round, "compaction hash check")

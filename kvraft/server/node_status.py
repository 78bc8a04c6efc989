"""Status, hashes, defragmentation, snapshots and metrics of a ``Node``."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from kvraft.durations import DurationHistogram
from kvraft.raft.types import NONE, StateRole
from kvraft.server.api.maintenance import alarm_text
from kvraft.server.api.misc import API_VERSION

if TYPE_CHECKING:
    from kvraft.apply.state_machine import StateMachine
    from kvraft.raft.rawnode import RawNode
    from kvraft.server.corruption import CorruptionChecker
    from kvraft.server.driver import NodeDriver
    from kvraft.server.transport import PeerTransport
    from kvraft.storage.mvcc.types import HashKVResult
    from kvraft.storage.raft_log import LmdbLogStorage
    from kvraft.storage.wal import WalLogStorage

__all__ = ["MemberCounters", "NodeStatusMixin"]

_HASH_BUCKETS_S = tuple(0.01 * 2**i for i in range(15))  # etcd's: 10 ms to 163.84 s


class MemberCounters:
    """etcd's server-level figures a member keeps for ``/metrics``: health checks answered,
    learners promoted here, and how long hashes took (``etcd_mvcc_hash_duration_seconds``
    for a whole-state hash, ``_hash_rev_`` for a hash at a revision: a client's HashKV or a
    peer's, for the corruption checks)."""

    def __init__(self) -> None:
        self.health_success = 0
        self.health_failures = 0
        self.checks: dict[tuple[str, str], bool] = {}
        """The last result of each /livez or /readyz check: (type, name) -> passed."""
        self.checks_total: dict[tuple[str, str, str], int] = {}
        """(type, name, "success" or "error") -> how many."""
        self.learner_promotions = 0
        self.hash_seconds = DurationHistogram(_HASH_BUCKETS_S)
        self.hash_rev_seconds = DurationHistogram(_HASH_BUCKETS_S)

    def record_check(self, kind: str, name: str, passed: bool) -> None:
        """A /livez or /readyz check ran (etcd_server_healthcheck, _healthchecks_total)."""
        self.checks[(kind, name)] = passed
        key = (kind, name, "success" if passed else "error")
        self.checks_total[key] = self.checks_total.get(key, 0) + 1


class NodeStatusMixin:
    member_id: int
    driver: NodeDriver
    raw: RawNode
    state: StateMachine
    transport: PeerTransport
    corruption: CorruptionChecker
    raft_log: LmdbLogStorage | WalLogStorage
    counters: MemberCounters

    async def status(self) -> dict[str, Any]:
        status = self.raw.status()
        size, in_use = self.state.db_sizes()
        return {
            "revision": self.state.revision(),
            "version": API_VERSION,
            "dbSize": size,
            "dbSizeInUse": in_use,
            "leader": self.driver.leader,
            "raftIndex": status.commit,
            "raftTerm": status.term,
            "raftAppliedIndex": self.driver.applied.applied,
            "isLearner": self.member_id in status.conf_state.learners,
            "errors": self.status_errors(),
        }

    def status_errors(self) -> list[str]:
        """etcd's status ``errors``: "no leader" while none is known, then every alarm raised."""
        errors = ["etcdserver: no leader"] if self.driver.leader == NONE else []
        return errors + [alarm_text(member_id, alarm) for member_id, alarm in self.state.alarms()]

    async def hash(self) -> tuple[int, int]:
        with self.counters.hash_seconds.timer():
            return self.state.revision(), self.state.hash_all()

    async def hash_kv(self, revision: int) -> tuple[int, int, int]:
        result = await self.hash_kv_result(revision)
        return self.state.revision(), result.hash, result.compact_revision

    async def hash_kv_result(self, revision: int) -> HashKVResult:
        """The store's hash at ``revision`` (0: the revision applied now), computed on a
        worker thread (it reads every record up to the revision; the event loop goes on
        serving). What is applied but held for the next group commit is committed first:
        the worker reads the disk, and must find the revision there. A revision asked for
        by number answers the hash a compaction recorded there, if any; 0 is always the
        live hash (etcd's ``HashByRev(0)``: the periodic check's own hash, whose compaction
        point must be the newest, or a peer without the record looks compacted past it)."""
        self.state.commit()
        recorded = revision > 0
        if revision <= 0:
            revision = self.state.revision()
        loop = asyncio.get_running_loop()
        with self.counters.hash_rev_seconds.timer():
            return await loop.run_in_executor(None, self.state.hash_kv_result, revision, recorded)

    async def defragment(self) -> None:
        """``maintenance/defragment``: the copy runs in a worker thread, so that the event
        loop (this member's requests, its applies, its heartbeats) goes on meanwhile and the
        writes wait only for the final switch (``kvraft.storage.defrag``). Until session 51 it
        ran on the loop: a 218 MB store stopped every write for the whole second of the copy.
        What the group commit holds is committed first, here, by the thread that holds it."""
        self.state.commit()
        await asyncio.get_running_loop().run_in_executor(None, self.state.store.defragment)

    def metrics(self) -> list[tuple[str, str, str, Any]]:
        driver, transport = self.driver.stats, self.transport.stats
        status = self.raw.status()
        size, in_use = self.state.db_sizes()
        return [
            ("kvraft_server_has_leader", "gauge", "Whether a leader is known.", int(self.driver.leader != 0)),
            ("kvraft_server_is_leader", "gauge", "Whether this member leads.", int(self.driver.role == StateRole.LEADER)),
            ("kvraft_server_term", "gauge", "Current Raft term.", status.term),
            ("kvraft_server_commit_index", "gauge", "Raft commit index.", status.commit),
            ("kvraft_server_applied_index", "gauge", "Applied index.", self.driver.applied.applied),
            ("kvraft_mvcc_revision", "gauge", "Current MVCC revision.", self.state.revision()),
            ("kvraft_mvcc_db_size_bytes", "gauge", "Backend file size.", size),
            ("kvraft_mvcc_db_size_in_use_bytes", "gauge", "Backend bytes in use.", in_use),
            ("kvraft_driver_readies_total", "counter", "Ready values handled.", driver.readies),
            ("kvraft_driver_syncs_total", "counter", "Durable log commits (group commits).", driver.syncs),
            ("kvraft_driver_entries_persisted_total", "counter", "Log entries written.", driver.entries_persisted),
            ("kvraft_driver_entries_applied_total", "counter", "Entries applied.", driver.entries_applied),
            ("kvraft_driver_proposals_forwarded_total", "counter", "Proposals forwarded to the leader.", driver.proposals_forwarded),
            ("kvraft_driver_proposals_reforwarded_total", "counter",
             "Forwarded proposals that never left this member (the leader's connection down, or a new leader) and "
             "were proposed again.", driver.proposals_reforwarded),
            ("kvraft_driver_proposals_reproposed_total", "counter",
             "This member's proposals lost to a leader change (handed to a leader in a term that can no longer "
             "commit them) and proposed again.", driver.proposals_reproposed),
            ("kvraft_driver_forwards_dropped_total", "counter",
             "Proposals a peer forwarded for a term in which this member does not lead, dropped (the peer proposes "
             "them again).", driver.forwards_dropped),
            ("kvraft_sessions_writes_applied_total", "counter",
             "Numbered writes (Kvraft-Request-Id) applied: their first copy.", self.state.sessions.applied),
            ("kvraft_sessions_duplicates_total", "counter",
             "Copies of numbered writes answered from the table, not applied again.", self.state.sessions.duplicates),
            ("kvraft_sessions_expired_total", "counter",
             "Clients dropped from the table after 10 minutes without a numbered write.", self.state.sessions.expired),
            ("kvraft_sessions_clients", "gauge", "Clients in the at-most-once table.", len(self.state.sessions)),
            ("kvraft_driver_read_index_rounds_total", "counter", "ReadIndex rounds started.", driver.read_rounds),
            ("kvraft_driver_snapshots_created_total", "counter", "Snapshots taken.", driver.snapshots_created),
            ("kvraft_driver_snapshots_applied_total", "counter", "Snapshots installed.", driver.snapshots_applied),
            ("kvraft_driver_snapshots_sent_total", "counter", "Snapshots sent to followers (their data built from the "
             "live store when sent).", driver.snapshots_sent),
            ("kvraft_driver_snapshot_sends_failed_total", "counter", "Snapshots for followers not sent (the build "
             "failed, or no applied state to describe yet; the core tries again).", driver.snapshot_sends_failed),
            ("kvraft_corruption_check_rounds_total", "counter", "Corruption check rounds run (as leader).",
             self.corruption.rounds),
            ("kvraft_corruption_alarms_raised_total", "counter", "CORRUPT alarms this member raised.",
             self.corruption.alarms_raised),
            ("kvraft_corruption_compact_hash_rounds_total", "counter", "Compact hash check rounds run (as leader).",
             self.corruption.compact_rounds),
            ("kvraft_corruption_compaction_hashes_checked_total", "counter", "Compaction revisions whose hashes every "
             "member's matched, found by this member as leader.", self.corruption.compaction_hashes_checked),
            ("kvraft_transport_frames_sent_total", "counter", "Peer frames sent.", transport.frames_sent),
            ("kvraft_transport_frames_received_total", "counter", "Peer frames received.", transport.frames_received),
            ("kvraft_transport_messages_dropped_total", "counter", "Peer messages dropped.", transport.messages_dropped),
            ("kvraft_transport_connections_rejected_total", "counter", "Peer connections that failed authentication.", transport.connections_rejected),
            ("kvraft_transport_malformed_frames_total", "counter", "Peer connections closed on a malformed frame.", transport.malformed_frames),
        ]

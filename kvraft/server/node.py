"""``Node``: one kvraft member, assembled: Raft log, state machine, registry, transport,
driver, and the service methods the API handlers call.

Writes go through Raft (``driver.propose``); linearizable reads wait on a ReadIndex
barrier and then read the local MVCC store; serializable reads read it at once. Any member
serves any request: a follower's proposals and read rounds reach the leader internally.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from pathlib import Path
from typing import Any

from kvraft.aio import cancel_and_wait
from kvraft.apply.chain import ACTIVATE, CORRUPT, NOSPACE
from kvraft.apply.errors import EtcdError, FailedPrecondition, Unavailable
from kvraft.apply.ops import AlarmOp, CompactOp, MemberOp, PutOp, RangeOp, SessionOp, TxnOp
from kvraft.apply.sessions import REQUEST_IDS_OFF, RequestId
from kvraft.apply.state_machine import StateMachine
from kvraft.apply.validate import validate_op
from kvraft.client.srv import DiscoveryError, system_address
from kvraft.durations import parse_go_duration_s
from kvraft.raft.config import RaftConfig
from kvraft.raft.errors import RaftError
from kvraft.raft.events import RaftEvent
from kvraft.raft.rawnode import RawNode
from kvraft.raft.types import NONE, ConfChange, ConfChangeType, ConfState, Snapshot, StateRole
from kvraft.server.api.grpc_stats import GrpcStats
from kvraft.server.cert_names import CertRule
from kvraft.server.compactor import AutoCompactor
from kvraft.server.config import Config, cluster_id_for, member_id_for, urls_resolve_alike
from kvraft.server.corruption import CorruptionChecker
from kvraft.server.driver import NodeDriver
from kvraft.server.etcd36 import local_peer_address
from kvraft.server.force_new import force_new_cluster, require_log
from kvraft.server.join import Joined, describe, fetch_cluster, match_members
from kvraft.server.learner_ready import LearnerReadyCheck, caught_up
from kvraft.server.membership import Member, Membership
from kvraft.server.node_status import MemberCounters, NodeStatusMixin
from kvraft.server.peer_features import PeerFeatures
from kvraft.server.reconfig import ReconfigCheck
from kvraft.server.snapshot_receive import SnapshotReceiver
from kvraft.server.storage_version import check_storage_version
from kvraft.server.tick_advance import advance_initial_ticks, led_last_term
from kvraft.server.tls import peer_ssl_contexts
from kvraft.server.tls_accept import HandshakeFailures
from kvraft.server.transport import PeerTransport, cluster_key
from kvraft.server.wal_dir import DataDirError, record_wal_dir, require_writable, wal_location
from kvraft.server.wire import FEATURE_REQUEST_IDS
from kvraft.storage.errors import StorageCorruptionError
from kvraft.storage.lmdb_env import write_durably
from kvraft.storage.quota import MAX_QUOTA_BYTES
from kvraft.storage.raft_log import LmdbLogStorage
from kvraft.storage.snapshot import drop_prepared
from kvraft.storage.wal import WalLogStorage

__all__ = ["Node", "open_raft_log"]

log = logging.getLogger("kvraft.node")
raft_trace_log = logging.getLogger("kvraft.raft")

PROMOTE_CHECK_S = 0.5
RETIRE_GRACE_S = 1.0
"""How long a removed member's connections stay up (``Transport.retire_peer``)."""


def _trace_raft(event: RaftEvent) -> None:
    """The core's decisions (votes given or ignored, role changes, leadership transfers),
    logged at debug level: what a kept robustness run is read for."""
    raft_trace_log.debug("raft %x term %d: %s", event.node, event.term, event.text)


def open_raft_log(
    data_dir: Path, founders: list[int], new_cluster: bool, wal_path: Path | None = None,
) -> LmdbLogStorage | WalLogStorage:
    """The member's Raft log: the WAL ``raft.wal/``, or ``wal_path`` (``--wal-dir``),
    bootstrapped with ``founders`` when it is empty and the cluster is new. A data directory
    from before the WAL (holding ``raft.lmdb``) keeps its LMDB log: same contract, slower
    commits."""
    legacy = data_dir / "raft.lmdb"
    if legacy.exists():
        log.info("%s: using the LMDB Raft log of an older data directory", legacy)
        return LmdbLogStorage(legacy)
    wal = WalLogStorage(wal_path or data_dir / "raft.wal")
    if new_cluster and wal.is_empty():
        wal.bootstrap_members(founders)
    return wal


def _existing_log(data_dir: Path, wal_path: Path) -> Path | None:
    """The Raft log already in the data dir, if any (members.json is saved before the log is
    first created, so a log without it means the file was lost)."""
    if (data_dir / "raft.lmdb").exists():
        return data_dir / "raft.lmdb"
    return wal_path if any(wal_path.glob("*.wal")) else None


def must_join(config: Config) -> bool:
    """A member started ``--initial-cluster-state existing`` with nothing in its data dir: it
    asks its peers for the cluster and its id (``join_cluster``) before it starts."""
    if config.initial_cluster_state != "existing" or config.force_new_cluster:
        return False
    data_dir = Path(config.data_dir)
    if (data_dir / "members.json").exists():
        return False
    return _existing_log(data_dir, wal_location(data_dir, config.wal_dir)) is None


async def join_cluster(config: Config) -> Joined | None:
    """The cluster as the peers in ``--initial-cluster`` tell it, checked against that flag
    (``kvraft.server.join``); ``JoinError`` names what is wrong; None when the peers are of
    a version that does not answer (the ids then come from the flags, as there)."""
    initial = config.initial_members()
    own = initial[config.name]
    others = [url for name, urls in initial.items() if name != config.name for url in urls]
    _, client_ssl = peer_ssl_contexts(config)
    remote = await fetch_cluster(
        others, config.name, own, cluster_key(config.initial_cluster_token, config.peer_secret_file), client_ssl,
        CertRule("peer", config.peer_cert_allowed_cn, config.peer_cert_allowed_hostname))
    if remote is None:
        return None
    ids = match_members(initial, config.name, remote)
    log.info("joining cluster %x as member %x (the members as %s told them)", remote.cluster_id, ids[config.name],
             remote.source)
    return Joined(remote, ids[config.name])


class Node(NodeStatusMixin):
    def __init__(self, config: Config, joined: Joined | None = None) -> None:
        """``joined``: what ``join_cluster`` found, for a member that ``must_join``."""
        self.config = config
        # the gateway's calls by etcd's gRPC method (api.grpc_stats); timed with --metrics extensive
        self.grpc_stats = GrpcStats(timed=config.metrics == "extensive")
        self.counters = MemberCounters()
        self.data_dir = Path(config.data_dir)
        wal_path = wal_location(self.data_dir, config.wal_dir)
        if config.force_new_cluster:
            require_log(self.data_dir, wal_path)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        require_writable(self.data_dir, wal_path, self.data_dir / "mvcc.lmdb")
        check_storage_version(self.data_dir)
        record_wal_dir(self.data_dir, wal_path)
        if joined is not None:  # (nothing in the data dir: its id is the cluster's answer)
            write_durably(self.data_dir / "member_id", f"{joined.member_id}\n")
            write_durably(self.data_dir / "cluster_id", str(joined.cluster.cluster_id))
        initial = config.initial_members()
        # (from its --initial-cluster URLs, as every founding member computes it: they may name
        # the --initial-advertise-peer-urls' addresses by other names, as DNS SRV records do)
        self.member_id = self._load_member_id(member_id_for(initial[config.name], config.id_token))
        initial_ids = {name: member_id_for(urls, config.id_token) for name, urls in initial.items()}
        self.membership = Membership(self.data_dir / "members.json")
        if joined is not None:
            self.membership.members = {m.member_id: m for m in joined.cluster.members}
            self.membership.removed = set(joined.cluster.removed)
            self.membership.save()
        elif not self.membership.load():
            if (data_dir_log := _existing_log(self.data_dir, wal_path)) is not None:
                raise DataDirError(
                    f"{self.data_dir / 'members.json'} is missing, but the data dir has a Raft log ({data_dir_log}): "
                    "it held the cluster's members as the log last applied them (rebuilt from --initial-cluster it "
                    "would forget members added or moved since); restore it, or restore this member from a snapshot "
                    "(or remove it from the cluster and add it again with an empty data dir)")
            for name, urls in initial.items():
                member = Member(initial_ids[name], name, list(urls))
                self.membership.members[member.member_id] = member
            self.membership.save()
            if config.initial_cluster_state == "existing" and not config.force_new_cluster:
                self.membership.guess_from_flags(self.member_id)  # (peers that do not describe the cluster)
        self.membership.own_id = self.member_id
        self._warn_if_moved()
        new_cluster = config.initial_cluster_state == "new" and not config.force_new_cluster
        self.cluster_id = self._load_cluster_id()
        self.membership.cluster_id = self.cluster_id
        self.raft_log = open_raft_log(self.data_dir, sorted(initial_ids.values()), new_cluster, wal_path)
        if config.snapshot_count == 0:
            log.info("set snapshot count to default %d", config.snapshot_entries())
        if config.quota_bytes() < 0:
            log.warning("disabling backend quota (--quota-backend-bytes %d)", config.quota_backend_bytes)
        elif config.quota_bytes() > MAX_QUOTA_BYTES:
            log.warning("backend quota %d exceeds maximum recommended quota %d", config.quota_bytes(), MAX_QUOTA_BYTES)
        commit_interval_s, commit_ops = config.backend_batch()
        self.state = StateMachine(
            self.data_dir / "mvcc.lmdb",
            quota_bytes=config.quota_bytes(),
            member_id=self.member_id,
            max_txn_ops=config.max_txn_ops,
            membership=self.membership,
            commit_interval_s=commit_interval_s,
            commit_ops=commit_ops,
            warn_apply_s=config.warn_apply_s(),
            compaction_batch=config.compaction_batch(),
            sync=not config.unsafe_no_fsync,
            compaction_sleep_s=parse_go_duration_s(config.compaction_sleep_interval),
        )
        self._bootstrap_defrag(config.bootstrap_defrag_threshold_megabytes)
        if config.unsafe_no_fsync:
            if isinstance(self.raft_log, WalLogStorage):
                self.raft_log.fsync = False
            log.warning("--unsafe-no-fsync: the Raft log and the store are not fsynced; a power cut can lose "
                        "acknowledged writes and break the consensus guarantees")
        self._check_log_covers_state()
        self.initialized = self.state.applied_index() > 0
        """Whether this member had data before this start (the initial corruption check
        compares only such a member's, as etcd's)."""
        self._restore_if_behind()
        for path in drop_prepared(self.state.store.backend.directory):  # (installed, or never taken)
            log.info("deleted %s: a received snapshot's store no longer needed", path)
        if config.force_new_cluster:
            try:
                force_new_cluster(self.raft_log, self.member_id)
            except BaseException:
                self.raft_log.close()
                self.state.close()
                raise
        hard, _conf = self.raft_log.initial_state()
        last_term = self.raft_log.term(self.raft_log.last_index())
        self.led_term = hard.term if led_last_term(self.member_id, hard.term, hard.vote, last_term) else 0
        """The term this member led before it stopped, else 0 (kvraft.server.tick_advance)."""
        applied = min(self.state.applied_index(), hard.commit)
        applied = max(applied, self.raft_log.snapshot().metadata.index)
        self.raw = RawNode(
            RaftConfig(
                id=self.member_id,
                rng=random.Random(self.member_id ^ random.getrandbits(32)),
                election_ticks=config.election_ticks(),
                heartbeat_ticks=1,
                pre_vote=config.pre_vote,
                applied=applied,
                trace=_trace_raft if raft_trace_log.isEnabledFor(logging.DEBUG) else None,
            ),
            self.raft_log,
        )
        server_ssl, client_ssl = peer_ssl_contexts(config)
        self.handshake_failures = HandshakeFailures()
        """TLS handshakes refused on any of this member's listeners (kvraft.server.tls_accept)."""
        self.peer_features = PeerFeatures(self.data_dir)
        """What each peer announced in its last handshake, kept across restarts (the gate of
        numbered writes)."""
        self.transport = PeerTransport(
            self.member_id,
            cluster_key(config.initial_cluster_token, config.peer_secret_file),
            self._on_frame,
            on_unreachable=self._on_unreachable,
            on_snapshot_sent=self._on_snapshot_sent,
            server_ssl=server_ssl,
            client_ssl=client_ssl,
            cert_rule=CertRule("peer", config.peer_cert_allowed_cn, config.peer_cert_allowed_hostname),
            handshake_failures=self.handshake_failures,
            is_removed=lambda member_id: member_id in self.membership.removed,
            on_removed=self._told_removed,
            describe=self._describe,
            on_unsent=self._on_unsent,
            on_features=self.peer_features.heard,
            check_san=not config.peer_skip_client_san_verification,
            write_timeout_s=parse_go_duration_s(config.raft_write_timeout),
            read_timeout_s=parse_go_duration_s(config.raft_read_timeout),
            local_address=self._local_peer_address(),
            receive_snapshot=SnapshotReceiver(self.state.store.backend).begin,
        )
        self.driver = NodeDriver(
            self.member_id,
            self.raw,
            self.raft_log,
            self.state,
            self.transport,
            heartbeat_interval_s=config.heartbeat_interval / 1000,
            conf_state=self.raw.status().conf_state,
            snapshot_count=config.snapshot_entries(),
            snapshot_catchup_entries=config.snapshot_catchup_entries,
            on_conf_change=self._on_conf_change,
        )
        self.corruption = CorruptionChecker(self)
        self.learner_ready = LearnerReadyCheck(self)
        self.reconfig = ReconfigCheck(self.membership, self.member_id, self.transport.active_since)
        self.state.on_members_changed = self._sync_peers
        self.state.on_failure = self._state_failed
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False
        self.removed = False
        self._alarm_task: asyncio.Task[None] | None = None
        self.wrap_proposal: Any = lambda op: op
        """Set by ``kvraft.server.features``: wraps a client's write for the Auth applier."""

    def _state_failed(self, exc: BaseException) -> None:
        """A commit of applied units failed (wherever it ran: the apply stage, a snapshot,
        a defragmentation): they rolled back, so the member stops as on any fatal storage
        error (the state machine refuses further entries; a restart re-applies them)."""
        if self.driver.fatal is None:
            self.driver.fatal = exc
            log.critical("state machine commit failed: %r", exc, exc_info=exc)

    def _local_peer_address(self) -> str | None:
        """etcd 3.6's SetMemberLocalAddr: peer connections leave from the first routable IP
        address of ``--initial-advertise-peer-urls`` (as etcd, logged either way)."""
        if not self.config.feature("SetMemberLocalAddr"):
            return None
        urls = self.config.initial_advertise_peer_urls
        address = local_peer_address(urls)
        if address is None:
            log.warning("unable to set a member local address due to lack of suitable local addresses "
                        "(advertise-peer-urls %s)", ",".join(urls))
        else:
            log.info("setting member local address %s", address)
        return address

    def _bootstrap_defrag(self, threshold_mb: int) -> None:
        """``--experimental-bootstrap-defrag-threshold-megabytes``: defragment before serving
        when that frees at least ``threshold_mb`` MB (etcd 3.5's rule: the file's size less the
        bytes in use)."""
        if threshold_mb <= 0:
            return
        size, in_use = self.state.store.sizes()
        free = size - in_use
        if free < threshold_mb * 1_000_000:
            log.info("skipping defragmentation at start: %d bytes would be freed, the threshold is %d MB",
                     free, threshold_mb)
            return
        log.info("defragmenting at start: %d bytes free in a %d byte store (threshold %d MB)", free, size, threshold_mb)
        report = self.state.store.defragment()
        log.info("defragmented at start: %s", report)

    def _restore_if_behind(self) -> None:
        """A crash between installing a received snapshot in the log and restoring the store
        from it: the entries it covers are gone from the log, so restore now from the
        snapshot's file. A snapshot this member took has no data (its state is the store,
        made durable before the snapshot was recorded), so a store behind one is a store
        older than its log: refused, as ``_check_log_covers_state`` refuses the converse."""
        meta = self.raft_log.snapshot().metadata
        applied = self.state.applied_index()
        if applied >= meta.index:
            return
        data = self.raft_log.snapshot_data()
        if not data:
            self.raft_log.close()
            self.state.close()
            raise StorageCorruptionError(
                f"{self.data_dir}: the store has applied index {applied} but the Raft log was compacted up to its "
                f"snapshot at {meta.index}, which holds no data (this member's own snapshots are its store): the "
                "store is older than the log (a store restored from a backup without its WAL?); refusing to start "
                "(restore this member from a snapshot, or remove it from the cluster and add it again with an "
                "empty data dir)"
            )
        log.info("restoring the state machine from the log's snapshot at %d", meta.index)
        self.state.restore(Snapshot(metadata=meta, data=data))

    def _check_log_covers_state(self) -> None:
        """A member applies only entries its log holds durably, so the state machine can
        never be ahead of the log. If it is, the log was lost or cut (a deleted or emptied
        WAL directory, a restored backup of one file but not the other): starting would
        forget the member's vote and term, and an empty log on a "new" cluster would even
        bootstrap again. Refuse, as etcd refuses a data dir without its WAL."""
        applied = self.state.applied_index()
        covered = max(self.raft_log.last_index(), self.raft_log.snapshot().metadata.index)
        if applied > covered:
            self.raft_log.close()
            self.state.close()
            raise StorageCorruptionError(
                f"{self.data_dir}: the state machine has applied index {applied} but the Raft log ends at {covered}: "
                "the log was lost or truncated; refusing to start (restore this member from a snapshot, "
                "or remove it from the cluster and add it again with an empty data dir)"
            )

    def _load_member_id(self, from_flags: int) -> int:
        """This member's id as its data dir first had it. etcd reads it from the WAL and ignores
        --initial-cluster-token and --initial-advertise-peer-urls on a restart; recomputed from
        changed flags it named a member the cluster and the log do not know, which never found
        a leader (it rejected its own peers' messages as addressed to another member)."""
        path = self.data_dir / "member_id"
        stored = _read_id(path, "this member's id", f"from --initial-advertise-peer-urls and the token it was {from_flags}")
        if stored is not None:  # (``_warn_if_moved`` says when the flags changed since)
            return stored
        write_durably(path, f"{from_flags}\n")  # a crash never leaves half of it
        return from_flags

    def _warn_if_moved(self) -> None:
        """--initial-advertise-peer-urls other than this member's peer URLs in the registry:
        they changed since the data dir was created, and as etcd a restart keeps the member's
        id and URLs (``member update`` moves them). Compared by URL, not by the id the flags
        hash to: a member that joined has the id ``member add`` gave it, never that hash."""
        own = self.membership.get(self.member_id)
        flags = sorted(u.strip() for u in self.config.initial_advertise_peer_urls)
        if own is not None and own.peer_urls and not _alike(own.peer_urls, flags):
            log.warning("--initial-advertise-peer-urls %s are not member %x's peer URLs %s (they changed since the "
                        "data dir was created; as etcd, a restart keeps its id and URLs: member update moves them)",
                        ",".join(flags), self.member_id, ",".join(own.peer_urls))

    def _load_cluster_id(self) -> int:
        """From the cluster token alone, so founding and joining members agree (tokens
        must be unique per cluster, as etcd asks)."""
        path = self.data_dir / "cluster_id"
        cluster_id = cluster_id_for([], self.config.id_token)
        stored = _read_id(path, "the cluster's id", f"from --initial-cluster-token it was {cluster_id}")
        if stored is not None:
            return stored
        write_durably(path, str(cluster_id))  # a crash never leaves half of it
        return cluster_id

    # -- transport callbacks (the driver may not exist yet during __init__) ---------------
    def _on_frame(self, source: int, kind: int, body: Any) -> None:
        self.driver.on_frame(source, kind, body)

    def _on_unreachable(self, member_id: int) -> None:
        self.driver.report_unreachable(member_id)

    def _on_unsent(self, member_id: int, kind: int, body: Any) -> None:
        self.driver.return_unsent(member_id, kind, body)

    def _on_snapshot_sent(self, member_id: int, ok: bool) -> None:
        self.driver.snapshots_out.settled(member_id, ok)
        self.driver.report_snapshot(member_id, ok)

    def _on_conf_change(self, conf: ConfState, cc: ConfChange) -> None:
        if (ConfChangeType.REMOVE_NODE, self.member_id) in cc.changes:
            log.warning("member %x was removed from the cluster; stopping", self.member_id)
            self.removed = True

    def _told_removed(self, peer: int) -> None:
        """A peer refused this member's hello: the cluster removed it (a removal this member
        did not apply, or a restart on a removed member's data dir). etcd exits so."""
        if not self.removed:
            log.error("the member has been permanently removed from the cluster (told by %x); stopping "
                      "(the data-dir used by this member must be removed)", peer)
            self.removed = True

    def _describe(self) -> list[Any]:
        """The cluster, for a member joining it (``kvraft.server.join``)."""
        return describe(self.cluster_id, self.state.applied_index(), self.membership.sorted_members(),
                        self.membership.removed)

    def _sync_peers(self) -> None:
        wanted = {m.member_id: m.peer_urls[0] for m in self.membership.members.values() if m.peer_urls}
        for member_id, url in wanted.items():
            self.transport.set_peer(member_id, url)
        for member_id in self.transport.peers():
            if member_id in self.membership.removed:
                self.transport.retire_peer(member_id, RETIRE_GRACE_S)
            elif member_id not in wanted:
                self.transport.remove_peer(member_id)

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        self.transport.reuse_port = self.config.socket_reuse_port
        await self.transport.listen(self.config.listen_peer_urls)
        self._sync_peers()
        if self.config.feature("InitialCorruptCheck") and self.initialized:
            try:  # before this member takes part in Raft or serves anyone, as etcd's
                await self.corruption.initial_check()
            except BaseException:
                await self.transport.close()
                self.raft_log.close()
                self.state.close()
                raise
        self.driver.start()
        loop = asyncio.get_running_loop()
        compactor = AutoCompactor(self, self.config.auto_compaction_mode, self.config.auto_compaction_retention)
        self._tasks = [
            loop.create_task(advance_initial_ticks(self, self.config.initial_election_tick_advance,
                                                   self.config.election_ticks(), led_term=self.led_term)),
            loop.create_task(self._publish()),
            loop.create_task(self._promote_learners()),
            loop.create_task(compactor.run()),
        ]
        check_every_s = parse_go_duration_s(self.config.corrupt_check_time)
        if check_every_s > 0:
            self._tasks.append(loop.create_task(self.corruption.run(check_every_s)))
        if self.config.feature("CompactHashCheck"):
            every_s = parse_go_duration_s(self.config.compact_hash_check_time)
            self._tasks.append(loop.create_task(self.corruption.run_compact(every_s)))

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)
        await self.driver.stop()
        await self.transport.close()
        self.raft_log.close()
        self.state.close()

    async def _publish(self) -> None:
        """Announce this member's name and client URLs through the log (as etcd does)."""
        while True:
            me = self.membership.get(self.member_id)
            if me is not None and me.name == self.config.name and me.client_urls == self.config.advertise_client_urls:
                return
            with contextlib.suppress(Unavailable, asyncio.TimeoutError):
                op = MemberOp("publish", self.member_id, self.config.name, [], list(self.config.advertise_client_urls))
                await self.driver.propose(op, timeout_s=5.0)
                attributes = f"{{Name:{op.name} ClientURLs:[{' '.join(op.client_urls)}]}}"
                log.info("published local member to cluster through raft", extra={"fields": {
                    "local-member-id": f"{self.member_id:x}", "local-member-attributes": attributes,
                    "cluster-id": f"{self.cluster_id:x}", "publish-timeout": "5s"}})
                return
            await asyncio.sleep(0.5)

    async def _promote_learners(self) -> None:
        """Leader: promote a learner once its log has caught up (``--auto-promote-learners``)."""
        while self.config.auto_promote_learners:
            await asyncio.sleep(PROMOTE_CHECK_S)
            if self.driver.role != StateRole.LEADER:
                continue
            status = self.raw.status()
            own = status.progress.get(self.member_id)
            for learner in status.conf_state.learners:
                progress = status.progress.get(learner)
                if progress is None or own is None or not caught_up(progress.match, own.match):
                    continue
                member = self.membership.get(learner)
                if member is None or not member.is_learner:
                    continue
                if self.config.strict_reconfig_check:
                    try:
                        self.reconfig.may_promote(learner)
                    except EtcdError as exc:
                        log.info("not promoting learner %x yet: %s", learner, exc)
                        continue
                log.info("promoting learner %x: caught up at %d", learner, progress.match)
                with contextlib.suppress(Exception):
                    await self._conf_change(ConfChangeType.ADD_VOTER, MemberOp("promote", learner))
                    self.counters.learner_promotions += 1

    # -- KV -------------------------------------------------------------------------------
    @property
    def raft_term(self) -> int:
        return self.driver.term

    async def range(self, op: RangeOp) -> Any:
        validate_op(op, self.config.max_txn_ops)
        if not op.serializable:
            await self.driver.read_barrier()
        return self.state.range(op)

    def range_future(self, op: RangeOp) -> asyncio.Future[Any]:
        """``range`` without a coroutine, for callers that answer from a callback (the fast
        path): the op is checked now (its EtcdErrors raised here); the future resolves to
        the result after the read barrier (a serializable range: at once)."""
        validate_op(op, self.config.max_txn_ops)
        if not op.serializable:
            return self.driver.read_barrier_future(functools.partial(self.state.range, op))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        try:
            future.set_result(self.state.range(op))
        except Exception as exc:
            future.set_exception(exc)
        return future

    async def _write(self, op: Any, once: RequestId | None = None) -> Any:
        return await self.submit_write(op, once)

    def submit_write(self, op: Any, once: RequestId | None = None) -> asyncio.Future[Any]:
        """Check and queue a write now; the future resolves to its result (EtcdErrors of
        the checks are raised here). ``put``/``delete_range``/``txn`` await it; the
        msgpack batch route submits many and awaits them together. ``once``: the client's
        number for it (``Kvraft-Request-Id``): applied at most once (``kvraft.apply.sessions``)."""
        self._admit(op)
        return self.driver.submit(self.numbered(self.wrap_proposal(op), once), max_bytes=self.config.max_request_bytes)

    def numbered(self, op: Any, once: RequestId | None) -> Any:
        """``op`` in a ``SessionOp`` for ``once`` (None: ``op`` as it is); refused (code 9)
        while some member has not announced that it applies them: an older version would
        stop at the entry. (The fast path's coalescer numbers each put of a ``BatchOp``.)"""
        if once is None:
            return op
        missing = self.request_ids_missing()
        if missing:
            raise FailedPrecondition(REQUEST_IDS_OFF.format(member=missing[0]))
        return SessionOp(once.client, once.seq, once.first, int(time.time() * 1000), op)

    def request_ids_missing(self) -> list[int]:
        """The members (of the applied configuration, learners too) whose last peer handshake
        did not announce ``request-ids`` (``peer_features``: since this member started, else
        as remembered in the data dir): an older version, or one never reached. Empty:
        numbered writes may be proposed."""
        return [m for m in sorted(self.membership.members) if m != self.member_id
                and FEATURE_REQUEST_IDS not in self.peer_features.of(m)]

    def _admit(self, op: Any) -> None:
        """A write's checks before it is proposed (raise its EtcdError): shape, quota."""
        validate_op(op, self.config.max_txn_ops)
        self.state.quota.check(op, self._raise_nospace)

    def submit_write_then(self, op: Any, then: Any, once: RequestId | None = None) -> None:
        """``submit_write`` with a callback instead of the future: ``then(result, error)``
        runs where the op is applied (``NodeDriver.submit_then``)."""
        self._admit(op)
        self.driver.submit_then(self.numbered(self.wrap_proposal(op), once), then,
                                max_bytes=self.config.max_request_bytes)

    def _raise_nospace(self) -> None:
        """Over quota: replicate a NOSPACE alarm (etcd's quotaKVServer), in the background."""
        if self._alarm_task is None or self._alarm_task.done():
            op = AlarmOp(ACTIVATE, self.member_id, NOSPACE)
            self._alarm_task = asyncio.get_running_loop().create_task(self._propose_quietly(op))

    async def _propose_quietly(self, op: Any) -> None:
        with contextlib.suppress(EtcdError):
            await self.driver.propose(op)

    async def put(self, op: PutOp, once: RequestId | None = None) -> Any:
        return await self._write(op, once)

    async def delete_range(self, op: Any, once: RequestId | None = None) -> Any:
        return await self._write(op, once)

    async def txn(self, op: TxnOp, once: RequestId | None = None) -> Any:
        validate_op(op, self.config.max_txn_ops)
        if self.state.is_read_only(op):  # (a read: nothing to apply once, ``once`` unused)
            if not self.state.is_serializable(op):  # (every range serializable: at once, as etcd)
                await self.driver.read_barrier()
            return self.state.txn_read_only(op)
        return await self._write(op, once)

    async def compact(self, op: CompactOp, once: RequestId | None = None) -> Any:
        """``once``: a copy of a compaction sent again after a lost answer gets the first
        copy's revision, not "required revision has been compacted" (a physical one is then
        answered at once: the first copy's wait was the physical compaction's)."""
        result = await self._write(op, once)
        if op.physical and getattr(result, "job", None) is not None:
            # etcd answers a physical compaction once the store has dropped the history
            await asyncio.get_running_loop().run_in_executor(None, result.job.wait)
        return result

    # -- cluster ---------------------------------------------------------------------------
    async def member_list(self, linearizable: bool) -> list[Member]:
        if linearizable:
            await self.driver.read_barrier()
        return self.membership.sorted_members()

    async def _conf_change(self, kind: ConfChangeType, op: MemberOp) -> None:
        try:
            await self.driver.propose_conf_change(((kind, op.member_id),), op)
        except RaftError as exc:
            raise FailedPrecondition(f"etcdserver: {exc}") from None

    async def member_add(self, peer_urls: list[str], is_learner: bool) -> tuple[Member, list[Member]]:
        peer_urls = self.membership.check_add(peer_urls, is_learner, self.config.max_learners)
        if self.config.strict_reconfig_check:
            self.reconfig.may_add(is_learner)
        # etcd's: a hash of the URLs, the token and the time, so a member removed and added
        # back at its URL is another member (the new one asks the peers for its id:
        # kvraft.server.join); a removed id is never reused (etcd: "ID removed").
        member_id = member_id_for(peer_urls, f"{self.config.initial_cluster_token}|{time.time_ns()}")
        if member_id in self.membership.removed or member_id in self.membership.members:
            raise FailedPrecondition("etcdserver: ID removed")
        kind = ConfChangeType.ADD_LEARNER if is_learner else ConfChangeType.ADD_VOTER
        await self._conf_change(kind, MemberOp("add", member_id, "", list(peer_urls), [], is_learner))
        member = self.membership.get(member_id) or Member(member_id, "", list(peer_urls), [], is_learner)
        return member, self.membership.sorted_members()

    async def member_remove(self, member_id: int) -> list[Member]:
        self.membership.check_exists(member_id)
        if self.config.strict_reconfig_check:
            self.reconfig.may_remove(member_id)
        await self._conf_change(ConfChangeType.REMOVE_NODE, MemberOp("remove", member_id))
        return self.membership.sorted_members()

    async def member_update(self, member_id: int, peer_urls: list[str]) -> list[Member]:
        peer_urls = self.membership.check_update(member_id, peer_urls)
        await self.driver.propose(MemberOp("update", member_id, "", list(peer_urls)))
        return self.membership.sorted_members()

    async def member_promote(self, member_id: int) -> list[Member]:
        self.membership.check_promote(member_id)
        await self.learner_ready.require(member_id)
        if self.config.strict_reconfig_check:
            self.reconfig.may_promote(member_id)
        await self._conf_change(ConfChangeType.ADD_VOTER, MemberOp("promote", member_id))
        self.counters.learner_promotions += 1
        return self.membership.sorted_members()

    # -- maintenance -------------------------------------------------------------------------
    async def alarm(self, action: int, member_id: int, alarm: int) -> list[tuple[int, int]]:
        """etcd's Maintenance.Alarm. ``member_id`` is taken as sent: without one it is member
        0, as in etcd (an ACTIVATE raises member 0's alarm, a DEACTIVATE removes only that),
        never the member asked; ``kvctl alarm disarm`` names each alarm's member."""
        if action == 0:
            return self.state.alarms(alarm)
        result = await self.driver.propose(AlarmOp(action, member_id, alarm))
        return result or []

    async def move_leader(self, target: int) -> int:
        if self.driver.role != StateRole.LEADER:
            raise FailedPrecondition("etcdserver: not leader")
        status = self.raw.status()
        if target not in status.conf_state.voters or target == NONE:
            raise FailedPrecondition("etcdserver: bad leader transferee")
        if target == self.member_id:
            return self.state.revision()
        self.driver.transfer_leader(target)
        for _ in range(100):
            await asyncio.sleep(0.05)
            if self.driver.leader == target:
                return self.state.revision()
        raise Unavailable("etcdserver: request timed out")

    async def healthy(self, excluded_alarms: frozenset[str] = frozenset(), serializable: bool = False) -> bool:
        """etcd's ``/health``: no alarm raised (but those ``excluded_alarms`` name: NOSPACE,
        CORRUPT), a leader and a ReadIndex round; with ``serializable`` this member alone."""
        names = {NOSPACE: "NOSPACE", CORRUPT: "CORRUPT"}
        if any(names.get(alarm, "UNKNOWN") not in excluded_alarms for _member, alarm in self.state.alarms()):
            return False
        if self.driver.fatal is not None:
            return False
        if serializable:
            return True
        if self.driver.leader == NONE:
            return False
        try:
            await self.driver.read_barrier(timeout_s=2.0)
        except Unavailable:
            return False
        return True


def _alike(registered: list[str], flags: list[str]) -> bool:
    """The same peers once host names are resolved (a member founded from DNS SRV records is
    registered by the records' names and may advertise addresses)."""
    try:
        return urls_resolve_alike(registered, flags, system_address)
    except DiscoveryError:
        return False


def _read_id(path: Path, what: str, restore: str) -> int | None:
    """The id a data dir file holds in decimal (member_id, cluster_id); None when there is no
    file yet; one that does not read is a DataDirError saying how to restore it."""
    if not path.exists():
        return None
    try:
        stored = int(path.read_text().strip(), 10)
        if not 0 < stored < 1 << 64:
            raise ValueError(f"{stored} is not an id")
    except (OSError, ValueError) as exc:
        raise DataDirError(f"{path}: unreadable ({exc}); it holds {what} in decimal: restore it ({restore}) "
                           "or the member from a snapshot") from None
    return stored

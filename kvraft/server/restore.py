"""Offline restore: a kvraft snapshot file -> the data directory of a member of a NEW cluster
(``kvctl snapshot restore``, etcd's ``etcdctl snapshot restore``).

Like etcd's restore, the result keeps every key (with its revisions), lease, user and role
of the snapshot and forgets the old cluster: the member and cluster ids come from the
new ``--initial-cluster`` and ``--initial-cluster-token``, and the Raft log is fresh. It
holds the new membership (one committed conf change per founding member, exactly what a
founding member of a new cluster writes), and the store's consistent index is set to that
log's commit, so the member applies nothing twice and starts as if it had founded the
cluster with this data. Every member of the new cluster is restored from the same file
with its own ``--name`` and ``--initial-advertise-peer-urls``, then started with
``--initial-cluster-state new`` and the same ``--initial-cluster`` and token.

The directory is built beside the target (``<data-dir>.restoring-<pid>``) and renamed into
place at the end, so a failed restore (damaged snapshot, disk full) leaves no data dir a
member could start from. An existing data dir is refused, never overwritten.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from kvraft.server.config import Config, ConfigError, cluster_id_for, member_id_for
from kvraft.server.membership import Member, Membership
from kvraft.server.node import open_raft_log
from kvraft.server.storage_version import stamp
from kvraft.server.wal_dir import record_wal_dir, wal_location
from kvraft.storage.mvcc import MVCCStore

__all__ = ["RestoreError", "RestoredMember", "restore_member_dir"]

READ_BYTES = 1 << 20


class RestoreError(Exception):
    """The restore cannot be done (bad flags, an existing data dir, a bad snapshot)."""


@dataclass(frozen=True)
class RestoredMember:
    data_dir: Path
    member_id: int
    cluster_id: int
    members: dict[str, int]
    revision: int
    records: int


def _chunks(path: str) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        while chunk := handle.read(READ_BYTES):
            yield chunk


def _check_flags(name: str, initial_cluster: str, advertise_peer_urls: list[str]) -> dict[str, list[str]]:
    config = Config(name=name, initial_cluster=initial_cluster, initial_advertise_peer_urls=advertise_peer_urls)
    try:
        members = config.initial_members()
    except ConfigError as exc:
        if "has no entry for --name" in str(exc):
            raise RestoreError(f'couldn\'t find local name "{name}" in the initial cluster configuration') from None
        raise RestoreError(str(exc)) from None
    if sorted(members[name]) != sorted(advertise_peer_urls):
        have, want = ",".join(sorted(advertise_peer_urls)), ",".join(sorted(members[name]))
        raise RestoreError(
            f"--initial-cluster has {name}={','.join(members[name])} but missing from "
            f'--initial-advertise-peer-urls={",".join(advertise_peer_urls)} (resolved urls: "{have}" != "{want}")'
        )
    return members


def restore_member_dir(
    snapshot_path: str,
    data_dir: str,
    *,
    name: str = "default",
    initial_cluster: str = "default=http://localhost:2380",
    initial_cluster_token: str = "etcd-cluster",
    initial_advertise_peer_urls: list[str] | None = None,
    chunks: Iterable[bytes] | None = None,
    wal_dir: str = "",
    bump_revision: int = 0,
    mark_compacted: bool = False,
) -> RestoredMember:
    """Build ``data_dir`` from the snapshot (see the module docstring). ``chunks``, when
    given, is the snapshot stream itself (e.g. converted from an etcd file), read
    instead of the file's bytes. ``bump_revision`` moves the restored revision ahead and
    ``mark_compacted`` compacts at the result (etcdutl's flags, which go together: a
    watcher or informer that resumes from a revision of before the restore is told it was
    compacted and lists again, instead of waiting for revisions the restore reused)."""
    if bump_revision < 0:
        raise RestoreError("--bump-revision must not be negative")
    if (bump_revision == 0) == mark_compacted:
        raise RestoreError("--mark-compacted required if --bump-revision > 0")
    peer_urls = list(initial_advertise_peer_urls or ["http://localhost:2380"])
    members = _check_flags(name, initial_cluster, peer_urls)
    target = Path(data_dir)
    if target.exists():
        raise RestoreError(f'data-dir "{data_dir}" exists')
    wal = wal_location(target, wal_dir)  # (target does not exist: only the path is worked out)
    if wal != target / "raft.wal" and wal.exists():
        raise RestoreError(f'wal-dir "{wal_dir}" exists')
    if os.path.isdir(snapshot_path):  # (etcdctl's words: its open succeeds, the read fails)
        raise RestoreError(f"read {snapshot_path}: is a directory")
    if not os.path.isfile(snapshot_path):
        raise RestoreError(f"open {snapshot_path}: no such file or directory")
    ids = {member: member_id_for(urls, initial_cluster_token) for member, urls in members.items()}
    scratch = target.with_name(f"{target.name}.restoring-{os.getpid()}")
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        scratch.mkdir(parents=True)
    except OSError as exc:  # (named as the user gave it, not by the scratch name; etcdctl's words)
        why = exc.strerror or str(exc)
        raise RestoreError(f"mkdir {target}: {why[:1].lower()}{why[1:]}") from None
    own_wal = wal == target / "raft.wal"
    wal_scratch = scratch / "raft.wal" if own_wal else wal.with_name(f"{wal.name}.restoring-{os.getpid()}")
    if not own_wal:
        shutil.rmtree(wal_scratch, ignore_errors=True)
    try:
        with MVCCStore(scratch / "mvcc.lmdb", sync=True) as store:
            try:
                report = store.restore(chunks if chunks is not None else _chunks(snapshot_path))
            except RestoreError:
                raise  # raised by the caller's chunks, already worded
            except Exception as exc:  # SnapshotCorruptionError, or a msgpack decoding error
                raise RestoreError(f"{snapshot_path}: {exc}") from None
            revision = report.revision
            if bump_revision:
                revision = store.bump_revision(bump_revision)
                store.compact(revision, physical=True)
            with store.batch():  # the fresh log's commit: its conf changes count as applied
                store.set_consistent_index(len(ids), 1)
            store.backend.sync()
        membership = Membership(scratch / "members.json")
        for member, urls in members.items():
            membership.members[ids[member]] = Member(ids[member], member, list(urls))
        membership.save()
        # the same log a founding member opens (the node's own choice of log storage)
        open_raft_log(scratch, sorted(ids.values()), True, wal_scratch).close()
        cluster_id = cluster_id_for([], initial_cluster_token)
        (scratch / "cluster_id").write_text(str(cluster_id))
        stamp(scratch)
        if not own_wal:
            record_wal_dir(scratch, wal)  # where the WAL will be, once renamed below
        _fsync_dir(scratch)
        if not own_wal:
            # the WAL first: a crash between the renames leaves no data dir (restore again)
            os.rename(wal_scratch, wal)
            _fsync_dir(wal.parent)
        os.rename(scratch, target)
        _fsync_dir(target.parent if str(target.parent) else Path("."))
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        if not own_wal:
            shutil.rmtree(wal_scratch, ignore_errors=True)
        raise
    return RestoredMember(target, ids[name], cluster_id, ids, revision, report.records)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

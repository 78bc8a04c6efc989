"""``--force-new-cluster``: turn a surviving member of a cluster that lost its quorum for good
into a one-member cluster that keeps all of that member's data, as etcd's flag does.

Before the member starts, its own Raft log is rewritten:

1. Every entry it holds is kept, those past its commit index too: the quorum it lost may
   have committed them (a write acknowledged by a leader whose commit this member had not
   heard yet), and a new leader of the old cluster would have committed them as well. etcd
   drops them, which can lose acknowledged writes; a write kept here was one whose client
   either got its answer or an indeterminate error (a timeout).
2. The membership at the end of the log is worked out: the snapshot's configuration, then
   every conf change after it.
3. One conf change per other member (voters and learners alike) removing it is appended in
   the current term, and the commit index is moved to the last of them: they are committed by
   fiat. Their context carries the registry's ``remove``, as ``member remove``'s would, so
   the registry (``member list``) follows when they apply.

The member then starts as usual, applies them like any committed entries, finds itself the
only voter and elects itself. The other members' ids stay removed (kvraft never reuses one),
so the machines are added back with ``member add`` under new peer URLs, with empty data
directories.

Refused, with a message, when there is nothing to keep (no Raft log: almost always the wrong
``--data-dir``), when this member is not in its own cluster's configuration (it was removed),
or when that configuration is joint (kvraft's API never makes one).
"""

from __future__ import annotations

import logging
from pathlib import Path

import msgpack

from kvraft.apply.ops import MemberOp, op_to_wire
from kvraft.raft.storage import WritableLogStorage
from kvraft.raft.types import (
    ConfChange,
    ConfChangeType,
    Entry,
    EntryType,
    HardState,
)

__all__ = ["ForceNewClusterError", "force_new_cluster", "require_log"]

log = logging.getLogger("kvraft.node")


class ForceNewClusterError(RuntimeError):
    """``--force-new-cluster`` cannot be carried out on this data directory."""


_NO_LOG = ("--force-new-cluster: {} has no Raft log, so there is no data to keep "
           "(check --data-dir; a new cluster needs no --force-new-cluster)")


def require_log(data_dir: Path, wal_path: Path) -> None:
    """Refuse before anything is written when there is no log to keep (``wal_path``: the
    WAL's place, ``--wal-dir`` or the data directory's)."""
    if not (wal_path.exists() or (data_dir / "raft.lmdb").exists()):
        raise ForceNewClusterError(_NO_LOG.format(data_dir))


def log_members(raft_log: WritableLogStorage) -> set[int]:
    """Voters and learners at the end of the log: the snapshot's configuration, then every
    conf change after it."""
    conf = raft_log.snapshot().metadata.conf_state
    members = set(conf.voters | conf.learners | conf.voters_outgoing | conf.learners_next)
    first, last = raft_log.first_index(), raft_log.last_index()
    for entry in raft_log.entries(first, last + 1) if last >= first else []:
        if entry.type != EntryType.CONF_CHANGE:
            continue
        cc = ConfChange.decode(entry.data)
        if len(cc.changes) > 1 or cc.leave_joint:
            raise ForceNewClusterError(
                f"the configuration at index {entry.index} is a joint one; --force-new-cluster handles "
                "single-member changes only (the only kind kvraft's API makes)")
        for kind, node in cc.changes:
            if kind == ConfChangeType.REMOVE_NODE:
                members.discard(node)
            else:
                members.add(node)
    return members


def force_new_cluster(raft_log: WritableLogStorage, self_id: int) -> list[int]:
    """Rewrite ``raft_log`` (durably) so that this member starts as the only one; the ids it
    removes, in the order their removals were appended."""
    hard, _conf = raft_log.initial_state()
    if raft_log.last_index() == 0 and raft_log.snapshot().metadata.index == 0 and hard.is_empty():
        raise ForceNewClusterError(_NO_LOG.format("this data directory"))
    members = log_members(raft_log)
    last = raft_log.last_index()
    if self_id not in members:
        raise ForceNewClusterError(
            f"--force-new-cluster: member {self_id:x} is not in its cluster's configuration as of "
            f"index {last} (it was removed); force a member that is still in it")
    others = sorted(members - {self_id})
    term = max(hard.term, raft_log.term(last))
    forced = []
    for i, node in enumerate(others, start=1):
        context = msgpack.packb([0, op_to_wire(MemberOp("remove", node))], use_bin_type=True)
        data = ConfChange(changes=((ConfChangeType.REMOVE_NODE, node),), context=context).encode()
        forced.append(Entry(term=term, index=last + i, type=EntryType.CONF_CHANGE, data=data))
    if forced:
        raft_log.append(forced)
    raft_log.set_hard_state(HardState(term=term, vote=hard.vote, commit=last + len(forced)))
    raft_log.sync()
    log.warning(
        "--force-new-cluster: entries %d to %d committed (the log's tail past the commit index %d kept); "
        "members %s removed; starting as the only member (remove the flag before the next restart)",
        hard.commit + 1, last + len(forced), hard.commit, ", ".join(f"{m:x}" for m in others) or "none")
    return others

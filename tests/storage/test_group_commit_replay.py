"""Group commit (9f1fc0b) against a crash: the apply stage and the state machine, killed
after any Ready was applied but before (or after) its delayed commit, then restarted and
fed the same committed entries again (as the Raft log does), must end in exactly the
state of a member that never crashed: the same key history (hashkv), revision, consistent
index, leases and auth records. Each Ready mixes ops whose double application or loss
shows: a txn that only succeeds once, puts with prev_kv, lease grant / attach / revoke,
a compaction in the middle of a Ready, auth changes and a checkpoint."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import lmdb
import msgpack
import pytest

from kvraft.apply import state_machine as sm_module
from kvraft.apply.feature_appliers import (
    AUTH_BUCKET,
    AuthApplier,
    LeaseApplier,
    load_auth,
    load_leases,
)
from kvraft.apply.feature_ops import AuthOp, LeaseCheckpointOp, LeaseGrantOp, LeaseRevokeOp, authed
from kvraft.apply.ops import (
    EQUAL,
    VALUE,
    CompactOp,
    Compare,
    DeleteRangeOp,
    PutOp,
    RangeOp,
    TxnOp,
    encode_entry,
)
from kvraft.apply.state_machine import StateMachine
from kvraft.lease import Lessor
from kvraft.raft.types import ConfState, Entry
from kvraft.server.apply_stage import ApplyStage
from kvraft.server.membership import Membership
from kvraft.server.reads import AppliedWaiters
from kvraft.storage.errors import BatchAbortedError

TERM = 2


def _readies() -> list[list[Any]]:
    """The committed ops, one list per Ready (each op one entry)."""
    bump = TxnOp(  # succeeds only the first time: applied twice, it takes the failure branch
        compare=[Compare(result=EQUAL, target=VALUE, key=b"counter", value=b"0")],
        success=[PutOp(b"counter", b"1", prev_kv=True)],
        failure=[PutOp(b"counter", b"twice")],
    )
    return [
        [PutOp(b"counter", b"0"), PutOp(b"a", b"1", prev_kv=True), LeaseGrantOp(100, 60)],
        [PutOp(b"leased", b"x", lease=100), bump, PutOp(b"a", b"2", prev_kv=True)],
        [PutOp(b"c", b"1"), CompactOp(3), PutOp(b"d", b"1"), PutOp(b"a", b"3")],
        [AuthOp("role_add", ["r"]), PutOp(b"e", b"1"), AuthOp("user_add", ["u", b"hash", False])],
        [PutOp(b"f", b"1"), LeaseRevokeOp(100), DeleteRangeOp(b"d", b"e"), authed("root", 0, CompactOp(7)), PutOp(b"g", b"1")],
        [LeaseGrantOp(200, 30), LeaseCheckpointOp([[200, 20]]), PutOp(b"a", b"4", prev_kv=True)],
    ]


def _entries() -> list[tuple[Entry, ...]]:
    out, index, rid = [], 10, 1000
    for ops in _readies():
        batch = []
        for op in ops:
            index += 1
            rid += 1
            batch.append(Entry(TERM, index, data=encode_entry(rid, op)))
        out.append(tuple(batch))
    return out


def open_member(path: Path) -> tuple[StateMachine, ApplyStage]:
    """A state machine with the server's lease and auth appliers, and its apply stage
    starting after the consistent index on disk (as ``NodeDriver`` does)."""
    sm = StateMachine(path, quota_bytes=1 << 30, member_id=1, max_txn_ops=128, membership=Membership())
    lessor = Lessor(min_ttl_s=1)
    lessor.restore(load_leases(sm.store), 0.0)
    leases = LeaseApplier(sm.chain, sm.store, lessor, lambda: 0.0)
    sm.chain = AuthApplier(leases, sm.store, load_auth(sm.store))
    applied = AppliedWaiters()
    applied.applied = sm.applied_index()
    return sm, ApplyStage(sm, {}, applied, ConfState(voters=(1,)), lambda: None)


def fingerprint(sm: StateMachine) -> dict[str, Any]:
    sm.commit()
    leases = sorted((lease_id, ttl) for lease_id, ttl, _ in load_leases(sm.store))
    with sm.store.backend.read() as r:
        auth = [bytes(v) for _, v in r.txn.cursor(db=r.dbis[AUTH_BUCKET])]
    counter = sm.range(RangeOp(b"counter")).kvs
    return {
        "hash": sm.hash_all(),
        "revision": sm.revision(),
        "compact": sm.store.compact_revision,
        "applied": sm.applied_index(),
        "leases": leases,
        "auth": [msgpack.unpackb(v, raw=False) for v in auth],
        "counter": counter[0].value if counter else None,
    }


REPO = Path(__file__).resolve().parents[2]
CHILD = """
import os, sys
sys.path.insert(0, sys.argv[4])
from kvraft.apply import state_machine as sm_module
from tests.storage.test_group_commit_replay import _entries, open_member
sm_module.COMMIT_INTERVAL_S = 1e9  # only the commits asked for (and those the store forces)
crash_after, commit_after = int(sys.argv[2]), {int(x) for x in sys.argv[3].split(",") if x}
sm, stage = open_member(sys.argv[1])
for i, entries in enumerate(_entries()):
    stage._apply(entries)
    if i in commit_after:
        sm.commit()
    if i == crash_after:
        sys.stdout.flush()
        os._exit(0)  # SIGKILL-like: what is held in the open write transaction is lost
"""


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    sm, stage = open_member(tmp_path_factory.mktemp("ref") / "sm")
    try:
        for entries in _entries():
            stage._apply(entries)
            sm.commit()
        found = fingerprint(sm)
    finally:
        sm.close()
    assert found["counter"] == b"1" and found["compact"] == 7 and found["leases"] == [(200, 30)]
    assert len(found["auth"]) == 1
    return found


CASES = [(0, ""), (2, ""), (3, ""), (4, ""), (5, ""), (2, "1"), (4, "3"), (5, "0,2,4")]
"""(crash after Ready k, commits after Readies j,...): nothing committed but what the
compactions force, or some Readies already on disk."""


@pytest.mark.parametrize(("crash_after", "commit_after"), CASES)
def test_a_crash_before_the_delayed_commit_replays_to_the_same_state(
    tmp_path: Path, reference: dict[str, Any], crash_after: int, commit_after: str,
) -> None:
    path = tmp_path / "sm"
    subprocess.run([sys.executable, "-c", CHILD, str(path), str(crash_after), commit_after, str(REPO)],
                   check=True, timeout=120)
    sm, stage = open_member(path)
    try:
        assert sm.applied_index() <= _entries()[crash_after][-1].index
        for entries in _entries():  # the log hands every committed entry over again
            stage._apply(entries)
        assert fingerprint(sm) == reference
    finally:
        sm.close()


def test_the_commit_timer_puts_an_idle_stage_on_disk(tmp_path: Path, reference: dict[str, Any]) -> None:
    """Fed through the queue, the stage commits on its own once idle: a fresh reader (as
    after a crash) then sees every Ready."""
    sm, stage = open_member(tmp_path / "sm")

    async def run() -> None:
        task = asyncio.get_running_loop().create_task(stage.run())
        for entries in _entries():
            stage.submit_entries(entries, stage.conf_state)
        deadline = asyncio.get_running_loop().time() + 60
        while sm.holding or stage.applied.applied < _entries()[-1][-1].index:
            assert asyncio.get_running_loop().time() < deadline, "the held units were never committed"
            await asyncio.sleep(0.02)
        task.cancel()

    try:
        asyncio.run(run())
        assert not sm.holding and sm.commits >= 1
        assert fingerprint(sm) == reference
    finally:
        sm.close()


def _apply_settled(stage: Any, ready: Any) -> None:
    """Apply one Ready, then wait for a compaction it started: while one runs, every unit
    commits at once (the compactor needs the writer lock between its batches), so only
    Readies applied after it stay held."""
    stage._apply(ready)
    job = stage.target.store.last_job
    if job is not None:
        assert job.wait(30), "the compaction never finished"


def _fail_next_commit(sm: StateMachine) -> None:
    """The next LMDB commit fails as a full disk would (then the hook is restored)."""
    backend = sm.store.backend
    hook = backend.before_commit

    def fail(batch: Any) -> None:
        backend.before_commit = hook
        raise lmdb.DiskError("No space left on device")

    backend.before_commit = fail


@pytest.mark.parametrize("where", ["snapshot_data", "defragment", "flush", "apply"])
def test_a_failed_delayed_commit_stops_the_member_and_the_log_repairs_it(
    tmp_path: Path, reference: dict[str, Any], where: str,
) -> None:
    """The commit of held units fails (disk full) in the apply stage or in a maintenance
    call that commits first (snapshot, defragment, the Ready loop's flush): the held units
    roll back, so the member must not apply one more entry on top (its revisions would
    diverge from the other members' for good) and reports the failure; restarted, it
    replays the log to the reference state."""
    path = tmp_path / "sm"
    failures: list[BaseException] = []
    sm, stage = open_member(path)
    sm.on_failure = failures.append
    entries = _entries()
    try:
        for ready in entries[:4]:  # (Ready 2's compaction is done before Ready 3 is held)
            _apply_settled(stage, ready)
        assert sm.holding
        _fail_next_commit(sm)
        if where == "apply":
            sm_module_interval = sm_module.COMMIT_INTERVAL_S
            sm_module.COMMIT_INTERVAL_S = 0.0
            try:
                with pytest.raises(BatchAbortedError):
                    stage._apply(entries[4])
            finally:
                sm_module.COMMIT_INTERVAL_S = sm_module_interval
        else:
            with pytest.raises(BatchAbortedError):
                getattr(sm, where)()
        assert failures and isinstance(failures[0], BatchAbortedError)
        with pytest.raises(BatchAbortedError):  # nothing more is applied on the rolled-back state
            stage._apply(entries[5])
    finally:
        sm.close()
    sm, stage = open_member(path)
    try:
        for ready in entries:
            stage._apply(ready)
        assert fingerprint(sm) == reference
    finally:
        sm.close()


def _every_read(sm: StateMachine) -> dict[str, Any]:
    """What the API's reads answer from this state machine (on the member's thread):
    ranges at every revision still readable, counts, a read-only txn, hashkv at every
    revision, the history a watch catches up from, the revision."""
    store, out = sm.store, {}
    compact, current = store.compact_revision, sm.revision()
    for rev in range(max(compact, 1), current + 1):
        result = sm.range(RangeOp(b"\0", b"\xff", revision=rev))
        out[f"range@{rev}"] = [(kv.key, kv.value, kv.mod_revision, kv.version, kv.lease) for kv in result.kvs]
        out[f"count@{rev}"] = sm.range(RangeOp(b"\0", b"\xff", revision=rev, count_only=True)).count
        # (the live hash: HashKV at a compaction revision answers the hash that compaction
        # recorded, which a restarted member no longer has, as etcd's)
        live = store.hash_kv(rev)
        out[f"hash@{rev}"] = (live.hash, live.compact_revision)
    out["events"] = [(rev, [(ev.type, ev.kv.key, ev.kv.mod_revision) for ev in evs])
                     for rev, evs in store.events(compact + 1)]
    txn = TxnOp(compare=[Compare(result=EQUAL, target=VALUE, key=b"counter", value=b"1")],
                success=[RangeOp(b"a")], failure=[RangeOp(b"counter")])
    result = sm.txn_read_only(txn)
    out["txn"] = (result.succeeded, [[(kv.key, kv.value) for kv in r.kvs] for r in result.responses])
    out["revision"], out["applied"] = current, sm.applied_index()
    out["leases"] = store.leases()
    return out


def test_reads_on_the_members_thread_see_held_units_as_committed_ones(tmp_path: Path) -> None:
    """Everything applied but not committed (no commit but those the compactions force)
    reads exactly as after the commit, and as a restarted member reads it from disk."""
    path = tmp_path / "sm"
    interval = sm_module.COMMIT_INTERVAL_S
    sm_module.COMMIT_INTERVAL_S = 1e9
    try:
        sm, stage = open_member(path)
        try:
            for entries in _entries():
                _apply_settled(stage, entries)
            assert sm.holding
            held = _every_read(sm)
            sm.commit()
            assert not sm.holding
            assert _every_read(sm) == held
        finally:
            sm.close()
    finally:
        sm_module.COMMIT_INTERVAL_S = interval
    sm, _stage = open_member(path)
    try:
        assert _every_read(sm) == held
    finally:
        sm.close()

"""``BatchOp``: the msgpack ``kv/batch`` route's puts as ONE log entry. Applied, it must
leave exactly what the same ops applied as separate entries leave (each op its own
revision, its own result or error, the same events), through every applier of the chain."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from kvraft.apply import state_machine as sm_module
from kvraft.apply.chain import ACTIVATE, NOSPACE, QuotaGuard
from kvraft.apply.errors import EtcdError, ResourceExhausted
from kvraft.apply.feature_appliers import AuthApplier
from kvraft.apply.ops import (
    AlarmOp,
    BatchOp,
    CompactOp,
    Compare,
    DeleteRangeOp,
    PutOp,
    RangeOp,
    TxnOp,
    decode_entry,
    encode_entry,
)
from kvraft.apply.state_machine import StateMachine
from kvraft.auth import AuthState
from kvraft.server.membership import Membership


def machine(path: Path) -> StateMachine:
    sm = StateMachine(path, quota_bytes=1 << 30, member_id=1, max_txn_ops=128, membership=Membership())
    sm.store.lease_check = lambda lease: lease == 7  # lease 7 exists, no other
    return sm


def events_of(sm: StateMachine) -> list[tuple[int, list[tuple[Any, ...]]]]:
    seen: list[tuple[int, list[tuple[Any, ...]]]] = []
    sm.store.add_listener(lambda batches: seen.extend((rev, [(e.type, *e.kv) for e in evs]) for rev, evs in batches))
    return seen


def outcome(result: Any) -> Any:
    """What a client would see of one op's result."""
    if isinstance(result, EtcdError):
        return ("error", result.code, result.message)
    return result


def random_op(rng: random.Random) -> Any:
    key = b"k%d" % rng.randrange(12)
    roll = rng.random()
    if roll < 0.6:
        return PutOp(key, b"v%d" % rng.randrange(1000))
    if roll < 0.68:
        return PutOp(b"", b"x")  # refused: key is not provided
    if roll < 0.74:
        return PutOp(key, b"l", lease=rng.choice([7, 8]))  # 8: lease not found
    if roll < 0.8:
        return PutOp(key, b"p", prev_kv=True)  # not a plain put: the store's per-put path
    if roll < 0.86:
        return PutOp(key, b"", ignore_value=True)  # refused when the key does not exist
    if roll < 0.93:
        return DeleteRangeOp(key, b"k9" if rng.random() < 0.3 else b"", prev_kv=rng.random() < 0.5)
    return TxnOp([Compare(target=0, key=key, version=1)], [PutOp(key, b"t")], [DeleteRangeOp(key)])


def test_the_entry_round_trips() -> None:
    op = BatchOp([PutOp(b"a", b"1", lease=7), DeleteRangeOp(b"b", b"c", True), TxnOp([], [PutOp(b"x")], [])])
    assert decode_entry(encode_entry(99, op)) == (99, op)


@pytest.mark.parametrize("seed", range(8))
def test_a_batch_applies_as_its_ops_would_one_entry_each(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    one, each = machine(tmp_path / "one"), machine(tmp_path / "each")
    try:
        seen_one, seen_each = events_of(one), events_of(each)
        index = 1
        for _round in range(6):
            ops = [random_op(rng) for _ in range(rng.randrange(1, 40))]
            index += 1
            (batched,) = one.apply_ops([(index, BatchOp(ops))], index, 2)
            separate = each.apply_ops([(i, op) for i, op in enumerate(ops)], index, 2)
            assert [outcome(r) for r in batched] == [outcome(r) for r in separate]
        assert seen_one == seen_each and seen_one  # the same revisions, events and order
        assert one.store.rev == each.store.rev
        one.commit()
        each.commit()
        assert one.hash_kv(0) == each.hash_kv(0)
    finally:
        one.close()
        each.close()


def test_with_the_nospace_alarm_the_puts_of_a_batch_fail_and_its_deletes_apply(tmp_path: Path) -> None:
    sm = machine(tmp_path / "sm")
    try:
        sm.apply_ops([(1, PutOp(b"a", b"1"))], 2, 1)
        sm.apply_ops([(2, AlarmOp(ACTIVATE, 1, NOSPACE))], 3, 1)
        (results,) = sm.apply_ops([(3, BatchOp([PutOp(b"b", b"2"), DeleteRangeOp(b"a"), PutOp(b"c")]))], 4, 1)
        assert [type(r).__name__ for r in results] == ["ResourceExhausted", "DeleteRangeResult", "ResourceExhausted"]
        assert sm.range(RangeOp(b"a", b"\0")).count == 0
    finally:
        sm.close()


def test_a_bare_batch_is_refused_while_auth_is_enabled(tmp_path: Path) -> None:
    sm = machine(tmp_path / "sm")
    try:
        state = AuthState()
        state.enabled = True
        sm.chain = AuthApplier(sm.chain, sm.store, state)
        (result,) = sm.apply_ops([(1, BatchOp([PutOp(b"a", b"1")]))], 2, 1)
        assert isinstance(result, EtcdError) and "user name is empty" in result.message
        assert sm.range(RangeOp(b"a")).count == 0
    finally:
        sm.close()


def test_the_ops_of_a_batch_count_toward_the_group_commit_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """(Counted as one op before: a member applying 100-put batches held 100x
    ``COMMIT_OPS`` puts before committing.)"""
    monkeypatch.setattr(sm_module, "COMMIT_OPS", 50)
    monkeypatch.setattr(sm_module, "COMMIT_INTERVAL_S", 3600.0)  # (a slow box must not commit by time)
    sm = machine(tmp_path / "sm")
    try:
        sm.apply_ops([(1, BatchOp([PutOp(b"k%d" % i, b"v") for i in range(30)]))], 2, 1)
        assert sm.holding
        sm.apply_ops([(2, BatchOp([PutOp(b"k%d" % i, b"v") for i in range(30)]))], 3, 1)
        assert not sm.holding  # 60 ops >= 50: committed
    finally:
        sm.close()


def test_the_quota_guard_sizes_a_batch_by_its_puts(tmp_path: Path) -> None:
    sm = machine(tmp_path / "sm")
    try:
        raised: list[bool] = []
        guard = QuotaGuard(sm.store, quota_bytes=sm.store.sizes()[1] + 3000)
        guard.check(BatchOp([PutOp(b"k", b"v" * 600), PutOp(b"l", b"v" * 600)]), lambda: raised.append(True))
        assert guard._admitted == 2 * (256 + 601)
        sm.apply_ops([(1, BatchOp([PutOp(b"k%d" % i, b"v" * 2000) for i in range(200)]))], 2, 1)
        sm.commit()
        with pytest.raises(ResourceExhausted):
            guard.check(BatchOp([PutOp(b"k", b"v")]), lambda: raised.append(True))
        assert raised == [True]
        guard.check(BatchOp([DeleteRangeOp(b"k")]), lambda: raised.append(True))  # adds nothing: passes
    finally:
        sm.close()


def test_the_quota_guard_counts_writes_applied_but_not_yet_committed(tmp_path: Path, monkeypatch: Any) -> None:
    """Applied writes wait in memory for the group commit (up to ``COMMIT_INTERVAL_S``),
    and the file does not grow until then: the guard must count what it admitted since
    the last commit. (It compared the file alone: a CI run accepted 40 puts of 60 kB,
    2.4 MB, over a 400 kB quota, all inside one commit interval.)"""
    monkeypatch.setattr(sm_module, "COMMIT_INTERVAL_S", 3600.0)  # nothing commits by time here
    sm = machine(tmp_path / "sm")
    try:
        quota = sm.store.sizes()[1] + 400_000
        guard = QuotaGuard(sm.store, quota_bytes=quota)
        raised: list[bool] = []
        accepted = 0
        for index in range(40):
            op = PutOp(b"q/%02d" % index, b"x" * 60_000)
            try:
                guard.check(op, lambda: raised.append(True))
            except ResourceExhausted:
                break
            sm.apply_ops([(index + 1, op)], index + 2, 1)
            accepted += 1
        assert sm.holding  # every accepted put is still held, none committed
        assert raised == [True]
        assert accepted == 7  # 7 x 60,260 bytes pass a 400,000-byte quota; the 8th is over
        sm.commit()  # once committed, the file itself is over the quota
        with pytest.raises(ResourceExhausted):
            guard.check(PutOp(b"after", b"v"), lambda: raised.append(True))
        assert guard._size > quota
        # the space IN USE is compared: deleting and compacting frees quota, no defrag needed
        sm.apply_ops([(50, DeleteRangeOp(b"q/", b"q0"))], 50, 1)
        rev = sm.store.rev
        result = sm.apply_ops([(51, CompactOp(rev, physical=True))], 51, 1)[0]
        sm.commit()  # (the compaction's thread takes the writer lock the held batch has)
        assert result.job.wait(30)
        guard.check(PutOp(b"after", b"v"), lambda: raised.append(True))
        assert guard._size < quota
    finally:
        sm.close()


def test_a_negative_quota_disables_the_quota_as_etcd(tmp_path: Path) -> None:
    """etcd 3.4: --quota-backend-bytes < 0 disables the quota ("disabling backend quota"),
    0 is the default 2 GiB. kvraft took a negative value for 0: a 2 GiB cap the operator had
    turned off."""
    from kvraft.server.config import parse_config

    assert parse_config(["--quota-backend-bytes", "0"]).quota_bytes() == 2 << 30
    disabled = parse_config(["--quota-backend-bytes", "-1"]).quota_bytes()
    assert disabled < 0
    sm = machine(tmp_path / "sm")
    try:
        guard = QuotaGuard(sm.store, quota_bytes=disabled)
        raised: list[bool] = []
        sm.apply_ops([(1, BatchOp([PutOp(b"k%d" % i, b"v" * 2000) for i in range(200)]))], 2, 1)
        sm.commit()
        for _ in range(3):
            guard.check(PutOp(b"k", b"v" * 100_000), lambda: raised.append(True))
        assert raised == []
        sm.store.set_nospace_alarm(True)  # a raised alarm still refuses writes (etcd: at apply)
        with pytest.raises(ResourceExhausted):
            guard.check(PutOp(b"k", b"v"), lambda: raised.append(True))
    finally:
        sm.close()
